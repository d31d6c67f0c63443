// Several troupe-node processes on loopback forming one cluster: membership,
// remote service calls, failure detection (crash and freeze), rejoining,
// seeds that come up late, and graceful shutdown.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "support/cluster_nodes.hpp"
#include "support/http_get.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
template <class Duration>
double seconds(Duration d) {
  return std::chrono::duration<double>(d).count();
}

} // namespace

TEST_CASE("three nodes join one cluster and see each other", "[cluster]") {
  auto n = start_three(runs_nothing, runs_nothing, runs_nothing);

  std::set<std::string> node_ids;
  std::vector<cluster_info> views;
  for (auto* node : {&n.a, &n.b, &n.c}) {
    auto view = get_cluster(node->status_port);
    REQUIRE(view.has_value());
    INFO(describe(view));
    CHECK(view->node == node->name);
    CHECK(view->joined);
    CHECK(view->members.size() == 3);
    node_ids.insert(view->node_id);
    views.push_back(*view);
    CHECK(http_status(node->status_port, "/readyz") == 200);
    CHECK(http_status(node->status_port, "/healthz") == 200);
  }
  // Three processes, three identities (CAF derives them from host and pid).
  CHECK(node_ids.size() == 3);
  // Every node knows every other under its own identity and address.
  for (auto& view : views) {
    for (auto& other : views) {
      auto* m = view.find(other.node);
      REQUIRE(m != nullptr);
      CHECK(m->node_id == other.node_id);
    }
  }
  CHECK(views[0].find("b")->address == n.b.cluster_address());
  CHECK(views[0].find("c")->address == n.c.cluster_address());
  CHECK(views[1].find("c")->address == n.c.cluster_address());
  CHECK(views[2].find("b")->address == n.b.cluster_address());
}

