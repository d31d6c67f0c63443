#include <troupe/gateways/nats_gateway.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <set>
#include <thread>

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <troupe/runtime/errors.hpp>

#include "outbox/events_fixture.hpp"
#include "support/http_get.hpp"
#include "support/nats_client.hpp"
#include "support/nats_server_process.hpp"

namespace {

using namespace std::chrono_literals;
using troupe::test::eventually;
using troupe::test::free_port;
using troupe::test::nats_client;
using troupe::test::nats_server_process;
using troupe::test::received_events;

troupe::nats_settings test_settings(const std::string& url) {
  troupe::nats_settings s;
  s.servers = {url};
  s.streams = {{"EVENTS", {"ev.>"}}};
  s.connect_timeout = 1s;
  s.reconnect_wait = 50ms;
  s.publish_timeout = 1s;
  s.deliver_timeout = 1s;
  s.redeliver_delay = 20ms;
  s.fetch_wait = 100ms;
  s.ack_wait = 2s;
  return s;
}

troupe::outbound_event event(std::string id, std::string key,
                             std::string subject = "ev.orders") {
  troupe::outbound_event ev;
  ev.id = std::move(id);
  ev.key = std::move(key);
  ev.destination = std::move(subject);
  ev.headers = {{troupe::event_headers::content_type, "application/json"},
                {troupe::event_headers::event_type, "order_shipped"}};
  ev.payload = "{\"id\":\"" + ev.id + "\"}";
  return ev;
}

struct nats_fixture {
  nats_server_process server;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  troupe::nats_settings settings;
  std::vector<caf::actor> started;

  nats_fixture()
      : sys(std::make_unique<caf::actor_system>(cfg))
      , settings(test_settings(server.url())) {
    server.start();
  }

  ~nats_fixture() {
    stop_all();
    sys.reset();
  }

  void stop_all() {
    caf::scoped_actor self{*sys};
    for (auto& a : started) {
      self->send_exit(a, caf::exit_reason::user_shutdown);
      self->wait_for(a);
    }
    // A detached actor's thread ends only when the last handle to it goes.
    started.clear();
  }

  /// Remembers `h` to stop it (in reverse order) before the system goes.
  template <class Handle>
  Handle keep(Handle h) {
    started.insert(started.begin(), caf::actor_cast<caf::actor>(h));
    return h;
  }

  std::vector<std::string> publish(troupe::publisher_actor& p,
                                   std::vector<troupe::outbound_event> events) {
    caf::scoped_actor self{*sys};
    std::vector<std::string> out;
    self->request(p, 10s, troupe::publish_atom::value, std::move(events))
        .receive([&](std::vector<std::string>& acks) { out = std::move(acks); },
                 [&](caf::error& err) {
                   FAIL("publish request failed: " << sys->render(err));
                 });
    return out;
  }

  void wait_ready(const troupe::nats_subscription_actor& sub) {
    caf::scoped_actor self{*sys};
    bool ready = false;
    self->request(sub, 10s, troupe::nats_ready_atom::value)
        .receive([&](caf::ok_atom) { ready = true; },
                 [&](caf::error& err) { FAIL("not subscribed: " << sys->render(err)); });
    REQUIRE(ready);
  }

  troupe::event_consumer_actor recorder(std::shared_ptr<received_events> out) {
    return keep(sys->spawn(troupe::test::recording_consumer, std::move(out)));
  }
};

bool all_acked(const std::vector<std::string>& acks) {
  return std::all_of(acks.begin(), acks.end(), [](auto& a) { return a.empty(); });
}

uint64_t stored_messages(const std::string& url, const char* stream) {
  auto n = nats_client{url}.stored(stream);
  REQUIRE(n.has_value());
  return *n;
}

/// A consumer that answers an error to the first delivery of every event id
/// and ok to the later ones, recording all of them.
struct flaky_log {
  std::shared_ptr<received_events> seen = std::make_shared<received_events>();
  std::set<std::string> failed_once;
};

troupe::event_consumer_actor::behavior_type
flaky_consumer(troupe::event_consumer_actor::pointer, std::shared_ptr<flaky_log> log) {
  return {
      [log](troupe::deliver_atom,
            troupe::delivered_event& d) -> caf::result<caf::ok_atom> {
        bool first = log->failed_once.insert(d.event.id).second;
        {
          std::lock_guard<std::mutex> guard{log->seen->mtx};
          log->seen->events.push_back(d);
        }
        log->seen->cv.notify_all();
        if (first)
          return troupe::make_error(troupe::errc::internal, "injected failure");
        return caf::ok_atom::value;
      },
  };
}

} // namespace

