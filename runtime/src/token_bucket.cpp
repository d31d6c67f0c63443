#include <troupe/runtime/token_bucket.hpp>

#include <algorithm>
#include <cmath>

namespace troupe {

token_bucket::token_bucket(double rate, double burst, time_point now)
    : rate_per_ns_(std::max(rate, 0.0) / 1e9)
    , burst_(std::max(burst, 1.0))
    , tokens_(burst_)
    , last_(now) {}

void token_bucket::refill(time_point now) {
  if (now <= last_)
    return;
  auto elapsed = static_cast<double>((now - last_).count());
  tokens_ = std::min(burst_, tokens_ + elapsed * rate_per_ns_);
  last_ = now;
}

bool token_bucket::try_take(time_point now) {
  refill(now);
  if (tokens_ < 1.0)
    return false;
  tokens_ -= 1.0;
  return true;
}

double token_bucket::available(time_point now) {
  refill(now);
  return tokens_;
}

std::chrono::nanoseconds token_bucket::time_to_next(time_point now) {
  refill(now);
  if (tokens_ >= 1.0)
    return std::chrono::nanoseconds{0};
  if (rate_per_ns_ <= 0)
    return std::chrono::nanoseconds::max();
  return std::chrono::nanoseconds{
      static_cast<int64_t>(std::ceil((1.0 - tokens_) / rate_per_ns_))};
}

} // namespace troupe
