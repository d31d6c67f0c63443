#pragma once

// The in-process broker that serves every destination no external broker is
// routed to: topics in the node's RocksDB, keyed ordering, consumer groups
// with committed offsets, retention.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include <troupe/outbox/outbound_event.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe {

struct embedded_broker_settings {
  /// How long a message stays in its topic after it was appended.
  std::chrono::milliseconds retention = std::chrono::hours(24 * 7);
  std::chrono::milliseconds sweep_interval = std::chrono::minutes(1);
  /// A consumer that does not answer a delivery within this gets it again.
  std::chrono::milliseconds deliver_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds redeliver_delay = std::chrono::milliseconds(200);
  /// Messages read from the store per fetch of one consumer group.
  uint32_t fetch_size = 256;
};

using subscribe_atom = caf::atom_constant<caf::atom("evsub")>;
using broker_retry_atom = caf::atom_constant<caf::atom("brkretry")>;
using broker_sweep_atom = caf::atom_constant<caf::atom("brksweep")>;

/// A publisher (appends are acknowledged once durable; a message id already
/// in the topic is acknowledged without a second append, so re-publication
/// after a relay crash adds nothing) plus subscriptions: subscribe(topic,
/// group, consumer) adds a competing consumer to the group. A group receives
/// the topic's messages in append order, one delivery (an event, or a batch
/// for a batch consumer) at a time, and commits its offset after each
/// acknowledgement; a new group starts at the oldest retained message.
using embedded_broker_actor =
    publisher_actor::extend<caf::replies_to<subscribe_atom, std::string, std::string,
                                            event_subscriber>::with<caf::ok_atom>,
                            caf::reacts_to<broker_retry_atom, std::string, std::string>,
                            caf::reacts_to<broker_sweep_atom>>;

/// Loads the broker's topics and offsets through the store actor (messages
/// sent meanwhile wait), then serves. Stop it with an exit message
/// (user_shutdown): its sweep timer keeps it alive.
embedded_broker_actor spawn_embedded_broker(caf::actor_system& sys, store_actor store,
                                            embedded_broker_settings settings = {});

} // namespace troupe
