#pragma once

// The cluster actor: discovery, membership, failure detection and the
// service registry of one node. Include where services are looked up.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <troupe/runtime/errors.hpp>

namespace troupe {

/// A service as the registry knows it: where it runs and what it speaks.
struct service_entry {
  std::string name;
  std::string node;
  caf::actor handle;
  std::vector<std::string> interface; ///< CAF's message type names of the handle
};

/// One node as other nodes see it.
struct member_info {
  std::string name;
  std::string host;
  uint16_t port = 0;
  std::string node_id; ///< CAF node id; differs per process
  caf::actor endpoint; ///< the node's cluster actor
  std::vector<service_entry> services;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, service_entry& x) {
  return f(caf::meta::type_name("service_entry"), x.name, x.node, x.handle, x.interface);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, member_info& x) {
  return f(caf::meta::type_name("member_info"), x.name, x.host, x.port, x.node_id,
           x.endpoint, x.services);
}

using join_atom = caf::atom_constant<caf::atom("join")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using service_up_atom = caf::atom_constant<caf::atom("svcup")>;
using service_down_atom = caf::atom_constant<caf::atom("svcdown")>;
using register_service_atom = caf::atom_constant<caf::atom("register")>;
using find_service_atom = caf::atom_constant<caf::atom("findsvc")>;
using find_services_atom = caf::atom_constant<caf::atom("findsvcs")>;
using members_atom = caf::atom_constant<caf::atom("members")>;
using leave_cluster_atom = caf::atom_constant<caf::atom("leaveclstr")>;
using cluster_tick_atom = caf::atom_constant<caf::atom("ctick")>;

using dialed_atom = caf::atom_constant<caf::atom("dialed")>;

/// What peers may send a node's cluster actor, and nothing more: join, ping,
/// leave (of the sending node only) and service up/down (of services on the
/// sending node only). Every message is checked against the node CAF
/// received it from; a claim about another node is refused and logged.
using cluster_peer_actor = caf::typed_actor<
    caf::replies_to<join_atom, member_info>::with<std::vector<member_info>>,
    caf::replies_to<ping_atom, std::string>::with<pong_atom>,
    caf::reacts_to<leave_atom, std::string, std::string>,
    caf::reacts_to<service_up_atom, service_entry>,
    caf::reacts_to<service_down_atom, std::string, std::string>>;

/// The cluster actor's whole interface: the peer protocol plus the
/// node-local registry API (register, find, members, leave), which it
/// answers only for senders on its own node.
using cluster_actor = cluster_peer_actor::extend<
    caf::reacts_to<register_service_atom, std::string, caf::actor,
                   std::vector<std::string>>,
    caf::replies_to<find_service_atom, std::string,
                    std::vector<std::string>>::with<caf::actor>,
    // Every live instance of a service (this node's first), for service_ref.
    caf::replies_to<find_services_atom, std::string,
                    std::vector<std::string>>::with<std::vector<caf::actor>>,
    caf::replies_to<members_atom>::with<std::vector<member_info>>,
    caf::replies_to<leave_cluster_atom>::with<caf::ok_atom>,
    caf::reacts_to<cluster_tick_atom>,
    // A dial of the node's gate ended: address key, ok, where CAF connects, error.
    caf::reacts_to<dialed_atom, std::string, bool, std::string, uint16_t, std::string>>;

/// Connects to a peer's cluster port off CAF's threads and reports where
/// CAF's middleman may connect (see cluster_gate::dial): host, port,
/// timeout, and a callback with (ok, host, port, error) that may run on any
/// thread.
using cluster_dialer =
    std::function<void(const std::string&, uint16_t, std::chrono::milliseconds,
                       std::function<void(bool, std::string, uint16_t, std::string)>)>;

struct cluster_settings {
  std::string node_name;
  std::string bind_host = "127.0.0.1"; ///< where peers connect (the node's gate)
  std::string advertise_host = "127.0.0.1";
  uint16_t port = 0; ///< the public port peers connect to
  /// Where CAF's own endpoint listens; peers reach it through the gate that
  /// checks their framing, so it stays on loopback.
  std::string backend_host = "127.0.0.1";
  std::vector<std::string> seeds; ///< "host:port"
  std::string dns_name;           ///< resolves to every member (headless Service)
  uint16_t dns_port = 0;          ///< cluster port of DNS-discovered members
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds failure_timeout{3000};
  std::chrono::milliseconds connect_timeout{2000};
  /// Addresses learned from members that are gone are dropped after this
  /// long without an answer; seeds are kept.
  std::chrono::milliseconds forget_after{std::chrono::minutes(10)};
  /// How peers are dialed; empty: CAF's middleman connects directly.
  cluster_dialer dial;
  /// The configured member names (`cluster.members`). With a list, the node
  /// serves only while it sees a majority of it (see node_has_quorum);
  /// without one, any number of reachable members is enough.
  std::vector<std::string> members;
};

/// A cluster seed or member address, "host:port" or "[v6]:port".
struct peer_address {
  std::string host;
  uint16_t port = 0;
};

/// Parses a seed; std::nullopt (with `why` set) for a missing host or a port
/// that is not a number from 1 to 65535.
std::optional<peer_address> parse_peer_address(const std::string& text,
                                               std::string* why = nullptr);

/// What the node's HTTP endpoint and readiness probe read; updated by the
/// cluster actor, read from other threads.
class cluster_view {
public:
  void update(std::string json, bool joined);
  std::string json() const;
  bool joined() const;
  /// Port of CAF's loopback endpoint; 0 while it is not listening.
  uint16_t backend_port() const noexcept { return backend_port_; }
  void set_backend_port(uint16_t port) noexcept { backend_port_ = port; }

private:
  mutable std::mutex mtx_;
  std::string json_ = "{}";
  bool joined_ = false;
  std::atomic<uint16_t> backend_port_{0};
};

/// Spawns the cluster actor: it publishes itself on a loopback port (behind
/// the node's gate, which owns `settings.port`), joins
/// through the seeds (retrying until one answers), monitors and pings every
/// member, and registers itself in the node-local CAF registry so that
/// `find_service` works anywhere on the node.
cluster_actor spawn_cluster(caf::actor_system& sys, cluster_settings settings,
                            std::shared_ptr<cluster_view> view);

/// The node's cluster actor (from the local registry); invalid if none runs.
cluster_actor local_cluster(caf::actor_system& sys);

/// Registers `handle` as service `name` of this node (asynchronously; the
/// registry monitors the handle and unregisters it when it stops).
void register_service(caf::actor_system& sys, const std::string& name,
                      const caf::actor& handle, std::vector<std::string> interface);

/// Looks `name` up in the cluster registry from inside an actor and continues
/// with `.then([](const caf::actor& h) {...}, [](caf::error&) {...})`; cast
/// the handle with `caf::actor_cast<Handle>`. Fails with
/// `errc::service_unavailable` when no live node provides the service and
/// `errc::interface_mismatch` when it speaks another interface than `Handle`.
template <class Handle, class Self>
auto find_service(Self* self, const std::string& name,
                  std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  auto names = self->system().template message_types<Handle>();
  return self->request(local_cluster(self->system()), timeout, find_service_atom::value,
                       name, std::vector<std::string>(names.begin(), names.end()));
}

/// Resolves a host name to its IPv4/IPv6 addresses (blocking).
std::vector<std::string> resolve_addresses(const std::string& name);

} // namespace troupe
