// Fault decisions: probability 1 always injects, 0 never, off means off.

#include <troupe/actors/fault_injector.hpp>

#include <chrono>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;
using troupe::errc;

TEST_CASE("fault injection is off by default") {
  fault_injector f;
  std::mt19937_64 rng{1};
  CHECK_FALSE(f.active());
  auto d = f.decide(rng);
  CHECK(d.delay == 0ns);
  CHECK(d.error == errc::none);
}

TEST_CASE("fault injection at probability 1 always injects and at 0 never does") {
  fault_settings s;
  s.enabled = true;
  s.error = errc::internal;
  s.latency = 50ms;
  std::mt19937_64 rng{7};
  s.error_probability = 1.0;
  s.latency_probability = 1.0;
  fault_injector always{s};
  s.error_probability = 0.0;
  s.latency_probability = 0.0;
  fault_injector never{s};
  for (int i = 0; i < 10000; ++i) {
    auto a = always.decide(rng);
    CHECK(a.error == errc::internal);
    CHECK(a.delay == 50ms);
    auto n = never.decide(rng);
    CHECK(n.error == errc::none);
    CHECK(n.delay == 0ns);
  }
}

TEST_CASE("a random latency stays within its range") {
  fault_settings s;
  s.enabled = true;
  s.latency = 10ms;
  s.latency_max = 30ms;
  fault_injector f{s};
  std::mt19937_64 rng{3};
  bool varied = false;
  for (int i = 0; i < 1000; ++i) {
    auto d = f.decide(rng).delay;
    CHECK(d >= 10ms);
    CHECK(d <= 30ms);
    varied = varied || d != 10ms;
  }
  CHECK(varied);
}

TEST_CASE("an error probability of one half injects about half the time") {
  fault_settings s;
  s.enabled = true;
  s.error_probability = 0.5;
  fault_injector f{s};
  std::mt19937_64 rng{11};
  int injected = 0;
  for (int i = 0; i < 10000; ++i)
    injected += f.decide(rng).error != errc::none ? 1 : 0;
  CHECK(injected > 4500);
  CHECK(injected < 5500);
}
