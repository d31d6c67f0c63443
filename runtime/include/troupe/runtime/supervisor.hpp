#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

namespace troupe {

/// When a child that has ended is started again.
enum class restart_policy {
  permanent, ///< always
  transient, ///< only after an abnormal exit
  temporary, ///< never
};

/// Which children restart when one fails.
enum class restart_strategy {
  one_for_one,  ///< only the failed child
  all_for_one,  ///< every child, in start order
  rest_for_one, ///< the failed child and those started after it
};

/// How to start one child. The factory spawns a fresh actor (fresh state)
/// each time; the supervisor links to it and restarts it by policy.
struct child_spec {
  std::string name;
  std::function<caf::actor(caf::actor_system&)> start;
  restart_policy restart = restart_policy::permanent;
};

/// Restart budget and backoff. More than `max_restarts` restarts within
/// `window` makes the supervisor stop its children and fail upward with
/// `errc::restart_budget_exceeded`. Between restarts it waits
/// `initial_backoff`, doubling per recent restart, capped at `max_backoff`.
struct supervisor_settings {
  restart_strategy strategy = restart_strategy::one_for_one;
  size_t max_restarts = 3;
  std::chrono::milliseconds window{5000};
  std::chrono::milliseconds initial_backoff{10};
  std::chrono::milliseconds max_backoff{1000};
};

using which_child_atom = caf::atom_constant<caf::atom("whichchild")>;
using restart_child_atom = caf::atom_constant<caf::atom("rstchild")>;

/// Spawns a supervisor that starts `children` in order and keeps them running.
///
/// Messages it answers:
///   (which_child_atom, std::string name) -> caf::actor  (the current instance;
///       errc::not_found while the child is down or unknown)
/// It stops its children in reverse start order when it exits. Nest
/// supervisors by making a child's `start` spawn another supervisor.
caf::actor spawn_supervisor(caf::actor_system& sys, std::string name,
                            supervisor_settings settings,
                            std::vector<child_spec> children);

/// A child_spec whose child is itself a supervisor.
child_spec supervisor_child(std::string name, supervisor_settings settings,
                            std::vector<child_spec> children,
                            restart_policy restart = restart_policy::permanent);

} // namespace troupe