TEST_CASE("a service registered on node C is called from node A", "[cluster]") {
  auto n = start_three(runs_caller, runs_nothing, runs_greeter);

  auto answered = n.a->wait_for_line(
      std::regex{R"(call \d+ answered by node c in \d+us: "Hello, caller #\d+!")"},
      within(patience));
  INFO("log of a:\n" << n.a->output());
  REQUIRE(answered.has_value());
  // The call's correlation id travels to C and back into A's reply handler:
  // both nodes log the same one. C's log arrives through its own pipe, so
  // wait for it rather than peek.
  std::smatch id;
  REQUIRE(std::regex_search(*answered, id, std::regex{R"(\[cid=([0-9a-f]+)\])"}));
  CHECK(
      n.c->wait_for_line("[cid=" + id[1].str() + "] greeting caller #", within(patience))
          .has_value());
  // Only C provides it: nobody else answers.
  CHECK(n.a->count_lines("answered by node a") == 0);
  CHECK(n.a->count_lines("answered by node b") == 0);

  // The registry travels with membership: A and B list greeter under C only.
  for (auto* node : {&n.a, &n.b}) {
    auto view = get_cluster(node->status_port);
    REQUIRE(view.has_value());
    INFO(describe(view));
    CHECK(view->find("c")->services == strings{"greeter"});
    CHECK(view->find("a")->services.empty());
    CHECK(view->find("b")->services.empty());
  }
}

TEST_CASE("after kill -9 of node C calls from A fail with a clear error within the "
          "failure timeout and membership shows two nodes",
          "[cluster]") {
  auto n = start_three(runs_caller, runs_nothing, runs_greeter);
  REQUIRE(n.a->wait_for_line("answered by node c", within(patience)));

  auto mark_a = n.a->line_count();
  auto mark_b = n.b->line_count();
  auto killed_at = steady::now();
  REQUIRE(n.c->kill(SIGKILL));

  auto failed = n.a->wait_for("failed: service_unavailable", within(patience), mark_a);
  INFO("log of a:\n" << n.a->output());
  REQUIRE(failed.has_value());
  auto elapsed = failed->received - killed_at;
  INFO("first clear failure after " << seconds(elapsed) << "s: " << failed->text);
  CHECK(elapsed < failure_timeout + 2s); // room for a loaded, sanitized node
  CHECK(failed->text.find("no live node provides service 'greeter'") !=
        std::string::npos);

  // Both survivors mark C down and list two members.
  CHECK(
      n.a->wait_for_line(std::regex{"member c at .* is down"}, within(patience), mark_a));
  CHECK(
      n.b->wait_for_line(std::regex{"member c at .* is down"}, within(patience), mark_b));
  require_members(n.a, {"a", "b"});
  require_members(n.b, {"a", "b"});
  CHECK(n.c->wait_exit(within(patience)) == 128 + SIGKILL);
}

TEST_CASE("a restarted node C rejoins and its service answers again", "[cluster]") {
  auto n = start_three(runs_caller, runs_nothing, runs_greeter);
  REQUIRE(n.a->wait_for_line("answered by node c", within(patience)));
  auto old_view = get_cluster(n.c.status_port);
  REQUIRE(old_view.has_value());
  auto c_port = n.c.cluster_port;

  auto mark = n.a->line_count();
  n.c->kill(SIGKILL);
  REQUIRE(n.a->wait_for_line("failed: service_unavailable", within(patience), mark));
  require_members(n.a, {"a", "b"});

  // Same name, same address, new process.
  mark = n.a->line_count();
  auto mark_b = n.b->line_count();
  n.c = start_node("c",
                   fast_detector + runs_greeter + seeded_by(n.a) +
                       strings{"--cluster.port", std::to_string(c_port)},
                   within(patience));
  auto answered = n.a->wait_for_line("answered by node c", within(patience), mark);
  INFO("log of a:\n" << n.a->output());
  INFO("log of c:\n" << n.c->output());
  REQUIRE(answered.has_value());
  CHECK(n.b->wait_for_line("member c joined", within(patience), mark_b));

  auto new_view = get_cluster(n.c.status_port);
  REQUIRE(new_view.has_value());
  CHECK(new_view->node_id != old_view->node_id);
  for (auto* node : {&n.a, &n.b, &n.c}) {
    require_members(*node, {"a", "b", "c"});
    auto view = get_cluster(node->status_port);
    REQUIRE(view.has_value());
    CHECK(view->find("c")->node_id == new_view->node_id);
  }
}

TEST_CASE("a node that stops answering (SIGSTOP) is marked down after the failure "
          "timeout and rejoins after SIGCONT",
          "[cluster]") {
  auto n = start_three(runs_caller, runs_nothing, runs_greeter);
  REQUIRE(n.a->wait_for_line("answered by node c", within(patience)));

  auto mark_a = n.a->line_count();
  auto mark_b = n.b->line_count();
  auto stopped_at = steady::now();
  REQUIRE(n.c->kill(SIGSTOP));

  // The connection stays open: only the missing pongs reveal the freeze.
  auto down = n.a->wait_for(std::regex{"member c at .* is down: no answer within 1000ms"},
                            within(patience), mark_a);
  INFO("log of a:\n" << n.a->output());
  REQUIRE(down.has_value());
  auto elapsed = down->received - stopped_at;
  INFO("marked down after " << seconds(elapsed) << "s");
  // Not before the failure timeout (less the pings under way when C stopped,
  // which C may have been slow to answer), and not much after it.
  CHECK(elapsed >= failure_timeout - 3 * heartbeat_interval);
  CHECK(elapsed < failure_timeout + 2s); // room for a loaded, sanitized node
  CHECK(
      n.b->wait_for_line(std::regex{"member c at .* is down"}, within(patience), mark_b));
  require_members(n.a, {"a", "b"});
  require_members(n.b, {"a", "b"});
  CHECK(n.a->wait_for_line("failed: service_unavailable", within(patience), mark_a));
  CHECK(http_status(n.a.status_port, "/readyz") == 200);

  mark_a = n.a->line_count();
  mark_b = n.b->line_count();
  REQUIRE(n.c->kill(SIGCONT));
  INFO("log of c:\n" << n.c->output());
  CHECK(n.a->wait_for_line("member c joined", within(patience), mark_a));
  CHECK(n.b->wait_for_line("member c joined", within(patience), mark_b));
  for (auto* node : {&n.a, &n.b, &n.c})
    require_members(*node, {"a", "b", "c"});
  CHECK(n.a->wait_for_line("answered by node c", within(patience), mark_a));
}

TEST_CASE("a node started with an unreachable seed keeps retrying and becomes ready once "
          "the seed comes up",
          "[cluster]") {
  auto seed_port = free_port();
  auto seed = "127.0.0.1:" + std::to_string(seed_port);
  auto d = start_node("d",
                      fast_detector + runs_nothing +
                          strings{"--cluster.seeds", seed, "--log.level", "debug"},
                      within(patience));

  // Retries are logged at debug level: wait for a few of them.
  size_t from = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto retry = d->wait_for("cannot reach " + seed, within(patience), from);
    INFO("log of d:\n" << d->output());
    REQUIRE(retry.has_value());
    from = retry->index + 1;
  }
  CHECK(http_status(d.status_port, "/readyz") == 503);
  CHECK(http_status(d.status_port, "/healthz") == 200);
  CHECK(d->count_lines("joined the cluster") == 0);
  auto alone = get_cluster(d.status_port);
  REQUIRE(alone.has_value());
  CHECK_FALSE(alone->joined);
  CHECK(alone->names() == strings{"d"});

  auto a = start_node("a",
                      fast_detector + runs_nothing +
                          strings{"--cluster.port", std::to_string(seed_port)},
                      within(patience));
  REQUIRE(a.cluster_port == seed_port);
  CHECK(d->wait_for_line("joined the cluster through " + seed, within(patience)));
  bool ready = eventually(within(patience),
                          [&] { return http_status(d.status_port, "/readyz") == 200; });
  INFO("log of d:\n" << d->output());
  CHECK(ready);
  require_members(d, {"a", "d"});
  require_members(a, {"a", "d"});
}

