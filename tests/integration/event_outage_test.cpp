// The event bus's failure guarantees with real processes: a troupe-node
// running the order saga, the HTTP gateway and the event bus, a real
// nats-server with JetStream, both stopped and killed (SIGKILL) at the
// moments that matter. Every order's end event reaches its broker exactly
// once: a stopped broker backs the outbox up without stopping the node, and
// neither a crash between commit and publish nor one during publishing
// loses or duplicates an event.
//
// The embedded broker has no endpoint that lists what it holds, so the test
// reads it the way the node would after a restart: once the node has
// exited, the product's own embedded broker is spawned in this process over
// the node's store and delivers every retained message to a fresh group.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <nats/nats.h>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

#include "outbox/events_fixture.hpp"
#include "support/http_get.hpp"
#include "support/metrics_text.hpp"
#include "support/nats_client.hpp"
#include "support/nats_server_process.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
using strings = std::vector<std::string>;

constexpr const char* stream_name = "ORDERS";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// -- the node ------------------------------------------------------------------

struct relay_metrics {
  double published = 0; ///< rows acknowledged by their broker, since this process started
  double backlog = 0; ///< rows in the outbox at the last full scan, minus those published
};

std::optional<relay_metrics> read_metrics(uint16_t status_port) {
  auto r = http_get(status_port, "/metrics", 1000ms);
  if (!r || r->status != 200)
    return std::nullopt;
  return relay_metrics{metric_sum(r->body, "troupe_outbox_published_total"),
                       metric_sum(r->body, "troupe_outbox_backlog_rows")};
}

// Settings every node of these tests gets: the relay polls often and retries
// a failed row at every poll, in one batch with every other row, and never
// gives a row up (outages here are short, but max_attempts would otherwise
// dead-letter rows after ten fast retries); NATS reconnects quickly.
const strings relay_flags{
    "--events.relay.poll_interval",   "50ms", "--events.relay.backoff",      "10ms",
    "--events.relay.max_backoff",     "10ms", "--events.relay.max_attempts", "1000000",
    "--events.relay.publish_timeout", "3s"};

strings nats_flags(const std::string& url) {
  return {"--events.routes",
          "[orders.*=nats]",
          "--events.nats.servers",
          "[" + url + "]",
          "--events.nats.streams",
          std::string{"["} + stream_name + "=orders.>]",
          "--events.nats.connect_timeout",
          "500ms",
          "--events.nats.reconnect_wait",
          "50ms",
          "--events.nats.publish_timeout",
          "1s"};
}

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

/// A troupe-node running the order saga, the HTTP gateway and the event bus
/// over `store`, with its status and HTTP ports.
struct order_node {
  running_node node;
  uint16_t http_port = 0;
  node_process* operator->() const { return node.process.get(); }
  uint16_t status_port() const { return node.status_port; }
};

constexpr const char* order_services =
    "[sagas, orders, inventory, payment, shipping, gateway, events]";

order_node start_order_node(const std::filesystem::path& store, const strings& extra,
                            const std::string& services = order_services) {
  auto deadline = within(20s);
  strings args{"--services.enabled",
               services,
               "--store.path",
               store.string(),
               "--gateways.http.port",
               "0",
               "--gateways.grpc.enabled",
               "false"};
  order_node n;
  // A key `extra` names replaces its default in relay_flags.
  for (size_t i = 0; i + 1 < relay_flags.size(); i += 2)
    if (std::find(extra.begin(), extra.end(), relay_flags[i]) == extra.end())
      args.insert(args.end(), {relay_flags[i], relay_flags[i + 1]});
  n.node = start_node("a", args + extra, deadline);
  auto line = n->wait_for_line(std::regex{R"(http gateway listening on [^:\s]+:(\d+))"},
                               deadline);
  if (!line)
    throw std::runtime_error("the node never logged its http port:\n" + n->output());
  std::smatch m;
  std::regex_search(*line, m, std::regex{R"(:(\d+)\s*$)"});
  n.http_port = static_cast<uint16_t>(std::stoul(m[1].str()));
  // Listening is not taking work: starts before /readyz turns 200 get 503.
  if (!eventually(deadline,
                  [&] { return http_status(n.status_port(), "/readyz") == 200; }))
    throw std::runtime_error("the node never became ready:\n" + n->output());
  return n;
}

