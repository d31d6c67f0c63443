#include "sample_api.hpp"

#include <stdexcept>

#include <greeter/greeter_api.pb.h>
#include <orders/orders_api.pb.h>

#include "greeter/greeter.hpp"
#include "orders/orders.hpp"

namespace samples {

namespace {

namespace orders_v1 = troupe::samples::orders::v1;
namespace greeter_v1 = troupe::samples::greeter::v1;

void require_text(const std::string& value, const char* field, size_t max = 128) {
  if (value.empty())
    throw std::invalid_argument(std::string{field} + " is required");
  if (value.size() > max)
    throw std::invalid_argument(std::string{field} + " is longer than " +
                                std::to_string(max) + " bytes");
}

orders::order order_from(const orders_v1::Order& in) {
  require_text(in.order_id(), "orderId");
  require_text(in.customer(), "customer");
  require_text(in.sku(), "sku");
  if (in.quantity() < 1 || in.quantity() > 1000)
    throw std::invalid_argument("quantity must be between 1 and 1000");
  return orders::order{in.order_id(), in.customer(), in.sku(), in.quantity()};
}

orders_v1::Order order_to(const orders::order& o) {
  orders_v1::Order out;
  out.set_order_id(o.order_id);
  out.set_customer(o.customer);
  out.set_sku(o.sku);
  out.set_quantity(o.quantity);
  return out;
}

greeter::greet greet_from(const greeter_v1::Greet& in) {
  require_text(in.name(), "name");
  return greeter::greet{in.name()};
}

greeter_v1::Greet greet_to(const greeter::greet& g) {
  greeter_v1::Greet out;
  out.set_name(g.name);
  return out;
}

greeter_v1::Greeting greeting_to(const greeter::greeting& g) {
  greeter_v1::Greeting out;
  out.set_text(g.text);
  out.set_greeted_by(g.greeted_by);
  return out;
}

} // namespace

std::shared_ptr<troupe::gateways::api_catalog> sample_api() {
  auto api = std::make_shared<troupe::gateways::api_catalog>();
  api->expose_saga<orders::order, orders_v1::Order>("order_processing", order_from,
                                                    order_to)
      .expose_saga<greeter::greet, greeter_v1::Greet>("greeting", greet_from, greet_to)
      .expose_call<greeter::greeter_actor, greeter::greet, greeter::greeting,
                   greeter_v1::Greet, greeter_v1::Greeting>("greeter", "greet",
                                                            greet_from, greeting_to);
  return api;
}

} // namespace samples
