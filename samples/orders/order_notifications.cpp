// Tells customers how their order ended: a consumer of the order saga's end
// events, applying each event once (an inbox) whatever the broker redelivers.

#include "orders.hpp"

#include <spdlog/spdlog.h>

#include <troupe/gateways/event_bus.hpp>
#include <troupe/outbox/outbox_transaction.hpp>

namespace orders {

namespace {

// Competing consumers: nodes running this component share the events.
constexpr const char* notifications_group = "order-notifications";

struct notifications_state {
  static inline const char* name = "order_notifications";
  notifications_state() = default;
  troupe::inbox_consumer_actor completed;
  troupe::inbox_consumer_actor compensated;
};

} // namespace

caf::actor spawn_order_notifications(caf::actor_system& sys, const troupe::config&) {
  return sys.spawn([](caf::stateful_actor<notifications_state>* self) -> caf::behavior {
    auto& sys = self->system();
    // The notice is recorded in the batch that marks the event applied, so a
    // customer is told once even if the node dies right after telling.
    self->state.completed = troupe::gateways::subscribe_events_of<order_completed>(
        sys, "orders.completed", notifications_group,
        [](const order_completed& e, const troupe::delivered_event&,
           troupe::outbox_transaction& tx) {
          spdlog::info("notifications: customer {} told order {} ships ({} x {})",
                       e.customer, e.order_id, e.quantity, e.sku);
          tx.put("notifications/" + e.order_id, "completed");
        });
    self->state.compensated = troupe::gateways::subscribe_events_of<order_compensated>(
        sys, "orders.compensated", notifications_group,
        [](const order_compensated& e, const troupe::delivered_event&,
           troupe::outbox_transaction& tx) {
          spdlog::info("notifications: order {} did not go through ({}: {})", e.order_id,
                       e.status, e.reason);
          tx.put("notifications/" + e.order_id, e.status);
        });
    // Linked: the consumers end with this component, and one failing
    // restarts the component, which subscribes again.
    self->link_to(self->state.completed);
    self->link_to(self->state.compensated);
    return {[](caf::ok_atom) {}};
  });
}

} // namespace orders
