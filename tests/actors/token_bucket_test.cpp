// The rate limiter's token bucket, without actors.

#include <troupe/actors/token_bucket.hpp>

#include <chrono>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;

namespace {
using tp = token_bucket::time_point;
const tp t0 = tp{} + 1000s;
} // namespace

TEST_CASE("a token bucket allows a burst, then the rate") {
  token_bucket b{10.0, 3, t0}; // 10 per second, 3 at once
  CHECK(b.try_take(t0));
  CHECK(b.try_take(t0));
  CHECK(b.try_take(t0));
  CHECK_FALSE(b.try_take(t0));
  CHECK(b.time_to_next(t0) == 100ms);
  CHECK_FALSE(b.try_take(t0 + 99ms));
  CHECK(b.try_take(t0 + 100ms));
  CHECK_FALSE(b.try_take(t0 + 100ms));
}

TEST_CASE("a token bucket never stores more than its burst") {
  token_bucket b{10.0, 2, t0};
  CHECK(b.available(t0 + 1h) == Approx(2.0));
  CHECK(b.try_take(t0 + 1h));
  CHECK(b.try_take(t0 + 1h));
  CHECK_FALSE(b.try_take(t0 + 1h));
}
