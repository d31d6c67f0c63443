// Several hosts on one machine: each node runs in a network namespace of its
// own with its own address, all on the same port, joined by a bridge. Unlike
// loopback tests this exercises advertised addresses and a real network
// partition (a link going down) rather than a dead process.

#include <support/http_get.hpp>
#include <support/node_process.hpp>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

using namespace troupe::test;
using namespace std::chrono_literals;

namespace {

const auto patience = 15s;

std::string ip_program() {
  for (const char* candidate : {"/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"})
    if (access(candidate, X_OK) == 0)
      return candidate;
  return {};
}

bool run(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// Namespaces "<prefix>-hub" (the bridge) and "<prefix>-<host>" with
// 10.77.0.<10+i>/24 on eth0; removed on destruction.
class test_network {
public:
  explicit test_network(std::vector<std::string> hosts)
      : prefix_("troupe" + std::to_string(getpid()))
      , hosts_(std::move(hosts)) {
    ok_ = run(ip_ + " netns add " + hub()) &&
          run(ip_ + " -n " + hub() + " link add br0 type bridge") &&
          run(ip_ + " -n " + hub() + " link set br0 up");
    for (size_t i = 0; ok_ && i < hosts_.size(); ++i) {
      auto ns = netns(hosts_[i]);
      auto port = "hv" + std::to_string(i);
      ok_ = run(ip_ + " netns add " + ns) &&
            run(ip_ + " -n " + hub() + " link add " + port +
                " type veth peer name eth0 netns " + ns) &&
            run(ip_ + " -n " + hub() + " link set " + port + " master br0 up") &&
            run(ip_ + " -n " + ns + " addr add " + address(i) + "/24 dev eth0") &&
            run(ip_ + " -n " + ns + " link set eth0 up") &&
            run(ip_ + " -n " + ns + " link set lo up");
    }
  }
  ~test_network() {
    for (auto& host : hosts_)
      run(ip_ + " netns del " + netns(host));
    run(ip_ + " netns del " + hub());
  }

  bool ok() const { return ok_; }
  std::string address(size_t i) const { return "10.77.0." + std::to_string(11 + i); }
  std::string netns(const std::string& host) const { return prefix_ + "-" + host; }

  /// Cuts (or restores) host i's only link: its process keeps running.
  bool set_link(size_t i, bool up) {
    return run(ip_ + " -n " + hub() + " link set hv" + std::to_string(i) +
               (up ? " up" : " down"));
  }

  /// Starts troupe-node inside host i's namespace.
  std::unique_ptr<node_process> start(size_t i, std::vector<std::string> args) {
    std::vector<std::string> full{
        "netns",          "exec",    netns(hosts_[i]),      troupe_node_binary(),
        "--node.name",    hosts_[i], "--cluster.bind_host", address(i),
        "--cluster.port", "4100",    "--status.port",       "0"};
    full.insert(full.end(), args.begin(), args.end());
    return std::make_unique<node_process>(
        ip_, std::move(full), std::map<std::string, std::string>{}, hosts_[i]);
  }

private:
  std::string hub() const { return prefix_ + "-hub"; }

  std::string ip_ = ip_program();
  std::string prefix_;
  std::vector<std::string> hosts_;
  bool ok_ = false;
};

} // namespace

TEST_CASE("nodes on three hosts form a cluster, detect a partitioned host and take it "
          "back when the network heals",
          "[cluster][netns]") {
  if (geteuid() != 0 || ip_program().empty()) {
    WARN("needs root and iproute2 for network namespaces; not run");
    return;
  }
  test_network net{{"a", "b", "c"}};
  REQUIRE(net.ok());
  const std::vector<std::string> detector{"--cluster.heartbeat_interval",
                                          "100ms",
                                          "--cluster.failure_timeout",
                                          "1s",
                                          "--cluster.seeds",
                                          net.address(0) + ":4100"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), detector.begin(), detector.end());
    return extra;
  };
  auto a = net.start(0, with({"--services.enabled", "caller", "--caller.interval",
                              "100ms", "--caller.timeout", "500ms"}));
  auto b = net.start(1, with({"--services.enabled", "[]"}));
  auto c = net.start(2, with({"--services.enabled", "greeter"}));

  // Every node advertises its own host's address, on the same port.
  CHECK(a->wait_for_line("member c joined from " + net.address(2) + ":4100",
                         within(patience)));
  CHECK(b->wait_for_line("member c joined from " + net.address(2) + ":4100",
                         within(patience)));
  auto answered = a->wait_for_line("answered by node c", within(patience));
  INFO("log of a:\n" << a->output());
  REQUIRE(answered.has_value());

  // Partition: c's process lives on, its link does not.
  auto mark = a->line_count();
  REQUIRE(net.set_link(2, false));
  auto down = a->wait_for("member c at " + net.address(2) + ":4100 is down",
                          within(patience), mark);
  REQUIRE(down.has_value());
  CHECK(a->wait_for("failed: service_unavailable", within(patience), mark));
  CHECK(c->running());

  // Heal: c is taken back and answers again.
  mark = a->line_count();
  REQUIRE(net.set_link(2, true));
  CHECK(a->wait_for("member c joined", within(patience), mark));
  CHECK(a->wait_for("answered by node c", within(patience), mark));
}

