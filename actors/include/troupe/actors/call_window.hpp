#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace troupe::resilience {

/// Whether a breaker judges the last N calls or the calls of the last N seconds.
enum class window_kind : uint8_t { count, time };

/// What a window holds right now.
struct window_totals {
  size_t calls = 0;
  size_t failures = 0;
  size_t slow = 0;

  double failure_rate() const noexcept {
    return calls == 0 ? 0.0 : static_cast<double>(failures) / static_cast<double>(calls);
  }
  double slow_rate() const noexcept {
    return calls == 0 ? 0.0 : static_cast<double>(slow) / static_cast<double>(calls);
  }
};

/// The sliding window of call outcomes a circuit breaker decides on.
///
/// Count-based: the last `size` calls, exactly. Time-based: the calls of the
/// last `span`, kept in `buckets` buckets of `span / buckets` each, so calls
/// age out one bucket at a time (as in resilience4j, with finer buckets).
/// Time is a parameter: the class never reads a clock.
class call_window {
public:
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr size_t buckets = 10;

  /// A window over the last `size` calls.
  static call_window last_calls(size_t size);
  /// A window over the calls of the last `span`.
  static call_window last_period(std::chrono::nanoseconds span);

  void add(time_point now, bool failure, bool slow);
  window_totals totals(time_point now) const;
  void clear();

  window_kind kind() const noexcept { return kind_; }

private:
  struct bucket {
    int64_t epoch = std::numeric_limits<int64_t>::min(); ///< time slice; min = empty
    window_totals totals;
  };

  call_window() = default;
  int64_t epoch_of(time_point now) const noexcept;

  window_kind kind_ = window_kind::count;
  // count-based: one byte per call, bit 0 = failure, bit 1 = slow
  std::vector<uint8_t> ring_;
  size_t next_ = 0;
  window_totals count_totals_;
  // time-based
  std::chrono::nanoseconds width_{0};
  std::array<bucket, buckets> buckets_{};
};

} // namespace troupe::resilience
