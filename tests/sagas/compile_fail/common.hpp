#pragma once

// Shared by the compile-fail checks: each file defines one saga that must
// (or, for compiles.cpp, must not) be rejected by saga_definition.hpp.

#include <troupe/sagas/saga_definition.hpp>

#include "../order_services.hpp"

namespace sagatest {

inline auto reserve_step() {
  return troupe::saga<order>("order", 1)
      .step(
          "reserve", troupe::via<inventory_actor>("inventory"),
          [](const order& o) {
            return reserve_stock{o.order_id, o.sku, o.quantity};
          },
          troupe::compensate([](const order& o, const stock_reserved& r) {
            return release_stock{o.order_id, r.reservation_id};
          }));
}

} // namespace sagatest
