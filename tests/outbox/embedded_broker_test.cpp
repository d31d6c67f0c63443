#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/runtime/errors.hpp>

#include "outbox/events_fixture.hpp"

using namespace std::chrono_literals;

namespace {

troupe::outbound_event event(std::string id, std::string key) {
  troupe::outbound_event ev;
  ev.id = std::move(id);
  ev.destination = "orders.shipped";
  ev.key = std::move(key);
  ev.payload = "payload of " + ev.id;
  return ev;
}

std::vector<std::string> publish(troupe::test::events_fixture& f,
                                 const troupe::embedded_broker_actor& broker,
                                 std::vector<troupe::outbound_event> events) {
  caf::scoped_actor self{*f.sys};
  std::vector<std::string> acks;
  self->request(broker, 5s, troupe::publish_atom::value, std::move(events))
      .receive([&](std::vector<std::string>& a) { acks = std::move(a); },
               [](caf::error&) { FAIL("publish failed"); });
  return acks;
}

/// Subscribes a consumer of single events, or of batches
/// (`{batch_consumer, max_batch}`), to orders.shipped.
void subscribe(troupe::test::events_fixture& f,
               const troupe::embedded_broker_actor& broker, std::string group,
               troupe::event_subscriber consumer) {
  caf::scoped_actor self{*f.sys};
  self->request(broker, 5s, troupe::subscribe_atom::value, std::string{"orders.shipped"},
                std::move(group), std::move(consumer))
      .receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("subscribe failed"); });
}

std::vector<troupe::outbound_event> numbered(int n) {
  std::vector<troupe::outbound_event> events;
  for (int i = 0; i < n; ++i)
    events.push_back(event("n:" + std::to_string(i), "k" + std::to_string(i % 3)));
  return events;
}

} // namespace

TEST_CASE("a batch consumer gets a topic's backlog in append order, in batches of at "
          "most its batch size") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  publish(f, broker, numbered(25));
  auto seen = std::make_shared<troupe::test::received_batches>();
  auto consumer = f.sys->spawn(troupe::test::recording_batch_consumer, seen);
  subscribe(f, broker, "analytics", {consumer, 10});
  REQUIRE(seen->wait_for(25));
  auto batches = seen->batches_seen();
  CHECK(troupe::test::largest(batches) == 10);
  CHECK(batches.size() == 3);
  auto got = seen->handled_events();
  REQUIRE(got.size() == 25);
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i].offset == i);
  f.stop(broker);
  f.stop(consumer);
}

TEST_CASE(
    "the part of a batch its consumer did not handle is delivered again, first, and "
    "the group's offset moves past what it handled only") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  publish(f, broker, numbered(12));
  auto seen = std::make_shared<troupe::test::received_batches>();
  seen->short_answers = 1;
  seen->short_count = 4;
  auto consumer = f.sys->spawn(troupe::test::recording_batch_consumer, seen);
  subscribe(f, broker, "reports", {consumer, 8});
  REQUIRE(seen->wait_for(12));
  auto batches = seen->batches_seen();
  REQUIRE(batches.size() >= 2);
  CHECK(batches[0].front().offset == 0);
  CHECK(batches[1].front().offset == 4);
  auto got = seen->handled_events();
  REQUIRE(got.size() == 12);
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i].offset == i);
  // The broker hears the last answer after the consumer recorded it.
  CHECK(troupe::test::eventually([] {
    return troupe::test::metric_value("troupe_events_consumer_lag",
                                      {{"broker", "embedded"}, {"group", "reports"}}) ==
           0;
  }));
  f.stop(broker);
  f.stop(consumer);
}

TEST_CASE("a consumer group's committed offset survives a broker restart") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  CHECK(publish(f, broker, {event("n:1", "a"), event("n:2", "b"), event("n:3", "a")}) ==
        std::vector<std::string>(3));
  auto first = std::make_shared<troupe::test::received_events>();
  auto consumer = f.sys->spawn(troupe::test::recording_consumer, first);
  subscribe(f, broker, "audit", consumer);
  REQUIRE(first->wait_for(3));
  // The consumer records a delivery before it acknowledges it: once it has
  // terminated, its last acknowledgement waits in the broker's mailbox, and a
  // publish answered after it means the broker has sent that offset commit.
  f.stop(consumer);
  CHECK(publish(f, broker, {}).empty());
  f.stop(broker);
  // The store answers in order: once this commit is answered, the offset
  // commits sent before it are durable too.
  troupe::write_batch marker;
  marker.put(troupe::store_column::state, "test/marker", "1");
  f.commit(std::move(marker));

  broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  CHECK(publish(f, broker, {event("n:4", "a")}) == std::vector<std::string>(1));
  auto second = std::make_shared<troupe::test::received_events>();
  consumer = f.sys->spawn(troupe::test::recording_consumer, second);
  subscribe(f, broker, "audit", consumer);
  REQUIRE(second->wait_for(1));
  auto got = second->snapshot();
  CHECK(got[0].event.id == "n:4");
  CHECK(got[0].offset == 3);
  // A new group starts at the oldest retained message.
  auto third = std::make_shared<troupe::test::received_events>();
  auto other = f.sys->spawn(troupe::test::recording_consumer, third);
  subscribe(f, broker, "search", other);
  REQUIRE(third->wait_for(4));
  CHECK(third->snapshot()[0].event.id == "n:1");
  CHECK(second->snapshot().size() == 1);
  f.stop(broker);
  f.stop(consumer);
  f.stop(other);
}