TEST_CASE("SIGTERM drains, leaves the cluster and exits 0", "[cluster]") {
  // A long failure timeout: a peer that only noticed C through the failure
  // detector would take 10s.
  const strings slow_detector{"--cluster.heartbeat_interval", "100ms",
                              "--cluster.failure_timeout", "10s"};
  auto n = start_three(runs_nothing, runs_nothing, runs_greeter, slow_detector);
  REQUIRE(http_status(n.c.status_port, "/readyz") == 200);

  auto mark_a = n.a->line_count();
  auto mark_b = n.b->line_count();
  auto term_at = steady::now();
  REQUIRE(n.c->kill(SIGTERM));

  auto left_a = n.a->wait_for("member c left the cluster", within(patience), mark_a);
  auto left_b = n.b->wait_for("member c left the cluster", within(patience), mark_b);
  INFO("log of a:\n" << n.a->output());
  INFO("log of c:\n" << n.c->output());
  REQUIRE(left_a.has_value());
  REQUIRE(left_b.has_value());
  // Well before the 10 s detector could have told them.
  CHECK(left_a->received - term_at < 5s);
  CHECK(left_b->received - term_at < 5s);

  // Unready from the start of the drain; gone after it.
  CHECK(eventually(within(patience),
                   [&] { return http_status(n.c.status_port, "/readyz") != 200; }));
  auto code = n.c->wait_exit(within(patience));
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(n.c->count_lines("shutdown requested: draining") == 1);
  CHECK(n.c->count_lines("drained 1 of 1 services") == 1);
  CHECK(n.c->count_lines("node c stopped") == 1);
  CHECK(http_status(n.c.status_port, "/readyz", 500ms) == 0);

  require_members(n.a, {"a", "b"});
  require_members(n.b, {"a", "b"});
  // It left; nobody had to detect a failure.
  CHECK(n.a->count_lines("member c at", mark_a) == 0);
  CHECK(n.b->count_lines("member c at", mark_b) == 0);
}

TEST_CASE("a second SIGTERM stops the node at once", "[cluster]") {
  auto a = start_node(
      "a", fast_detector + runs_greeter + strings{"--shutdown.grace_period", "60s"},
      within(patience));
  REQUIRE(eventually(within(patience),
                     [&] { return http_status(a.status_port, "/readyz") == 200; }));

  // The stock node drains in about a millisecond, too fast to aim a second
  // signal at, and POSIX merges a second pending SIGTERM into the first. So
  // two signals are queued while the node is stopped: SIGINT, which it takes
  // first (sent first, and the lower number), then SIGTERM, which arrives in
  // the middle of the drain.
  REQUIRE(a->kill(SIGSTOP));
  REQUIRE(a->kill(SIGINT));
  REQUIRE(a->kill(SIGTERM));
  auto continued_at = steady::now();
  REQUIRE(a->kill(SIGCONT));

  auto code = a->wait_exit(within(patience));
  INFO("log of a:\n" << a->output());
  REQUIRE(code.has_value());
  CHECK(*code == 130);
  CHECK(steady::now() - continued_at < 5s); // not the 60s grace period
  // The first signal may not even have reached the log before the second.
  CHECK(a->count_lines("second signal 15: stopping at once") == 1);
  CHECK(a->count_lines("node a stopped") == 0);
}

TEST_CASE("a node discovers its peers through a DNS name that resolves to them",
          "[cluster]") {
  // "localhost" resolves to 127.0.0.1 (and ::1, where nothing listens): the
  // same shape as a headless Service resolving to every pod.
  auto a = start_node("a", fast_detector + runs_greeter, within(patience));
  auto b = start_node("b",
                      fast_detector + runs_caller +
                          strings{"--cluster.dns_name", "localhost", "--cluster.dns_port",
                                  std::to_string(a.cluster_port)},
                      within(patience));
  require_members(b, {"a", "b"});
  require_members(a, {"a", "b"});
  CHECK(b->wait_for_line("answered by node a", within(patience)).has_value());
  bool ready = eventually(within(patience),
                          [&] { return http_status(b.status_port, "/readyz") == 200; });
  CHECK(ready);
}

