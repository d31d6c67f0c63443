// Must not compile: charge's compensation takes reserve's reply
// (stock_reserved), not its own step's (card_charged).
#include "common.hpp"

namespace sagatest {

std::shared_ptr<const troupe::saga_definition> broken() {
  return reserve_step()
      .step(
          "charge", troupe::via<payment_actor>("payment"),
          [](const order& o, const stock_reserved& r) {
            return charge_card{o.order_id, o.amount, r.reservation_id};
          },
          troupe::compensate(
              [](const stock_reserved& r) { return refund_card{r.reservation_id}; }))
      .build();
}

} // namespace sagatest
