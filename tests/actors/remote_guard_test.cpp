// Resilience across nodes: this test process joins a cluster with a peer node
// (a real process on loopback) that provides the echo service, calls it by
// name through a guard, makes it slow through the peer's own fault injection
// switched on at run time, and watches the caller's breaker open, shed load,
// and close again after recovery. Waits are on events with deadlines.

#include <troupe/actors/guard.hpp>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/message_catalog.hpp>

#include "actors/echo.hpp"
#include "support/node_process.hpp"

using namespace std::chrono_literals;
using namespace troupe::resilience;
using echo::echo_actor;
using echo::ping;
using echo::pong;
using troupe::call_context;
using troupe::errc;
using troupe::test::within;

namespace {

const std::vector<std::string> fast_detector{"--cluster.heartbeat_interval", "100ms",
                                             "--cluster.failure_timeout",    "1s",
                                             "--cluster.connect_timeout",    "1s"};

/// Breaker events, handed from an actor to the test thread.
class event_queue {
public:
  void push(const breaker_state_changed& ev) {
    std::lock_guard<std::mutex> lock{mtx_};
    events_.push_back(ev);
    cv_.notify_all();
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock{mtx_};
    return events_.size();
  }
  /// The first event at position >= `from` entering state `to`.
  std::optional<breaker_state_changed>
  wait_for(breaker_state to, size_t from, troupe::test::steady::time_point deadline) {
    std::unique_lock<std::mutex> lock{mtx_};
    std::optional<breaker_state_changed> found;
    cv_.wait_until(lock, deadline, [&] {
      for (size_t i = from; i < events_.size(); ++i)
        if (events_[i].to == to) {
          found = events_[i];
          return true;
        }
      return false;
    });
    return found;
  }

private:
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<breaker_state_changed> events_;
};

caf::behavior event_sink(caf::event_based_actor*, std::shared_ptr<event_queue> q) {
  return {[q](const breaker_state_changed& ev) { q->push(ev); }};
}

resilience_policy caller_policy() {
  resilience_policy p;
  p.dependency = "remote-echo";
  p.timeout = 200ms;
  p.bulkhead = {true, 16, 16};
  p.breaker.window = window_kind::count;
  p.breaker.window_size = 4;
  p.breaker.minimum_calls = 4;
  // Trips when all of the last 4 calls failed or were slow.
  p.breaker.failure_rate_threshold = 1.0;
  p.breaker.slow_call_duration = 100ms;
  p.breaker.slow_call_rate_threshold = 1.0;
  p.breaker.wait_in_open = 1s;
  p.breaker.wait_multiplier = 1.0;
  p.breaker.half_open_calls = 2;
  p.breaker.automatic_half_open = true;
  p.retry.max_attempts = 1;
  return p;
}

/// This process as a cluster node that can talk to the peer.
struct caller_node {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  troupe::cluster_actor cluster;

  explicit caller_node(const std::string& seed) {
    troupe::message_catalog catalog;
    echo::add_messages(catalog);
    add_messages(catalog);
    catalog.apply_to(cfg);
    cfg.load<caf::io::middleman>();
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    troupe::cluster_settings s;
    s.node_name = "caller";
    s.port = 0;
    s.seeds = {seed};
    s.heartbeat_interval = 100ms;
    s.failure_timeout = 1s;
    s.connect_timeout = 1s;
    cluster = troupe::spawn_cluster(*sys, s, std::make_shared<troupe::cluster_view>());
  }

  ~caller_node() { caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown); }

  /// The handle the registry gives for `name` (invalid while unknown).
  caf::actor find(const std::string& name) {
    caf::scoped_actor self{*sys};
    caf::actor found;
    auto names = sys->message_types<echo_actor>();
    self->request(cluster, caf::duration{1s}, troupe::find_service_atom::value, name,
                  std::vector<std::string>(names.begin(), names.end()))
        .receive([&](caf::actor& a) { found = std::move(a); }, [](caf::error&) {});
    return found;
  }
};

