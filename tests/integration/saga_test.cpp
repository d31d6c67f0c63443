// Sagas across real troupe-node processes: a saga node killed (-9) at random
// moments while hundreds of order sagas call services on a second node, and
// ownership over a configured member list with the owner killed and back.

#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
using strings = std::vector<std::string>;

constexpr auto patience = 60s;

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

const strings fast_detector{"--cluster.heartbeat_interval", "100ms",
                            "--cluster.failure_timeout",    "1s",
                            "--cluster.connect_timeout",    "1s"};

// A port that was free a moment ago: a restarted node must come back on the
// address its peers remember.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string address(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

struct audit {
  std::map<std::string, std::string> saga_status; // by saga id
  std::map<std::string, int> applied;             // by idempotency key
};

audit read_audit(node_process& auditor) {
  audit a;
  std::regex saga_re{R"(audit saga (\S+) (\S+))"};
  std::regex applied_re{R"(audit applied (\S+) (\S+) (\d+))"};
  for (auto& line : auditor.lines()) {
    std::smatch m;
    if (std::regex_search(line, m, saga_re))
      a.saga_status[m[1]] = m[2];
    else if (std::regex_search(line, m, applied_re))
      a.applied[m[2]] += std::stoi(m[3]);
  }
  return a;
}

bool is_end(const std::string& status) {
  return status == "completed" || status == "compensated" ||
         status == "failed_compensation" || status == "cancelled";
}

} // namespace

TEST_CASE("sagas survive kill -9 of their node: every saga ends, no step is applied "
          "twice, and only steps that happened are compensated",
          "[cluster][slow]") {
  temp_dir dir;
  auto saga_port = free_port();
  const int orders = 200;
  auto services = start_node(
      "v",
      strings{"--services.enabled", "[orders, inventory, payment, shipping]",
              "--store.path", (dir.path() / "v").string(), "--payment.latency", "20ms"} +
          fast_detector,
      within(patience));
  auto saga_args = strings{"--cluster.port",
                           std::to_string(saga_port),
                           "--cluster.seeds",
                           services.cluster_address(),
                           "--services.enabled",
                           "[sagas, orders_client]",
                           "--store.path",
                           (dir.path() / "s").string(),
                           "--orders_client.count",
                           std::to_string(orders),
                           "--orders_client.concurrency",
                           "64",
                           "--sagas.step_backoff",
                           "50ms"} +
                   fast_detector;
  std::mt19937 rng{Catch::rngSeed()};
  size_t resumed = 0;
  std::regex resume_re{R"(saga log read: \d+ instances, (\d+) to resume)"};
  std::vector<std::string> saga_node_lines; // of every run of the saga node
  auto count_resumed = [&](node_process& p) {
    for (auto& line : p.lines()) {
      saga_node_lines.push_back(line);
      std::smatch m;
      if (std::regex_search(line, m, resume_re))
        resumed += std::stoul(m[1]);
    }
  };
  for (int round = 0; round < 3; ++round) {
    auto node = start_node("s", saga_args, within(patience));
    // Kill it at a random moment while new orders are in flight (a restarted
    // client first replays the orders it already started: those do not count).
    auto wanted = std::uniform_int_distribution<size_t>{5, 40}(rng);
    REQUIRE(eventually(
        within(patience),
        [&] { return node->count_lines(" started as saga ") >= wanted; }, 2ms));
    node->kill(SIGKILL);
    REQUIRE(node->wait_exit(within(patience)) == 128 + SIGKILL);
    count_resumed(*node.process);
  }
  auto last = start_node("s", saga_args, within(patience));
  REQUIRE(last->wait_for_line(
      "orders client finished: " + std::to_string(orders) + " orders", within(240s)));

  count_resumed(*last.process);
  // The kills interrupted sagas, which the restarted node resumed.
  CHECK(resumed > 0);

  auto auditor = start_node("x",
                            strings{"--services.enabled", "[orders_auditor]",
                                    "--cluster.seeds", address(saga_port)} +
                                fast_detector,
                            within(patience));
  auto audit_finished = auditor->wait_for_line("audit finished", within(patience));
  if (!audit_finished)
    for (auto& line : auditor->lines())
      UNSCOPED_INFO(line);
  REQUIRE(audit_finished);
  auto a = read_audit(*auditor.process);

  // One saga per order, each in an end state.
  REQUIRE(a.saga_status.size() == static_cast<size_t>(orders));
  for (auto& [id, status] : a.saga_status) {
    INFO("saga " << id);
    CHECK(is_end(status));
  }
  // No idempotency key was applied twice.
  for (auto& [key, n] : a.applied) {
    INFO("key " << key);
    CHECK(n == 1);
  }
  auto applied = [&](const std::string& key) { return a.applied.count(key) > 0; };
  // What the saga nodes logged about one saga, for a failed check.
  auto history = [&](const std::string& id) {
    std::string out;
    for (auto& line : saga_node_lines)
      if (line.find(id) != std::string::npos)
        out += line + "\n";
    return out;
  };
  for (auto& [id, status] : a.saga_status) {
    INFO("saga " << id << " " << status);
    INFO("saga node log lines naming it:\n" << history(id));
    for (std::string step : {"reserve", "charge"}) {
      // Never a compensation for a step that did not happen.
      if (applied(id + "/" + step + "/compensate"))
        CHECK(applied(id + "/" + step));
      // Every completed step is kept (completed) or undone (compensated).
      if (status == "completed")
        CHECK((applied(id + "/" + step) && !applied(id + "/" + step + "/compensate")));
      if (status == "compensated" && applied(id + "/" + step))
        CHECK(applied(id + "/" + step + "/compensate"));
    }
    if (status == "completed")
      CHECK(applied(id + "/ship"));
  }
}

