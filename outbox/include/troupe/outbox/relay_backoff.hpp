#pragma once

#include <chrono>
#include <cstdint>

namespace troupe {

/// Exponential backoff between publish attempts of one row. outbox/ may not
/// depend on actors/ (both sit on runtime/), so it keeps this small one
/// instead of the resilience policies.
struct relay_backoff {
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds max{30000};

  /// The wait after the `attempts`-th failed attempt (1-based): initial,
  /// doubling, capped at max.
  std::chrono::milliseconds after(uint32_t attempts) const noexcept {
    auto delay = initial;
    for (uint32_t i = 1; i < attempts && delay < max; ++i)
      delay *= 2;
    return delay < max ? delay : max;
  }
};

} // namespace troupe
