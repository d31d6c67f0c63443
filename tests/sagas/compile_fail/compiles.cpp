// Positive control: a correct definition compiles with the flags the
// compile-fail checks use, so their failures are the static_asserts'.
#include "common.hpp"

namespace sagatest {

std::shared_ptr<const troupe::saga_definition> control() {
  return reserve_step()
      .step(
          "charge", troupe::via<payment_actor>("payment"),
          [](const order& o, const stock_reserved& r) {
            return charge_card{o.order_id, o.amount, r.reservation_id};
          },
          troupe::compensate(
              [](const card_charged& c) { return refund_card{c.charge_id}; }))
      .build();
}

} // namespace sagatest
