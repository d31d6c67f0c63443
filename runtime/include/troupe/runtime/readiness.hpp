#pragma once

#include <functional>

namespace troupe {

/// Whether this process's node takes new work: started, joined and not
/// draining. `node::run` publishes its probe; gateways read it. Without a
/// published probe (a library used without a node) the answer is true.
bool node_is_ready();

/// Publishes the probe `node_is_ready` asks (thread-safe; nullptr withdraws it).
void publish_readiness(std::function<bool()> probe);

} // namespace troupe
