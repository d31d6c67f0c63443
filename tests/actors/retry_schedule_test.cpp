// When a call is retried: retryable errors only, within attempts, budget and
// the caller's deadline.

#include <troupe/actors/retry_schedule.hpp>

#include <chrono>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;
using troupe::errc;

namespace {
using tp = retry_schedule::time_point;
const tp t0 = tp{} + 1000s;

retry_settings constant(uint32_t attempts, std::chrono::nanoseconds delay) {
  retry_settings s;
  s.max_attempts = attempts;
  s.backoff.strategy = backoff_strategy::constant;
  s.backoff.initial = delay;
  s.backoff.max_delay = delay;
  return s;
}
} // namespace

TEST_CASE("a retryable error is retried until max_attempts") {
  retry_schedule r{constant(3, 10ms)};
  std::mt19937_64 rng{1};
  CHECK(r.after_failure(errc::timeout, t0, tp::max(), rng) == 10ms);
  CHECK(r.attempts() == 2);
  CHECK(r.after_failure(errc::service_unavailable, t0, tp::max(), rng) == 10ms);
  CHECK(r.attempts() == 3);
  CHECK_FALSE(r.after_failure(errc::timeout, t0, tp::max(), rng));
}

TEST_CASE("a non-retryable error is not retried") {
  retry_schedule r{constant(5, 10ms)};
  std::mt19937_64 rng{1};
  CHECK_FALSE(r.after_failure(errc::bad_input, t0, tp::max(), rng));
  CHECK_FALSE(r.after_failure(errc::not_found, t0, tp::max(), rng));
  CHECK(r.attempts() == 1);
}

TEST_CASE("no retry starts at or after the deadline") {
  retry_schedule r{constant(10, 100ms)};
  std::mt19937_64 rng{1};
  auto deadline = t0 + 250ms;
  CHECK(r.after_failure(errc::timeout, t0, deadline, rng));
  CHECK(r.after_failure(errc::timeout, t0 + 100ms, deadline, rng));
  CHECK_FALSE(
      r.after_failure(errc::timeout, t0 + 150ms, deadline, rng)); // would start at 250
}

TEST_CASE("one attempt means no retries at all") {
  retry_settings s;
  CHECK_FALSE(s.enabled());
  retry_schedule r{s};
  std::mt19937_64 rng{1};
  CHECK_FALSE(r.after_failure(errc::timeout, t0, tp::max(), rng));
}
