#pragma once

// The admin side of a resilience guard: switch fault injection at run time,
// subscribe to breaker state changes, read the guard's counters. Every guard
// answers these besides its target's own interface; reach them with
// `resilience::admin_of(guarded_handle)`, on this node or another.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <troupe/actors/circuit_breaker.hpp>
#include <troupe/actors/fault_injector.hpp>
#include <troupe/runtime/message_catalog.hpp>

namespace troupe::resilience {

using inject_faults_atom = caf::atom_constant<caf::atom("injfaults")>;
using breaker_events_atom = caf::atom_constant<caf::atom("brkevents")>;
using guard_stats_atom = caf::atom_constant<caf::atom("grdstats")>;

/// Event: a guard's breaker changed state. Sent to every subscriber.
struct breaker_state_changed {
  std::string dependency;
  breaker_state from = breaker_state::closed;
  breaker_state to = breaker_state::closed;
  /// How long the breaker stays open (when `to` is open).
  std::chrono::nanoseconds open_for{0};
  /// The window (or the probes) that decided: calls, failures, slow calls.
  uint64_t calls = 0;
  uint64_t failures = 0;
  uint64_t slow = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breaker_state_changed& x) {
  return f(caf::meta::type_name("breaker_state_changed"), x.dependency, x.from, x.to,
           x.open_for, x.calls, x.failures, x.slow);
}

/// Reply: a guard's state and its own counters (since it started).
struct guard_stats {
  std::string dependency;
  breaker_state breaker = breaker_state::closed;
  uint64_t in_use = 0; ///< calls holding a bulkhead slot
  uint64_t queued = 0; ///< calls waiting for one
  uint64_t active = 0; ///< calls not answered yet (queued, in flight, backing off)
  /// Calls by outcome, indexed by call_outcome (success, failure, timeout,
  /// rejected_breaker, rejected_bulkhead, rate_limited, retried, fallback).
  std::vector<uint64_t> outcomes;
  fault_settings faults;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, guard_stats& x) {
  return f(caf::meta::type_name("guard_stats"), x.dependency, x.breaker, x.in_use,
           x.queued, x.active, x.outcomes, x.faults);
}

/// The admin interface every guard answers.
///   (inject_faults_atom, fault_settings) -> ok   replaces the fault settings
///   (breaker_events_atom, actor subscriber) -> ok   the subscriber receives a
///       breaker_state_changed message on every change until it terminates
///   (guard_stats_atom) -> guard_stats
using guard_admin_actor = caf::typed_actor<
    caf::replies_to<inject_faults_atom, fault_settings>::with<caf::ok_atom>,
    caf::replies_to<breaker_events_atom, caf::actor>::with<caf::ok_atom>,
    caf::replies_to<guard_stats_atom>::with<guard_stats>>;

/// The admin handle of a guarded handle (returned by guard or guard_service).
/// Only meaningful for guards: a plain service does not answer these.
template <class Handle>
guard_admin_actor admin_of(const Handle& guarded) {
  return caf::actor_cast<guard_admin_actor>(guarded);
}

/// Registers the admin messages (fault_settings, breaker_state_changed,
/// guard_stats) in a node's message catalog, so they cross nodes.
void add_messages(message_catalog& catalog);

} // namespace troupe::resilience