TEST_CASE("the embedded broker acknowledges a re-published message id without appending "
          "it again, also after a restart") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  CHECK(publish(f, broker, {event("n:1", "a"), event("n:1", "a")}) ==
        std::vector<std::string>(2));
  f.stop(broker);
  broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  CHECK(publish(f, broker, {event("n:1", "a"), event("n:2", "a")}) ==
        std::vector<std::string>(2));
  auto seen = std::make_shared<troupe::test::received_events>();
  auto consumer = f.sys->spawn(troupe::test::recording_consumer, seen);
  subscribe(f, broker, "audit", consumer);
  REQUIRE(seen->wait_for(2));
  // The next publish wakes the group; it must not bring a third copy of n:1.
  CHECK(publish(f, broker, {event("n:3", "a")}) == std::vector<std::string>(1));
  REQUIRE(seen->wait_for(3));
  auto got = seen->snapshot();
  REQUIRE(got.size() == 3);
  CHECK(got[0].event.id == "n:1");
  CHECK(got[1].event.id == "n:2");
  CHECK(got[2].event.id == "n:3");
  f.stop(broker);
  f.stop(consumer);
}

TEST_CASE("competing consumers of one group share a topic and each message reaches one "
          "of them") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  auto seen = std::make_shared<troupe::test::received_events>();
  auto one = f.sys->spawn(troupe::test::recording_consumer, seen);
  auto two = f.sys->spawn(troupe::test::recording_consumer, seen);
  subscribe(f, broker, "workers", one);
  subscribe(f, broker, "workers", two);
  std::vector<troupe::outbound_event> events;
  for (int i = 0; i < 10; ++i)
    events.push_back(event("n:" + std::to_string(i), "k" + std::to_string(i % 3)));
  publish(f, broker, events);
  REQUIRE(seen->wait_for(10));
  auto got = seen->snapshot();
  REQUIRE(got.size() == 10);
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i].offset == i);
  f.stop(broker);
  f.stop(one);
  f.stop(two);
}

TEST_CASE("a consumer group's lag is what the topic holds past its offset") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  auto seen = std::make_shared<troupe::test::received_events>();
  auto consumer = f.sys->spawn(troupe::test::recording_consumer, seen);
  // A group that never answers stays at offset 0.
  auto silent = f.sys->spawn([]() -> troupe::event_consumer_actor::behavior_type {
    return {
        [](troupe::deliver_atom, troupe::delivered_event&) -> caf::result<caf::ok_atom> {
          return caf::delegated<caf::ok_atom>{};
        }};
  });
  subscribe(f, broker, "lag-audit", consumer);
  subscribe(f, broker, "lag-stuck", silent);
  publish(f, broker, {event("l1", "a"), event("l2", "a"), event("l3", "b")});
  REQUIRE(seen->wait_for(3));
  auto lag_of = [](const char* group) {
    return troupe::test::metric_value(
        "troupe_events_consumer_lag",
        {{"broker", "embedded"}, {"topic", "orders.shipped"}, {"group", group}});
  };
  CHECK(troupe::test::eventually([&] { return lag_of("lag-audit") == 0; }));
  CHECK(troupe::test::eventually([&] { return lag_of("lag-stuck") == 3; }));
  f.stop(broker);
  caf::anon_send_exit(silent, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
}

TEST_CASE("a subscription naming no consumer is refused as bad input, and the group "
          "keeps serving its members") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  caf::scoped_actor self{*f.sys};
  caf::error refused;
  self->request(broker, 5s, troupe::subscribe_atom::value, std::string{"orders.shipped"},
                std::string{"audit"}, troupe::event_subscriber{})
      .receive([](caf::ok_atom) { FAIL("an empty subscription was taken"); },
               [&](caf::error& err) { refused = err; });
  CHECK(troupe::classify(refused) == troupe::errc::bad_input);

  auto seen = std::make_shared<troupe::test::received_events>();
  subscribe(f, broker, "audit", f.sys->spawn(troupe::test::recording_consumer, seen));
  publish(f, broker, numbered(3));
  CHECK(seen->wait_for(3));
  f.stop(broker);
}

TEST_CASE("a batch subscription asking for zero events at a time gets one at a time") {
  troupe::test::events_fixture f;
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  auto seen = std::make_shared<troupe::test::received_batches>();
  auto consumer = f.sys->spawn(troupe::test::recording_batch_consumer, seen);
  troupe::event_subscriber zero{consumer, 1};
  zero.max_batch = 0; // as a peer could send it
  subscribe(f, broker, "analytics", zero);
  publish(f, broker, numbered(4));
  REQUIRE(seen->wait_for(4));
  CHECK(troupe::test::largest(seen->batches_seen()) == 1);
  f.stop(broker);
}
