#pragma once

#include <chrono>

namespace troupe {

/// A token bucket: `rate` tokens per second, at most `burst` stored; a call
/// takes one token or is refused. Starts full. Time is a parameter.
class token_bucket {
public:
  using time_point = std::chrono::steady_clock::time_point;

  token_bucket(double rate, double burst, time_point now);

  /// Takes one token if there is one.
  bool try_take(time_point now);
  /// Time until the next token (zero when one is available).
  std::chrono::nanoseconds time_to_next(time_point now);
  /// Tokens available at `now`.
  double available(time_point now);

private:
  void refill(time_point now);

  double rate_per_ns_;
  double burst_;
  double tokens_;
  time_point last_;
};

} // namespace troupe
