#pragma once

// The saga manager: starts, queries, cancels and watches saga instances,
// recovers them from the node's store after a restart, and forwards
// requests for sagas owned by another node to that node's manager.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <troupe/actors/retry_schedule.hpp>
#include <troupe/runtime/config.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/sagas/saga_definition.hpp>
#include <troupe/sagas/saga_state.hpp>

namespace troupe {

class node;

/// Command: start an instance of `type` with `input` (the saga's input type
/// in CAF's binary format; `make_start_saga` encodes it). Starting again with
/// the same idempotency key returns the first instance.
struct start_saga {
  std::string type;
  std::string input;
  std::string idempotency_key; ///< empty: a fresh one
  int64_t deadline_ns = 0;     ///< overall deadline (Unix ns); 0 = the definition's
  bool forwarded = false;      ///< sent by another node's manager to the owner
};

/// Reply: the instance, and whether this start created it.
struct saga_started {
  saga_snapshot saga;
  bool created = false;
};

/// Query: one instance with its step history (any node forwards to the owner).
struct get_saga {
  std::string id;
  bool forwarded = false;
};

/// Command: stop going forward and compensate every completed step. A saga
/// that already ended is answered as it is.
struct cancel_saga {
  std::string id;
  bool forwarded = false;
};

/// Query: instances by type and status, oldest first, one page at a time.
struct list_sagas {
  std::string type;   ///< empty = every type
  std::string status; ///< "running", "completed", ...; empty = any
  uint32_t page_size = 50;
  std::string page_token;   ///< from the previous page; empty = the first page
  bool cluster_wide = true; ///< false: this node's instances only
};

struct saga_page {
  std::vector<saga_summary> sagas;
  std::string next_page_token; ///< empty on the last page
};

/// Command: send `subscriber` a `saga_snapshot` on every change of the
/// instance, the last one in an end state.
struct watch_saga {
  std::string id;
  caf::actor subscriber;
  bool forwarded = false;
};

/// Reply: the instance as it is when the watch starts.
struct watch_started {
  saga_snapshot saga;
};

/// An instance tells its manager what it durably did (internal).
struct saga_progress {
  std::string id;
  saga_status status = saga_status::running;
  std::string current_step;
  int64_t updated_ns = 0;
  uint64_t first_seq = 0; ///< its oldest log record
  uint64_t next_seq = 0;  ///< one past its newest
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, start_saga& x) {
  return f(caf::meta::type_name("start_saga"), x.type, x.input, x.idempotency_key,
           x.deadline_ns, x.forwarded);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, saga_started& x) {
  return f(caf::meta::type_name("saga_started"), x.saga, x.created);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, get_saga& x) {
  return f(caf::meta::type_name("get_saga"), x.id, x.forwarded);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cancel_saga& x) {
  return f(caf::meta::type_name("cancel_saga"), x.id, x.forwarded);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, list_sagas& x) {
  return f(caf::meta::type_name("list_sagas"), x.type, x.status, x.page_size,
           x.page_token, x.cluster_wide);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, saga_page& x) {
  return f(caf::meta::type_name("saga_page"), x.sagas, x.next_page_token);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, watch_saga& x) {
  return f(caf::meta::type_name("watch_saga"), x.id, x.subscriber, x.forwarded);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, watch_started& x) {
  return f(caf::meta::type_name("watch_started"), x.saga);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, saga_progress& x) {
  return f(caf::meta::type_name("saga_progress"), x.id, x.status, x.current_step,
           x.updated_ns, x.first_seq, x.next_seq);
}

/// The saga manager's interface, registered as the service "sagas" on every
/// node that runs sagas.
using saga_manager_actor =
    service<handles<start_saga, saga_started>, handles<get_saga, saga_snapshot>,
            handles<cancel_saga, saga_snapshot>, handles<list_sagas, saga_page>,
            handles<watch_saga, watch_started>, on<saga_progress>>;

/// The registry name of the saga manager.
inline constexpr const char* saga_manager_name = "sagas";

/// Builds a start command from a typed input.
template <class Input>
start_saga make_start_saga(caf::actor_system& sys, std::string type, const Input& input,
                           std::string idempotency_key = {}) {
  return start_saga{std::move(type), encode(sys, input), std::move(idempotency_key)};
}

struct saga_settings {
  std::string node_name;
  /// Configured owners (stable node names); empty = this node owns everything.
  std::vector<std::string> owners;
  std::chrono::nanoseconds step_timeout = std::chrono::seconds(5);
  std::chrono::nanoseconds deadline = std::chrono::minutes(5);
  resilience::retry_settings step_retry;
  resilience::retry_settings compensation_retry;
  std::chrono::nanoseconds retention = std::chrono::hours(24 * 7);
  std::chrono::nanoseconds sweep_interval = std::chrono::minutes(1);
  std::chrono::nanoseconds stall_after = std::chrono::minutes(5);
  uint32_t recovery_batch = 256; ///< instances resumed per turn of the manager
  uint32_t snapshot_every = 32;  ///< log records of an instance between snapshots
  uint32_t ended_cache = 4096;   ///< ended instances answered from memory
  std::chrono::nanoseconds forward_timeout = std::chrono::seconds(10);
};

/// Declares the sagas.* keys.
void declare_saga_config(config_schema& schema);
/// Reads the sagas.* keys (and node.name); throws config_error.
saga_settings saga_settings_from(const config& cfg);
/// Registers the saga API's messages in the catalog.
void add_saga_messages(message_catalog& catalog);

/// The node that owns a saga with this idempotency key: rendezvous hashing
/// over the configured owners, so ownership depends on the configured list
/// only, never on who is reachable now.
std::string owner_of(const std::string& idempotency_key,
                     const std::vector<std::string>& owners);

/// Spawns a saga manager for `definitions` (several versions of one type may
/// be given; new instances start on the highest). Needs the node's store actor.
saga_manager_actor
spawn_saga_manager(caf::actor_system& sys, saga_settings settings,
                   std::vector<std::shared_ptr<const saga_definition>> definitions);

/// Adds sagas to a node: registers their messages and configuration and
/// declares the "sagas" service, which needs `store.path`.
void add_sagas(node& n, std::vector<std::shared_ptr<const saga_definition>> definitions);

} // namespace troupe
