#include <troupe/actors/call_window.hpp>

#include <algorithm>
#include <cassert>
#include <limits>

namespace troupe::resilience {

call_window call_window::last_calls(size_t size) {
  assert(size > 0);
  call_window w;
  w.kind_ = window_kind::count;
  w.ring_.assign(std::max<size_t>(size, 1), 0);
  w.count_totals_ = {};
  return w;
}

call_window call_window::last_period(std::chrono::nanoseconds span) {
  call_window w;
  w.kind_ = window_kind::time;
  w.width_ = std::max(span / static_cast<int64_t>(buckets), std::chrono::nanoseconds{1});
  return w;
}

int64_t call_window::epoch_of(time_point now) const noexcept {
  return now.time_since_epoch().count() / width_.count();
}

void call_window::add(time_point now, bool failure, bool slow) {
  if (kind_ == window_kind::count) {
    auto& slot = ring_[next_];
    if (count_totals_.calls == ring_.size()) {
      // The oldest call leaves the window.
      count_totals_.failures -= slot & 1u;
      count_totals_.slow -= (slot >> 1) & 1u;
    } else {
      ++count_totals_.calls;
    }
    slot = static_cast<uint8_t>((failure ? 1u : 0u) | (slow ? 2u : 0u));
    count_totals_.failures += failure ? 1 : 0;
    count_totals_.slow += slow ? 1 : 0;
    next_ = (next_ + 1) % ring_.size();
    return;
  }
  auto epoch = epoch_of(now);
  auto& b = buckets_[static_cast<size_t>(epoch) % buckets];
  if (b.epoch != epoch) {
    b.epoch = epoch;
    b.totals = {};
  }
  ++b.totals.calls;
  b.totals.failures += failure ? 1 : 0;
  b.totals.slow += slow ? 1 : 0;
}

window_totals call_window::totals(time_point now) const {
  if (kind_ == window_kind::count)
    return count_totals_;
  window_totals sum;
  auto oldest = epoch_of(now) - static_cast<int64_t>(buckets) + 1;
  for (auto& b : buckets_) {
    if (b.epoch >= oldest) {
      sum.calls += b.totals.calls;
      sum.failures += b.totals.failures;
      sum.slow += b.totals.slow;
    }
  }
  return sum;
}

void call_window::clear() {
  std::fill(ring_.begin(), ring_.end(), uint8_t{0});
  next_ = 0;
  count_totals_ = {};
  buckets_.fill(bucket{});
}

} // namespace troupe::resilience
