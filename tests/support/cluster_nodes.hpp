#pragma once

// Clusters of troupe-node processes for the integration tests: the failure
// detector settings they share, and waiting until a node sees given members.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "support/http_get.hpp"
#include "support/node_process.hpp"

namespace troupe::test {

using namespace std::chrono_literals;

using strings = std::vector<std::string>;

inline constexpr auto failure_timeout = 1s;
inline constexpr auto heartbeat_interval = 100ms;

// Generous: a deadline only matters when the test fails.
inline constexpr auto patience = 15s;

inline strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

// The same failure detector settings on every node.
inline const strings fast_detector{"--cluster.heartbeat_interval", "100ms",
                                   "--cluster.failure_timeout",    "1s",
                                   "--cluster.connect_timeout",    "1s"};

inline const strings runs_nothing{"--services.enabled", "[]"};
inline const strings runs_greeter{"--services.enabled", "greeter"};
inline const strings runs_caller{"--services.enabled", "caller",
                                 "--caller.interval",  "100ms",
                                 "--caller.timeout",   "500ms"};

inline strings seeded_by(const running_node& seed) {
  return {"--cluster.seeds", seed.cluster_address()};
}

inline std::string describe(const std::optional<cluster_info>& view) {
  if (!view)
    return "(no /cluster answer)";
  std::string out = view->node + " sees:";
  for (auto& m : view->members) {
    out += " " + m.name + "@" + m.address + "[";
    for (auto& s : m.services)
      out += s + " ";
    out += "]";
  }
  return out;
}

// Waits until `node`'s /cluster lists exactly `names`; returns the last view.
inline std::optional<cluster_info>
wait_for_members(const running_node& node, strings names, steady::time_point deadline) {
  std::sort(names.begin(), names.end());
  std::optional<cluster_info> view;
  eventually(deadline, [&] {
    view = get_cluster(node.status_port);
    return view && view->names() == names;
  });
  return view;
}

inline void require_members(const running_node& node, const strings& names) {
  auto view = wait_for_members(node, names, within(patience));
  INFO("members expected on " << node.name << ": " << Catch::Detail::stringify(names));
  INFO(describe(view));
  INFO("log of " << node.name << ":\n" << node->output());
  REQUIRE(view.has_value());
  auto expected = names;
  std::sort(expected.begin(), expected.end());
  REQUIRE(view->names() == expected);
}

struct three_nodes {
  running_node a;
  running_node b;
  running_node c;
};

// A starts the cluster; B and C join through A. Returns once every node sees
// all three.
inline three_nodes start_three(const strings& a_args, const strings& b_args,
                               const strings& c_args,
                               const strings& common = fast_detector) {
  three_nodes n;
  n.a = start_node("a", common + a_args, within(patience));
  n.b = start_node("b", common + b_args + seeded_by(n.a), within(patience));
  n.c = start_node("c", common + c_args + seeded_by(n.a), within(patience));
  for (auto* node : {&n.a, &n.b, &n.c})
    require_members(*node, {"a", "b", "c"});
  return n;
}

} // namespace troupe::test
