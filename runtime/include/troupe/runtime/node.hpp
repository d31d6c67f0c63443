#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/actor_cast.hpp>
#include <caf/fwd.hpp>

#include <troupe/runtime/config.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/supervisor.hpp>

namespace troupe {

class store;

/// Runs one troupe node: a user's `main()` declares its messages, services and
/// actors, then hands over to `run`, which loads the configuration, starts the
/// supervision tree (cluster first, then services in declaration order), joins
/// the cluster, serves health and metrics, and shuts down gracefully on
/// SIGTERM/SIGINT.
///
///   int main(int argc, char** argv) {
///     troupe::node node{"inventory-node"};
///     node.messages().add<reserve_stock>("reserve_stock");
///     node.service<inventory_actor>("inventory", spawn_inventory);
///     return node.run(argc, argv);
///   }
class node {
public:
  using start_fn = std::function<caf::actor(caf::actor_system&, const config&)>;

  explicit node(std::string program_name);
  ~node();

  message_catalog& messages() noexcept { return catalog_; }
  /// Add the application's own configuration keys here before `run`.
  config_schema& schema() noexcept { return schema_; }

  /// Declares a service: started under supervision on nodes whose
  /// `services.enabled` names it (or "*"), registered in the cluster registry
  /// under `name` each time it (re)starts. `start` returns the typed handle.
  template <class Handle, class Start>
  node& service(std::string name, Start start,
                restart_policy restart = restart_policy::permanent) {
    add_component(
        std::move(name), true, restart,
        [start](caf::actor_system& sys, const config& cfg) {
          return caf::actor_cast<caf::actor>(start(sys, cfg));
        },
        [](caf::actor_system& sys) { return interface_of<Handle>(sys); });
    return *this;
  }

  /// Says that the component `name` needs the node's store: when it is
  /// enabled, `store.path` is required.
  node& needs_store(std::string name);

  /// Adds a check of the configuration that the component `name` reads, run
  /// before anything starts when it is enabled: a config_error it throws
  /// stops the node with exit code 2, as a bad key does.
  node& check_config(std::string name, std::function<void(const config&)> check);

  /// Runs `hook` on the main thread once the node's store is open, before
  /// the actor system starts, when `store.path` is set: the place for
  /// one-time blocking set-up a component needs (e.g. a persisted epoch). A
  /// std::exception it throws stops the node with exit code 1.
  node& on_store_open(std::function<void(store&, const config&)> hook);

  /// Says that the component `name` runs only where `services.enabled` names
  /// it: "*" does not include it (load generators, one-off jobs, components
  /// that need settings every node does not have).
  node& only_when_named(std::string name);

  /// Declares a supervised actor that is not a service (a worker, a job).
  node& actor(std::string name, start_fn start,
              restart_policy restart = restart_policy::permanent);

  /// Parses argv and the environment, runs until shut down; returns the
  /// process exit code (0 clean, 1 runtime failure, 2 bad configuration).
  int run(int argc, char** argv);

  /// The interface names CAF uses for `Handle`, as the registry stores them.
  template <class Handle>
  static std::vector<std::string> interface_of(caf::actor_system& sys);

private:
  struct component {
    std::string name;
    bool is_service;
    restart_policy restart;
    start_fn start;
    std::function<std::vector<std::string>(caf::actor_system&)> interface;
  };
  void add_component(std::string name, bool is_service, restart_policy restart,
                     start_fn start,
                     std::function<std::vector<std::string>(caf::actor_system&)> iface);
  static std::vector<std::string> to_vector(const std::set<std::string>& names);

  std::string program_;
  message_catalog catalog_;
  config_schema schema_;
  std::vector<component> components_;
  std::vector<std::string> store_users_;
  std::vector<std::string> named_only_;
  std::vector<std::pair<std::string, std::function<void(const config&)>>> checks_;
  std::vector<std::function<void(store&, const config&)>> store_hooks_;
};

/// Declares the runtime's own configuration keys (node, cluster, status, log,
/// shutdown, scheduler, supervisor, services, store) into `schema`.
void declare_runtime_config(config_schema& schema);

} // namespace troupe

#include <caf/actor_system.hpp>

template <class Handle>
std::vector<std::string> troupe::node::interface_of(caf::actor_system& sys) {
  return to_vector(sys.message_types<Handle>());
}
