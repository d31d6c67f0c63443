// A service_ref across troupe-node processes on loopback: calls spread over
// every node that provides the service, and keep succeeding on the others
// after one of them is killed.

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <regex>
#include <string>
#include <vector>

#include "support/cluster_nodes.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;

// The caller's outcome lines from position `from` on: "b", "c", ... for the
// node that answered, "failed" for a failed call.
strings outcomes(const running_node& node, size_t from) {
  static const std::regex answered{R"(call \d+ answered by node (\w+) in \d+us:)"};
  static const std::regex failed{R"(call \d+ failed: )"};
  strings result;
  auto lines = node->lines();
  for (size_t i = from; i < lines.size(); ++i) {
    std::smatch m;
    if (std::regex_search(lines[i], m, answered))
      result.push_back(m[1].str());
    else if (std::regex_search(lines[i], failed))
      result.push_back("failed");
  }
  return result;
}

// Waits until at least `n` outcomes were logged from `from` on.
strings wait_for_outcomes(const running_node& node, size_t from, size_t n) {
  strings seen;
  eventually(within(patience), [&] {
    seen = outcomes(node, from);
    return seen.size() >= n;
  });
  return seen;
}

size_t count(const strings& xs, const std::string& x) {
  return static_cast<size_t>(std::count(xs.begin(), xs.end(), x));
}

} // namespace

TEST_CASE("a service_ref spreads calls over the two nodes that provide the service",
          "[cluster]") {
  auto n = start_three(runs_caller, runs_greeter, runs_greeter);
  // Both providers answer once the caller's ref knows both (it refreshes
  // its instances in the background once a second).
  auto by_b = n.a->wait_for("answered by node b", within(patience));
  auto by_c = n.a->wait_for("answered by node c", within(patience));
  INFO("log of a:\n" << n.a->output());
  REQUIRE(by_b.has_value());
  REQUIRE(by_c.has_value());
  auto from = std::max(by_b->index, by_c->index) + 1;
  auto next = wait_for_outcomes(n.a, from, 10);
  REQUIRE(next.size() >= 10);
  next.resize(10);
  INFO("next ten calls: " << Catch::Detail::stringify(next));
  // Round robin: the two providers take turns.
  CHECK(count(next, "b") >= 4);
  CHECK(count(next, "c") >= 4);
  CHECK(count(next, "failed") == 0);
}

TEST_CASE("after kill -9 of one providing node a service_ref's calls keep succeeding "
          "on the other",
          "[cluster]") {
  auto n = start_three(runs_caller, runs_greeter, runs_greeter);
  REQUIRE(n.a->wait_for_line("answered by node b", within(patience)));
  REQUIRE(n.a->wait_for_line("answered by node c", within(patience)));

  auto mark = n.a->line_count();
  REQUIRE(n.c->kill(SIGKILL));
  auto after = wait_for_outcomes(n.a, mark, 12);
  INFO("log of a:\n" << n.a->output());
  INFO("calls after the kill: " << Catch::Detail::stringify(after));
  REQUIRE(after.size() >= 12);
  // At most the calls in flight to C when it died fail (they time out); the
  // ref drops C as soon as its connection is lost and every later call is
  // answered by B.
  CHECK(count(after, "failed") <= 2);
  strings last(after.end() - 8, after.end());
  CHECK(last == strings(8, "b"));
  CHECK(n.c->wait_exit(within(patience)) == 128 + SIGKILL);
}
