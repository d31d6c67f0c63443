#include <troupe/actors/backoff.hpp>

#include <algorithm>
#include <cmath>

namespace troupe::resilience {

namespace {

using ns = std::chrono::nanoseconds;

// Doubles keep large products from overflowing before the cap applies.
ns capped(double value, ns cap) {
  auto c = static_cast<double>(cap.count());
  if (!(value < c)) // also catches inf and NaN
    return cap;
  return ns{static_cast<int64_t>(std::max(value, 0.0))};
}

ns uniform(std::mt19937_64& rng, ns lo, ns hi) {
  if (hi <= lo)
    return lo;
  std::uniform_int_distribution<int64_t> dist{lo.count(), hi.count()};
  return ns{dist(rng)};
}

} // namespace

const std::vector<std::string>& backoff_strategy_names() {
  static const std::vector<std::string> names{
      "constant",           "linear", "exponential",
      "fibonacci",          "random", "exponential_full_jitter",
      "decorrelated_jitter"};
  return names;
}

const char* to_string(backoff_strategy s) {
  return backoff_strategy_names()[static_cast<size_t>(s)].c_str();
}

std::optional<backoff_strategy> parse_backoff_strategy(const std::string& name) {
  auto& names = backoff_strategy_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name)
      return static_cast<backoff_strategy>(i);
  return std::nullopt;
}

ns backoff::next(std::mt19937_64& rng) {
  ++retries_;
  const auto n = static_cast<double>(retries_);
  const auto b = static_cast<double>(settings_.initial.count());
  const auto cap = std::max(settings_.max_delay, settings_.initial);
  const auto f = std::max(settings_.multiplier, 1.0);
  ns delay{0};
  switch (settings_.strategy) {
  case backoff_strategy::constant:
    delay = capped(b, cap);
    break;
  case backoff_strategy::linear:
    delay = capped(b * n, cap);
    break;
  case backoff_strategy::exponential:
    delay = capped(b * std::pow(f, n - 1), cap);
    break;
  case backoff_strategy::fibonacci: {
    delay = capped(b * static_cast<double>(fib_a_), cap);
    if (fib_b_ < (int64_t{1} << 60)) {
      auto sum = fib_a_ + fib_b_;
      fib_a_ = fib_b_;
      fib_b_ = sum;
    }
    break;
  }
  case backoff_strategy::random:
    delay = uniform(rng, settings_.initial, cap);
    break;
  case backoff_strategy::exponential_full_jitter:
    delay = uniform(rng, ns{0}, capped(b * std::pow(f, n - 1), cap));
    break;
  case backoff_strategy::decorrelated_jitter: {
    auto prev = previous_.count() > 0 ? previous_ : settings_.initial;
    auto hi = capped(static_cast<double>(prev.count()) * 3.0, cap);
    delay = uniform(rng, std::min(settings_.initial, hi), hi);
    break;
  }
  }
  previous_ = delay;
  return delay;
}

} // namespace troupe::resilience
