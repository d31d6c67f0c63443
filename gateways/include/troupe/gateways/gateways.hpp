#pragma once

// Adds troupe's public API to a node: the gRPC gateway (troupe.api.v1 and
// grpc.health.v1) and the HTTP/JSON gateway, both over one api_backend.

#include <memory>

#include <troupe/gateways/api_catalog.hpp>

namespace troupe {
class node;
}

namespace troupe::gateways {

/// Declares the gateways.* keys and the component "gateway", which serves
/// the API on nodes whose services.enabled names it (or "*") and reaches the
/// saga manager of the cluster, so any node may run it.
void add_gateways(node& n, std::shared_ptr<const api_catalog> catalog);

} // namespace troupe::gateways
