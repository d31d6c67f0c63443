#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include <troupe/outbox/event_codec.hpp>
#include <troupe/outbox/outbound_event.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe {

struct inbox_settings {
  /// Names the consumer; its processed ids live under this prefix.
  std::string consumer;
  /// How long a processed id is remembered (redeliveries later are applied again).
  std::chrono::milliseconds retention = std::chrono::hours(24 * 7);
  std::chrono::milliseconds sweep_interval = std::chrono::minutes(1);
  /// Where undecodable messages go (through the outbox), with an `error` header.
  std::string dead_letter_destination;
};

using inbox_sweep_atom = caf::atom_constant<caf::atom("inbxsweep")>;

/// An idempotent consumer: applies each message id once. The id is recorded
/// in `store_column::inbox` in the same write_batch as the handler's state
/// change, and the delivery is acknowledged only after that commit; a
/// redelivered id is acknowledged and skipped.
using inbox_consumer_actor =
    event_consumer_actor::extend<caf::reacts_to<inbox_sweep_atom>>;

/// Applies a delivered message to `tx`; returns an error text when the
/// message cannot be decoded (it then goes to the dead-letter destination).
using inbox_apply =
    std::function<std::string(const delivered_event&, outbox_transaction&)>;

/// Stop it with an exit message (user_shutdown): its sweep timer keeps it alive.
inbox_consumer_actor spawn_inbox_consumer(caf::actor_system& sys, store_actor store,
                                          std::shared_ptr<outbox_sequence> sequence,
                                          inbox_settings settings, inbox_apply apply);

/// Why `d` is not an `Event` (empty when it is one, decoded into `out`).
template <class Event>
std::string decode_delivered(const delivered_event& d, Event& out) {
  if (d.event.header(event_headers::content_type) != caf_binary_content_type)
    return "unsupported content type '" + d.event.header(event_headers::content_type) +
           "'";
  if (d.event.header(event_headers::event_type) != event_type_name<Event>())
    return "expected event type " + event_type_name<Event>() + ", got '" +
           d.event.header(event_headers::event_type) + "'";
  auto event = decode_event<Event>(d.event.payload);
  if (!event)
    return "payload is not a valid " + event_type_name<Event>();
  out = std::move(*event);
  return {};
}

/// spawn_inbox_consumer for one event type: `handle(event, delivery, tx)` writes the
/// state change into `tx`; a payload that is not an `Event` is poison.
template <class Event, class Handler>
inbox_consumer_actor spawn_inbox_consumer_of(caf::actor_system& sys, store_actor store,
                                             std::shared_ptr<outbox_sequence> sequence,
                                             inbox_settings settings, Handler handle) {
  auto apply = [handle](const delivered_event& d, outbox_transaction& tx) -> std::string {
    Event event;
    auto error = decode_delivered(d, event);
    if (error.empty())
      handle(event, d, tx);
    return error;
  };
  return spawn_inbox_consumer(sys, std::move(store), std::move(sequence),
                              std::move(settings), std::move(apply));
}

/// The batch form, for stream processing: a delivery of up to the
/// subscription's batch size is applied in one write_batch, with the ids of
/// every message in it not seen before, and acknowledged whole after that
/// commit; messages seen before are skipped. A failed commit ends the
/// consumer with its error, so what its handler keeps in memory is rebuilt.
using inbox_batch_consumer_actor =
    event_batch_consumer_actor::extend<caf::reacts_to<inbox_sweep_atom>>;

/// Applies the messages of a delivery not seen before (`fresh`, in delivery
/// order) to `tx`; returns one entry per message: empty when applied, else
/// why it cannot be decoded (it then goes to the dead-letter destination;
/// write nothing to `tx` for it). Batches are applied one at a time.
using inbox_apply_batch = std::function<std::vector<std::string>(
    const std::vector<const delivered_event*>& fresh, outbox_transaction&)>;

inbox_batch_consumer_actor
spawn_inbox_batch_consumer(caf::actor_system& sys, store_actor store,
                           std::shared_ptr<outbox_sequence> sequence,
                           inbox_settings settings, inbox_apply_batch apply);

/// The batch form for one event type: `handle(events, deliveries, tx)` gets
/// the delivery's new, decodable events (deliveries[i] carried events[i])
/// and writes their state change into `tx`; other payloads are poison.
template <class Event, class Handler>
inbox_batch_consumer_actor
spawn_inbox_batch_consumer_of(caf::actor_system& sys, store_actor store,
                              std::shared_ptr<outbox_sequence> sequence,
                              inbox_settings settings, Handler handle) {
  auto apply = [handle](const std::vector<const delivered_event*>& fresh,
                        outbox_transaction& tx) {
    std::vector<std::string> errors(fresh.size());
    std::vector<Event> events;
    std::vector<const delivered_event*> deliveries;
    for (size_t i = 0; i < fresh.size(); ++i) {
      Event e;
      errors[i] = decode_delivered(*fresh[i], e);
      if (errors[i].empty()) {
        events.push_back(std::move(e));
        deliveries.push_back(fresh[i]);
      }
    }
    if (!events.empty())
      handle(events, deliveries, tx);
    return errors;
  };
  return spawn_inbox_batch_consumer(sys, std::move(store), std::move(sequence),
                                    std::move(settings), std::move(apply));
}

} // namespace troupe