/// kill -9, and wait until the process is gone.
void kill_hard(order_node& n) {
  n->kill(SIGKILL);
  REQUIRE(n->wait_exit(within(10s)).has_value());
}

/// Starts the order saga for `order_id` (also its idempotency key) through
/// the HTTP gateway; returns the HTTP status and the saga's id.
std::pair<int, std::string> start_order(uint16_t http_port, const std::string& order_id) {
  auto body = R"({"json":{"orderId":")" + order_id +
              R"(","customer":"c-1","sku":"widget","quantity":1},"idempotencyKey":")" +
              order_id + R"("})";
  auto conn = raw_tcp::connect(http_port);
  if (!conn)
    return {0, {}};
  std::string request = "POST /v1/sagas/order_processing HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/json\r\nConnection: close\r\n"
                        "Content-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  if (!conn->send(request))
    return {0, {}};
  auto reply = conn->receive_until_closed(10s).data;
  if (reply.rfind("HTTP/1.1 ", 0) != 0)
    return {0, {}};
  int status = std::stoi(reply.substr(9, 3));
  std::string id;
  auto at = reply.find(R"("id":")");
  if (at != std::string::npos) {
    at += 6;
    id = reply.substr(at, reply.find('"', at) - at);
  }
  return {status, id};
}

/// Starts orders `<prefix>-1` .. `<prefix>-n`; every start must be created
/// (201). Returns the order ids and adds the sagas' ids to `sagas`.
std::vector<std::string> start_orders(uint16_t http_port, const std::string& prefix,
                                      int n, std::vector<std::string>* sagas = nullptr) {
  std::vector<std::string> ids;
  for (int i = 1; i <= n; ++i) {
    auto id = prefix + "-" + std::to_string(i);
    auto [status, saga] = start_order(http_port, id);
    INFO("starting order " << id);
    REQUIRE(status == 201);
    ids.push_back(id);
    if (sagas != nullptr)
      sagas->push_back(saga);
  }
  return ids;
}

/// True once every saga in `sagas` has ended: its end state, and with it its
/// event in the outbox, is committed.
bool all_ended(uint16_t http_port, const std::vector<std::string>& sagas) {
  for (auto& s : sagas) {
    auto r = http_get(http_port, "/v1/sagas/" + s, 1000ms);
    if (!r || r->status != 200 || contains(r->body, R"("state":"SAGA_STATE_RUNNING")") ||
        contains(r->body, R"("state":"SAGA_STATE_COMPENSATING")"))
      return false;
  }
  return true;
}

/// Flags that keep a node's order events in its outbox: their route's broker
/// is unreachable, so every attempt fails, and with a 1 ms backoff and no
/// attempt limit to speak of they are due again at once after a restart.
strings held_in_outbox() {
  return {"--events.routes",
          "[orders.*=nats]",
          "--events.nats.servers",
          "[nats://127.0.0.1:1]",
          "--events.nats.connect_timeout",
          "100ms",
          "--events.relay.backoff",
          "1ms",
          "--events.relay.max_backoff",
          "1ms",
          "--events.relay.max_attempts",
          "1000000"};
}

/// Waits until the node's relay has made a full pass after publishing at
/// least `min_published` rows and the outbox is empty. The backlog gauge is
/// 0 in a new process before the first scan, so 0 alone proves nothing; once
/// a row was published, a scan set it and publishing counted it down.
bool drained(const order_node& n, double min_published, steady::time_point deadline,
             relay_metrics& seen) {
  return eventually(deadline, [&] {
    auto m = read_metrics(n.status_port());
    if (!m)
      return false;
    seen = *m;
    return m->published >= min_published && m->published >= 1 && m->backlog == 0;
  });
}

