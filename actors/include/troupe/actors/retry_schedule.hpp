#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>

#include <troupe/actors/backoff.hpp>
#include <troupe/runtime/errors.hpp>

namespace troupe::resilience {

struct retry_settings {
  /// Attempts in total, the first included; 1 turns retries off.
  uint32_t max_attempts = 1;
  /// Time from the first attempt after which no retry starts; zero = bounded
  /// only by the caller's deadline (and max_attempts).
  std::chrono::nanoseconds budget{0};
  backoff_settings backoff;

  bool enabled() const noexcept { return max_attempts > 1; }
};

/// Decides, for one call, whether and when to try again. A retry happens only
/// for an error classified as retryable, within max_attempts, and when it can
/// start before the deadline (the earlier of the caller's and the budget's).
/// Time is a parameter.
class retry_schedule {
public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit retry_schedule(const retry_settings& settings)
      : max_attempts_(settings.max_attempts)
      , backoff_(settings.backoff) {}

  /// After attempt number `attempts()` failed with `code` at `now`: the delay
  /// before the next attempt, or nothing when the call must end here.
  std::optional<std::chrono::nanoseconds>
  after_failure(errc code, time_point now, time_point deadline, std::mt19937_64& rng);

  /// Attempts made so far (1 while the first is running).
  uint32_t attempts() const noexcept { return attempts_; }

private:
  uint32_t max_attempts_;
  uint32_t attempts_ = 1;
  backoff backoff_;
};

} // namespace troupe::resilience
