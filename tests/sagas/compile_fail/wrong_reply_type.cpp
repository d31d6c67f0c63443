// Must not compile: the charge builder takes card_charged, which no earlier
// step replies (only reserve, with stock_reserved, runs before it).
#include "common.hpp"

namespace sagatest {

std::shared_ptr<const troupe::saga_definition> broken() {
  return reserve_step()
      .step("charge", troupe::via<payment_actor>("payment"),
            [](const order& o, const card_charged& c) {
              return charge_card{o.order_id, o.amount, c.charge_id};
            })
      .build();
}

} // namespace sagatest
