// Each backoff strategy's delay sequence, and the bounds every delay keeps.

#include <troupe/actors/backoff.hpp>

#include <chrono>
#include <vector>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;
using ns = std::chrono::nanoseconds;

namespace {

std::vector<ns> sequence(backoff_strategy s, size_t n, uint64_t seed = 42) {
  backoff_settings cfg;
  cfg.strategy = s;
  cfg.initial = 100ms;
  cfg.max_delay = 1s;
  cfg.multiplier = 2.0;
  backoff b{cfg};
  std::mt19937_64 rng{seed};
  std::vector<ns> out;
  for (size_t i = 0; i < n; ++i)
    out.push_back(b.next(rng));
  return out;
}

} // namespace

TEST_CASE("constant backoff waits the initial delay every time") {
  CHECK(sequence(backoff_strategy::constant, 4) ==
        std::vector<ns>{100ms, 100ms, 100ms, 100ms});
}

TEST_CASE("linear backoff grows by the initial delay per retry up to the cap") {
  CHECK(sequence(backoff_strategy::linear, 12) ==
        std::vector<ns>{100ms, 200ms, 300ms, 400ms, 500ms, 600ms, 700ms, 800ms, 900ms, 1s,
                        1s, 1s});
}

TEST_CASE("exponential backoff multiplies per retry up to the cap") {
  CHECK(sequence(backoff_strategy::exponential, 6) ==
        std::vector<ns>{100ms, 200ms, 400ms, 800ms, 1s, 1s});
}

TEST_CASE(
    "fibonacci backoff follows 1, 2, 3, 5, 8 times the initial delay up to the cap") {
  CHECK(sequence(backoff_strategy::fibonacci, 7) ==
        std::vector<ns>{100ms, 200ms, 300ms, 500ms, 800ms, 1s, 1s});
}

TEST_CASE("random backoff stays between the initial delay and the cap") {
  auto s = sequence(backoff_strategy::random, 1000);
  for (auto d : s) {
    CHECK(d >= 100ms);
    CHECK(d <= 1s);
  }
  CHECK(s != sequence(backoff_strategy::random, 1000, 7)); // it is random
}

TEST_CASE(
    "exponential backoff with full jitter stays between zero and the exponential bound") {
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    auto s = sequence(backoff_strategy::exponential_full_jitter, 8, seed);
    ns bound = 100ms;
    for (auto d : s) {
      CHECK(d >= 0ns);
      CHECK(d <= bound);
      bound = std::min<ns>(bound * 2, 1s);
    }
  }
}

TEST_CASE(
    "decorrelated jitter stays between the initial delay and three times the previous") {
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    auto s = sequence(backoff_strategy::decorrelated_jitter, 10, seed);
    ns previous = 100ms;
    for (auto d : s) {
      CHECK(d >= 100ms);
      CHECK(d <= std::min<ns>(previous * 3, 1s));
      previous = d;
    }
  }
}

TEST_CASE("every strategy has a configuration name that parses back") {
  for (auto& name : backoff_strategy_names()) {
    auto s = parse_backoff_strategy(name);
    REQUIRE(s);
    CHECK(name == to_string(*s));
  }
  CHECK_FALSE(parse_backoff_strategy("expo"));
}
