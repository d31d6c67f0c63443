#pragma once

#include <cstdint>
#include <string>

#include <caf/meta/type_name.hpp>

namespace troupe::test {

/// The event the tests publish and consume.
struct order_shipped {
  std::string order_id;
  int32_t quantity = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, order_shipped& x) {
  return f(caf::meta::type_name("order_shipped"), x.order_id, x.quantity);
}

} // namespace troupe::test
