#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <troupe/actors/bulkhead.hpp>
#include <troupe/actors/circuit_breaker.hpp>
#include <troupe/actors/fault_injector.hpp>
#include <troupe/actors/retry_schedule.hpp>
#include <troupe/actors/token_bucket.hpp>
#include <troupe/runtime/config.hpp>
#include <troupe/runtime/errors.hpp>

namespace troupe::resilience {

/// Everything one guarded dependency's chain does, in the order a call meets
/// it: rate limiter, then per attempt breaker → bulkhead → fault injection →
/// the call with its timeout, then retry; fallback when the call fails.
struct resilience_policy {
  /// Names the dependency in metrics, logs and breaker events.
  std::string dependency = "dependency";
  /// Time limit of one attempt (queue wait included). The caller's deadline,
  /// carried in call_context, shortens it and bounds every retry too.
  std::chrono::nanoseconds timeout = std::chrono::seconds(2);
  bulkhead_settings bulkhead;
  breaker_settings breaker;
  retry_settings retry;
  rate_limit_settings rate_limit;
  fault_settings faults;
  /// Final errors for which a configured fallback answers instead.
  std::vector<errc> fallback_on{errc::circuit_open, errc::overloaded, errc::rate_limited,
                                errc::timeout, errc::service_unavailable};
  /// Seed of the random source (jitter, fault probabilities); 0 = random.
  uint64_t seed = 0;
};

/// Declares the keys `resilience.classes.<class_name>.*` with `defaults` as
/// their default values: the settings of a class of dependencies.
void declare_dependency_class(config_schema& schema, const std::string& class_name,
                              const resilience_policy& defaults = {});

/// Declares the keys `resilience.dependencies.<name>.*`. Each is optional;
/// an unset key takes its value from the dependency's class
/// (`resilience.dependencies.<name>.class`, default `default_class`), which
/// must be declared before. The class "default", with resilience_policy's
/// built-in values, is declared on first use if nobody did.
///
/// Every key carries bounds or choices, so config::load rejects negative
/// sizes, thresholds outside [0, 1] and unknown strategy or error names with
/// a config_error naming the key (exit code 2 at the node's main).
void declare_dependency(config_schema& schema, const std::string& name,
                        const std::string& default_class = "default");

/// Builds the policy of a dependency declared with declare_dependency from a
/// loaded (validated) configuration.
resilience_policy policy_from_config(const config& cfg, const std::string& name);

/// The configuration names of troupe's error codes ("timeout", "circuit_open").
const std::vector<std::string>& error_names();
std::optional<errc> parse_error_name(const std::string& name);

} // namespace troupe::resilience
