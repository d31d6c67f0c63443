// The order_processing saga: validate → reserve → charge → ship; a failure
// releases the stock and refunds the payment, last step first.

#include "orders.hpp"

#include <spdlog/spdlog.h>

#include <troupe/gateways/event_bus.hpp>
#include <troupe/outbox/outbox_transaction.hpp>

namespace orders {

using namespace std::chrono_literals;
using troupe::compensate;
using troupe::via;

namespace {

// The end's event joins the batch that records the end: the outbox relay
// publishes it once that batch is durable, never for an end that was not.
void emit_end(caf::actor_system& sys, const order& o, const troupe::saga_snapshot& ended,
              troupe::write_batch& batch) {
  auto bus = troupe::gateways::local_event_bus(sys);
  if (!bus.sequence) {
    spdlog::warn("order {}: no event sequence on this node (no store?): its end "
                 "event is not emitted",
                 o.order_id);
    return;
  }
  troupe::outbox_transaction tx{bus.sequence};
  if (ended.status == troupe::saga_status::completed)
    tx.emit("orders.completed", o.order_id,
            order_completed{o.order_id, o.customer, o.sku, o.quantity});
  else
    tx.emit("orders.compensated", o.order_id,
            order_compensated{o.order_id, troupe::to_string(ended.status), ended.reason});
  batch.append(std::move(tx).take());
}

} // namespace

std::shared_ptr<const troupe::saga_definition> order_processing() {
  // clang-format off: a definition keeps the shape of the process, a block a step.
  return troupe::saga<order>("order_processing", 1)
      .step("validate", via<orders_actor>("orders"),
            [](const order& o) {
              return validate_order{o.order_id, o.sku, o.quantity};
            })
      .step(
          "reserve", via<inventory_actor>("inventory"),
          [](const order& o) {
            return reserve_stock{o.order_id, o.sku, o.quantity};
          },
          compensate(
              [](const stock_reserved& r) { return release_stock{r.reservation_id}; }))
      .step(
          "charge", via<payment_actor>("payment"),
          [](const order& o, const order_validated& v) {
            return charge_card{o.order_id, o.customer, v.total_cents};
          },
          compensate([](const card_charged& c) {
            return refund_payment{c.payment_id, c.amount_cents};
          }),
          troupe::step_timeout(2s), troupe::step_retry{3, 100ms})
      .step("ship", via<shipping_actor>("shipping"),
            [](const order& o, const stock_reserved& r) {
              return schedule_shipment{o.order_id, r.reservation_id, o.customer};
            })
      .deadline(30s)
      .on_end(emit_end)
      .build();
  // clang-format on
}

} // namespace orders