TEST_CASE("events published to NATS reach a JetStream durable pull consumer in per-key "
          "order with their headers intact",
          "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  std::vector<troupe::outbound_event> events;
  for (int i = 0; i < 6; ++i)
    events.push_back(event("e" + std::to_string(i), i % 2 == 0 ? "a" : "b"));
  REQUIRE(all_acked(f.publish(pub, events)));

  auto got = std::make_shared<received_events>();
  auto sub = f.keep(troupe::spawn_nats_pull_consumer(*f.sys, f.settings, "EVENTS",
                                                     "billing", "ev.>", f.recorder(got)));
  REQUIRE(got->wait_for(6));
  auto seen = got->snapshot();
  REQUIRE(seen.size() == 6);
  std::map<std::string, std::vector<std::string>> per_key;
  uint64_t last_offset = 0;
  for (auto& d : seen) {
    CHECK(d.topic == "ev.orders");
    CHECK(d.offset > last_offset);
    last_offset = d.offset;
    // NATS keeps headers in a map, so they come back sorted by name.
    auto sent = events[0].headers;
    std::sort(sent.begin(), sent.end());
    CHECK(d.event.headers == sent);
    CHECK(d.event.payload == "{\"id\":\"" + d.event.id + "\"}");
    per_key[d.event.key].push_back(d.event.id);
  }
  CHECK(per_key["a"] == std::vector<std::string>{"e0", "e2", "e4"});
  CHECK(per_key["b"] == std::vector<std::string>{"e1", "e3", "e5"});
}

TEST_CASE(
    "a JetStream batch consumer gets a fetch in stream order, in batches of at most "
    "its batch size, and what it did not handle again first",
    "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  std::vector<troupe::outbound_event> events;
  for (int i = 0; i < 30; ++i)
    events.push_back(event("e" + std::to_string(i), "k"));
  REQUIRE(all_acked(f.publish(pub, events)));

  auto got = std::make_shared<troupe::test::received_batches>();
  got->short_answers = 1;
  got->short_count = 3;
  auto consumer = f.keep(f.sys->spawn(troupe::test::recording_batch_consumer, got));
  auto sub = f.keep(
      troupe::spawn_nats_pull_consumer(*f.sys, f.settings, "EVENTS", "stats", "ev.>",
                                       troupe::event_subscriber{consumer, 8}));
  REQUIRE(got->wait_for(30));
  auto batches = got->batches_seen();
  REQUIRE(batches.size() >= 2);
  CHECK(batches[0].size() == 8); // the fetch held all thirty
  CHECK(batches[1].front().event.id == "e3");
  CHECK(troupe::test::largest(batches) == 8);
  auto handled = got->handled_events();
  REQUIRE(handled.size() == 30);
  for (size_t i = 0; i < handled.size(); ++i)
    CHECK(handled[i].event.id == "e" + std::to_string(i));
}

TEST_CASE("publishing the same event id twice to JetStream stores one message",
          "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  REQUIRE(all_acked(f.publish(pub, {event("e1", "k")})));
  // A relay that crashed before recording the acknowledgement publishes again.
  REQUIRE(all_acked(f.publish(pub, {event("e1", "k"), event("e2", "k")})));
  CHECK(stored_messages(f.server.url(), "EVENTS") == 2);
}

TEST_CASE("an event after a failed one of its key in the same publish is reported "
          "failed while other keys are acknowledged",
          "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  // No stream takes "nowhere.x": JetStream has no responder for it.
  auto acks = f.publish(pub, {event("a1", "a", "nowhere.x"), event("b1", "b"),
                              event("a2", "a"), event("b2", "b")});
  REQUIRE(acks.size() == 4);
  CHECK(!acks[0].empty());
  CHECK(acks[1].empty());
  CHECK(!acks[2].empty());
  CHECK(acks[3].empty());
  CHECK(stored_messages(f.server.url(), "EVENTS") == 2);
}

TEST_CASE("after a failed event, a later call's event of its key is refused until the "
          "failed event is sent again",
          "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  auto failed = f.publish(pub, {event("a1", "a", "nowhere.x")});
  REQUIRE(failed.size() == 1);
  CHECK(!failed[0].empty());
  // Sent before the relay heard of the failure: it must not overtake a1.
  auto early = f.publish(pub, {event("a2", "a"), event("b1", "b")});
  REQUIRE(early.size() == 2);
  CHECK(!early[0].empty());
  CHECK(early[1].empty());
  // The retry of a1 opens the key again.
  CHECK(all_acked(f.publish(pub, {event("a1", "a"), event("a2", "a")})));
  CHECK(stored_messages(f.server.url(), "EVENTS") == 3);
}

