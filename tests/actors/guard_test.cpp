// The whole chain inside one guard actor, on CAF's deterministic coordinator:
// actors run step by step on the test thread and the clock is virtual, so a
// test that waits seconds for a breaker or a deadline takes microseconds.

#include <troupe/actors/guard.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include <troupe/actors/deadline_clock.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/message_catalog.hpp>

#include "echo.hpp"

using namespace std::chrono_literals;
using namespace troupe::resilience;
using echo::echo_actor;
using echo::ping;
using echo::pong;
using troupe::call_context;
using troupe::errc;
using ns = std::chrono::nanoseconds;

namespace {

using release_atom = caf::atom_constant<caf::atom("release")>;

/// What the backend does with the pings it gets, and what it saw.
struct backend_script {
  enum class mode { reply, fail, hang, slow } how = mode::reply;
  errc error = errc::service_unavailable;
  ns delay{0};
  std::vector<call_context> seen;
  std::vector<caf::actor_clock::time_point> seen_at;
};

struct backend_state {
  static inline const char* name = "backend";
  std::map<int32_t, std::pair<caf::response_promise, int32_t>> held;
  int32_t next = 0;
};

/// The guarded dependency, scripted by the test.
caf::behavior backend(caf::stateful_actor<backend_state>* self,
                      std::shared_ptr<backend_script> script) {
  return {
      [](troupe::drain_atom) { return troupe::drained_atom::value; },
      [=](const call_context& ctx, const ping& p) -> caf::result<pong> {
        script->seen.push_back(ctx);
        script->seen_at.push_back(self->clock().now());
        switch (script->how) {
        case backend_script::mode::reply:
          return pong{p.n, "backend"};
        case backend_script::mode::fail:
          return troupe::make_error(script->error, "scripted failure");
        case backend_script::mode::hang:
        case backend_script::mode::slow: {
          auto rp = self->make_response_promise();
          auto id = self->state.next++;
          self->state.held.emplace(id, std::make_pair(rp, p.n));
          if (script->how == backend_script::mode::slow)
            self->delayed_send(self, script->delay, release_atom::value, id);
          return rp;
        }
        }
        return troupe::make_error(errc::internal);
      },
      [=](release_atom, int32_t id) {
        auto i = self->state.held.find(id);
        if (i == self->state.held.end())
          return;
        i->second.first.deliver(pong{i->second.second, "backend"});
        self->state.held.erase(i);
      },
  };
}

/// How one call ended, as its caller saw it.
struct result {
  bool ok = false;
  int32_t value = -1;
  std::string by;
  errc code = errc::none;
  std::string detail;
  caf::actor_clock::time_point at;
};
using results = std::map<int32_t, result>;

/// A caller: requests what the test tells it to and writes down the answers.
caf::behavior client(caf::event_based_actor* self, echo_actor target,
                     std::shared_ptr<results> out) {
  return {
      [=](int32_t id, const call_context& ctx) {
        self->request(target, caf::duration{3600s}, ctx, ping{id})
            .then(
                [=](const pong& r) {
                  (*out)[id] =
                      result{true, r.n, r.by, errc::none, "", self->clock().now()};
                },
                [=](caf::error& err) {
                  (*out)[id] = result{false,
                                      -1,
                                      "",
                                      troupe::classify(err),
                                      troupe::describe(err),
                                      self->clock().now()};
                });
      },
  };
}

/// Collects breaker events.
caf::behavior event_sink(caf::event_based_actor*,
                         std::shared_ptr<std::vector<breaker_state_changed>> out) {
  return {[=](const breaker_state_changed& ev) { out->push_back(ev); }};
}

struct deterministic {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::vector<caf::actor> spawned;
  std::shared_ptr<backend_script> script = std::make_shared<backend_script>();
  std::shared_ptr<results> out = std::make_shared<results>();
  std::shared_ptr<std::vector<breaker_state_changed>> events =
      std::make_shared<std::vector<breaker_state_changed>>();
  echo_actor raw;
  caf::actor caller;
  caf::actor_clock::time_point start;

