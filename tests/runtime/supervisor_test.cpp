#include <troupe/runtime/supervisor.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/metrics.hpp>

using namespace std::chrono_literals;

namespace {

using incr_atom = caf::atom_constant<caf::atom("incr")>;
using value_atom = caf::atom_constant<caf::atom("value")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;

struct counter_state {
  static const char* name;
  int32_t value = 0;
};
const char* counter_state::name = "counter";

/// A child with state: counts, crashes or finishes on request.
// Test actors take an argument: a zero-argument function spawn makes CAF
// 0.17's init_fun_factory dereference a null shared_ptr<tuple<>> (UBSan).
caf::behavior counter(caf::stateful_actor<counter_state>* self, int32_t start) {
  self->state.value = start;
  return {
      [self](incr_atom) { return ++self->state.value; },
      [self](value_atom) { return self->state.value; },
      [self](crash_atom) { self->quit(caf::sec::runtime_error); },
      [self](finish_atom) { self->quit(); },
  };
}

/// A child that ignores user_shutdown: only a kill stops it.
caf::behavior stubborn(caf::event_based_actor* self, int32_t answer) {
  self->set_exit_handler([](caf::exit_msg&) {});
  return {[answer](value_atom) { return answer; }};
}

troupe::child_spec
counter_child(std::string name,
              troupe::restart_policy restart = troupe::restart_policy::permanent) {
  return {std::move(name), [](caf::actor_system& sys) { return sys.spawn(counter, 0); },
          restart};
}

bool has_code(const caf::error& err, troupe::errc code) {
  return err.category() == troupe::troupe_category::value &&
         err.code() == static_cast<uint8_t>(code);
}

/// A deterministic actor system (CAF-0.17.md §9): actors run only in
/// `sched->run()`, timers fire only when triggered, on a virtual clock.
struct deterministic {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::vector<caf::actor> spawned;
  spdlog::level::level_enum old_level = spdlog::get_level();

