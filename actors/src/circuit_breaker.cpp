#include <troupe/actors/circuit_breaker.hpp>

#include <algorithm>
#include <cmath>

namespace troupe::resilience {

namespace {

call_window make_window(const breaker_settings& s) {
  return s.window == window_kind::count ? call_window::last_calls(s.window_size)
                                        : call_window::last_period(s.window_span);
}

bool trips(const breaker_settings& s, const window_totals& t) {
  // A threshold of 0 means "any": it still needs one bad call.
  return (t.failures > 0 && t.failure_rate() >= s.failure_rate_threshold) ||
         (t.slow > 0 && t.slow_rate() >= s.slow_call_rate_threshold);
}

} // namespace

const char* to_string(breaker_state s) {
  switch (s) {
  case breaker_state::closed:
    return "closed";
  case breaker_state::open:
    return "open";
  case breaker_state::half_open:
    return "half_open";
  }
  return "unknown";
}

bool breaker_settings::counts_as_failure(errc code) const {
  return std::find(record_errors.begin(), record_errors.end(), code) !=
         record_errors.end();
}

circuit_breaker::circuit_breaker(breaker_settings settings)
    : settings_(std::move(settings))
    , window_(make_window(settings_)) {
  settings_.minimum_calls = std::max<size_t>(settings_.minimum_calls, 1);
  settings_.half_open_calls = std::max<size_t>(settings_.half_open_calls, 1);
}

circuit_breaker::permission circuit_breaker::try_acquire(time_point now) {
  if (!settings_.enabled)
    return {true, generation_, {}};
  poll(now);
  switch (state_) {
  case breaker_state::closed:
    return {true, generation_, {}};
  case breaker_state::open:
    return {false, generation_, open_until_ - now};
  case breaker_state::half_open:
    if (probes_granted_ < settings_.half_open_calls) {
      ++probes_granted_;
      return {true, generation_, {}};
    }
    return {false, generation_, {}};
  }
  return {false, generation_, {}};
}

void circuit_breaker::release(const permission& p) {
  if (p.granted && p.generation == generation_ && state_ == breaker_state::half_open &&
      probes_granted_ > 0)
    --probes_granted_;
}

void circuit_breaker::record(const permission& p, time_point now,
                             std::chrono::nanoseconds duration, bool failure) {
  if (!settings_.enabled || !p.granted || p.generation != generation_)
    return;
  bool slow = duration >= settings_.slow_call_duration;
  if (state_ == breaker_state::closed) {
    window_.add(now, failure, slow);
    auto t = window_.totals(now);
    if (t.calls >= settings_.minimum_calls && trips(settings_, t))
      transition(breaker_state::open, now, t);
    return;
  }
  if (state_ == breaker_state::half_open) {
    ++probes_.calls;
    probes_.failures += failure ? 1 : 0;
    probes_.slow += slow ? 1 : 0;
    // Rates over all probe slots: once the probes seen so far reach a
    // threshold, the rest cannot bring it back under, so decide now.
    window_totals over_all_slots = probes_;
    over_all_slots.calls = settings_.half_open_calls;
    if (trips(settings_, over_all_slots)) {
      transition(breaker_state::open, now, probes_);
      return;
    }
    if (probes_.calls >= settings_.half_open_calls)
      transition(breaker_state::closed, now, probes_);
  }
}

void circuit_breaker::poll(time_point now) {
  if (state_ == breaker_state::open && now >= open_until_)
    transition(breaker_state::half_open, now, {});
}

std::chrono::nanoseconds circuit_breaker::wait_for_trip(size_t trip) const {
  auto base = static_cast<double>(settings_.wait_in_open.count());
  auto factor = std::pow(std::max(settings_.wait_multiplier, 1.0),
                         static_cast<double>(trip > 0 ? trip - 1 : 0));
  auto cap = static_cast<double>(settings_.max_wait.count());
  auto wait = std::min(base * factor, std::max(cap, base));
  return std::chrono::nanoseconds{static_cast<int64_t>(wait)};
}

void circuit_breaker::transition(breaker_state to, time_point now, window_totals why) {
  breaker_transition change;
  change.from = state_;
  change.to = to;
  change.window = why;
  state_ = to;
  ++generation_;
  probes_granted_ = 0;
  probes_ = {};
  switch (to) {
  case breaker_state::open:
    ++trips_;
    change.open_for = wait_for_trip(trips_);
    open_until_ = now + change.open_for;
    window_.clear();
    break;
  case breaker_state::half_open:
    break;
  case breaker_state::closed:
    trips_ = 0;
    window_.clear();
    break;
  }
  if (listener_)
    listener_(change);
}

} // namespace troupe::resilience
