// troupe-node: the stock node, written the way any user's node is written.
// Which of its services a process runs is configuration (services.enabled).

#include <troupe/gateways/event_bus.hpp>
#include <troupe/gateways/gateways.hpp>
#include <troupe/runtime/node.hpp>
#include <troupe/sagas/saga_manager.hpp>

#include "greeter/greeter.hpp"
#include "orders/orders.hpp"
#include "sample_api.hpp"

int main(int argc, char** argv) {
  troupe::node node{"troupe-node"};
  greeter::add_messages(node.messages());
  greeter::declare_config(node.schema());
  node.service<greeter::greeter_actor>("greeter", greeter::spawn_greeter);
  node.actor("caller", greeter::spawn_caller, troupe::restart_policy::transient);

  orders::add_messages(node.messages());
  orders::declare_config(node.schema());
  node.service<orders::orders_actor>("orders", orders::spawn_orders);
  node.service<orders::inventory_actor>("inventory", orders::spawn_inventory);
  node.service<orders::payment_actor>("payment", orders::spawn_payment);
  node.service<orders::shipping_actor>("shipping", orders::spawn_shipping);
  troupe::add_sagas(node, {orders::order_processing(), greeter::greeting_saga()});
  // The public API (gRPC and HTTP) runs where services.enabled names "gateway".
  troupe::gateways::add_gateways(node, samples::sample_api());
  // The outbox relay and the embedded broker run where services.enabled names "events".
  troupe::gateways::add_event_bus(node);
  node.actor("orders_client", orders::spawn_orders_client,
             troupe::restart_policy::transient);
  node.actor("orders_auditor", orders::spawn_auditor, troupe::restart_policy::temporary);
  node.actor("order_notifications", orders::spawn_order_notifications);
  node.actor("order_sales", orders::spawn_order_sales);
  node.actor("sales_report", orders::spawn_sales_report,
             troupe::restart_policy::temporary);
  // Sagas need a store path, the client, auditor and report are load and
  // checks, notifications and sales need the event bus: each runs only where
  // services.enabled names it.
  node.only_when_named(troupe::saga_manager_name)
      .only_when_named("orders_client")
      .only_when_named("orders_auditor")
      .only_when_named("order_notifications")
      .only_when_named("order_sales")
      .only_when_named("sales_report");
  return node.run(argc, argv);
}
