#pragma once

// Adds the event bus to a node: the outbox relay publishing the node's
// committed events through the brokers `events.routes` names (the embedded
// broker unless a route says otherwise), so services only write
// outbox_transactions and subscribe.

#include <chrono>
#include <memory>
#include <string>

#include <caf/fwd.hpp>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/outbox/inbox.hpp>
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
  std::chrono::milliseconds inbox_retention{std::chrono::hours(24 * 7)};
};

event_bus_handles local_event_bus(caf::actor_system& sys);

/// Subscribes `consumer` to `destination` as a member of consumer group
/// `group`, through the broker `events.routes` names for the destination: a
/// group of the embedded broker, a Kafka consumer group, or a JetStream
/// durable pull consumer "<group>-<destination>" (dots as '_') on the stream
/// that holds the subject (a core NATS queue group when events.nats.jetstream is off).
/// Takes effect once this node's event bus runs and again after each of its
/// restarts; ends when the consumer terminates. Failures are logged and
/// listed in `/readyz`.
void subscribe_events(caf::actor_system& sys, std::string destination, std::string group,
                      event_consumer_actor consumer);

/// A service's subscription in one call: an inbox consumer (named after
/// `group`, so each message id is applied once) whose `handle(event,
/// delivery, tx)` writes its state change into `tx`, subscribed as above.
/// Messages that are not an `Event` go to `<group>.dead-letters`.
template <class Event, class Handler>
inbox_consumer_actor subscribe_events_of(caf::actor_system& sys, std::string destination,
                                         std::string group, Handler handle) {
  auto bus = local_event_bus(sys);
  inbox_settings s;
  s.consumer = group;
  s.retention = bus.inbox_retention;
  auto consumer = spawn_inbox_consumer_of<Event>(sys, bus.store, bus.sequence,
                                                 std::move(s), std::move(handle));
  subscribe_events(sys, std::move(destination), std::move(group),
                   caf::actor_cast<event_consumer_actor>(consumer));
  return consumer;
}

/// Subscribes a batch consumer as subscribe_events does: each delivery
/// carries up to `max_batch` events that the broker has ready, in the order
/// of one partition (or subject); what the consumer answers it handled is
/// acknowledged, the rest delivered again.
void subscribe_event_batches(caf::actor_system& sys, std::string destination,
                             std::string group, event_batch_consumer_actor consumer,
                             uint32_t max_batch);

/// A stream processor's subscription in one call: an inbox batch consumer
/// whose `handle(events, deliveries, tx)` applies up to `max_batch` new
/// events in one write_batch, subscribed as above. Messages that are not an
/// `Event` go to `<group>.dead-letters`.
template <class Event, class Handler>
inbox_batch_consumer_actor
subscribe_event_batches_of(caf::actor_system& sys, std::string destination,
                           std::string group, uint32_t max_batch, Handler handle) {
  auto bus = local_event_bus(sys);
  inbox_settings s;
  s.consumer = group;
  s.retention = bus.inbox_retention;
  auto consumer = spawn_inbox_batch_consumer_of<Event>(sys, bus.store, bus.sequence,
                                                       std::move(s), std::move(handle));
  subscribe_event_batches(sys, std::move(destination), std::move(group),
                          caf::actor_cast<event_batch_consumer_actor>(consumer),
                          max_batch);
  return consumer;
}

/// Declares `events.embedded.*` (retention, redelivery).
void declare_embedded_broker_config(config_schema& schema);
embedded_broker_settings embedded_broker_settings_from(const config& cfg);

} // namespace troupe::gateways
