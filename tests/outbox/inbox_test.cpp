#include <chrono>
#include <map>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include <troupe/outbox/inbox.hpp>

#include "outbox/events_fixture.hpp"
#include "outbox/test_events.hpp"

using namespace std::chrono_literals;
using troupe::store_column;
using troupe::test::order_shipped;

namespace {

troupe::delivered_event shipment(std::string id, std::string order, int32_t qty) {
  troupe::delivered_event d;
  d.topic = "orders.shipped";
  d.event.id = std::move(id);
  d.event.destination = "orders.shipped";
  d.event.key = order;
  d.event.headers = {
      {troupe::event_headers::content_type, troupe::caf_binary_content_type},
      {troupe::event_headers::event_type, "order_shipped"}};
  d.event.payload = troupe::encode_event(order_shipped{order, qty});
  return d;
}

/// The consumer's state: units shipped per order, kept by the handler (the
/// consumer calls it one message at a time) and written with each message.
auto count_units() {
  auto totals = std::make_shared<std::map<std::string, int>>();
  return [totals](const order_shipped& ev, const troupe::delivered_event&,
                  troupe::outbox_transaction& tx) {
    auto& total = (*totals)[ev.order_id];
    total += ev.quantity;
    tx.put("shipped/" + ev.order_id, std::to_string(total));
  };
}

bool deliver(troupe::test::events_fixture& f, const troupe::inbox_consumer_actor& c,
             troupe::delivered_event d) {
  caf::scoped_actor self{*f.sys};
  bool ok = false;
  self->request(c, 5s, troupe::deliver_atom::value, std::move(d))
      .receive([&](caf::ok_atom) { ok = true; }, [](caf::error&) {});
  return ok;
}

/// The batch form of count_units: also counts the handler's calls and the
/// events each got.
auto count_units_in_batches(std::shared_ptr<std::vector<size_t>> calls) {
  auto totals = std::make_shared<std::map<std::string, int>>();
  return [totals, calls](std::vector<order_shipped>& events,
                         const std::vector<const troupe::delivered_event*>&,
                         troupe::outbox_transaction& tx) {
    calls->push_back(events.size());
    for (auto& ev : events) {
      auto& total = (*totals)[ev.order_id];
      total += ev.quantity;
      tx.put("shipped/" + ev.order_id, std::to_string(total));
    }
  };
}

/// What the batch consumer answered: how many it handled, or -1 on an error.
int deliver_batch(troupe::test::events_fixture& f,
                  const troupe::inbox_batch_consumer_actor& c,
                  std::vector<troupe::delivered_event> batch) {
  caf::scoped_actor self{*f.sys};
  int handled = -1;
  self->request(c, 5s, troupe::deliver_batch_atom::value, std::move(batch))
      .receive([&](uint32_t n) { handled = static_cast<int>(n); }, [](caf::error&) {});
  return handled;
}

troupe::inbox_settings settings_for(std::string consumer) {
  troupe::inbox_settings s;
  s.consumer = std::move(consumer);
  return s;
}

} // namespace

TEST_CASE("the inbox applies a message once and acknowledges its redelivery without "
          "applying it") {
  troupe::test::events_fixture f;
  auto consumer = troupe::spawn_inbox_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, settings_for("billing"), count_units());
  CHECK(deliver(f, consumer, shipment("node-a:1", "7", 2)));
  CHECK(deliver(f, consumer, shipment("node-a:1", "7", 2)));
  CHECK(deliver(f, consumer, shipment("node-a:2", "7", 5)));
  CHECK(f.db->get(store_column::state, "shipped/7") == std::optional<std::string>{"7"});
  CHECK(f.db->get(store_column::inbox, "billing/node-a:1"));
  f.stop(consumer);
}

TEST_CASE("processed ids expire after the inbox retention") {
  troupe::test::events_fixture f;
  auto s = settings_for("billing");
  s.retention = 1ms;
  s.sweep_interval = 10ms;
  auto consumer = troupe::spawn_inbox_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, s, count_units());
  CHECK(deliver(f, consumer, shipment("node-a:1", "7", 2)));
  REQUIRE(troupe::test::eventually(
      [&] { return !f.db->get(store_column::inbox, "billing/node-a:1"); }));
  // Past the retention the id is forgotten, so the same id applies again.
  CHECK(deliver(f, consumer, shipment("node-a:1", "7", 2)));
  CHECK(f.db->get(store_column::state, "shipped/7") == std::optional<std::string>{"4"});
  f.stop(consumer);
}

TEST_CASE("a poison message goes to the dead-letter destination with its error and the "
          "next message is applied") {
  troupe::test::events_fixture f;
  auto consumer = troupe::spawn_inbox_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, settings_for("billing"), count_units());
  auto poison = shipment("node-a:1", "7", 2);
  poison.event.payload = "\x01not an order";
  CHECK(deliver(f, consumer, poison));
  CHECK(deliver(f, consumer, shipment("node-a:2", "7", 5)));
  CHECK(f.db->get(store_column::state, "shipped/7") == std::optional<std::string>{"5"});
  auto rows = f.rows(store_column::outbox);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].event.destination == "billing.dead-letters");
  CHECK(rows[0].event.payload == poison.event.payload);
  CHECK(rows[0].event.header(troupe::event_headers::error) ==
        "payload is not a valid order_shipped");
  CHECK(rows[0].event.header("original-id") == "node-a:1");
  // The poison id is recorded too: its redelivery is not dead-lettered twice.
  CHECK(deliver(f, consumer, poison));
  CHECK(f.rows(store_column::outbox).size() == 1);
  f.stop(consumer);
}