// -- nats-server ---------------------------------------------------------------

/// One event as a consumer received it.
struct received {
  std::string id;  ///< Nats-Msg-Id, or the embedded broker's message id
  std::string key; ///< the order id
  std::string destination;
  std::string event_type;
};

std::string header_of(natsMsg* msg, const char* name) {
  const char* v = nullptr;
  return natsMsgHeader_Get(msg, name, &v) == NATS_OK && v != nullptr ? v : "";
}

/// Every message of the stream, read by a durable pull consumer of the test
/// from the first one on, each acknowledged.
std::vector<received> consume_stream(const nats_client& c, steady::time_point deadline) {
  auto expected = c.stored(stream_name);
  REQUIRE(expected.has_value());
  natsSubscription* sub = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  REQUIRE(js_PullSubscribe(&sub, c.js, "orders.>", "outage-test", nullptr, nullptr,
                           &code) == NATS_OK);
  std::vector<received> out;
  while (out.size() < *expected && steady::now() < deadline) {
    natsMsgList list{};
    if (natsSubscription_Fetch(&list, sub, 256, 500, &code) != NATS_OK)
      continue;
    for (int i = 0; i < list.Count; ++i) {
      auto* msg = list.Msgs[i];
      out.push_back({header_of(msg, "Nats-Msg-Id"), header_of(msg, "Troupe-Event-Key"),
                     natsMsg_GetSubject(msg), header_of(msg, "event-type")});
      natsMsg_Ack(msg, nullptr);
    }
    natsMsgList_Destroy(&list);
  }
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  return out;
}

// -- the embedded broker of a node that has exited -----------------------------

/// Every message the embedded broker in the store at `store_path` holds in
/// `topics`, read through the product's broker spawned over that store: a
/// fresh consumer group starts at the oldest retained message. A marker
/// published last to each topic says when its group has seen everything.
std::vector<received> embedded_contents(const std::filesystem::path& store_path,
                                        const strings& topics) {
  constexpr const char* marker_id = "outage-test-marker";
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  troupe::store_settings s;
  s.path = store_path.string();
  auto db = troupe::store::open(s);
  auto store = troupe::spawn_store_actor(sys, db);
  auto broker = troupe::spawn_embedded_broker(sys, store);
  auto seen = std::make_shared<received_events>();
  auto consumer = sys.spawn(recording_consumer, seen);
  std::vector<received> out;
  {
    caf::scoped_actor self{sys};
    for (auto& topic : topics) {
      troupe::outbound_event marker;
      marker.id = marker_id;
      marker.destination = topic;
      std::string error;
      self->request(broker, 10s, troupe::publish_atom::value,
                    std::vector<troupe::outbound_event>{marker})
          .receive(
              [&](std::vector<std::string>& acks) {
                error = acks.size() == 1 ? acks[0] : "no acknowledgement";
              },
              [&](caf::error& err) { error = sys.render(err); });
      REQUIRE(error.empty());
      self->request(broker, 10s, troupe::subscribe_atom::value, topic,
                    std::string{"outage-test"}, troupe::event_subscriber{consumer})
          .receive(
              [](caf::ok_atom) {},
              [&](caf::error& err) { FAIL("cannot subscribe: " << sys.render(err)); });
    }
    auto markers = [&] {
      size_t n = 0;
      for (auto& d : seen->snapshot())
        n += d.event.id == marker_id ? 1 : 0;
      return n;
    };
    CHECK(eventually(within(10s), [&] { return markers() == topics.size(); }));
    for (auto& d : seen->snapshot())
      if (d.event.id != marker_id)
        out.push_back({d.event.id, d.event.key, d.topic,
                       d.event.header(troupe::event_headers::event_type)});
    for (caf::actor a :
         {caf::actor_cast<caf::actor>(consumer), caf::actor_cast<caf::actor>(broker),
          caf::actor_cast<caf::actor>(store)}) {
      self->send_exit(a, caf::exit_reason::user_shutdown);
      self->wait_for(a);
    }
  }
  // spawn_store_actor registered the store as the process's local store.
  sys.registry().erase(caf::atom("store"));
  return out;
}

