#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

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

/// The same for one event type: `handle(event, delivery, tx)` writes the
/// state change into `tx`; a payload that is not an `Event` is poison.
template <class Event, class Handler>
inbox_consumer_actor spawn_inbox_consumer_of(caf::actor_system& sys, store_actor store,
                                             std::shared_ptr<outbox_sequence> sequence,
                                             inbox_settings settings, Handler handle) {
  auto apply = [handle](const delivered_event& d, outbox_transaction& tx) -> std::string {
    if (d.event.header(event_headers::content_type) != caf_binary_content_type)
      return "unsupported content type '" + d.event.header(event_headers::content_type) +
             "'";
    if (d.event.header(event_headers::event_type) != event_type_name<Event>())
      return "expected event type " + event_type_name<Event>() + ", got '" +
             d.event.header(event_headers::event_type) + "'";
    auto event = decode_event<Event>(d.event.payload);
    if (!event)
      return "payload is not a valid " + event_type_name<Event>();
    handle(*event, d, tx);
    return {};
  };
  return spawn_inbox_consumer(sys, std::move(store), std::move(sequence),
                              std::move(settings), std::move(apply));
}

} // namespace troupe
