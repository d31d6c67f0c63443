#pragma once

// How CAF's work-stealing workers wait for work. CAF 0.17's defaults let an
// idle worker nap 50 µs at a time, 500 times, before it blocks; nearly every
// hop of a request/reply then lands on a napping worker, and an idle node
// keeps its cores busy. troupe's defaults spin briefly and then block on the
// worker's condition variable, which an enqueue from outside notifies.

#include <chrono>
#include <cstddef>

namespace caf {
class actor_system_config;
} // namespace caf

namespace troupe {

struct scheduler_tuning {
  /// Polls of its own queue (stealing every tenth) before a worker naps.
  size_t spin_attempts = 100;
  /// Naps of `nap_duration` before it blocks; 0 blocks right after spinning.
  size_t nap_attempts = 0;
  std::chrono::microseconds nap_duration{50};
  /// A blocked worker wakes this often to steal work from busy peers.
  std::chrono::milliseconds idle_wakeup{10};

  /// CAF 0.17's own values, the baseline the benchmarks compare against.
  static scheduler_tuning caf_defaults() noexcept {
    return {100, 500, std::chrono::microseconds{50}, std::chrono::milliseconds{10}};
  }
};

/// Writes `t` into CAF's `work-stealing.*` settings of `cfg`.
void apply(caf::actor_system_config& cfg, const scheduler_tuning& t);

} // namespace troupe