// -- the guarantee -------------------------------------------------------------

/// Each order's end event exactly once: one message per event id, one per
/// order, and nothing else.
void check_each_order_once(const std::vector<received>& got,
                           const std::vector<std::string>& orders) {
  std::map<std::string, int> per_id;
  std::map<std::string, int> per_order;
  for (auto& r : got) {
    ++per_id[r.id];
    ++per_order[r.key];
    INFO("event " << r.id << " of order " << r.key << " on " << r.destination);
    CHECK(!r.id.empty());
    bool completed =
        r.destination == "orders.completed" && r.event_type == "order_completed";
    bool compensated =
        r.destination == "orders.compensated" && r.event_type == "order_compensated";
    CHECK((completed || compensated));
  }
  for (auto& [id, n] : per_id) {
    INFO("event id " << id);
    CHECK(n == 1);
  }
  for (auto& order : orders) {
    INFO("order " << order);
    CHECK(per_order[order] == 1);
  }
  CHECK(per_order.size() == orders.size());
  CHECK(got.size() == orders.size());
}

} // namespace

TEST_CASE("a NATS server stopped mid-stream backs the outbox up while the node keeps "
          "serving, and after its restart every order's event is in JetStream exactly "
          "once",
          "[events][nats]") {
  temp_dir dir;
  nats_server_process nats{dir.path() / "js", free_port()};
  nats.start();
  auto node = start_order_node(dir.path() / "store", nats_flags(nats.url()));

  auto orders = start_orders(node.http_port, "before", 5);
  // Mid-stream: the first event is in JetStream, the others may not be yet.
  nats_client observer{nats.url()};
  REQUIRE(observer.ok());
  REQUIRE(eventually(within(10s),
                     [&] { return observer.stored(stream_name).value_or(0) >= 1; }));
  nats.stop();

  // The node keeps serving: sagas start (and end) while their events wait.
  CHECK(http_status(node.status_port(), "/healthz") == 200);
  auto during = start_orders(node.http_port, "during", 3);
  orders.insert(orders.end(), during.begin(), during.end());
  relay_metrics seen;
  bool backed_up = eventually(within(10s), [&] {
    auto m = read_metrics(node.status_port());
    seen = m.value_or(seen);
    return m && m->backlog >= 3;
  });
  INFO("published " << seen.published << ", backlog " << seen.backlog << "\noutput:\n"
                    << node->output());
  CHECK(backed_up);
  std::string readyz;
  bool failing = eventually(within(10s), [&] {
    auto r = http_get(node.status_port(), "/readyz");
    readyz = r ? r->body : "";
    return r && contains(r->body, "events route orders.* (nats): failing");
  });
  INFO("readyz:\n" << readyz);
  CHECK(failing);
  CHECK(http_status(node.status_port(), "/healthz") == 200);
  CHECK(node->running());

  nats.start();
  bool empty = eventually(within(15s), [&] {
    auto m = read_metrics(node.status_port());
    seen = m.value_or(seen);
    return m && m->published >= 8 && m->backlog == 0;
  });
  INFO("published " << seen.published << ", backlog " << seen.backlog);
  REQUIRE(empty);
  CHECK(seen.published == 8);
  nats_client consumer{nats.url()};
  REQUIRE(consumer.ok());
  check_each_order_once(consume_stream(consumer, within(10s)), orders);
}

