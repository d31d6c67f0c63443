// Must not compile: the payment service does not handle schedule_shipment.
#include "common.hpp"

namespace sagatest {

std::shared_ptr<const troupe::saga_definition> broken() {
  return reserve_step()
      .step("charge", troupe::via<payment_actor>("payment"),
            [](const order& o, const stock_reserved& r) {
              return schedule_shipment{o.order_id, r.reservation_id, {}};
            })
      .build();
}

} // namespace sagatest