  deterministic() {
    if (!std::getenv("SUP_LOG"))
      spdlog::set_level(spdlog::level::off); // restarts are expected here
    cfg.set("scheduler.policy", caf::atom("testing"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
  }

  ~deterministic() {
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    sched->run();
    // Grace timers of stubborn children; stale restart timers are harmless.
    for (int i = 0; i < 100 && sched->clock().trigger_timeout(); ++i)
      sched->run();
    spawned.clear();
    spdlog::set_level(old_level);
  }

  caf::actor supervisor(std::string name, troupe::supervisor_settings settings,
                        std::vector<troupe::child_spec> children) {
    auto sup =
        troupe::spawn_supervisor(*sys, std::move(name), settings, std::move(children));
    spawned.push_back(sup);
    sched->run();
    return sup;
  }

  /// Sends `xs` to `dst`, runs the system and returns the reply, an error
  /// reply, or sec::request_timeout when nothing came back.
  template <class T, class... Ts>
  caf::expected<T> ask(const caf::actor& dst, Ts... xs) {
    caf::scoped_actor self{*sys};
    self->send(dst, xs...);
    sched->run();
    caf::expected<T> result{caf::make_error(caf::sec::request_timeout)};
    self->receive([&](T& x) { result = std::move(x); },
                  [&](caf::error& err) { result = std::move(err); },
                  caf::after(0s) >> [] {});
    return result;
  }

  caf::expected<caf::actor> which(const caf::actor& sup, const std::string& name) {
    return ask<caf::actor>(sup, troupe::which_child_atom::value, name);
  }

  caf::actor child(const caf::actor& sup, const std::string& name) {
    auto c = which(sup, name);
    REQUIRE(c);
    return *c;
  }

  bool is_dead(const caf::actor& a) {
    caf::scoped_actor self{*sys};
    self->monitor(a);
    sched->run();
    bool dead = false;
    self->receive([&](caf::down_msg&) { dead = true; }, caf::after(0s) >> [] {});
    return dead;
  }

  void crash(const caf::actor& a) {
    caf::anon_send(a, crash_atom::value);
    sched->run();
  }

  /// Delays of the pending restart timers, relative to the virtual now.
  std::vector<std::chrono::milliseconds> pending_restart_delays() {
    std::vector<std::chrono::milliseconds> out;
    auto& clock = sched->clock();
    for (auto& [due, ev] : clock.schedule()) {
      if (ev->subtype != caf::detail::simple_actor_clock::actor_msg_type)
        continue;
      auto& msg = static_cast<caf::detail::simple_actor_clock::actor_msg&>(*ev);
      if (msg.content->content().match_elements<troupe::restart_child_atom, uint64_t>())
        out.push_back(
            std::chrono::duration_cast<std::chrono::milliseconds>(due - clock.now()));
    }
    return out;
  }

  /// Fires the next timer (the restart backoff) and runs the system.
  void fire_next_timer() {
    REQUIRE(sched->clock().trigger_timeout());
    sched->run();
  }
};

} // namespace

TEST_CASE_METHOD(deterministic, "a crashing child restarts with fresh state") {
  auto sup = supervisor("fresh-state", {}, {counter_child("counter")});
  auto first = child(sup, "counter");
  CHECK(*ask<int32_t>(first, incr_atom::value) == 1);
  CHECK(*ask<int32_t>(first, incr_atom::value) == 2);
  crash(first);
  CHECK(is_dead(first));
  auto down = which(sup, "counter");
  REQUIRE(!down);
  CHECK(has_code(down.error(), troupe::errc::not_found));
  CHECK(pending_restart_delays() == std::vector{10ms});
  fire_next_timer();
  auto second = child(sup, "counter");
  CHECK(second != first);
  CHECK(*ask<int32_t>(second, value_atom::value) == 0);
  CHECK(
      troupe::metrics::instance().supervisor_restarts("fresh-state", "counter").Value() ==
      1);
}

TEST_CASE_METHOD(deterministic,
                 "a transient child that exits normally is not restarted") {
  auto sup = supervisor("transient", {},
                        {counter_child("finishes", troupe::restart_policy::transient),
                         counter_child("shut-down", troupe::restart_policy::transient),
                         counter_child("neighbour")});
  auto finishes = child(sup, "finishes");
  auto shut_down = child(sup, "shut-down");
  auto neighbour = child(sup, "neighbour");
  caf::anon_send(finishes, finish_atom::value);
  caf::anon_send_exit(shut_down, caf::exit_reason::user_shutdown);
  sched->run();
  CHECK(is_dead(finishes));
  CHECK(is_dead(shut_down));
  CHECK(pending_restart_delays().empty());
  CHECK(!which(sup, "finishes"));
  CHECK(!which(sup, "shut-down"));
  CHECK(child(sup, "neighbour") == neighbour);
  CHECK(!is_dead(sup));
}

TEST_CASE_METHOD(deterministic, "a transient child that crashes is restarted") {
  auto sup = supervisor("transient-crash", {},
                        {counter_child("worker", troupe::restart_policy::transient)});
  auto first = child(sup, "worker");
  crash(first);
  CHECK(pending_restart_delays().size() == 1);
  fire_next_timer();
  CHECK(child(sup, "worker") != first);
}

TEST_CASE_METHOD(deterministic, "a temporary child is never restarted") {
  auto sup = supervisor("temporary", {},
                        {counter_child("once", troupe::restart_policy::temporary)});
  crash(child(sup, "once"));
  CHECK(pending_restart_delays().empty());
  CHECK(!sched->clock().has_pending_timeout());
  auto down = which(sup, "once");
  REQUIRE(!down);
  CHECK(has_code(down.error(), troupe::errc::not_found));
  CHECK(!is_dead(sup));
}

TEST_CASE_METHOD(deterministic, "all-for-one restarts every sibling when one fails") {
  troupe::supervisor_settings settings;
  settings.strategy = troupe::restart_strategy::all_for_one;
  auto sup = supervisor("all", settings,
                        {counter_child("a"), counter_child("b"), counter_child("c")});
  auto a = child(sup, "a");
  auto b = child(sup, "b");
  auto c = child(sup, "c");
  CHECK(*ask<int32_t>(a, incr_atom::value) == 1);
  crash(b);
  CHECK(is_dead(a));
  CHECK(is_dead(b));
  CHECK(is_dead(c));
  CHECK(pending_restart_delays() == std::vector{10ms});
  fire_next_timer();
  auto a2 = child(sup, "a");
  auto b2 = child(sup, "b");
  auto c2 = child(sup, "c");
  CHECK(a2 != a);
  CHECK(b2 != b);
  CHECK(c2 != c);
  CHECK(*ask<int32_t>(a2, value_atom::value) == 0);
  CHECK(!is_dead(c2));
}

TEST_CASE_METHOD(deterministic,
                 "rest-for-one restarts the failed child and those started after it, "
                 "not those before") {
  troupe::supervisor_settings settings;
  settings.strategy = troupe::restart_strategy::rest_for_one;
  auto sup = supervisor("rest", settings,
                        {counter_child("a"), counter_child("b"), counter_child("c")});
  auto a = child(sup, "a");
  auto b = child(sup, "b");
  auto c = child(sup, "c");
  CHECK(*ask<int32_t>(a, incr_atom::value) == 1);
  crash(b);
  CHECK(!is_dead(a));
  CHECK(is_dead(c));
  fire_next_timer();
  CHECK(child(sup, "a") == a);
  CHECK(*ask<int32_t>(a, value_atom::value) == 1);
  CHECK(child(sup, "b") != b);
  CHECK(child(sup, "c") != c);
}

TEST_CASE_METHOD(deterministic,
                 "exceeding the restart budget stops the children and escalates to the "
                 "parent") {
  troupe::supervisor_settings settings;
  settings.max_restarts = 2;
  settings.window = 5s;
  auto sup = supervisor("budget", settings,
                        {counter_child("a"), counter_child("b"), counter_child("c")});
  caf::scoped_actor parent{*sys};
  parent->monitor(sup);
  for (int restart = 0; restart < 2; ++restart) {
    crash(child(sup, "a"));
    fire_next_timer();
  }
  auto b = child(sup, "b");
  auto c = child(sup, "c");
  parent->monitor(b);
  parent->monitor(c);
  crash(child(sup, "a"));
  std::vector<caf::actor_addr> order;
  caf::error sup_reason;
  for (int i = 0; i < 3; ++i)
    parent->receive(
        [&](caf::down_msg& dm) {
          order.push_back(dm.source);
          if (dm.source == sup.address())
            sup_reason = dm.reason;
        },
        caf::after(0s) >> [] {});
  // Children stop in reverse start order, then the supervisor fails upward.
  REQUIRE(order.size() == 3);
  CHECK(order[0] == c.address());
  CHECK(order[1] == b.address());
  CHECK(order[2] == sup.address());
  CHECK(has_code(sup_reason, troupe::errc::restart_budget_exceeded));
  CHECK(troupe::describe(sup_reason).find("budget: child 'a' failed too often") !=
        std::string::npos);
  CHECK(is_dead(b));
  CHECK(is_dead(c));
  CHECK(is_dead(sup));
}

TEST_CASE_METHOD(deterministic, "backoff between restarts doubles and is capped") {
  troupe::supervisor_settings settings;
  settings.max_restarts = 10;
  settings.window = 10s;
  settings.initial_backoff = 10ms;
  settings.max_backoff = 40ms;
  auto sup = supervisor("backoff", settings, {counter_child("flaky")});
  for (auto expected : {10ms, 20ms, 40ms, 40ms, 40ms}) {
    auto before = child(sup, "flaky");
    crash(before);
    CHECK(pending_restart_delays() == std::vector{expected});
    // Not restarted before the backoff has elapsed.
    CHECK(!which(sup, "flaky"));
    fire_next_timer();
    CHECK(child(sup, "flaky") != before);
  }
}

TEST_CASE_METHOD(deterministic, "restarts older than the window no longer count") {
  troupe::supervisor_settings settings;
  settings.max_restarts = 2;
  settings.window = 1s;
  auto sup = supervisor("window", settings, {counter_child("flaky")});
  for (int round = 0; round < 3; ++round) {
    crash(child(sup, "flaky"));
    CHECK(pending_restart_delays() == std::vector{10ms});
    fire_next_timer();
    crash(child(sup, "flaky"));
    CHECK(pending_restart_delays() == std::vector{20ms});
    fire_next_timer();
    sched->clock().advance_time(2s);
    sched->run();
  }
  CHECK(!is_dead(sup));
}

TEST_CASE_METHOD(deterministic,
                 "a nested supervisor that gives up is restarted by its parent") {
  troupe::supervisor_settings strict;
  strict.max_restarts = 0;
  auto root = supervisor(
      "root", {}, {troupe::supervisor_child("inner", strict, {counter_child("worker")})});
  auto inner = child(root, "inner");
  auto worker = child(inner, "worker");
  CHECK(*ask<int32_t>(worker, incr_atom::value) == 1);
  caf::scoped_actor observer{*sys};
  observer->monitor(inner);
  crash(worker);
  caf::error inner_reason;
  observer->receive([&](caf::down_msg& dm) { inner_reason = dm.reason; },
                    caf::after(0s) >> [] {});
  CHECK(has_code(inner_reason, troupe::errc::restart_budget_exceeded));
  CHECK(!is_dead(root));
  fire_next_timer();
  auto inner2 = child(root, "inner");
  CHECK(inner2 != inner);
  auto worker2 = child(inner2, "worker");
  CHECK(worker2 != worker);
  CHECK(*ask<int32_t>(worker2, value_atom::value) == 0);
}

TEST_CASE_METHOD(deterministic,
                 "stopping a supervisor stops its children in reverse start order") {
  auto root = supervisor("tree", {},
                         {counter_child("a"),
                          troupe::supervisor_child("inner", {}, {counter_child("leaf")}),
                          counter_child("c")});
  auto a = child(root, "a");
  auto inner = child(root, "inner");
  auto leaf = child(inner, "leaf");
  auto c = child(root, "c");
  caf::scoped_actor observer{*sys};
  for (auto& x : {a, inner, leaf, c, root})
    observer->monitor(x);
  caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
  sched->run();
  std::vector<caf::actor_addr> order;
  caf::error root_reason;
  for (int i = 0; i < 5; ++i)
    observer->receive(
        [&](caf::down_msg& dm) {
          order.push_back(dm.source);
          if (dm.source == root.address())
            root_reason = dm.reason;
        },
        caf::after(0s) >> [] {});
  std::vector<caf::actor_addr> expected{c.address(), leaf.address(), inner.address(),
                                        a.address(), root.address()};
  CHECK(order == expected);
  CHECK(root_reason == caf::exit_reason::user_shutdown);
}

TEST_CASE_METHOD(deterministic, "a child that ignores the shutdown request is killed") {
  auto sup = supervisor("grace", {}, {{"stubborn", [](caf::actor_system& sys) {
                                         return sys.spawn(stubborn, 42);
                                       }}});
  auto s = child(sup, "stubborn");
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  sched->run();
  CHECK(!is_dead(s));
  CHECK(!is_dead(sup));
  fire_next_timer(); // the grace period ends
  CHECK(is_dead(s));
  CHECK(is_dead(sup));
}

TEST_CASE_METHOD(deterministic, "asking for an unknown child answers not_found") {
  auto sup = supervisor("lookup", {}, {counter_child("known")});
  auto res = which(sup, "unknown");
  REQUIRE(!res);
  CHECK(has_code(res.error(), troupe::errc::not_found));
}
