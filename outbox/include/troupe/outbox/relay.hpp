#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include <troupe/outbox/outbound_event.hpp>
#include <troupe/outbox/outbox_row.hpp>
#include <troupe/outbox/relay_backoff.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe {

struct relay_settings {
  uint32_t batch_size = 2048;
  /// Publish calls waiting for their brokers at once; rows of one key may
  /// be in several, their outcomes are recorded in issue order.
  uint32_t max_in_flight = 8;
  std::chrono::milliseconds poll_interval{500};
  /// Failed attempts after which a row moves to dead letters.
  uint32_t max_attempts = 10;
  relay_backoff backoff;
  std::chrono::milliseconds publish_timeout{10000};
  /// Rows published per second at most, so a backlog left by an outage does
  /// not flood the broker at once; up to a second's worth go in a burst.
  /// Zero: as fast as the broker acknowledges.
  double max_rate = 0;
  /// The route serving a destination, for the per-route backlog metrics;
  /// none: every row counts under "*".
  std::function<std::string(const std::string& destination)> route_of;
};

using relay_wake_atom = caf::atom_constant<caf::atom("rlwake")>;
using relay_poll_atom = caf::atom_constant<caf::atom("rlpoll")>;
using relay_pace_atom = caf::atom_constant<caf::atom("rlpace")>;
using list_dead_letters_atom = caf::atom_constant<caf::atom("dlqlist")>;
using redrive_atom = caf::atom_constant<caf::atom("dlqredrive")>;
using redrive_all_atom = caf::atom_constant<caf::atom("dlqredrall")>;

/// The outbox relay: publishes committed rows through a publisher, deleting
/// each only after its ack; per key in commit order (a failing row holds
/// back later rows of its key, not other keys, even rows already sent in a
/// later call, which are sent again); retries with persisted attempts and
/// backoff; past max_attempts parks the row in dead letters. It watches the
/// store's outbox column, so any commit with events wakes it; wake: look
/// now. list: up to N dead letters. redrive: moves a dead letter (by message
/// id) or all back to the outbox; answers how many.
using relay_actor = caf::typed_actor<
    caf::reacts_to<relay_wake_atom>, caf::reacts_to<relay_poll_atom>,
    caf::reacts_to<relay_pace_atom>, caf::reacts_to<store_changed_atom, store_column>,
    caf::replies_to<list_dead_letters_atom, uint32_t>::with<std::vector<outbox_row>>,
    caf::replies_to<redrive_atom, std::string>::with<uint32_t>,
    caf::replies_to<redrive_all_atom>::with<uint32_t>>;

/// Spawns a relay over the node's store actor. It polls every
/// poll_interval until stopped with an exit message (user_shutdown).
relay_actor spawn_relay(caf::actor_system& sys, store_actor store,
                        publisher_actor publisher, relay_settings settings);

} // namespace troupe