  deterministic() {
    spdlog::set_level(spdlog::level::off);
    troupe::message_catalog catalog;
    echo::add_messages(catalog);
    add_messages(catalog);
    catalog.apply_to(cfg);
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    raw = caf::actor_cast<echo_actor>(keep(sys->spawn(backend, script)));
    start = now();
  }

  ~deterministic() {
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    sched->run();
    spdlog::set_level(spdlog::level::info);
  }

  template <class Handle>
  Handle keep(Handle h) {
    spawned.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

  caf::actor_clock::time_point now() { return sys->clock().now(); }

  /// Guards the backend and makes a caller for the guarded handle.
  echo_actor guarded(resilience_policy policy, fallback fb = {}) {
    policy.seed = 1;
    auto g = keep(guard(*sys, raw, std::move(policy), std::move(fb)));
    caller = keep(sys->spawn(client, g, out));
    auto sink = keep(sys->spawn(event_sink, events));
    caf::anon_send(admin_of(g), breaker_events_atom::value, sink);
    sched->run();
    return g;
  }

  /// Starts call `id`, with a deadline `deadline` from now unless zero.
  void call(int32_t id, ns deadline = 0ns) {
    call_context ctx;
    ctx.correlation_id = "test";
    if (deadline > 0ns)
      ctx.deadline_ns = deadline_clock::now_ns(*sys) + deadline.count();
    caf::anon_send(caller, id, ctx);
    sched->run();
  }

  /// Moves the virtual clock on and runs what became due.
  void advance(ns d) {
    sched->clock().advance_time(d);
    sched->run();
  }

  bool answered(int32_t id) const { return out->count(id) > 0; }
  const result& answer(int32_t id) const { return out->at(id); }

  guard_stats stats(const echo_actor& g) {
    caf::scoped_actor self{*sys};
    guard_stats result;
    self->send(admin_of(g), guard_stats_atom::value);
    sched->run();
    self->receive([&](guard_stats& s) { result = std::move(s); },
                  caf::after(0s) >> [] {});
    return result;
  }

  uint64_t outcome(const guard_stats& s, call_outcome o) {
    return s.outcomes.at(static_cast<size_t>(o));
  }
};

resilience_policy plain_policy() {
  resilience_policy p;
  p.dependency = "echo-test";
  p.timeout = 1s;
  p.bulkhead = {true, 10, 10};
  p.breaker.enabled = false;
  p.retry.max_attempts = 1;
  return p;
}

resilience_policy breaker_policy() {
  auto p = plain_policy();
  p.breaker.enabled = true;
  p.breaker.window = window_kind::count;
  p.breaker.window_size = 10;
  p.breaker.minimum_calls = 5;
  p.breaker.failure_rate_threshold = 0.5;
  p.breaker.slow_call_duration = 200ms;
  p.breaker.slow_call_rate_threshold = 0.5;
  p.breaker.wait_in_open = 1s;
  p.breaker.wait_multiplier = 2.0;
  p.breaker.max_wait = 30s;
  p.breaker.half_open_calls = 2;
  return p;
}

} // namespace

static_assert(
    std::is_same_v<decltype(guard(std::declval<caf::actor_system&>(),
                                  std::declval<echo_actor>(), resilience_policy{})),
                   echo_actor>,
    "a guarded handle has the target's own type");

TEST_CASE_METHOD(deterministic, "a guarded handle answers like the target itself") {
  guarded(plain_policy());
  call(1);
  REQUIRE(answered(1));
  CHECK(answer(1).ok);
  CHECK(answer(1).value == 1);
  CHECK(answer(1).by == "backend");
}

TEST_CASE_METHOD(
    deterministic,
    "a guard's breaker trips on the failure rate but not before the minimum calls") {
  auto g = guarded(breaker_policy());
  script->how = backend_script::mode::fail;
  for (int32_t i = 1; i <= 4; ++i) {
    call(i);
    CHECK(answer(i).code == errc::service_unavailable);
  }
  CHECK(stats(g).breaker == breaker_state::closed);
  call(5);
  CHECK(answer(5).code == errc::service_unavailable);
  CHECK(stats(g).breaker == breaker_state::open);
  REQUIRE(events->size() == 1);
  CHECK(events->at(0).to == breaker_state::open);
  CHECK(events->at(0).failures == 5);
  // Open: answered at once, without reaching the backend, with the time left.
  advance(300ms);
  call(6);
  REQUIRE(answered(6));
  CHECK(answer(6).code == errc::circuit_open);
  CHECK(answer(6).at == now());
  CHECK_THAT(answer(6).detail, Catch::Contains("retry after 700ms"));
  CHECK(script->seen.size() == 5);
  CHECK(outcome(stats(g), call_outcome::rejected_breaker) == 1);
}

TEST_CASE_METHOD(
    deterministic,
    "a guard's breaker trips on the slow-call rate though every call succeeds") {
  auto g = guarded(breaker_policy());
  script->how = backend_script::mode::slow;
  script->delay = 300ms; // slower than slow_call_duration, within the timeout
  for (int32_t i = 1; i <= 5; ++i)
    call(i);
  advance(300ms);
  for (int32_t i = 1; i <= 5; ++i)
    CHECK(answer(i).ok);
  CHECK(stats(g).breaker == breaker_state::open);
  REQUIRE_FALSE(events->empty());
  CHECK(events->back().slow == 5);
  CHECK(events->back().failures == 0);
  call(6);
  CHECK(answer(6).code == errc::circuit_open);
}

TEST_CASE_METHOD(deterministic,
                 "a timeout counts as a failure and a not-found reply does not") {
  auto g = guarded(breaker_policy());
  script->how = backend_script::mode::fail;
  script->error = errc::not_found;
  for (int32_t i = 1; i <= 10; ++i)
    call(i);
  CHECK(answer(10).code == errc::not_found);
  CHECK(stats(g).breaker == breaker_state::closed);
  script->how = backend_script::mode::hang;
  for (int32_t i = 11; i <= 15; ++i)
    call(i);
  advance(1s); // every call's timeout
  CHECK(answer(15).code == errc::timeout);
  CHECK(stats(g).breaker == breaker_state::open);
}

TEST_CASE_METHOD(deterministic, "a guard closes its half-open breaker when the probes "
                                "sent to the dependency succeed") {
  auto p = breaker_policy();
  p.breaker.automatic_half_open = true;
  auto g = guarded(p);
  script->how = backend_script::mode::fail;
  for (int32_t i = 1; i <= 5; ++i)
    call(i);
  REQUIRE(stats(g).breaker == breaker_state::open);
  advance(999ms);
  CHECK(stats(g).breaker == breaker_state::open);
  advance(1ms); // the breaker's own timer moves it to half-open on time
  REQUIRE(events->size() == 2);
  CHECK(events->at(1).to == breaker_state::half_open);
  script->how = backend_script::mode::reply;
  call(6);
  call(7);
  CHECK(answer(6).ok);
  CHECK(answer(7).ok);
  REQUIRE(events->size() == 3);
  CHECK(events->at(2).to == breaker_state::closed);
  CHECK(stats(g).breaker == breaker_state::closed);
}

TEST_CASE_METHOD(
    deterministic,
    "a guard reopens its half-open breaker on a failed probe and waits longer") {
  auto g = guarded(breaker_policy());
  script->how = backend_script::mode::fail;
  for (int32_t i = 1; i <= 5; ++i)
    call(i);
  REQUIRE(events->back().open_for == 1s);
  advance(1s);
  CHECK(events->size() == 1); // no timer: half-open comes with the next call
  call(6);                    // a failed probe
  CHECK(answer(6).code == errc::service_unavailable);
  REQUIRE(events->back().to == breaker_state::open);
  CHECK(events->back().open_for == 2s);
  advance(1s);
  call(7);
  CHECK(answer(7).code == errc::circuit_open);
  advance(1s);
  CHECK(stats(g).breaker == breaker_state::half_open);
  call(8);
  CHECK(events->back().open_for == 4s);
}

TEST_CASE_METHOD(deterministic,
                 "the bulkhead rejects the (N+M+1)-th concurrent call at once") {
  auto p = plain_policy();
  p.bulkhead = {true, 2, 3};
  auto g = guarded(p);
  script->how = backend_script::mode::hang;
  for (int32_t i = 1; i <= 6; ++i)
    call(i);
  CHECK(script->seen.size() == 2); // N in flight
  auto s = stats(g);
  CHECK(s.in_use == 2);
  CHECK(s.queued == 3);
  for (int32_t i = 1; i <= 5; ++i)
    CHECK_FALSE(answered(i));
  REQUIRE(answered(6));
  CHECK(answer(6).code == errc::overloaded);
  CHECK(answer(6).at == start);
  CHECK(outcome(s, call_outcome::rejected_bulkhead) == 1);
}

TEST_CASE_METHOD(deterministic, "a queued call that outlives its deadline is answered "
                                "with a timeout and never sent") {
  auto p = plain_policy();
  p.bulkhead = {true, 1, 5};
  p.timeout = 10s;
  auto g = guarded(p);
  script->how = backend_script::mode::slow;
  script->delay = 1s;
  call(1);        // takes the only slot for 1s
  call(2, 300ms); // queued, its caller waits 300ms
  call(3);        // queued, no deadline of its own
  advance(300ms);
  REQUIRE(answered(2));
  CHECK(answer(2).code == errc::timeout);
  CHECK(answer(2).at - start == 300ms);
  CHECK_FALSE(answered(1));
  advance(700ms);
  CHECK(answer(1).ok);
  advance(1s);
  CHECK(answer(3).ok);
  REQUIRE(script->seen.size() == 2); // call 2 never reached the backend
  CHECK(stats(g).queued == 0);
}

TEST_CASE_METHOD(deterministic, "a call times out after the dependency's timeout") {
  auto p = plain_policy();
  p.timeout = 500ms;
  guarded(p);
  script->how = backend_script::mode::hang;
  call(1);
  advance(499ms);
  CHECK_FALSE(answered(1));
  advance(1ms);
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::timeout);
}

