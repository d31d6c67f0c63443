#pragma once

// The store as an actor: commits answered once durable, reads served off
// the scheduler threads. Actors use this, never the store's blocking calls.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/optional.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <troupe/runtime/store.hpp>

namespace troupe {

using store_commit_atom = caf::atom_constant<caf::atom("stcommit")>;
using store_get_atom = caf::atom_constant<caf::atom("stget")>;
using store_scan_atom = caf::atom_constant<caf::atom("stscan")>;
using store_watch_atom = caf::atom_constant<caf::atom("stwatch")>;
/// Sent to a watcher, with the column, after a commit that wrote to it.
using store_changed_atom = caf::atom_constant<caf::atom("stchanged")>;

/// Up to `limit` entries of a scan; `more` when the range goes on after the
/// last one (pass its key as `start_after` to continue).
struct scan_page {
  std::vector<std::pair<std::string, std::string>> entries;
  bool more = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, scan_page& x) {
  return f(caf::meta::type_name("scan_page"), x.entries, x.more);
}

/// commit: answered `ok` only after the batch is durable (one group commit
/// shared with every other writer queued meanwhile), or an `errc::internal`
/// error. get / scan: answered from the reader thread. watch: from now on the
/// actor gets `(store_changed_atom, column)` once durable commits put keys in
/// the column, one message for all batches of a group commit, until it ends.
using store_actor = caf::typed_actor<
    caf::replies_to<store_commit_atom, write_batch>::with<caf::ok_atom>,
    caf::replies_to<store_get_atom, store_column,
                    std::string>::with<caf::optional<std::string>>,
    caf::replies_to<store_scan_atom, store_column, std::string /*prefix*/,
                    std::string /*start_after*/, uint32_t /*limit*/>::with<scan_page>,
    caf::reacts_to<store_watch_atom, store_column, caf::actor>>;

/// Spawns the store actor over an open store and registers it in the
/// node-local CAF registry, so `local_store` finds it anywhere on the node.
/// The registry keeps it alive: stop it with an exit message
/// (`exit_reason::user_shutdown`) after the services that use it; it answers
/// the requests in flight, then quits.
store_actor spawn_store_actor(caf::actor_system& sys, std::shared_ptr<store> db);

/// The node's store actor; invalid when the node runs without a store.
store_actor local_store(caf::actor_system& sys);

} // namespace troupe
