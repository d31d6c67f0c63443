#pragma once

// One running saga instance: an actor that holds the instance's state, runs
// its steps and compensations, and appends every change to the saga log
// before acting on it.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <troupe/runtime/store_actor.hpp>
#include <troupe/sagas/saga_definition.hpp>
#include <troupe/sagas/saga_manager.hpp>

namespace troupe::sagas_detail {

using begin_atom = caf::atom_constant<caf::atom("sgbegin")>;
using resume_atom = caf::atom_constant<caf::atom("sgresume")>;
using inspect_atom = caf::atom_constant<caf::atom("sginspect")>;
using cancel_atom = caf::atom_constant<caf::atom("sgcancel")>;
using watch_atom = caf::atom_constant<caf::atom("sgwatch")>;
using retry_atom = caf::atom_constant<caf::atom("sgretry")>;
using deadline_atom = caf::atom_constant<caf::atom("sgdeadline")>;

/// Handles of the services steps call, shared by a manager's instances, so a
/// step does not ask the registry every time. Entries are dropped when a
/// call to them fails as unavailable.
class service_directory {
public:
  caf::actor find(const std::string& name) const;
  void put(const std::string& name, caf::actor handle);
  void forget(const std::string& name, const caf::actor& handle);

private:
  mutable std::mutex mtx_;
  std::unordered_map<std::string, caf::actor> handles_;
};

/// Metrics of one saga type, resolved once.
struct type_metrics {
  prometheus::Counter* started;
  std::map<saga_status, prometheus::Counter*> ended;
  std::map<saga_status, prometheus::Histogram*> duration;
  prometheus::Gauge* in_flight;
  struct step_metrics {
    prometheus::Histogram* latency;
    prometheus::Counter* succeeded;
    prometheus::Counter* retried;
    prometheus::Counter* failed;
    prometheus::Counter* compensated;
    prometheus::Counter* compensation_failed;
  };
  std::map<std::string, step_metrics> steps;
};

/// What every instance of one manager shares.
struct instance_context {
  saga_settings settings;
  store_actor store;
  caf::actor manager;
  std::shared_ptr<service_directory> directory;
  std::map<std::string, std::shared_ptr<type_metrics>> metrics; ///< by type
};

/// Spawns an instance linked to (and monitored by) the manager `self`.
/// `fresh`: the instance was just created and is answered `begin` once its
/// first record is durable; otherwise it continues from the log on `resume`.
caf::actor spawn_instance(caf::local_actor* self,
                          std::shared_ptr<const instance_context> ctx,
                          std::shared_ptr<const saga_definition> def, saga_snapshot state,
                          uint64_t first_seq, uint64_t next_seq, bool fresh);

/// The snapshot with its human-readable renderings filled in.
saga_snapshot decorated(caf::actor_system& sys, const saga_definition& def,
                        saga_snapshot s);

/// A new instance's state: every step pending, in definition order.
saga_snapshot initial_state(const saga_definition& def, std::string id,
                            const start_saga& cmd, std::string correlation_id,
                            int64_t now_ns, int64_t deadline_ns);

int64_t wall_now_ns();

} // namespace troupe::sagas_detail
