#include <troupe/actors/deadline_clock.hpp>

#include <limits>

#include <caf/actor_system.hpp>
#include <caf/detail/test_actor_clock.hpp>

namespace troupe::resilience {

namespace {

int64_t system_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t since_epoch_ns(caf::actor_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch())
      .count();
}

/// Offset from the virtual actor clock to virtual wall time, fixed on first use.
int64_t virtual_offset(caf::actor_clock::time_point now) {
  static const int64_t offset = system_now_ns() - since_epoch_ns(now);
  return offset;
}

} // namespace

deadline_clock::deadline_clock(caf::actor_system& sys)
    : virtual_(dynamic_cast<caf::detail::test_actor_clock*>(&sys.clock()) != nullptr) {}

int64_t deadline_clock::offset(time_point now) const {
  if (virtual_)
    return virtual_offset(now);
  if (synced_at_ == time_point::min() || now - synced_at_ >= resync || now < synced_at_) {
    offset_ = system_now_ns() - since_epoch_ns(caf::actor_clock::clock_type::now());
    synced_at_ = now;
  }
  return offset_;
}

int64_t deadline_clock::wall_ns(time_point now) const {
  return since_epoch_ns(now) + offset(now);
}

deadline_clock::time_point deadline_clock::to_actor_time(int64_t deadline_ns,
                                                         time_point now) const {
  auto left = deadline_ns - wall_ns(now);
  // Guard against overflow for deadlines absurdly far away.
  constexpr auto far = int64_t{100} * 365 * 24 * 3600 * 1'000'000'000;
  if (left > far)
    return time_point::max();
  return now + std::chrono::nanoseconds{left};
}

int64_t deadline_clock::to_wall_ns(time_point t, time_point now) const {
  if (t == time_point::max())
    return 0;
  return wall_ns(now) +
         std::chrono::duration_cast<std::chrono::nanoseconds>(t - now).count();
}

int64_t deadline_clock::now_ns(caf::actor_system& sys) {
  return deadline_clock{sys}.wall_ns(sys.clock().now());
}

} // namespace troupe::resilience