TEST_CASE_METHOD(deterministic,
                 "a reply that comes after its call timed out is dropped") {
  auto p = plain_policy();
  p.timeout = 1s;
  auto g = guarded(p);
  script->how = backend_script::mode::slow;
  script->delay = 2s;
  call(1);
  advance(1s);
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::timeout);
  advance(1s); // the backend answers now, too late
  CHECK(answer(1).code == errc::timeout);
  CHECK(stats(g).active == 0);
  script->how = backend_script::mode::reply;
  call(2);
  CHECK(answer(2).ok);
}

TEST_CASE_METHOD(
    deterministic,
    "calls in flight fail with service_unavailable as soon as the target ends") {
  auto p = plain_policy();
  p.timeout = 10s;
  guarded(p);
  script->how = backend_script::mode::hang;
  call(1);
  CHECK_FALSE(answered(1));
  caf::anon_send_exit(raw, caf::exit_reason::user_shutdown);
  sched->run();
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::service_unavailable);
  CHECK(answer(1).at == start);
  call(2);
  REQUIRE(answered(2));
  CHECK(answer(2).code == errc::service_unavailable);
}

TEST_CASE_METHOD(deterministic,
                 "the caller's deadline travels with the call and shrinks the timeout") {
  auto p = plain_policy();
  p.timeout = 5s;
  guarded(p);
  script->how = backend_script::mode::hang;
  auto deadline = deadline_clock::now_ns(*sys) + ns{300ms}.count();
  call(1, 300ms);
  REQUIRE(script->seen.size() == 1);
  CHECK(script->seen[0].deadline_ns == deadline);
  CHECK(script->seen[0].correlation_id == "test");
  advance(300ms);
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::timeout);
  // Without a deadline of its own, the call carries the dependency's timeout.
  call(2);
  REQUIRE(script->seen.size() == 2);
  CHECK(script->seen[1].deadline_ns == deadline_clock::now_ns(*sys) + ns{5s}.count());
}

