#pragma once

// A troupe-node serving the public API, for tests of the gateways:
//
//   auto g = troupe::test::start_gateway_node("a", {"--payment.latency", "2s"});
//   // g.grpc_port, g.http_port: where the gateways listen (chosen by the node)
//   // g->wait_for_line(...), g.node.status_port: the running_node as usual
//
// The node runs the order sample's services, the sagas (with a store in a
// directory of its own, removed with the node), the greeter (invocable as
// greeter/greet) and the gateway. `extra` arguments come last; any key they
// name replaces the default for it (e.g. --services.enabled, --store.path,
// --gateways.grpc.port). start_gateway_node returns once every enabled
// gateway logged its port and /readyz on the status port answers 200, so
// the API takes new work; it throws std::runtime_error with the node's
// output otherwise.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "support/node_process.hpp"

namespace troupe::test {

struct running_gateway {
  std::unique_ptr<temp_dir> dir; ///< the default store lives in dir/store
  running_node node;
  uint16_t grpc_port = 0; ///< 0 when the gRPC gateway is disabled
  uint16_t http_port = 0; ///< 0 when the HTTP gateway is disabled

  /// "127.0.0.1:<grpc_port>"
  std::string grpc_address() const;
  /// "127.0.0.1:<http_port>"
  std::string http_address() const;
  node_process* operator->() const { return node.process.get(); }
};

/// The arguments start_gateway_node gives the node: the defaults (the store
/// under `store_dir`) with the keys `extra` names replaced, then `extra`.
std::vector<std::string> gateway_node_args(const std::string& store_dir,
                                           const std::vector<std::string>& extra);

running_gateway
start_gateway_node(const std::string& name, std::vector<std::string> extra = {},
                   steady::time_point deadline = within(std::chrono::seconds{60}),
                   std::map<std::string, std::string> env = {});

/// The port in "<kind> gateway listening on 127.0.0.1:<port>" (kind "grpc"
/// or "http"), or nullopt.
std::optional<uint16_t> parse_gateway_port(std::string_view line, std::string_view kind);

} // namespace troupe::test
