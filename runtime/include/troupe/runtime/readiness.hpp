#pragma once

#include <functional>

namespace troupe {

/// Whether this process's node takes new work: started, joined and not
/// draining. `node::run` publishes its probe; gateways read it. Without a
/// published probe (a library used without a node) the answer is true.
bool node_is_ready();

/// Publishes the probe `node_is_ready` asks (thread-safe; nullptr withdraws it).
void publish_readiness(std::function<bool()> probe);

/// Whether this node sees a majority of the configured `cluster.members`
/// (always true without a member list). While it does not, services refuse
/// new requests with the retryable `errc::service_unavailable` and the node
/// is not ready, so a minority side of a partition stops taking work.
bool node_has_quorum() noexcept;

/// Set by the cluster actor as members come and go (thread-safe).
void set_node_quorum(bool has_quorum) noexcept;

} // namespace troupe
