// troupe-node with sagas enabled and bad saga or store configuration: each
// mistake ends the process with one message that names the key (exit code 2
// for configuration, 1 for a store another process holds), and a store in
// use never disturbs the node that holds it.

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/http_get.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
using strings = std::vector<std::string>;

struct outcome {
  std::optional<int> exit_code;
  std::string output;
  std::vector<std::string> lines;
};

outcome run_to_exit(strings args) {
  node_process proc{troupe_node_binary(), std::move(args), {}, "saga-config"};
  outcome result;
  result.exit_code = proc.wait_exit(within(15s));
  result.output = proc.output();
  result.lines = proc.lines();
  return result;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Exit code 2, exactly one message, and it names every one of `parts`.
void check_rejected(const outcome& out, const strings& parts) {
  INFO("output:\n" << out.output);
  REQUIRE(out.exit_code.has_value());
  CHECK(*out.exit_code == 2);
  CHECK(out.lines.size() == 1);
  CHECK(contains(out.output, "configuration error"));
  for (auto& part : parts)
    CHECK(contains(out.output, part));
  CHECK_FALSE(contains(out.output, "listening on"));
}

const strings local_ports{"--status.port", "0", "--cluster.port", "0"};

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

} // namespace

TEST_CASE("sagas without store.path are rejected naming store.path", "[config]") {
  auto out = run_to_exit(strings{"--node.name", "a", "--services.enabled", "[sagas]"} +
                         local_ports);
  check_rejected(out, {"store.path", "sagas"});
}

TEST_CASE("a zero sagas.step_timeout is rejected naming the key", "[config]") {
  temp_dir dir;
  auto out = run_to_exit(strings{"--node.name", "a", "--services.enabled", "[sagas]",
                                 "--store.path", (dir.path() / "store").string(),
                                 "--sagas.step_timeout", "0s"} +
                         local_ports);
  check_rejected(out, {"sagas.step_timeout", "--sagas.step_timeout"});
}

TEST_CASE("sagas.owners that does not list this node is rejected naming the key",
          "[config]") {
  temp_dir dir;
  auto out = run_to_exit(strings{"--node.name", "z", "--services.enabled", "[sagas]",
                                 "--store.path", (dir.path() / "store").string(),
                                 "--sagas.owners", "[x, y]"} +
                         local_ports);
  check_rejected(out, {"sagas.owners", "'z'"});
}

TEST_CASE("a second node on a store path in use exits 1 and the first keeps running",
          "[config]") {
  temp_dir dir;
  auto path = (dir.path() / "store").string();
  auto first = start_node("a", {"--services.enabled", "[sagas]", "--store.path", path},
                          within(30s));
  // The saga manager read its log: the store is open and in use.
  REQUIRE(first->wait_for_line("saga log read", within(30s)));

  auto second = run_to_exit(
      strings{"--node.name", "b", "--services.enabled", "[sagas]", "--store.path", path} +
      local_ports);
  {
    INFO("second node's output:\n" << second.output);
    REQUIRE(second.exit_code.has_value());
    CHECK(*second.exit_code == 1);
    CHECK(contains(second.output, "in use by another process"));
    CHECK(contains(second.output, path));
    CHECK_FALSE(contains(second.output, "listening on"));
  }

  INFO("first node's output:\n" << first->output());
  CHECK(first->running());
  CHECK(http_status(first.status_port, "/healthz") == 200);
  CHECK(first->count_lines("supervision tree failed") == 0);
}
