#include <troupe/actors/fault_injector.hpp>

namespace troupe::resilience {

namespace {

bool happens(double probability, std::mt19937_64& rng) {
  if (probability <= 0.0)
    return false;
  if (probability >= 1.0)
    return true;
  return std::uniform_real_distribution<double>{0.0, 1.0}(rng) < probability;
}

} // namespace

fault_decision fault_injector::decide(std::mt19937_64& rng) const {
  fault_decision d;
  if (!settings_.enabled)
    return d;
  if (settings_.latency.count() > 0 && happens(settings_.latency_probability, rng)) {
    d.delay = settings_.latency;
    if (settings_.latency_max > settings_.latency)
      d.delay = std::chrono::nanoseconds{std::uniform_int_distribution<int64_t>{
          settings_.latency.count(), settings_.latency_max.count()}(rng)};
  }
  if (happens(settings_.error_probability, rng))
    d.error = settings_.error == errc::none ? errc::internal : settings_.error;
  return d;
}

} // namespace troupe::resilience
