#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include <troupe/actors/circuit_breaker.hpp>
#include <troupe/runtime/metrics.hpp>

namespace troupe::resilience {

/// How a call through a guard ended, as counted in
/// `troupe_dependency_calls_total{dependency, outcome}`. `retried` counts
/// each retry (a call can be retried and then succeed); `fallback` counts
/// calls a fallback answered after the chain failed.
enum class call_outcome : uint8_t {
  success,
  failure,
  timeout,
  rejected_breaker,
  rejected_bulkhead,
  rate_limited,
  retried,
  fallback,
};
constexpr size_t call_outcome_count = 8;

const char* to_string(call_outcome o);

/// One dependency's metrics in the node's registry (cached pointers, so the
/// per-call cost is a few atomic updates):
///   troupe_dependency_calls_total{dependency, outcome}   counter
///   troupe_dependency_call_seconds{dependency}           histogram, per attempt sent
///   troupe_dependency_breaker_state{dependency}          gauge: 0 closed, 1 open, 2
///   half-open troupe_dependency_breaker_transitions_total{dependency, to}  counter
///   troupe_dependency_bulkhead_in_use{dependency}        gauge
///   troupe_dependency_bulkhead_queued{dependency}        gauge
class dependency_metrics {
public:
  /// The metrics of `dependency` (created on first use, shared afterwards).
  static dependency_metrics for_dependency(const std::string& dependency);

  void count(call_outcome o) const { calls_[static_cast<size_t>(o)]->Increment(); }
  void observe_latency(double seconds) const { latency_->Observe(seconds); }
  void breaker_changed(breaker_state to) const;
  void bulkhead(size_t in_use, size_t queued) const;

  /// Current value of a counter (tests and benchmarks read these).
  double counted(call_outcome o) const { return calls_[static_cast<size_t>(o)]->Value(); }

private:
  std::array<prometheus::Counter*, call_outcome_count> calls_{};
  std::array<prometheus::Counter*, 3> transitions_{};
  prometheus::Histogram* latency_ = nullptr;
  prometheus::Gauge* breaker_state_ = nullptr;
  prometheus::Gauge* in_use_ = nullptr;
  prometheus::Gauge* queued_ = nullptr;
};

} // namespace troupe::resilience
