#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <troupe/actors/call_window.hpp>
#include <troupe/runtime/errors.hpp>

namespace troupe::resilience {

/// The three states of a circuit breaker.
enum class breaker_state : uint8_t {
  closed,    ///< calls pass; outcomes fill the window
  open,      ///< calls are rejected at once with errc::circuit_open
  half_open, ///< a few probe calls pass and decide between closed and open
};

const char* to_string(breaker_state s);

/// How a breaker decides. Thresholds are rates in [0, 1]; a rate at or above
/// its threshold trips the breaker once the window holds `minimum_calls`.
struct breaker_settings {
  bool enabled = true;
  window_kind window = window_kind::count;
  size_t window_size = 20; ///< calls (count window)
  std::chrono::nanoseconds window_span = std::chrono::seconds(10); ///< time window
  size_t minimum_calls = 10;
  double failure_rate_threshold = 0.5;
  /// A call that takes at least this long counts as slow.
  std::chrono::nanoseconds slow_call_duration = std::chrono::seconds(1);
  double slow_call_rate_threshold = 1.0;
  /// Time open before the first probe; multiplied by `wait_multiplier` per
  /// consecutive trip (half-open probes failed again), capped at `max_wait`.
  std::chrono::nanoseconds wait_in_open = std::chrono::seconds(5);
  double wait_multiplier = 2.0;
  std::chrono::nanoseconds max_wait = std::chrono::seconds(60);
  size_t half_open_calls = 3;
  /// Move to half-open by a timer when the wait is over, so subscribers and
  /// metrics see it on time. Off: the move happens at the next call or stats
  /// query (as resilience4j's default), and an idle guard whose breaker is
  /// open does not stay alive for its timer. A guard with this on keeps
  /// itself alive until the wait ends: stop it explicitly at shutdown.
  bool automatic_half_open = false;
  /// Errors that count as failures; any other reply (a "not found", a bad
  /// input) shows the dependency answering and counts as a success.
  std::vector<errc> record_errors{errc::timeout, errc::service_unavailable,
                                  errc::overloaded, errc::internal, errc::shutting_down};

  bool counts_as_failure(errc code) const;
};

/// A state change, as logged, counted and sent to subscribers.
struct breaker_transition {
  breaker_state from = breaker_state::closed;
  breaker_state to = breaker_state::closed;
  /// How long the breaker stays open (when `to` is open), else zero.
  std::chrono::nanoseconds open_for{0};
  window_totals window; ///< the outcomes that led to the change
};

/// The circuit breaker's state machine, without actors: every method takes
/// the current time, so tests drive it with any clock.
///
/// Each permission carries the state generation it was granted in; an outcome
/// from an earlier generation (a call let through before the breaker tripped)
/// is ignored, so half-open decides on its own probes only.
class circuit_breaker {
public:
  using time_point = std::chrono::steady_clock::time_point;

  struct permission {
    bool granted = false;
    uint64_t generation = 0;
    /// When refused: time left until the breaker lets probes through (zero
    /// when half-open and every probe slot is taken).
    std::chrono::nanoseconds retry_after{0};
  };

  explicit circuit_breaker(breaker_settings settings);

  /// Asks to let one call through at `now`.
  permission try_acquire(time_point now);
  /// Returns a permission whose call never reached the dependency.
  void release(const permission& p);
  /// Records the outcome of a call let through with `p`.
  void record(const permission& p, time_point now, std::chrono::nanoseconds duration,
              bool failure);
  /// Moves from open to half-open once the wait is over (also done lazily by
  /// try_acquire); call it from a timer to publish the change on time.
  void poll(time_point now);

  breaker_state state() const noexcept { return state_; }
  /// When an open breaker lets the first probe through.
  time_point open_until() const noexcept { return open_until_; }
  /// Consecutive trips without closing in between (drives the growing wait).
  size_t consecutive_trips() const noexcept { return trips_; }
  window_totals totals(time_point now) const { return window_.totals(now); }
  const breaker_settings& settings() const noexcept { return settings_; }

  /// Called on every state change (at most one listener).
  void on_transition(std::function<void(const breaker_transition&)> f) {
    listener_ = std::move(f);
  }

private:
  void transition(breaker_state to, time_point now, window_totals why);
  std::chrono::nanoseconds wait_for_trip(size_t trip) const;

  breaker_settings settings_;
  breaker_state state_ = breaker_state::closed;
  uint64_t generation_ = 1;
  call_window window_;
  time_point open_until_{};
  size_t trips_ = 0;
  // half-open bookkeeping
  size_t probes_granted_ = 0;
  window_totals probes_;
  std::function<void(const breaker_transition&)> listener_;
};

} // namespace troupe::resilience
