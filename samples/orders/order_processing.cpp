// The order_processing saga: validate → reserve → charge → ship; a failure
// releases the stock and refunds the payment, last step first.

#include "orders.hpp"

namespace orders {

using namespace std::chrono_literals;
using troupe::compensate;
using troupe::via;

std::shared_ptr<const troupe::saga_definition> order_processing() {
  // clang-format off: a definition keeps the shape of the process, a block a step.
  return troupe::saga<order>("order_processing", 1)
      .step("validate", via<orders_actor>("orders"),
            [](const order& o) { return validate_order{o.order_id, o.sku, o.quantity}; })
      .step("reserve", via<inventory_actor>("inventory"),
            [](const order& o) { return reserve_stock{o.order_id, o.sku, o.quantity}; },
            compensate([](const stock_reserved& r) {
              return release_stock{r.reservation_id}; }))
      .step("charge", via<payment_actor>("payment"),
            [](const order& o, const order_validated& v) {
              return charge_card{o.order_id, o.customer, v.total_cents}; },
            compensate([](const card_charged& c) {
              return refund_payment{c.payment_id, c.amount_cents}; }),
            troupe::step_timeout(2s), troupe::step_retry{3, 100ms})
      .step("ship", via<shipping_actor>("shipping"),
            [](const order& o, const stock_reserved& r) {
              return schedule_shipment{o.order_id, r.reservation_id, o.customer}; })
      .deadline(30s)
      .build();
  // clang-format on
}

} // namespace orders