TEST_CASE("with cluster.members a host cut off from the other two stops serving while "
          "they keep serving, and all three serve after the network heals",
          "[cluster][netns][quorum]") {
  if (geteuid() != 0 || ip_program().empty()) {
    WARN("needs root and iproute2 for network namespaces; not run");
    return;
  }
  test_network net{{"a", "b", "c"}};
  REQUIRE(net.ok());
  // Every host calls the greeter; the registry answers with one it sees, so
  // the cut host can only reach its own, which refuses while in the minority.
  const std::vector<std::string> args{"--cluster.heartbeat_interval",
                                      "100ms",
                                      "--cluster.failure_timeout",
                                      "1s",
                                      "--cluster.seeds",
                                      net.address(0) + ":4100",
                                      "--cluster.members",
                                      "[a, b, c]",
                                      "--services.enabled",
                                      "[greeter, caller]",
                                      "--caller.interval",
                                      "100ms",
                                      "--caller.timeout",
                                      "500ms"};
  std::vector<std::unique_ptr<node_process>> nodes;
  for (size_t i = 0; i < 3; ++i)
    nodes.push_back(net.start(i, args));
  auto& c = *nodes[2];
  for (auto& node : nodes) {
    INFO("log:\n" << node->output());
    REQUIRE(node->wait_for_line("majority reached", within(patience)));
    REQUIRE(node->wait_for_line("answered by node", within(patience)));
  }

  std::vector<size_t> marks;
  for (auto& node : nodes)
    marks.push_back(node->line_count());
  REQUIRE(net.set_link(2, false));
  // The failure detector notices within its timeout (1 s); quorum follows at
  // once. The slack is for a loaded, sanitized run.
  auto lost = c.wait_for("majority lost: this node sees 1 of 3 configured members",
                         within(1s + 4s), marks[2]);
  INFO("log of c:\n" << c.output());
  REQUIRE(lost.has_value());
  CHECK(c.wait_for("failed: service_unavailable", within(patience), lost->index + 1));
  for (size_t i = 0; i < 2; ++i) {
    INFO("log of " << i << ":\n" << nodes[i]->output());
    CHECK(nodes[i]->count_lines("majority lost") == 0);
    // Calls made after c was cut off are answered.
    auto after = nodes[i]->wait_for("is down", within(patience), marks[i]);
    REQUIRE(after.has_value());
    CHECK(nodes[i]->wait_for("answered by node", within(patience), after->index + 1));
  }

  for (auto& node : nodes)
    marks.push_back(node->line_count());
  auto healed = c.line_count();
  REQUIRE(net.set_link(2, true));
  auto back = c.wait_for("majority reached", within(patience), healed);
  REQUIRE(back.has_value());
  CHECK(c.wait_for("answered by node", within(patience), back->index + 1));
  CHECK(nodes[0]->wait_for("member c joined", within(patience), marks[3]));
}
