// The breaker's state machine and its sliding windows, without actors: time
// is a parameter, so every test picks its own instants.

#include <troupe/actors/circuit_breaker.hpp>

#include <chrono>
#include <vector>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;
using troupe::errc;

namespace {

using tp = circuit_breaker::time_point;
const tp t0 = tp{} + 1000s;

breaker_settings small_breaker() {
  breaker_settings s;
  s.window = window_kind::count;
  s.window_size = 10;
  s.minimum_calls = 5;
  s.failure_rate_threshold = 0.5;
  s.slow_call_duration = 100ms;
  s.slow_call_rate_threshold = 0.5;
  s.wait_in_open = 1s;
  s.wait_multiplier = 2.0;
  s.max_wait = 10s;
  s.half_open_calls = 2;
  return s;
}

/// Lets one call through at `at` and records its outcome.
void call(circuit_breaker& b, tp at, bool failure, std::chrono::nanoseconds took = 1ms) {
  auto p = b.try_acquire(at);
  REQUIRE(p.granted);
  b.record(p, at, took, failure);
}

} // namespace

TEST_CASE("a count window holds exactly the last N calls") {
  auto w = call_window::last_calls(3);
  w.add(t0, true, false);
  w.add(t0, true, true);
  w.add(t0, false, false);
  CHECK(w.totals(t0).calls == 3);
  CHECK(w.totals(t0).failures == 2);
  w.add(t0, false, false); // the first failure leaves
  CHECK(w.totals(t0).calls == 3);
  CHECK(w.totals(t0).failures == 1);
  CHECK(w.totals(t0).slow == 1);
  w.add(t0, false, false); // the slow failure leaves
  CHECK(w.totals(t0).failures == 0);
  CHECK(w.totals(t0).slow == 0);
}

TEST_CASE("a time window forgets calls older than its span") {
  auto w = call_window::last_period(10s);
  w.add(t0, true, false);
  w.add(t0 + 5s, false, true);
  CHECK(w.totals(t0 + 5s).calls == 2);
  CHECK(w.totals(t0 + 9s).failures == 1);
  auto later = w.totals(t0 + 11s); // the first call's bucket aged out
  CHECK(later.calls == 1);
  CHECK(later.failures == 0);
  CHECK(later.slow == 1);
  CHECK(w.totals(t0 + 16s).calls == 0);
}