TEST_CASE("events committed while the NATS server is down survive a kill -9 of the "
          "node and are each published once after the restart",
          "[events][nats]") {
  temp_dir dir;
  nats_server_process nats{dir.path() / "js", free_port()};
  auto store = dir.path() / "store";
  auto node = start_order_node(store, nats_flags(nats.url()));
  std::vector<std::string> sagas;
  auto orders = start_orders(node.http_port, "order", 5, &sagas);
  // Committed: every saga ended, and the relay sees all five rows failing.
  CHECK(eventually(within(10s), [&] { return all_ended(node.http_port, sagas); }));
  relay_metrics seen;
  bool committed = eventually(within(10s), [&] {
    auto m = read_metrics(node.status_port());
    seen = m.value_or(seen);
    return m && m->backlog == 5;
  });
  INFO("published " << seen.published << ", backlog " << seen.backlog);
  REQUIRE(committed);
  CHECK(seen.published == 0);
  kill_hard(node);

  nats.start();
  node = start_order_node(store, nats_flags(nats.url()));
  bool empty = drained(node, 5, within(15s), seen);
  INFO("published " << seen.published << ", backlog " << seen.backlog << "\noutput:\n"
                    << node->output());
  REQUIRE(empty);
  CHECK(seen.published == 5);
  nats_client consumer{nats.url()};
  REQUIRE(consumer.ok());
  check_each_order_once(consume_stream(consumer, within(10s)), orders);
}

TEST_CASE("a node killed -9 while it publishes its outbox to NATS publishes the rest "
          "after the restart, and JetStream keeps each event once",
          "[events][nats]") {
  constexpr int n = 60;
  temp_dir dir;
  nats_server_process nats{dir.path() / "js", free_port()};
  auto store = dir.path() / "store";
  // One row per publish call, one call at a time, 20 rows a second:
  // publishing 60 rows takes long enough to be killed in.
  auto flags = nats_flags(nats.url());
  for (auto* f : {"--events.relay.batch_size", "1", "--events.relay.max_in_flight", "1",
                  "--events.relay.max_rate", "20"})
    flags.emplace_back(f);
  auto node = start_order_node(store, flags);
  auto orders = start_orders(node.http_port, "order", n);
  relay_metrics seen;
  bool committed = eventually(within(20s), [&] {
    auto m = read_metrics(node.status_port());
    seen = m.value_or(seen);
    return m && m->backlog == n;
  });
  INFO("published " << seen.published << ", backlog " << seen.backlog);
  REQUIRE(committed);

  // The relay retries the rows at every poll: once the server is back, the
  // first message stored means publishing is under way, and the kill lands
  // before the relay has got through the rest.
  nats.start();
  nats_client observer{nats.url()};
  REQUIRE(observer.ok());
  bool started = eventually(
      within(10s), [&] { return observer.stored(stream_name).value_or(0) >= 1; }, 1ms);
  REQUIRE(started);
  kill_hard(node);
  auto stored_before = observer.stored(stream_name).value_or(0);
  INFO("stored when the node died: " << stored_before);
  // The kill was during publishing, not after it.
  REQUIRE(stored_before >= 1);
  REQUIRE(stored_before < static_cast<uint64_t>(n));

  node = start_order_node(store, nats_flags(nats.url()));
  bool empty = drained(node, 1, within(15s), seen);
  INFO("published after the restart " << seen.published << ", backlog " << seen.backlog
                                      << "\noutput:\n"
                                      << node->output());
  REQUIRE(empty);
  // Every row went out before the kill or after the restart; rows stored
  // but not yet recorded went twice, and JetStream's dedupe on Nats-Msg-Id
  // absorbed them.
  CHECK(seen.published + static_cast<double>(stored_before) >= n);
  CHECK(observer.stored(stream_name) == static_cast<uint64_t>(n));
  check_each_order_once(consume_stream(observer, within(10s)), orders);
}

TEST_CASE("events committed to the embedded broker's outbox survive a kill -9 of the "
          "node before the relay publishes them and are each in the broker once after "
          "the restart",
          "[events]") {
  temp_dir dir;
  auto store = dir.path() / "store";
  auto node = start_order_node(store, held_in_outbox());
  std::vector<std::string> sagas;
  auto orders = start_orders(node.http_port, "order", 5, &sagas);
  REQUIRE(eventually(within(10s), [&] { return all_ended(node.http_port, sagas); }));
  auto before = read_metrics(node.status_port());
  REQUIRE(before.has_value());
  INFO("a relay that publishes right after the commit needs another way to hold rows");
  REQUIRE(before->published == 0);
  kill_hard(node);

  node = start_order_node(store, {});
  relay_metrics seen;
  bool empty = drained(node, 5, within(15s), seen);
  INFO("published after the restart " << seen.published << ", backlog " << seen.backlog
                                      << "\noutput:\n"
                                      << node->output());
  REQUIRE(empty);
  CHECK(seen.published == 5);
  kill_hard(node);
  check_each_order_once(
      embedded_contents(store, {"orders.completed", "orders.compensated"}), orders);
}

