#pragma once

#include <chrono>
#include <cstdint>

#include <caf/actor_clock.hpp>
#include <caf/fwd.hpp>

namespace troupe::resilience {

/// Maps call_context deadlines (Unix-epoch nanoseconds, comparable across
/// nodes) to the actor clock, which guards use for every timer.
///
/// On a normal system the wall time is the system clock. Under CAF's
/// deterministic test coordinator the actor clock is virtual, and so is the
/// wall time here: the virtual clock plus a constant offset fixed once per
/// process. Tests build deadlines with `now_ns(sys)`, so a deadline expires
/// exactly when the virtual clock reaches it.
class deadline_clock {
public:
  using time_point = caf::actor_clock::time_point;

  explicit deadline_clock(caf::actor_system& sys);

  /// Wall time in nanoseconds since the Unix epoch for actor-clock time `now`.
  int64_t wall_ns(time_point now) const;
  /// The actor-clock time of an absolute deadline, given the actor clock's `now`.
  time_point to_actor_time(int64_t deadline_ns, time_point now) const;
  /// The epoch nanoseconds of actor-clock time `t`, given the actor clock's `now`.
  int64_t to_wall_ns(time_point t, time_point now) const;
  bool is_virtual() const noexcept { return virtual_; }

  /// Wall time of `sys` now: what a test puts into call_context::deadline_ns.
  static int64_t now_ns(caf::actor_system& sys);

private:
  /// Wall time minus actor time, in nanoseconds. On a real system it is read
  /// from both clocks at most every `resync` of actor time (the two drift
  /// apart only by clock adjustments), so a call costs no clock reads here.
  int64_t offset(time_point now) const;

  static constexpr std::chrono::milliseconds resync{100};

  bool virtual_ = false;
  mutable int64_t offset_ = 0;
  mutable time_point synced_at_ = time_point::min();
};

} // namespace troupe::resilience
