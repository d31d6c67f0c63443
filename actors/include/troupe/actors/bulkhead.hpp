#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

namespace troupe::resilience {

/// Limits of one dependency's bulkhead.
struct bulkhead_settings {
  bool enabled = true;
  size_t max_concurrent = 10; ///< calls in flight at once
  size_t max_queued = 50;     ///< calls waiting for a slot; beyond: overloaded
};

/// Concurrency limit with a bounded waiting queue, without actors. Calls are
/// named by ids; each queued call has a deadline after which it must not be
/// sent any more. Time is a parameter.
class bulkhead {
public:
  using time_point = std::chrono::steady_clock::time_point;

  enum class admission {
    run,    ///< a slot was free: the call holds it now
    queue,  ///< queued until a slot frees or its deadline passes
    reject, ///< slots and queue are full: answer `overloaded` at once
  };

  explicit bulkhead(bulkhead_settings settings);

  /// Asks for a slot for call `id`, queueing it when all are taken.
  admission enter(uint64_t id, time_point deadline);

  /// Frees the slot of a finished call. Queued calls whose deadline passed by
  /// `now` move to `expired` (they lost their turn and must not be sent);
  /// the first one still in time takes the slot and is returned.
  std::optional<uint64_t> leave(time_point now, std::vector<uint64_t>& expired);

  /// Removes a queued call (its deadline timer fired); false if not queued.
  bool withdraw(uint64_t id);

  size_t in_use() const noexcept { return in_use_; }
  size_t queued() const noexcept { return queue_.size(); }
  const bulkhead_settings& settings() const noexcept { return settings_; }

private:
  struct waiting {
    uint64_t id;
    time_point deadline;
  };

  bulkhead_settings settings_;
  size_t in_use_ = 0;
  std::deque<waiting> queue_;
};

} // namespace troupe::resilience