TEST_CASE("a node killed -9 while its relay publishes to the embedded broker publishes "
          "the rest after the restart, and the broker keeps each event once",
          "[events]") {
  constexpr int n = 40;
  temp_dir dir;
  auto store = dir.path() / "store";
  auto node = start_order_node(store, held_in_outbox());
  std::vector<std::string> sagas;
  auto orders = start_orders(node.http_port, "order", n, &sagas);
  REQUIRE(eventually(within(20s), [&] { return all_ended(node.http_port, sagas); }));
  kill_hard(node);

  // The next start publishes five rows a second: publishing takes long
  // enough to be killed in.
  node = start_order_node(store, {"--events.relay.max_rate", "5"});
  relay_metrics seen;
  bool publishing = eventually(
      within(10s),
      [&] {
        auto m = read_metrics(node.status_port());
        seen = m.value_or(seen);
        return m && m->published >= 1;
      },
      1ms);
  REQUIRE(publishing);
  kill_hard(node);
  INFO("published before the kill: at least " << seen.published);
  REQUIRE(seen.published < n);

  node = start_order_node(store, {});
  bool empty = drained(node, 1, within(15s), seen);
  INFO("published after the second restart " << seen.published << ", backlog "
                                             << seen.backlog);
  REQUIRE(empty);
  kill_hard(node);
  check_each_order_once(
      embedded_contents(store, {"orders.completed", "orders.compensated"}), orders);
}

TEST_CASE(
    "a service subscribed through a JetStream durable consumer applies each order's "
    "end event once, and a restarted node does not apply them again",
    "[events][nats]") {
  temp_dir dir;
  nats_server_process nats{dir.path() / "js", free_port()};
  nats.start();
  auto store = dir.path() / "store";
  auto services = std::string{"[sagas, orders, inventory, payment, shipping, gateway, "
                              "events, order_notifications]"};
  auto node = start_order_node(store, nats_flags(nats.url()), services);
  start_orders(node.http_port, "sub", 4);
  bool notified = eventually(within(20s), [&] {
    return node->count_lines("notifications: customer c-1 told order sub-") >= 4;
  });
  auto readyz = http_get(node.status_port(), "/readyz");
  INFO("output:\n" << node->output() << "\nreadyz:\n" << (readyz ? readyz->body : ""));
  REQUIRE(notified);
  CHECK(node->count_lines("notifications: customer c-1 told order sub-") == 4);
  REQUIRE(readyz);
  CHECK(contains(readyz->body, "events subscription orders.completed (nats, group "
                               "order-notifications): subscribed"));
  // The service logs before its inbox commits and acknowledges after: killed
  // before the acknowledgements, it would rightly be told again.
  nats_client observer{nats.url()};
  bool acknowledged = eventually(within(20s), [&] {
    return observer.settled(stream_name, "order-notifications-orders_completed");
  });
  REQUIRE(acknowledged);
  kill_hard(node);

  auto again = start_order_node(store, nats_flags(nats.url()), services);
  start_orders(again.http_port, "after", 1);
  // The durable consumer delivers in stream order: once the new order's
  // notice is there, any redelivery of the earlier ones came before it.
  bool later = eventually(
      within(20s), [&] { return contains(again->output(), "told order after-1 ships"); });
  INFO("output after the restart:\n" << again->output());
  REQUIRE(later);
  CHECK(again->count_lines("told order sub-") == 0);
  nats.stop();
}
