// troupe-node with bad configuration: every class of mistake ends the
// process with exit code 2 and one message that names the key, before
// anything starts listening.

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;

struct outcome {
  std::optional<int> exit_code;
  std::string output;
  std::vector<std::string> lines;
};

outcome run_to_exit(std::vector<std::string> args,
                    std::map<std::string, std::string> env = {}) {
  node_process proc{troupe_node_binary(), std::move(args), std::move(env), "config"};
  outcome result;
  result.exit_code = proc.wait_exit(within(10s));
  result.output = proc.output();
  result.lines = proc.lines();
  return result;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Exit code 2, exactly one message, and it names every one of `parts`.
void check_rejected(const outcome& out, const std::vector<std::string>& parts) {
  INFO("output:\n" << out.output);
  REQUIRE(out.exit_code.has_value());
  CHECK(*out.exit_code == 2);
  CHECK(out.lines.size() == 1);
  CHECK(contains(out.output, "configuration error"));
  for (auto& part : parts)
    CHECK(contains(out.output, part));
  CHECK_FALSE(contains(out.output, "listening on"));
}

} // namespace

TEST_CASE("an unknown key in the YAML file is rejected with a did-you-mean hint",
          "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "node:\n  name: a\ncluster:\n  prot: 4100\n");
  auto out = run_to_exit({"--config", file.string()});
  check_rejected(
      out, {"cluster.prot", "did you mean 'cluster.port'", file.string(), "line 4"});
}

TEST_CASE("a value of the wrong type from the environment is rejected", "[config]") {
  auto out = run_to_exit({"--node.name", "a"}, {{"TROUPE_CLUSTER_PORT", "abc"}});
  check_rejected(out, {"cluster.port", "'abc'", "TROUPE_CLUSTER_PORT"});
}

TEST_CASE("an out-of-bounds flag is rejected with the bounds", "[config]") {
  auto out = run_to_exit({"--node.name", "a", "--cluster.port", "70000"});
  check_rejected(out, {"cluster.port", "70000", "65535", "--cluster.port"});
}

TEST_CASE("a seed without a port from 1 to 65535 is rejected naming the seed",
          "[config]") {
  for (std::string seed : {"host:abc", "host:70000", "host:0", "host"}) {
    INFO("seed " << seed);
    auto out = run_to_exit({"--node.name", "a", "--cluster.seeds", "[" + seed + "]"});
    check_rejected(out, {"cluster.seeds", "'" + seed + "'"});
  }
}

TEST_CASE("a missing required key is rejected with the ways to set it", "[config]") {
  auto out = run_to_exit({"--cluster.port", "0", "--status.port", "0"});
  check_rejected(out, {"node.name", "TROUPE_NODE_NAME", "--node.name"});
}

TEST_CASE("a wildcard bind address without an advertised address is rejected",
          "[config]") {
  auto out = run_to_exit({"--node.name", "a", "--cluster.bind_host", "0.0.0.0"});
  check_rejected(out, {"cluster.advertise_host", "0.0.0.0"});
}

TEST_CASE("an unreadable config file is rejected", "[config]") {
  auto out = run_to_exit({"--config", "/nonexistent/x.yaml"});
  check_rejected(out, {"/nonexistent/x.yaml"});
}

TEST_CASE("a malformed YAML file is rejected with the position of the mistake",
          "[config]") {
  temp_dir dir;
  auto file = dir.write("bad.yaml", "node:\n  name: [a\n  x: {\n");
  auto out = run_to_exit({"--config", file.string()});
  check_rejected(out, {"malformed", file.string(), "line"});
}

TEST_CASE("an unknown TROUPE_ environment variable is rejected with a did-you-mean hint",
          "[config]") {
  auto out = run_to_exit({"--node.name", "a"}, {{"TROUPE_CLUSTR_PORT", "4100"}});
  check_rejected(out, {"TROUPE_CLUSTR_PORT", "did you mean 'TROUPE_CLUSTER_PORT'"});
}

TEST_CASE("a secret from the environment is shown as <secret> and never leaked",
          "[config]") {
  const std::string secret = "s3cr3t-Value-4711";
  temp_dir dir;

  SECTION("--print-config masks the value") {
    auto file = dir.write("node.yaml",
                          "node:\n  name: a\ngreeter:\n  salutation: ${env:SECRET}\n");
    auto out =
        run_to_exit({"--config", file.string(), "--print-config"}, {{"SECRET", secret}});
    INFO("output:\n" << out.output);
    REQUIRE(out.exit_code.has_value());
    CHECK(*out.exit_code == 0);
    CHECK(contains(out.output, "salutation: <secret>"));
    CHECK_FALSE(contains(out.output, secret));
  }

  SECTION("a secret that fails validation is named, not shown") {
    auto file =
        dir.write("node.yaml", "node:\n  name: a\ncluster:\n  port: ${env:SECRET}\n");
    auto out = run_to_exit({"--config", file.string()}, {{"SECRET", secret}});
    check_rejected(out, {"cluster.port", "${env:SECRET}"});
    CHECK_FALSE(contains(out.output, secret));
  }

  SECTION("an unset secret variable is rejected") {
    auto file = dir.write(
        "node.yaml",
        "node:\n  name: a\ngreeter:\n  salutation: ${env:TROUPE_TEST_UNSET_4711}\n");
    // The child never inherits TROUPE_* variables, so this one is surely unset.
    auto out = run_to_exit({"--config", file.string(), "--print-config"});
    check_rejected(out, {"greeter.salutation", "TROUPE_TEST_UNSET_4711", "not set"});
  }
}

TEST_CASE("a log queue too small to buffer a burst is rejected with its bounds",
          "[config]") {
  auto out = run_to_exit({"--node.name", "a", "--log.queue_size", "0"});
  check_rejected(out, {"log.queue_size", "16", "--log.queue_size"});
}