struct call_result {
  bool ok = false;
  errc code = errc::none;
  std::string detail;
  std::chrono::steady_clock::duration took{};
};

call_result call(caf::scoped_actor& self, const echo_actor& target, int32_t n) {
  call_result r;
  auto started = std::chrono::steady_clock::now();
  self->request(target, caf::duration{5s}, call_context{}, ping{n})
      .receive([&](pong&) { r.ok = true; },
               [&](caf::error& err) {
                 r.code = troupe::classify(err);
                 r.detail = troupe::describe(err);
               });
  r.took = std::chrono::steady_clock::now() - started;
  return r;
}

/// Calls that reached the peer's guard so far, all outcomes together.
uint64_t calls_seen_by(caf::scoped_actor& self, const guard_admin_actor& admin) {
  uint64_t total = 0;
  self->request(admin, caf::duration{5s}, guard_stats_atom::value)
      .receive(
          [&](guard_stats& s) {
            for (size_t i = 0; i < s.outcomes.size(); ++i)
              if (i != static_cast<size_t>(call_outcome::retried))
                total += s.outcomes[i];
            total += s.active;
          },
          [&](caf::error& err) {
            FAIL("no stats from the peer: " << troupe::describe(err));
          });
  return total;
}

void set_faults(caf::scoped_actor& self, const guard_admin_actor& admin,
                const fault_settings& faults) {
  bool ok = false;
  self->request(admin, caf::duration{5s}, inject_faults_atom::value, faults)
      .receive([&](caf::ok_atom) { ok = true; },
               [&](caf::error& err) {
                 FAIL("peer refused faults: " << troupe::describe(err));
               });
  REQUIRE(ok);
}

} // namespace

