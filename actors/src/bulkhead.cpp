#include <troupe/actors/bulkhead.hpp>

#include <algorithm>

namespace troupe::resilience {

bulkhead::bulkhead(bulkhead_settings settings)
    : settings_(settings) {
  settings_.max_concurrent = std::max<size_t>(settings_.max_concurrent, 1);
}

bulkhead::admission bulkhead::enter(uint64_t id, time_point deadline) {
  if (!settings_.enabled) {
    ++in_use_;
    return admission::run;
  }
  if (in_use_ < settings_.max_concurrent) {
    ++in_use_;
    return admission::run;
  }
  if (queue_.size() < settings_.max_queued) {
    queue_.push_back({id, deadline});
    return admission::queue;
  }
  return admission::reject;
}

std::optional<uint64_t> bulkhead::leave(time_point now, std::vector<uint64_t>& expired) {
  if (in_use_ > 0)
    --in_use_;
  while (!queue_.empty()) {
    auto next = queue_.front();
    queue_.pop_front();
    if (next.deadline <= now) {
      expired.push_back(next.id);
      continue;
    }
    ++in_use_;
    return next.id;
  }
  return std::nullopt;
}

bool bulkhead::withdraw(uint64_t id) {
  auto i = std::find_if(queue_.begin(), queue_.end(),
                        [id](const waiting& w) { return w.id == id; });
  if (i == queue_.end())
    return false;
  queue_.erase(i);
  return true;
}

} // namespace troupe::resilience