TEST_CASE_METHOD(deterministic, "a call whose deadline already passed is never sent") {
  guarded(plain_policy());
  call_context ctx;
  ctx.deadline_ns = deadline_clock::now_ns(*sys) - 1;
  caf::anon_send(caller, int32_t{1}, ctx);
  sched->run();
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::timeout);
  CHECK(script->seen.empty());
}

TEST_CASE_METHOD(deterministic,
                 "retries reuse the idempotency key and never exceed the total budget") {
  auto p = plain_policy();
  p.retry.max_attempts = 10;
  p.retry.budget = 350ms;
  p.retry.backoff = {backoff_strategy::constant, 100ms, 100ms, 2.0};
  auto g = guarded(p);
  script->how = backend_script::mode::fail;
  call(1);
  for (int i = 0; i < 5 && !answered(1); ++i)
    advance(100ms);
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::service_unavailable);
  CHECK(answer(1).at - start == 300ms); // attempts at 0, 100, 200, 300; 400 is past 350
  REQUIRE(script->seen.size() == 4);
  auto key = script->seen[0].idempotency_key;
  CHECK_FALSE(key.empty());
  for (auto& ctx : script->seen)
    CHECK(ctx.idempotency_key == key);
  CHECK(outcome(stats(g), call_outcome::retried) == 3);
}