TEST_CASE("a dependency on another node that turns slow opens the caller's breaker, "
          "which sheds calls at once and closes after recovery",
          "[cluster]") {
  spdlog::set_level(spdlog::level::warn);
  auto peer_args = fast_detector;
  peer_args.insert(peer_args.end(), {"--resilience.dependencies.echo.breaker.enabled",
                                     "false", "--services.enabled", "echo"});
  auto peer =
      troupe::test::start_node_at(TROUPE_ACTORS_PEER, "peer", peer_args, within(20s));
  caller_node node{peer.cluster_address()};

  // The peer's echo service becomes known through the cluster registry.
  caf::actor remote;
  REQUIRE(troupe::test::eventually(within(20s), [&] {
    remote = node.find("echo");
    return static_cast<bool>(remote);
  }));
  auto peer_admin = admin_of(remote);

  auto events = std::make_shared<event_queue>();
  auto sink = node.sys->spawn(event_sink, events);
  auto guarded = guard_service<echo_actor>(*node.sys, "echo", caller_policy());
  // Stops both even when an assertion fails, so the actor system can end.
  std::shared_ptr<void> stop_actors{
      nullptr, [&](void*) {
        caf::anon_send_exit(guarded, caf::exit_reason::user_shutdown);
        caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
      }};
  caf::scoped_actor self{*node.sys};
  self->request(admin_of(guarded), caf::duration{5s}, breaker_events_atom::value, sink)
      .receive([](caf::ok_atom) {}, [](caf::error&) {});

  // 1. Healthy: calls go through to the other node.
  for (int32_t i = 0; i < 5; ++i) {
    auto r = call(self, guarded, i);
    INFO(r.detail);
    REQUIRE(r.ok);
  }

  // 2. The dependency turns slow (fault injection on the peer, at run time).
  fault_settings slow;
  slow.enabled = true;
  slow.latency = 400ms;
  set_faults(self, peer_admin, slow);
  // minimum_calls calls, each slower than the caller's timeout: all time out,
  // and the last one trips the breaker.
  for (int32_t i = 0; i < 4; ++i) {
    auto r = call(self, guarded, 100 + i);
    INFO(r.detail);
    CHECK(r.code == errc::timeout);
  }
  auto opened = events->wait_for(breaker_state::open, 0, within(5s));
  REQUIRE(opened);
  CHECK(opened->calls == 4);
  CHECK(opened->failures == 4);

  // 3. Open: callers get circuit_open at once; nothing piles up at the peer.
  auto seen_before = calls_seen_by(self, peer_admin);
  auto burst_started = std::chrono::steady_clock::now();
  const int32_t burst = 50;
  for (int32_t i = 0; i < burst; ++i)
    self->send(guarded, call_context{}, ping{200 + i});
  int32_t rejected = 0;
  for (int32_t i = 0; i < burst; ++i)
    self->receive([&](pong&) {},
                  [&](caf::error& err) {
                    if (troupe::classify(err) == errc::circuit_open)
                      ++rejected;
                  },
                  caf::after(5s) >> [] {});
  auto burst_took = std::chrono::steady_clock::now() - burst_started;
  CHECK(rejected == burst);
  // The slow path would take 50 x 200 ms; the bound stays under the open wait
  // (1 s) with room for a loaded machine.
  CHECK(burst_took < 900ms);
  auto single = call(self, guarded, 300);
  CHECK(single.code == errc::circuit_open);
  CHECK_THAT(single.detail, Catch::Contains("retry after"));
  CHECK(single.took < 900ms); // refused at once, not after a call to the slow peer
  CHECK(calls_seen_by(self, peer_admin) == seen_before);

  // 4. Recovery: faults off; after the open wait the probes succeed and the
  //    breaker closes.
  set_faults(self, peer_admin, fault_settings{});
  auto half_open = events->wait_for(breaker_state::half_open, 0, within(5s));
  REQUIRE(half_open);
  std::optional<breaker_state_changed> closed;
  auto recovery_deadline = within(10s);
  for (int32_t i = 0; !closed && troupe::test::steady::now() < recovery_deadline; ++i) {
    auto r = call(self, guarded, 400 + i);
    if (r.ok)
      closed = events->wait_for(breaker_state::closed, 0, within(100ms));
  }
  REQUIRE(closed);
  CHECK(closed->failures == 0);
  auto after = call(self, guarded, 500);
  CHECK(after.ok);

  peer->kill(SIGTERM);
  CHECK(peer->wait_exit(within(15s)) == 0);
}

TEST_CASE(
    "a node with a resilience threshold outside 0..1 exits with code 2 naming the key") {
  troupe::test::node_process peer{
      TROUPE_ACTORS_PEER,
      {"--node.name", "bad", "--status.port", "0", "--cluster.port", "0",
       "--resilience.dependencies.echo.breaker.failure_rate_threshold", "1.5"}};
  auto code = peer.wait_exit(within(15s));
  REQUIRE(code);
  CHECK(*code == 2);
  CHECK_THAT(
      peer.output(),
      Catch::Contains("resilience.dependencies.echo.breaker.failure_rate_threshold"));
}

TEST_CASE("a node with an unknown backoff strategy in its YAML exits with code 2 naming "
          "the key") {
  troupe::test::temp_dir dir;
  auto file = dir.write("node.yaml",
                        "node:\n  name: bad\nstatus:\n  port: 0\ncluster:\n  port: 0\n"
                        "resilience:\n  dependencies:\n    echo:\n      retry:\n"
                        "        backoff: exponential_jitter\n");
  troupe::test::node_process peer{TROUPE_ACTORS_PEER, {"--config", file.string()}};
  auto code = peer.wait_exit(within(15s));
  REQUIRE(code);
  CHECK(*code == 2);
  CHECK_THAT(peer.output(),
             Catch::Contains("resilience.dependencies.echo.retry.backoff"));
  CHECK_THAT(peer.output(), Catch::Contains("decorrelated_jitter"));
}