TEST_CASE("membership and registry size are exported as metrics", "[cluster]") {
  auto n = start_three(runs_nothing, runs_nothing, runs_greeter);
  auto has = [&](const std::string& line) {
    return eventually(within(patience), [&] {
      auto body = http_get(n.a.status_port, "/metrics");
      return body && body->body.find(line) != std::string::npos;
    });
  };
  CHECK(has("troupe_cluster_members{state=\"up\"} 3"));
  CHECK(has("troupe_registry_services 1"));
  CHECK(has("process_resident_memory_bytes"));
  REQUIRE(n.c->kill(SIGKILL));
  CHECK(has("troupe_cluster_members{state=\"up\"} 2"));
  CHECK(has("troupe_cluster_members{state=\"down\"} 1"));
  CHECK(has("troupe_registry_services 0"));
}

TEST_CASE("a node that sees fewer than a majority of cluster.members is not ready, and "
          "is ready while a majority is up",
          "[cluster][quorum]") {
  const strings members{"--cluster.members", "[a, b, c]"};
  auto a = start_node("a", fast_detector + runs_nothing + members, within(patience));
  INFO("log of a:\n" << a->output());
  REQUIRE(a->wait_for_line("waiting for a majority of the 3 configured members",
                           within(patience)));
  CHECK(http_status(a.status_port, "/readyz") == 503);

  auto b = start_node("b", fast_detector + runs_nothing + members + seeded_by(a),
                      within(patience));
  CHECK(a->wait_for_line("majority reached: this node sees 2 of 3 configured members",
                         within(patience)));
  for (auto* node : {&a, &b})
    CHECK(eventually(within(patience),
                     [&] { return http_status(node->status_port, "/readyz") == 200; }));
  auto view = http_get(a.status_port, "/cluster");
  REQUIRE(view.has_value());
  CHECK(view->body.find(
            "\"quorum\":{\"configured\":3,\"reachable\":2,\"majority\":true}") !=
        std::string::npos);

  auto mark = a->line_count();
  REQUIRE(b->kill(SIGKILL));
  CHECK(a->wait_for_line("majority lost: this node sees 1 of 3 configured members",
                         within(patience), mark));
  CHECK(eventually(within(patience),
                   [&] { return http_status(a.status_port, "/readyz") == 503; }));
  auto metrics = http_get(a.status_port, "/metrics");
  REQUIRE(metrics.has_value());
  CHECK(metrics->body.find("troupe_cluster_quorum 0") != std::string::npos);
}

TEST_CASE("cluster.members must list the node itself, once", "[cluster][quorum]") {
  for (auto& list : {std::string{"[b, c]"}, std::string{"[a, a, b]"}}) {
    node_process p{
        troupe_node_binary(),
        {"--node.name", "a", "--cluster.members", list, "--status.enabled", "false"}};
    auto code = p.wait_exit(within(patience));
    INFO("output: " << p.output());
    CHECK(code == 2);
    CHECK(p.count_lines("configuration error: cluster.members") == 1);
  }
}

namespace {

/// The environment that sets a node's wall clock `seconds` away from this
/// process's, its monotonic clocks untouched.
std::map<std::string, std::string> wall_clock_off_by(long seconds) {
  std::string asan =
      std::getenv("ASAN_OPTIONS") != nullptr ? std::getenv("ASAN_OPTIONS") : "";
  // Under ASan the preloaded library comes before ASan's runtime; allow it.
  asan += (asan.empty() ? "" : ":") + std::string{"verify_asan_link_order=0"};
  return {{"LD_PRELOAD", TROUPE_WALL_CLOCK_SHIFT_LIBRARY},
          {"WALL_CLOCK_SHIFT_SECONDS", std::to_string(seconds)},
          {"ASAN_OPTIONS", asan}};
}

/// The wall-clock time a node's log line was written, as the node saw it.
std::optional<std::chrono::system_clock::time_point> logged_at(const std::string& line) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(line.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(timegm(&tm)) +
         std::chrono::milliseconds(ms);
}

} // namespace

TEST_CASE("a node whose wall clock is an hour ahead answers calls within their deadlines",
          "[cluster][clock]") {
  auto c = start_node("c", fast_detector + runs_greeter, within(patience),
                      wall_clock_off_by(3600));
  // The skew took: c stamps its log an hour ahead of this process's clock.
  auto first = c->wait_for_line("cluster endpoint listening", within(patience));
  REQUIRE(first);
  auto stamped = logged_at(*first);
  REQUIRE(stamped);
  CHECK(*stamped - std::chrono::system_clock::now() > 50min);

  // Calls carry the time they have left, not an instant on the caller's
  // clock: c would otherwise see every deadline an hour past.
  auto a = start_node("a", fast_detector + runs_caller + seeded_by(c), within(patience));
  auto answered = a->wait_for_line(std::regex{R"(call \d+ answered by node c in \d+us)"},
                                   within(patience));
  INFO("log of a:\n" << a->output() << "\nlog of c:\n" << c->output());
  REQUIRE(answered.has_value());
  CHECK(c->count_lines("greeting caller #") >= 1);
}