TEST_CASE_METHOD(deterministic, "a retry keeps the caller's idempotency key") {
  auto p = plain_policy();
  p.retry.max_attempts = 3;
  p.retry.backoff = {backoff_strategy::constant, 10ms, 10ms, 2.0};
  guarded(p);
  script->how = backend_script::mode::fail;
  call_context ctx;
  ctx.idempotency_key = "saga-42/charge";
  caf::anon_send(caller, int32_t{1}, ctx);
  sched->run();
  advance(10ms);
  advance(10ms);
  REQUIRE(script->seen.size() == 3);
  for (auto& seen : script->seen)
    CHECK(seen.idempotency_key == "saga-42/charge");
}

TEST_CASE_METHOD(deterministic, "retries never outlive the caller's deadline") {
  auto p = plain_policy();
  p.timeout = 100ms;
  p.retry.max_attempts = 10;
  p.retry.backoff = {backoff_strategy::constant, 20ms, 20ms, 2.0};
  guarded(p);
  script->how = backend_script::mode::hang; // every attempt times out
  auto deadline = deadline_clock::now_ns(*sys) + ns{250ms}.count();
  call(1, 250ms);
  for (int i = 0; i < 40 && !answered(1); ++i)
    advance(10ms);
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::timeout);
  // Attempts at 0, 120 and 240 (timeouts at 100, 220); the third is cut
  // short by the caller's deadline at 250.
  CHECK(answer(1).at - start == 250ms);
  REQUIRE(script->seen.size() == 3);
  for (auto& ctx : script->seen)
    CHECK(ctx.deadline_ns <= deadline);
  CHECK(script->seen[2].deadline_ns == deadline);
}

TEST_CASE_METHOD(deterministic, "a guard does not retry a non-retryable error") {
  auto p = plain_policy();
  p.retry.max_attempts = 5;
  p.retry.backoff = {backoff_strategy::constant, 10ms, 10ms, 2.0};
  auto g = guarded(p);
  script->how = backend_script::mode::fail;
  script->error = errc::bad_input;
  call(1);
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::bad_input);
  CHECK(script->seen.size() == 1);
  CHECK(outcome(stats(g), call_outcome::retried) == 0);
}