TEST_CASE("a saga runs only on its owner: starts sent to any node are forwarded, and "
          "while the owner is down its sagas wait instead of running elsewhere",
          "[cluster][slow]") {
  temp_dir dir;
  std::map<std::string, uint16_t> ports{
      {"a", free_port()}, {"b", free_port()}, {"c", free_port()}};
  auto args_for = [&](const std::string& name, int count) {
    return strings{"--cluster.port",
                   std::to_string(ports[name]),
                   "--cluster.seeds",
                   address(ports["a"]),
                   "--services.enabled",
                   "[sagas, orders, inventory, payment, shipping, orders_client]",
                   "--store.path",
                   (dir.path() / name).string(),
                   "--sagas.owners",
                   "[a, b, c]",
                   "--orders_client.count",
                   std::to_string(count),
                   "--orders_client.key_prefix",
                   "from-" + name} +
           fast_detector;
  };
  std::map<std::string, running_node> nodes;
  for (auto name : {"a", "b", "c"})
    nodes.emplace(name, start_node(name, args_for(name, 30), within(patience)));
  for (auto& [name, node] : nodes)
    if (!node->wait_for_line("orders client finished: 30 orders", within(patience)))
      FAIL("node " << name << ":\n" << node->output());

  // Each saga ran on the node its id names, and only there.
  std::regex ended{R"(saga (\S+)\.([abc]) \(order_processing\) ended)"};
  std::set<std::string> owners_seen;
  for (auto& [name, node] : nodes) {
    for (auto& line : node->lines()) {
      std::smatch m;
      if (std::regex_search(line, m, ended)) {
        CHECK(m[2] == name);
        owners_seen.insert(m[2]);
      }
    }
  }
  // Keys spread over the owners: starts were forwarded.
  CHECK(owners_seen.size() == 3);

  // With c down, a new client's orders owned by c are refused as unavailable,
  // naming the owner, and run nowhere else.
  nodes.at("c")->kill(SIGKILL);
  REQUIRE(nodes.at("c")->wait_exit(within(patience)));
  auto client = start_node(
      "x",
      strings{"--services.enabled", "[orders_client]", "--cluster.seeds",
              address(ports["a"]), "--orders_client.count", "30",
              "--orders_client.key_prefix", "later", "--orders_client.fail_every", "0"} +
          fast_detector,
      within(patience));
  REQUIRE(client->wait_for_line("saga owner node 'c' is unreachable", within(patience)));
  for (auto name : {"a", "b"})
    CHECK(nodes.at(name)->count_lines(".c (order_processing) ended") == 0);

  // c comes back on its store: the waiting orders proceed.
  nodes.erase("c");
  nodes.emplace("c", start_node("c", args_for("c", 0), within(patience)));
  auto finished = client->wait_for_line("orders client finished: 30 orders: 30 completed",
                                        within(patience));
  if (!finished)
    FAIL("client:\n"
         << client->output() << "\nnode c:\n"
         << nodes.at("c")->output() << "\nnode a:\n"
         << nodes.at("a")->output());
}

TEST_CASE("a node with a store stops gracefully on SIGTERM and its sagas resume on "
          "restart",
          "[cluster]") {
  temp_dir dir;
  auto args = strings{"--services.enabled",
                      "[sagas, orders, inventory, payment, shipping, orders_client]",
                      "--store.path",
                      (dir.path() / "s").string(),
                      "--payment.latency",
                      "200ms",
                      "--orders_client.count",
                      "8",
                      "--orders_client.fail_every",
                      "0"} +
              fast_detector;
  auto node = start_node("s", args, within(patience));
  REQUIRE(node->wait_for_line(" started as saga ", within(patience)));
  node->kill(SIGTERM);
  // Exit 0: the signal reached the watcher, not a RocksDB thread.
  REQUIRE(node->wait_exit(within(patience)) == 0);
  REQUIRE(node->count_lines("node s stopped") == 1);

  auto again = start_node("s", args, within(patience));
  REQUIRE(again->wait_for_line("orders client finished: 8 orders: 8 completed",
                               within(patience)));
}
