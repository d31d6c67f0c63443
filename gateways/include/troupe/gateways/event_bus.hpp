#pragma once

// Adds the event bus to a node: the outbox relay publishing the node's
// committed events through the brokers `events.routes` names (the embedded
// broker unless a route says otherwise), so services only write
// outbox_transactions and subscribe.

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <type_traits>

#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/timespan.hpp>
#include <caf/typed_actor.hpp>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/outbox/event_codec.hpp>
#include <troupe/outbox/inbox.hpp>
#include <troupe/outbox/outbox_sequence.hpp>
#include <troupe/outbox/relay.hpp>
#include <troupe/runtime/config.hpp>
#include <troupe/runtime/errors.hpp>
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

/// The event bus as add_event_bus runs it (component "events"), over the
/// store actor the node registered; for embedding a bus without a node.
caf::actor spawn_event_bus(caf::actor_system& sys, const config& cfg);

/// Serves requests sent to `destination` (NATS wildcards allowed) through
/// the broker `events.routes` names for it: a NATS responder in queue group
/// `group`, or, on the embedded broker, one of this node's handlers of the
/// destination in turn. Kafka routes carry no requests: the subscription
/// is listed failing in `/readyz`. Ends when the handler terminates.
void serve_requests(caf::actor_system& sys, std::string destination, std::string group,
                    request_handler_actor handler);

/// A handler answering each `Request` with `handle(request)`, which returns
/// the Reply or a caf::expected<Reply>; its error, its exception, or a
/// request that is not a `Request` reaches the requester as errc::rejected.
template <class Request, class Handler>
request_handler_actor spawn_request_handler_of(caf::actor_system& sys, Handler handle);

/// A service answering requests in one call: spawn_request_handler_of, then
/// serve_requests.
template <class Request, class Handler>
request_handler_actor serve_requests_of(caf::actor_system& sys, std::string destination,
                                        std::string group, Handler handle) {
  auto handler = spawn_request_handler_of<Request>(sys, std::move(handle));
  serve_requests(sys, std::move(destination), std::move(group), handler);
  return handler;
}

using bus_request_atom = caf::atom_constant<caf::atom("evrequest")>;

/// How the bus takes requests: (destination, request, deadline) -> reply.
using bus_requests_actor =
    caf::typed_actor<caf::replies_to<bus_request_atom, std::string, std::string,
                                     caf::timespan>::with<std::string>>;

/// This node's running event bus; invalid while none runs.
bus_requests_actor bus_requests(caf::actor_system& sys);

/// The longest a request over the bus may wait, on the node that asks and
/// on the node that serves it.
inline constexpr auto longest_bus_request = std::chrono::hours(1);

/// Asks whoever serves `destination` through its broker, then calls
/// `on_reply(Reply&)` or `on_error(caf::error&)`: errc::timeout when no
/// reply came within `deadline`, errc::service_unavailable when nobody
/// serves the destination (or no event bus runs here: then at once),
/// errc::rejected with the responder's reason, or when the destination is
/// routed to Kafka or the reply is not a `Reply`.
template <class Reply, class Request, class Self, class OnReply, class OnError>
void request_over_bus(Self* self, std::string destination, const Request& request,
                      caf::timespan deadline, OnReply on_reply, OnError on_error) {
  auto bus = bus_requests(self->system());
  if (!bus) {
    caf::error err =
        make_error(errc::service_unavailable, "no event bus runs on this node");
    on_error(err);
    return;
  }
  // The bus answers by the deadline (at most the node serving it allows);
  // the margin only covers its own queue.
  deadline = std::clamp<caf::timespan>(deadline, caf::timespan{1}, longest_bus_request);
  self->request(bus, deadline + std::chrono::seconds(5), bus_request_atom::value,
                destination, encode_event(request), deadline)
      .then(
          [=](const std::string& bytes) mutable {
            if (auto reply = decode_event<Reply>(bytes)) {
              on_reply(*reply);
              return;
            }
            caf::error err =
                make_error(errc::rejected, "the reply from " + destination +
                                               " is not a " + event_type_name<Reply>());
            on_error(err);
          },
          [=](caf::error& err) mutable { on_error(err); });
}

/// Declares `events.embedded.*` (retention, redelivery).
void declare_embedded_broker_config(config_schema& schema);
embedded_broker_settings embedded_broker_settings_from(const config& cfg);

namespace detail {

template <class T>
struct is_expected : std::false_type {};
template <class T>
struct is_expected<caf::expected<T>> : std::true_type {};

} // namespace detail

template <class Request, class Handler>
request_handler_actor spawn_request_handler_of(caf::actor_system& sys, Handler handle) {
  return sys.spawn(
      [handle = std::move(handle)]() mutable -> request_handler_actor::behavior_type {
        return {
            [handle](serve_request_atom, const std::string& destination,
                     const std::string& payload) mutable -> caf::result<std::string> {
              auto request = decode_event<Request>(payload);
              if (!request)
                return make_error(errc::rejected, "a request on " + destination +
                                                      " is not a " +
                                                      event_type_name<Request>());
              try {
                auto reply = handle(*request);
                if constexpr (detail::is_expected<decltype(reply)>::value) {
                  if (!reply)
                    return make_error(errc::rejected, describe(reply.error()));
                  return encode_event(*reply);
                } else {
                  return encode_event(reply);
                }
              } catch (const std::exception& e) {
                return make_error(errc::rejected, e.what());
              }
            },
        };
      });
}

} // namespace troupe::gateways