TEST_CASE("a consumed event's handler emits under the event's trace: the traceparent's "
          "trace id becomes the correlation id of what it emits") {
  troupe::test::events_fixture f;
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto consumer = troupe::spawn_inbox_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, settings_for("billing"),
      [](const order_shipped& ev, const troupe::delivered_event&,
         troupe::outbox_transaction& tx) { tx.emit("orders.billed", ev.order_id, ev); });
  auto d = shipment("node-b:1", "7", 2);
  d.event.headers.emplace_back(troupe::event_headers::traceparent,
                               "00-" + trace + "-00f067aa0ba902b7-01");
  REQUIRE(deliver(f, consumer, d));
  auto rows = f.rows(store_column::outbox);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].event.header(troupe::event_headers::correlation_id) == trace);
  auto tp = rows[0].event.header(troupe::event_headers::traceparent);
  CHECK(tp.substr(0, 36) == "00-" + trace + "-");
  CHECK(tp.size() == 55);
  f.stop(consumer);
}

TEST_CASE("an inbox batch consumer applies a batch's new events in one handler call and "
          "skips the ids it has applied before") {
  troupe::test::events_fixture f;
  auto calls = std::make_shared<std::vector<size_t>>();
  auto consumer = troupe::spawn_inbox_batch_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, settings_for("billing"),
      count_units_in_batches(calls));
  CHECK(deliver_batch(f, consumer,
                      {shipment("node-a:1", "7", 2), shipment("node-a:2", "7", 3),
                       shipment("node-a:3", "8", 1)}) == 3);
  // A redelivery overlapping the first batch, with an id repeated inside it.
  CHECK(deliver_batch(f, consumer,
                      {shipment("node-a:2", "7", 3), shipment("node-a:3", "8", 1),
                       shipment("node-a:4", "7", 10), shipment("node-a:4", "7", 10)}) ==
        4);
  CHECK(*calls == std::vector<size_t>{3, 1});
  CHECK(f.db->get(store_column::state, "shipped/7") == std::optional<std::string>{"15"});
  CHECK(f.db->get(store_column::state, "shipped/8") == std::optional<std::string>{"1"});
  for (auto id : {"node-a:1", "node-a:2", "node-a:3", "node-a:4"})
    CHECK(f.db->get(store_column::inbox, std::string{"billing/"} + id));
  // Nothing new at all: acknowledged without calling the handler.
  CHECK(deliver_batch(f, consumer, {shipment("node-a:1", "7", 2)}) == 1);
  CHECK(calls->size() == 2);
  f.stop(consumer);
}

TEST_CASE("a poison message in a batch goes to the dead-letter destination while the "
          "batch's other events are applied") {
  troupe::test::events_fixture f;
  auto calls = std::make_shared<std::vector<size_t>>();
  auto consumer = troupe::spawn_inbox_batch_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, settings_for("billing"),
      count_units_in_batches(calls));
  auto poison = shipment("node-a:2", "7", 2);
  poison.event.headers[1].second = "order_cancelled";
  CHECK(deliver_batch(
            f, consumer,
            {shipment("node-a:1", "7", 2), poison, shipment("node-a:3", "7", 5)}) == 3);
  CHECK(*calls == std::vector<size_t>{2});
  CHECK(f.db->get(store_column::state, "shipped/7") == std::optional<std::string>{"7"});
  auto rows = f.rows(store_column::outbox);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].event.destination == "billing.dead-letters");
  CHECK(rows[0].event.header(troupe::event_headers::error) ==
        "expected event type order_shipped, got 'order_cancelled'");
  CHECK(rows[0].event.header("original-id") == "node-a:2");
  CHECK(f.db->get(store_column::inbox, "billing/node-a:2"));
  f.stop(consumer);
}

TEST_CASE("an inbox batch consumer applies a batch only after the batch before it is "
          "committed") {
  troupe::test::events_fixture f;
  auto committed_before = std::make_shared<std::vector<bool>>();
  auto db = f.db;
  auto consumer = troupe::spawn_inbox_batch_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, settings_for("billing"),
      [committed_before, db](std::vector<order_shipped>&,
                             const std::vector<const troupe::delivered_event*>&,
                             troupe::outbox_transaction&) {
        // Whether the first batch's ids are durable when a batch is applied.
        committed_before->push_back(
            db->get(store_column::inbox, "billing/node-a:1").has_value());
      });
  // Two deliveries at once, as two partitions of one subscription send them.
  caf::scoped_actor self{*f.sys};
  auto first =
      self->request(consumer, 5s, troupe::deliver_batch_atom::value,
                    std::vector<troupe::delivered_event>{shipment("node-a:1", "7", 2),
                                                         shipment("node-a:2", "7", 1)});
  auto second =
      self->request(consumer, 5s, troupe::deliver_batch_atom::value,
                    std::vector<troupe::delivered_event>{shipment("node-a:3", "8", 4)});
  uint32_t handled = 0;
  first.receive([&](uint32_t n) { handled += n; }, [](caf::error&) {});
  second.receive([&](uint32_t n) { handled += n; }, [](caf::error&) {});
  CHECK(handled == 3);
  CHECK(*committed_before == std::vector<bool>{false, true});
  f.stop(consumer);
}