TEST_CASE("two queue-group subscribers share a subject's messages and none is "
          "delivered to both",
          "[nats]") {
  nats_fixture f;
  auto core = f.settings;
  core.jetstream = false;
  core.streams.clear();
  auto one = std::make_shared<received_events>();
  auto two = std::make_shared<received_events>();
  auto s1 = f.keep(
      troupe::spawn_nats_subscriber(*f.sys, core, "work.>", "workers", f.recorder(one)));
  auto s2 = f.keep(
      troupe::spawn_nats_subscriber(*f.sys, core, "work.>", "workers", f.recorder(two)));
  f.wait_ready(s1);
  f.wait_ready(s2);
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, core));
  std::vector<troupe::outbound_event> events;
  for (int i = 0; i < 40; ++i)
    events.push_back(event("w" + std::to_string(i), "k", "work.items"));
  REQUIRE(all_acked(f.publish(pub, events)));

  REQUIRE(
      eventually([&] { return one->snapshot().size() + two->snapshot().size() >= 40; }));
  std::set<std::string> ids1, ids2;
  for (auto& d : one->snapshot())
    ids1.insert(d.event.id);
  for (auto& d : two->snapshot())
    ids2.insert(d.event.id);
  std::vector<std::string> both;
  std::set_intersection(ids1.begin(), ids1.end(), ids2.begin(), ids2.end(),
                        std::back_inserter(both));
  CHECK(both.empty());
  CHECK(ids1.size() + ids2.size() == 40);
  CHECK(!ids1.empty());
  CHECK(!ids2.empty());
}

TEST_CASE("a pull consumer's message is redelivered after an error answer and "
          "acknowledged after an ok answer",
          "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  REQUIRE(all_acked(f.publish(pub, {event("e1", "k")})));
  auto log = std::make_shared<flaky_log>();
  auto consumer = f.keep(f.sys->spawn(flaky_consumer, log));
  auto sub = f.keep(troupe::spawn_nats_pull_consumer(*f.sys, f.settings, "EVENTS",
                                                     "shipping", "ev.>", consumer));
  REQUIRE(log->seen->wait_for(2));
  auto seen = log->seen->snapshot();
  CHECK(seen[0].event.id == "e1");
  CHECK(seen[1].event.id == "e1");
  CHECK(seen[1].offset == seen[0].offset);

  // Acknowledged: the consumer's ack floor reaches the message, nothing pending.
  nats_client c{f.server.url()};
  REQUIRE(c.ok());
  auto acked = eventually([&] {
    jsConsumerInfo* info = nullptr;
    if (js_GetConsumerInfo(&info, c.js, "EVENTS", "shipping", nullptr, nullptr) !=
        NATS_OK)
      return false;
    bool done = info->NumAckPending == 0 && info->AckFloor.Stream == seen[0].offset;
    jsConsumerInfo_Destroy(info);
    return done;
  });
  CHECK(acked);
  // The next delivery is the next message, not the acknowledged one again.
  REQUIRE(all_acked(f.publish(pub, {event("e2", "k")})));
  REQUIRE(log->seen->wait_for(3));
  CHECK(log->seen->snapshot()[2].event.id == "e2");
}

TEST_CASE("a troupe request to a NATS responder returns its reply, and times out "
          "with the timeout error when nobody answers in time",
          "[nats]") {
  nats_fixture f;
  nats_client responder{f.server.url()};
  REQUIRE(responder.ok());
  natsSubscription* echo = nullptr;
  natsSubscription* silent = nullptr;
  REQUIRE(natsConnection_Subscribe(
              &echo, responder.nc, "svc.echo",
              [](natsConnection* nc, natsSubscription*, natsMsg* msg, void*) {
                std::string body = "echo:" + std::string(natsMsg_GetData(msg),
                                                         natsMsg_GetDataLength(msg));
                natsConnection_PublishString(nc, natsMsg_GetReply(msg), body.c_str());
                natsMsg_Destroy(msg);
              },
              nullptr) == NATS_OK);
  REQUIRE(natsConnection_Subscribe(
              &silent, responder.nc, "svc.silent",
              [](natsConnection*, natsSubscription*, natsMsg* msg, void*) {
                natsMsg_Destroy(msg);
              },
              nullptr) == NATS_OK);
  REQUIRE(natsConnection_Flush(responder.nc) == NATS_OK);

  auto req = f.keep(troupe::spawn_nats_requester(*f.sys, f.settings));
  caf::scoped_actor self{*f.sys};
  std::string reply;
  self->request(req, 5s, troupe::nats_request_atom::value, std::string{"svc.echo"},
                std::string{"hi"}, caf::timespan{2s})
      .receive(
          [&](std::string& r) { reply = r; },
          [&](caf::error& err) { FAIL("request failed: " << troupe::describe(err)); });
  CHECK(reply == "echo:hi");

  troupe::errc code = troupe::errc::none;
  auto asked = std::chrono::steady_clock::now();
  self->request(req, 5s, troupe::nats_request_atom::value, std::string{"svc.silent"},
                std::string{"x"}, caf::timespan{200ms})
      .receive([&](std::string& r) { FAIL("got a reply: " << r); },
               [&](caf::error& err) { code = troupe::classify(err); });
  CHECK(code == troupe::errc::timeout);
  CHECK(std::chrono::steady_clock::now() - asked < 2s);

  natsSubscription_Unsubscribe(echo);
  natsSubscription_Destroy(echo);
  natsSubscription_Unsubscribe(silent);
  natsSubscription_Destroy(silent);
}