TEST_CASE_METHOD(deterministic, "a retried call that succeeds answers with the reply") {
  auto p = plain_policy();
  p.retry.max_attempts = 3;
  p.retry.backoff = {backoff_strategy::constant, 10ms, 10ms, 2.0};
  guarded(p);
  script->how = backend_script::mode::fail;
  call(1);
  script->how = backend_script::mode::reply;
  advance(10ms);
  REQUIRE(answered(1));
  CHECK(answer(1).ok);
  CHECK(script->seen.size() == 2);
}

TEST_CASE_METHOD(
    deterministic,
    "a guard with fault injection at probability 1 fails every call and at 0 none") {
  auto g = guarded(plain_policy());
  fault_settings always;
  always.enabled = true;
  always.error_probability = 1.0;
  always.error = errc::internal;
  caf::anon_send(admin_of(g), inject_faults_atom::value, always);
  sched->run();
  for (int32_t i = 1; i <= 20; ++i)
    call(i);
  for (int32_t i = 1; i <= 20; ++i)
    CHECK(answer(i).code == errc::internal);
  CHECK(script->seen.empty());
  auto never = always;
  never.error_probability = 0.0;
  caf::anon_send(admin_of(g), inject_faults_atom::value, never);
  sched->run();
  for (int32_t i = 21; i <= 40; ++i)
    call(i);
  for (int32_t i = 21; i <= 40; ++i)
    CHECK(answer(i).ok);
  CHECK(script->seen.size() == 20);
}

TEST_CASE_METHOD(deterministic,
                 "injected latency delays the call and can make it time out") {
  auto p = plain_policy();
  p.timeout = 500ms;
  auto g = guarded(p);
  CHECK_FALSE(stats(g).faults.enabled); // off by default
  fault_settings slow;
  slow.enabled = true;
  slow.latency = 200ms;
  caf::anon_send(admin_of(g), inject_faults_atom::value, slow);
  sched->run();
  call(1);
  CHECK(script->seen.empty());
  advance(200ms);
  CHECK(answer(1).ok);
  CHECK(answer(1).at - start == 200ms);
  slow.latency = 800ms;
  caf::anon_send(admin_of(g), inject_faults_atom::value, slow);
  sched->run();
  call(2);
  advance(500ms);
  REQUIRE(answered(2));
  CHECK(answer(2).code == errc::timeout);
  CHECK(script->seen.size() == 1);
}

TEST_CASE_METHOD(deterministic,
                 "the rate limiter refuses calls beyond the burst until tokens refill") {
  auto p = plain_policy();
  p.rate_limit = {true, 10.0, 2, rate_limit_scope::dependency};
  auto g = guarded(p);
  call(1);
  call(2);
  call(3);
  CHECK(answer(1).ok);
  CHECK(answer(2).ok);
  CHECK(answer(3).code == errc::rate_limited);
  advance(100ms);
  call(4);
  CHECK(answer(4).ok);
  CHECK(outcome(stats(g), call_outcome::rate_limited) == 1);
}

TEST_CASE_METHOD(deterministic,
                 "a per-caller rate limit gives each caller its own bucket") {
  auto p = plain_policy();
  p.rate_limit = {true, 1.0, 1, rate_limit_scope::caller};
  auto g = guarded(p);
  auto other_out = std::make_shared<results>();
  auto other = keep(sys->spawn(client, g, other_out));
  call(1);
  call(2);
  caf::anon_send(other, int32_t{3}, call_context{});
  sched->run();
  CHECK(answer(1).ok);
  CHECK(answer(2).code == errc::rate_limited);
  REQUIRE(other_out->count(3) == 1);
  INFO(other_out->at(3).detail);
  CHECK(other_out->at(3).ok);
}

