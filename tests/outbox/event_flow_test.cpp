#include <chrono>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/outbox/inbox.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/outbox/relay.hpp>

#include "outbox/events_fixture.hpp"
#include "outbox/test_events.hpp"

using namespace std::chrono_literals;
using troupe::store_column;
using troupe::test::order_shipped;

TEST_CASE("events committed with state changes reach an inbox consumer once, even when "
          "the relay publishes them again") {
  troupe::test::events_fixture f;
  std::vector<troupe::outbound_event> committed;
  for (int32_t i = 1; i <= 20; ++i) {
    troupe::outbox_transaction tx{f.sequence};
    tx.put("order/" + std::to_string(i), "shipped");
    tx.emit("orders.shipped", "order-" + std::to_string(i % 4), order_shipped{"o", i});
    auto batch = std::move(tx).take();
    committed.push_back(troupe::decode_outbox_row(batch.ops.back().value)->event);
    f.commit(std::move(batch));
  }
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  troupe::inbox_settings s;
  s.consumer = "billing";
  auto consumer = troupe::spawn_inbox_consumer_of<order_shipped>(
      *f.sys, f.store_handle, f.sequence, s,
      [total = std::make_shared<int>(0)](const order_shipped& ev,
                                         const troupe::delivered_event&,
                                         troupe::outbox_transaction& tx) {
        *total += ev.quantity;
        tx.put("total", std::to_string(*total));
      });
  caf::scoped_actor self{*f.sys};
  self->request(broker, 5s, troupe::subscribe_atom::value, std::string{"orders.shipped"},
                std::string{"billing"}, troupe::event_subscriber{consumer})
      .receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("subscribe failed"); });

  // What a relay that crashed after the broker's ack and before deleting its
  // rows does on restart: it publishes the same rows again.
  self->request(broker, 5s, troupe::publish_atom::value, committed)
      .receive([](std::vector<std::string>&) {},
               [](caf::error&) { FAIL("publish failed"); });
  troupe::relay_settings rs;
  rs.poll_interval = 20ms;
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle, broker, rs);

  REQUIRE(troupe::test::eventually([&] { return f.rows(store_column::outbox).empty(); }));
  REQUIRE(troupe::test::eventually([&] {
    return f.db->get(store_column::state, "total") == std::optional<std::string>{"210"};
  }));
  // Every message id reached the topic once.
  auto log = f.scan(store_column::state, std::string{"broker/log/orders.shipped"} + '\0');
  CHECK(log.size() == 20);
  f.stop(relay);
  f.stop(broker);
  f.stop(consumer);
}
