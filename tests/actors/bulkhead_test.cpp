// The bulkhead's counters and queue, without actors.

#include <troupe/actors/bulkhead.hpp>

#include <chrono>
#include <vector>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;

namespace {
using tp = bulkhead::time_point;
const tp t0 = tp{} + 1000s;
} // namespace

TEST_CASE("a bulkhead runs N calls, queues M more and rejects the next") {
  bulkhead b{{true, 2, 3}};
  CHECK(b.enter(1, t0 + 1s) == bulkhead::admission::run);
  CHECK(b.enter(2, t0 + 1s) == bulkhead::admission::run);
  CHECK(b.enter(3, t0 + 1s) == bulkhead::admission::queue);
  CHECK(b.enter(4, t0 + 1s) == bulkhead::admission::queue);
  CHECK(b.enter(5, t0 + 1s) == bulkhead::admission::queue);
  CHECK(b.enter(6, t0 + 1s) == bulkhead::admission::reject);
  CHECK(b.in_use() == 2);
  CHECK(b.queued() == 3);
}

TEST_CASE("a freed slot goes to the oldest queued call still within its deadline") {
  bulkhead b{{true, 1, 3}};
  b.enter(1, t0 + 10s);
  b.enter(2, t0 + 100ms); // will have expired
  b.enter(3, t0 + 10s);
  std::vector<uint64_t> expired;
  auto next = b.leave(t0 + 1s, expired);
  REQUIRE(next);
  CHECK(*next == 3);
  CHECK(expired == std::vector<uint64_t>{2});
  CHECK(b.in_use() == 1);
  CHECK(b.queued() == 0);
  CHECK_FALSE(b.leave(t0 + 1s, expired));
  CHECK(b.in_use() == 0);
}

TEST_CASE("a queued call can be withdrawn when its deadline timer fires") {
  bulkhead b{{true, 1, 2}};
  b.enter(1, t0 + 1s);
  b.enter(2, t0 + 1s);
  CHECK(b.withdraw(2));
  CHECK_FALSE(b.withdraw(2));
  CHECK_FALSE(b.withdraw(1)); // running, not queued
  CHECK(b.queued() == 0);
}

TEST_CASE("a bulkhead without a queue rejects as soon as the slots are taken") {
  bulkhead b{{true, 1, 0}};
  CHECK(b.enter(1, t0) == bulkhead::admission::run);
  CHECK(b.enter(2, t0) == bulkhead::admission::reject);
}