TEST_CASE_METHOD(deterministic, "a fallback reply answers when the breaker is open") {
  auto p = breaker_policy();
  p.fallback_on = {errc::circuit_open};
  fallback fb;
  fb.reply<ping>(pong{-1, "fallback"});
  guarded(p, fb);
  script->how = backend_script::mode::fail;
  for (int32_t i = 1; i <= 5; ++i)
    call(i);
  CHECK(answer(5).code == errc::service_unavailable); // not in fallback_on
  call(6);
  REQUIRE(answered(6));
  CHECK(answer(6).ok);
  CHECK(answer(6).by == "fallback");
}

TEST_CASE_METHOD(deterministic, "a fallback actor answers calls that timed out") {
  auto alt_script = std::make_shared<backend_script>();
  auto alternative = caf::actor_cast<echo_actor>(keep(sys->spawn(backend, alt_script)));
  auto p = plain_policy();
  p.timeout = 100ms;
  p.fallback_on = {errc::timeout};
  fallback fb;
  fb.forward_to(alternative);
  guarded(p, fb);
  script->how = backend_script::mode::hang;
  call(1);
  advance(100ms);
  REQUIRE(answered(1));
  CHECK(answer(1).ok);
  CHECK(alt_script->seen.size() == 1);
}

TEST_CASE_METHOD(deterministic,
                 "breaker changes are counted in the dependency's metrics") {
  auto p = breaker_policy();
  p.dependency = "metrics-test";
  auto before = dependency_metrics::for_dependency("metrics-test");
  auto opened = troupe::metrics::instance().serialize();
  guarded(p);
  script->how = backend_script::mode::fail;
  for (int32_t i = 1; i <= 6; ++i)
    call(i);
  auto text = troupe::metrics::instance().serialize();
  CHECK_THAT(text, Catch::Contains(
                       "troupe_dependency_breaker_state{dependency=\"metrics-test\"} 1"));
  CHECK_THAT(text,
             Catch::Contains("troupe_dependency_breaker_transitions_total{dependency="
                             "\"metrics-test\",to=\"open\"} 1"));
  CHECK(before.counted(call_outcome::rejected_breaker) == 1);
  CHECK(before.counted(call_outcome::failure) == 5);
  CHECK_THAT(text, Catch::Contains("troupe_dependency_call_seconds_count{dependency="
                                   "\"metrics-test\"} 5"));
  CHECK_THAT(text, Catch::Contains("troupe_dependency_bulkhead_in_use{dependency="
                                   "\"metrics-test\"} 0"));
  (void)opened;
}

TEST_CASE_METHOD(deterministic,
                 "drain answers once every call through the guard is answered") {
  auto p = plain_policy();
  auto g = guarded(p);
  script->how = backend_script::mode::slow;
  script->delay = 100ms;
  call(1);
  caf::scoped_actor self{*sys};
  self->send(g, troupe::drain_atom::value);
  sched->run();
  bool drained = false;
  self->receive([&](troupe::drained_atom) { drained = true; }, caf::after(0s) >> [] {});
  CHECK_FALSE(drained);
  advance(100ms);
  self->receive([&](troupe::drained_atom) { drained = true; }, caf::after(0s) >> [] {});
  CHECK(drained);
  CHECK(answer(1).ok);
}

TEST_CASE_METHOD(
    deterministic,
    "calls still open when the guard stops are answered with shutting_down") {
  auto g = guarded(plain_policy());
  script->how = backend_script::mode::hang;
  call(1);
  caf::anon_send_exit(g, caf::exit_reason::user_shutdown);
  sched->run();
  REQUIRE(answered(1));
  CHECK(answer(1).code == errc::shutting_down);
}

namespace {

/// A stand-in for the cluster actor: answers find_service(s) with whatever
/// `current` holds (invalid = no provider).
caf::behavior fake_registry(caf::event_based_actor*, std::shared_ptr<caf::actor> current,
                            std::shared_ptr<int> lookups) {
  return {
      [=](troupe::find_service_atom, const std::string&,
          const std::vector<std::string>&) -> caf::result<caf::actor> {
        ++*lookups;
        if (!*current)
          return troupe::make_error(errc::service_unavailable, "no live node");
        return *current;
      },
      // What a guard by name asks since it resolves through a service_ref.
      [=](troupe::find_services_atom, const std::string&,
          const std::vector<std::string>&) -> caf::result<std::vector<caf::actor>> {
        ++*lookups;
        if (!*current)
          return troupe::make_error(errc::service_unavailable, "no live node");
        return std::vector<caf::actor>{*current};
      },
  };
}

} // namespace

