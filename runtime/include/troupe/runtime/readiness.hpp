#pragma once

#include <functional>
#include <map>
#include <string>

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

/// States that do not decide readiness but explain it: `/readyz` lists them
/// (e.g. an event route whose broker is unreachable while the outbox backs
/// up). Thread-safe; an empty `state` removes the entry.
void set_readiness_detail(const std::string& subject, std::string state);

/// The details set so far, by subject.
std::map<std::string, std::string> readiness_details();

} // namespace troupe