TEST_CASE("a NATS request served by a troupe actor gets that actor's reply, and its "
          "error as an error header",
          "[nats]") {
  nats_fixture f;
  auto handler = f.keep(f.sys->spawn([]() -> troupe::nats_handler_actor::behavior_type {
    return {
        [](troupe::nats_serve_atom, const std::string& subject,
           const std::string& payload) -> caf::result<std::string> {
          if (payload == "fail")
            return troupe::make_error(troupe::errc::rejected, "no such order");
          return subject + " says hello to " + payload;
        },
    };
  }));
  auto served = f.keep(
      troupe::spawn_nats_responder(*f.sys, f.settings, "svc.greet", "greeters", handler));
  f.wait_ready(served);

  nats_client client{f.server.url()};
  REQUIRE(client.ok());
  natsMsg* reply = nullptr;
  REQUIRE(natsConnection_RequestString(&reply, client.nc, "svc.greet", "ann", 5000) ==
          NATS_OK);
  CHECK(std::string(natsMsg_GetData(reply), natsMsg_GetDataLength(reply)) ==
        "svc.greet says hello to ann");
  const char* error = nullptr;
  CHECK(natsMsgHeader_Get(reply, troupe::event_headers::error, &error) == NATS_NOT_FOUND);
  natsMsg_Destroy(reply);

  reply = nullptr;
  REQUIRE(natsConnection_RequestString(&reply, client.nc, "svc.greet", "fail", 5000) ==
          NATS_OK);
  REQUIRE(natsMsgHeader_Get(reply, troupe::event_headers::error, &error) == NATS_OK);
  CHECK(std::string{error}.find("no such order") != std::string::npos);
  natsMsg_Destroy(reply);
}

TEST_CASE("publishes answer errors while the NATS server is down and succeed again "
          "after it restarts on the same port and store",
          "[nats]") {
  nats_fixture f;
  auto pub = f.keep(troupe::spawn_nats_publisher(*f.sys, f.settings));
  REQUIRE(all_acked(f.publish(pub, {event("e1", "k")})));

  f.server.stop();
  auto asked = std::chrono::steady_clock::now();
  auto acks = f.publish(pub, {event("e2", "k"), event("e3", "k")});
  REQUIRE(acks.size() == 2);
  CHECK(!acks[0].empty());
  CHECK(!acks[1].empty());
  CHECK(std::chrono::steady_clock::now() - asked < 3s);

  f.server.start();
  // nats.c reconnects on its own; each attempt is one answered publish.
  auto recovered = eventually(
      [&] {
        return all_acked(f.publish(pub, {event("e2", "k"), event("e3", "k")}));
      },
      10s);
  CHECK(recovered);
  CHECK(stored_messages(f.server.url(), "EVENTS") == 3);
}

TEST_CASE("nats settings reject a password without a user and a stream without "
          "subjects, naming the key",
          "[nats]") {
  auto load = [](std::vector<std::pair<std::string, std::string>> overrides) {
    troupe::config_schema schema;
    troupe::declare_nats_config(schema);
    troupe::config_sources src;
    src.overrides = std::move(overrides);
    return troupe::config::load(schema, src);
  };
  auto defaults = troupe::nats_settings_from(load({}));
  CHECK(defaults.servers == std::vector<std::string>{"nats://127.0.0.1:4222"});
  CHECK(defaults.jetstream);

  auto streams = troupe::nats_settings_from(
      load({{"events.nats.streams", "[ORDERS=orders.> payments.>]"}}));
  REQUIRE(streams.streams.size() == 1);
  CHECK(streams.streams[0].name == "ORDERS");
  CHECK(streams.streams[0].subjects ==
        std::vector<std::string>{"orders.>", "payments.>"});

  auto key_of = [&](std::vector<std::pair<std::string, std::string>> overrides) {
    auto cfg = load(std::move(overrides));
    try {
      troupe::nats_settings_from(cfg);
    } catch (const troupe::config_error& e) {
      return e.key();
    }
    return std::string{"(accepted)"};
  };
  CHECK(key_of({{"events.nats.password", "pw"}}) == "events.nats.password");
  CHECK(key_of({{"events.nats.streams", "[ORDERS=]"}}) == "events.nats.streams");
  CHECK(key_of({{"events.nats.servers", "[http://x:1]"}}) == "events.nats.servers");
  CHECK(key_of({{"events.nats.tls.cert_file", "/c.pem"}}) == "events.nats.tls.key_file");
}