TEST_CASE_METHOD(
    deterministic,
    "a guard by name resolves the service and resolves again after it went down") {
  auto current = std::make_shared<caf::actor>(caf::actor_cast<caf::actor>(raw));
  auto lookups = std::make_shared<int>(0);
  auto registry = keep(sys->spawn(fake_registry, current, lookups));
  sys->registry().put(caf::atom("cluster"),
                      caf::actor_cast<caf::strong_actor_ptr>(registry));
  auto p = plain_policy();
  auto g = keep(guard_service<echo_actor>(*sys, "echo", p));
  caller = keep(sys->spawn(client, g, out));
  call(1);
  call(2);
  CHECK(answer(1).ok);
  CHECK(answer(2).ok);
  CHECK(*lookups == 1);
  // The service restarts elsewhere: the old instance ends, a new one registers.
  auto next_script = std::make_shared<backend_script>();
  auto next = keep(sys->spawn(backend, next_script));
  caf::anon_send_exit(raw, caf::exit_reason::user_shutdown);
  *current = next;
  sched->run();
  call(3);
  CHECK(answer(3).ok);
  CHECK(*lookups == 2);
  CHECK(next_script->seen.size() == 1);
  // Nobody provides it: the call fails as unavailable.
  *current = caf::actor{};
  caf::anon_send_exit(next, caf::exit_reason::user_shutdown);
  sched->run();
  call(4);
  REQUIRE(answered(4));
  CHECK(answer(4).code == errc::service_unavailable);
  sys->registry().erase(caf::atom("cluster"));
}

TEST_CASE_METHOD(deterministic, "a restarted guard never repeats an idempotency key of "
                                "the guard before it") {
  // Same dependency, same seed, same correlation ids: only the incarnation
  // tells the two engines' keys apart.
  auto first = guarded(plain_policy());
  for (int32_t id = 1; id <= 3; ++id)
    call(id);
  caf::anon_send_exit(first, caf::exit_reason::user_shutdown);
  sched->run();
  guarded(plain_policy());
  for (int32_t id = 4; id <= 6; ++id)
    call(id);
  REQUIRE(script->seen.size() == 6);
  std::set<std::string> before, after;
  for (size_t i = 0; i < 3; ++i)
    before.insert(script->seen[i].idempotency_key);
  for (size_t i = 3; i < 6; ++i)
    after.insert(script->seen[i].idempotency_key);
  CHECK(before.size() == 3);
  CHECK(after.size() == 3);
  for (auto& key : after) {
    CHECK(before.count(key) == 0);
    CHECK(key.rfind("test/echo-test/", 0) == 0);
  }
}

namespace {

struct idle_host final : guard_host {
  void schedule(time_point, uint64_t, uint32_t) override {}
  void resolve(const std::string&, ns) override {}
  void watch(const caf::actor&) override {}
  void publish(const breaker_state_changed&) override {}
};

} // namespace

TEST_CASE_METHOD(deterministic,
                 "a guard refuses a policy whose timeout is not positive instead of "
                 "picking one") {
  idle_host host;
  for (auto t : {ns{0}, ns{-1'000'000}}) {
    auto p = plain_policy();
    p.timeout = t;
    CHECK_THROWS_WITH((guard_engine{p, {}, host, deadline_clock{*sys}, now()}),
                      Catch::Contains("echo-test") && Catch::Contains("timeout"));
  }
  CHECK_NOTHROW((guard_engine{plain_policy(), {}, host, deadline_clock{*sys}, now()}));
}
