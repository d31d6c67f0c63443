#pragma once

#include <chrono>
#include <cstdint>
#include <random>

#include <caf/meta/type_name.hpp>

#include <troupe/runtime/errors.hpp>

namespace troupe::resilience {

/// Chaos settings of one dependency. Off by default; switched at run time
/// with the guard's admin message `(inject_faults_atom, fault_settings)`.
struct fault_settings {
  bool enabled = false;
  /// Added before the call is sent, with `latency_probability`: exactly
  /// `latency`, or uniform in [latency, latency_max] when latency_max is larger.
  std::chrono::nanoseconds latency{0};
  std::chrono::nanoseconds latency_max{0};
  double latency_probability = 1.0;
  /// The call fails with `error` instead of being sent, with this probability.
  double error_probability = 0.0;
  errc error = errc::service_unavailable;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fault_settings& x) {
  return f(caf::meta::type_name("fault_settings"), x.enabled, x.latency, x.latency_max,
           x.latency_probability, x.error_probability, x.error);
}

/// What to do to one call.
struct fault_decision {
  std::chrono::nanoseconds delay{0};
  errc error = errc::none; ///< none: send the call (after `delay`)
};

/// Draws fault decisions; the generator is passed in so tests pick the seed.
class fault_injector {
public:
  explicit fault_injector(fault_settings settings = {})
      : settings_(settings) {}

  fault_decision decide(std::mt19937_64& rng) const;

  void update(const fault_settings& settings) { settings_ = settings; }
  const fault_settings& settings() const noexcept { return settings_; }
  bool active() const noexcept {
    return settings_.enabled &&
           ((settings_.latency.count() > 0 && settings_.latency_probability > 0) ||
            settings_.error_probability > 0);
  }

private:
  fault_settings settings_;
};

} // namespace troupe::resilience
