#include <troupe/actors/retry_schedule.hpp>

namespace troupe::resilience {

std::optional<std::chrono::nanoseconds>
retry_schedule::after_failure(errc code, time_point now, time_point deadline,
                              std::mt19937_64& rng) {
  if (attempts_ >= max_attempts_ || !is_retryable(code))
    return std::nullopt;
  auto delay = backoff_.next(rng);
  // The next attempt must start, and have some time to run, before the deadline.
  if (now + delay >= deadline)
    return std::nullopt;
  ++attempts_;
  return delay;
}

} // namespace troupe::resilience
