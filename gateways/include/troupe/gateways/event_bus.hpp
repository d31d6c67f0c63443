#pragma once

// Adds the event bus to a node: the outbox relay publishing the node's
// committed events through the brokers `events.routes` names (the embedded
// broker unless a route says otherwise), so services only write
// outbox_transactions and subscribe.

#include <memory>

#include <caf/fwd.hpp>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/outbox/outbox_sequence.hpp>
#include <troupe/outbox/relay.hpp>
#include <troupe/runtime/config.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe {
class node;
}

namespace troupe::gateways {

/// Declares the events.* keys and the component "events", which runs where
/// services.enabled names it and needs the node's store. A bad route or
/// broker setting stops the node with exit code 2 naming the key; a broker
/// that cannot be reached is not fatal: rows wait in the outbox and
/// `/readyz` shows the route failing.
void add_event_bus(node& n);

/// What services of this node use to publish and subscribe: all valid once
/// the component "events" runs (`sequence` from the store's opening on).
struct event_bus_handles {
  std::shared_ptr<outbox_sequence> sequence;
  store_actor store;
  relay_actor relay;            ///< send relay_wake_atom after a commit with events
  embedded_broker_actor broker; ///< subscribe here to embedded destinations
};

event_bus_handles local_event_bus(caf::actor_system& sys);

/// Declares `events.embedded.*` (retention, redelivery).
void declare_embedded_broker_config(config_schema& schema);
embedded_broker_settings embedded_broker_settings_from(const config& cfg);

} // namespace troupe::gateways
