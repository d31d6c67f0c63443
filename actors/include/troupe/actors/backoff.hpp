#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace troupe::resilience {

/// How the delay between retries grows. With `initial` = b, `max_delay` = m,
/// `multiplier` = f and retry number n = 1, 2, ...:
enum class backoff_strategy : uint8_t {
  constant,                ///< b
  linear,                  ///< b·n
  exponential,             ///< b·f^(n-1)
  fibonacci,               ///< b·F(n), F = 1, 2, 3, 5, 8, ...
  random,                  ///< uniform in [b, m]
  exponential_full_jitter, ///< uniform in [0, b·f^(n-1)]  (AWS "full jitter")
  decorrelated_jitter,     ///< uniform in [b, 3·previous]  (AWS "decorrelated jitter")
};
// Every delay is capped at m.

/// The strategy names as configuration accepts them ("exponential_full_jitter").
const std::vector<std::string>& backoff_strategy_names();
const char* to_string(backoff_strategy s);
std::optional<backoff_strategy> parse_backoff_strategy(const std::string& name);

struct backoff_settings {
  backoff_strategy strategy = backoff_strategy::exponential_full_jitter;
  std::chrono::nanoseconds initial = std::chrono::milliseconds(50);
  std::chrono::nanoseconds max_delay = std::chrono::seconds(2);
  double multiplier = 2.0;
};

/// One call's sequence of retry delays. Random strategies draw from the
/// generator passed in, so tests choose the seed.
class backoff {
public:
  explicit backoff(const backoff_settings& settings)
      : settings_(settings) {}

  /// The delay before the next retry; advances the sequence.
  std::chrono::nanoseconds next(std::mt19937_64& rng);
  /// Retries computed so far.
  uint32_t retries() const noexcept { return retries_; }

private:
  backoff_settings settings_;
  uint32_t retries_ = 0;
  std::chrono::nanoseconds previous_{0};
  int64_t fib_a_ = 1; ///< F(n)
  int64_t fib_b_ = 2; ///< F(n+1)
};

} // namespace troupe::resilience