TEST_CASE("the breaker does not trip before the minimum number of calls") {
  circuit_breaker b{small_breaker()};
  for (int i = 0; i < 4; ++i)
    call(b, t0 + i * 1ms, true);
  CHECK(b.state() == breaker_state::closed);
  call(b, t0 + 5ms, true);
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("the breaker trips when the failure rate reaches the threshold") {
  circuit_breaker b{small_breaker()};
  // 2 failures in 5 calls = 40 %: stays closed; the 6th (3 of 6 = 50 %) trips.
  call(b, t0, false);
  call(b, t0, true);
  call(b, t0, false);
  call(b, t0, true);
  call(b, t0, false);
  CHECK(b.state() == breaker_state::closed);
  call(b, t0, true);
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("the breaker trips on the slow-call rate even when every call succeeds") {
  circuit_breaker b{small_breaker()};
  for (int i = 0; i < 2; ++i)
    call(b, t0, false, 150ms);
  for (int i = 0; i < 2; ++i)
    call(b, t0, false, 10ms);
  CHECK(b.state() == breaker_state::closed);
  call(b, t0, false, 100ms); // exactly the threshold counts as slow: 3 of 5
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("a time-based breaker judges only the calls of its window") {
  auto s = small_breaker();
  s.window = window_kind::time;
  s.window_span = 10s;
  circuit_breaker b{s};
  for (int i = 0; i < 4; ++i)
    call(b, t0, true); // old failures ...
  for (int i = 0; i < 5; ++i)
    call(b, t0 + 11s, false); // ... have aged out by now
  call(b, t0 + 11s, true);
  CHECK(b.state() == breaker_state::closed);
  CHECK(b.totals(t0 + 11s).calls == 6);
}

TEST_CASE("an open breaker refuses calls and tells how long it stays open") {
  circuit_breaker b{small_breaker()};
  for (int i = 0; i < 5; ++i)
    call(b, t0, true);
  auto p = b.try_acquire(t0 + 300ms);
  CHECK_FALSE(p.granted);
  CHECK(p.retry_after == 700ms);
}

TEST_CASE("a half-open breaker closes when its probes succeed") {
  circuit_breaker b{small_breaker()};
  std::vector<breaker_transition> seen;
  b.on_transition([&](const breaker_transition& t) { seen.push_back(t); });
  for (int i = 0; i < 5; ++i)
    call(b, t0, true);
  b.poll(t0 + 1s);
  REQUIRE(b.state() == breaker_state::half_open);
  auto p1 = b.try_acquire(t0 + 1s);
  auto p2 = b.try_acquire(t0 + 1s);
  auto p3 = b.try_acquire(t0 + 1s);
  CHECK(p1.granted);
  CHECK(p2.granted);
  CHECK_FALSE(p3.granted); // only half_open_calls probes at once
  b.record(p1, t0 + 1s, 1ms, false);
  CHECK(b.state() == breaker_state::half_open);
  b.record(p2, t0 + 1s, 1ms, false);
  CHECK(b.state() == breaker_state::closed);
  REQUIRE(seen.size() == 3);
  CHECK(seen[0].to == breaker_state::open);
  CHECK(seen[1].to == breaker_state::half_open);
  CHECK(seen[2].to == breaker_state::closed);
}

TEST_CASE("a half-open breaker reopens on a failed probe and waits longer each time") {
  circuit_breaker b{small_breaker()};
  std::vector<breaker_transition> seen;
  b.on_transition([&](const breaker_transition& t) { seen.push_back(t); });
  for (int i = 0; i < 5; ++i)
    call(b, t0, true);
  REQUIRE(seen.back().open_for == 1s);
  auto t = t0 + 1s;
  call(b, t, true); // 1 of 2 probes failed = 50 %: reopen at once
  CHECK(b.state() == breaker_state::open);
  CHECK(seen.back().open_for == 2s);
  CHECK_FALSE(b.try_acquire(t + 1999ms).granted);
  t += 2s;
  call(b, t, true);
  CHECK(seen.back().open_for == 4s);
  t += 4s;
  call(b, t, true);
  CHECK(seen.back().open_for == 8s);
  t += 8s;
  call(b, t, true);
  CHECK(seen.back().open_for == 10s); // capped at max_wait
  t += 10s;
  call(b, t, false);
  call(b, t, false);
  CHECK(b.state() == breaker_state::closed);
  CHECK(b.consecutive_trips() == 0);
}

TEST_CASE("an outcome granted before the breaker tripped does not decide half-open") {
  circuit_breaker b{small_breaker()};
  auto early = b.try_acquire(t0); // let through while closed, answers late
  for (int i = 0; i < 5; ++i)
    call(b, t0, true);
  b.poll(t0 + 1s);
  REQUIRE(b.state() == breaker_state::half_open);
  b.record(early, t0 + 1s, 1s, true);
  CHECK(b.state() == breaker_state::half_open);
}

TEST_CASE("a probe released unused frees its slot for another call") {
  circuit_breaker b{small_breaker()};
  for (int i = 0; i < 5; ++i)
    call(b, t0, true);
  b.poll(t0 + 1s);
  auto p1 = b.try_acquire(t0 + 1s);
  auto p2 = b.try_acquire(t0 + 1s);
  CHECK_FALSE(b.try_acquire(t0 + 1s).granted);
  b.release(p2);
  CHECK(b.try_acquire(t0 + 1s).granted);
  (void)p1;
}

TEST_CASE("by default a timeout counts as a failure and not-found does not") {
  breaker_settings s;
  CHECK(s.counts_as_failure(errc::timeout));
  CHECK(s.counts_as_failure(errc::service_unavailable));
  CHECK_FALSE(s.counts_as_failure(errc::not_found));
  CHECK_FALSE(s.counts_as_failure(errc::bad_input));
}

TEST_CASE("a disabled breaker lets every call through") {
  auto s = small_breaker();
  s.enabled = false;
  circuit_breaker b{s};
  for (int i = 0; i < 50; ++i)
    call(b, t0, true);
  CHECK(b.state() == breaker_state::closed);
}
