// Policies from configuration: YAML per dependency, defaults per class, and
// the validation that rejects bad values naming the key.

#include <troupe/actors/resilience_policy.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using namespace troupe::resilience;
using troupe::config;
using troupe::config_error;
using troupe::config_schema;
using troupe::config_sources;
using troupe::errc;

namespace {

/// A YAML file that removes itself.
class yaml_file {
public:
  explicit yaml_file(const std::string& content) {
    path_ = std::filesystem::temp_directory_path() /
            ("troupe-resilience-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter_++) + ".yaml");
    std::ofstream{path_} << content;
  }
  ~yaml_file() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

config_schema payment_schema() {
  config_schema schema;
  resilience_policy critical;
  critical.timeout = 5s;
  critical.retry.max_attempts = 5;
  declare_dependency_class(schema, "critical", critical);
  declare_dependency(schema, "payment", "critical");
  declare_dependency(schema, "inventory");
  return schema;
}

/// The key a config_error names when loading `overrides`, or "" if it loads.
std::string rejected_key(std::vector<std::pair<std::string, std::string>> overrides) {
  auto schema = payment_schema();
  config_sources sources;
  sources.overrides = std::move(overrides);
  try {
    config::load(schema, sources);
  } catch (const config_error& e) {
    return e.key();
  }
  return "";
}

} // namespace

TEST_CASE("a dependency's policy is read from nested YAML") {
  auto schema = payment_schema();
  yaml_file file{R"(
resilience:
  dependencies:
    payment:
      timeout: 2s
      bulkhead: {max_concurrent: 10, max_queued: 50}
      breaker:
        window: time
        window_span: 30s
        minimum_calls: 20
        failure_rate_threshold: 0.25
        slow_call_duration: 500ms
        slow_call_rate_threshold: 0.8
        wait_in_open: 10s
        half_open_calls: 4
        record_errors: [timeout, internal]
      retry: {max_attempts: 3, backoff: decorrelated_jitter, initial_delay: 20ms, max_delay: 1s, budget: 3s}
      rate_limit: {enabled: true, rate: 50, burst: 10, scope: caller}
      faults: {latency: 100ms, latency_max: 300ms, error_probability: 0.1, error: overloaded}
      fallback: {on: [circuit_open]}
)"};
  config_sources sources;
  sources.file = file.path();
  auto cfg = config::load(schema, sources);
  auto p = policy_from_config(cfg, "payment");
  CHECK(p.dependency == "payment");
  CHECK(p.timeout == 2s);
  CHECK(p.bulkhead.enabled);
  CHECK(p.bulkhead.max_concurrent == 10);
  CHECK(p.bulkhead.max_queued == 50);
  CHECK(p.breaker.window == window_kind::time);
  CHECK(p.breaker.window_span == 30s);
  CHECK(p.breaker.minimum_calls == 20);
  CHECK(p.breaker.failure_rate_threshold == Approx(0.25));
  CHECK(p.breaker.slow_call_duration == 500ms);
  CHECK(p.breaker.slow_call_rate_threshold == Approx(0.8));
  CHECK(p.breaker.wait_in_open == 10s);
  CHECK(p.breaker.half_open_calls == 4);
  CHECK(p.breaker.record_errors == std::vector<errc>{errc::timeout, errc::internal});
  CHECK(p.retry.max_attempts == 3);
  CHECK(p.retry.backoff.strategy == backoff_strategy::decorrelated_jitter);
  CHECK(p.retry.backoff.initial == 20ms);
  CHECK(p.retry.backoff.max_delay == 1s);
  CHECK(p.retry.budget == 3s);
  CHECK(p.rate_limit.enabled);
  CHECK(p.rate_limit.rate == Approx(50));
  CHECK(p.rate_limit.burst == Approx(10));
  CHECK(p.rate_limit.scope == rate_limit_scope::caller);
  CHECK_FALSE(p.faults.enabled); // faults stay off unless switched on
  CHECK(p.faults.latency == 100ms);
  CHECK(p.faults.latency_max == 300ms);
  CHECK(p.faults.error_probability == Approx(0.1));
  CHECK(p.faults.error == errc::overloaded);
  CHECK(p.fallback_on == std::vector<errc>{errc::circuit_open});
}

TEST_CASE("a dependency takes unset settings from its class") {
  auto schema = payment_schema();
  config_sources sources;
  sources.overrides = {{"resilience.dependencies.payment.timeout", "750ms"},
                       {"resilience.classes.critical.bulkhead.max_queued", "7"}};
  auto cfg = config::load(schema, sources);
  auto payment = policy_from_config(cfg, "payment");
  CHECK(payment.timeout == 750ms);         // its own
  CHECK(payment.retry.max_attempts == 5);  // the class's declared default
  CHECK(payment.bulkhead.max_queued == 7); // the class's configured value
  auto inventory = policy_from_config(cfg, "inventory");
  resilience_policy builtin;
  CHECK(inventory.timeout == builtin.timeout); // class "default"
  CHECK(inventory.retry.max_attempts == builtin.retry.max_attempts);
  CHECK(inventory.breaker.failure_rate_threshold ==
        Approx(builtin.breaker.failure_rate_threshold));
}

TEST_CASE("a dependency can switch to another declared class in configuration") {
  auto schema = payment_schema();
  config_sources sources;
  sources.overrides = {{"resilience.dependencies.inventory.class", "critical"}};
  auto cfg = config::load(schema, sources);
  CHECK(policy_from_config(cfg, "inventory").timeout == 5s);
  CHECK(rejected_key({{"resilience.dependencies.inventory.class", "vip"}}) ==
        "resilience.dependencies.inventory.class");
}

TEST_CASE("negative sizes are rejected naming the key") {
  CHECK(rejected_key({{"resilience.dependencies.payment.bulkhead.max_queued", "-1"}}) ==
        "resilience.dependencies.payment.bulkhead.max_queued");
  CHECK(
      rejected_key({{"resilience.dependencies.payment.bulkhead.max_concurrent", "0"}}) ==
      "resilience.dependencies.payment.bulkhead.max_concurrent");
  CHECK(rejected_key({{"resilience.classes.critical.breaker.window_size", "-5"}}) ==
        "resilience.classes.critical.breaker.window_size");
}

TEST_CASE("thresholds outside 0..1 are rejected naming the key") {
  CHECK(rejected_key({{"resilience.dependencies.payment.breaker.failure_rate_threshold",
                       "1.5"}}) ==
        "resilience.dependencies.payment.breaker.failure_rate_threshold");
  CHECK(rejected_key({{"resilience.dependencies.payment.breaker.slow_call_rate_threshold",
                       "-0.1"}}) ==
        "resilience.dependencies.payment.breaker.slow_call_rate_threshold");
  CHECK(
      rejected_key({{"resilience.dependencies.payment.faults.error_probability", "2"}}) ==
      "resilience.dependencies.payment.faults.error_probability");
}

TEST_CASE("unknown strategy and error names are rejected naming the key") {
  CHECK(rejected_key({{"resilience.dependencies.payment.retry.backoff", "expo"}}) ==
        "resilience.dependencies.payment.retry.backoff");
  CHECK(rejected_key({{"resilience.dependencies.payment.breaker.window", "sliding"}}) ==
        "resilience.dependencies.payment.breaker.window");
  CHECK(rejected_key({{"resilience.dependencies.payment.faults.error", "boom"}}) ==
        "resilience.dependencies.payment.faults.error");
  CHECK(rejected_key({{"resilience.dependencies.payment.breaker.record_errors",
                       "[timeout, oops]"}}) ==
        "resilience.dependencies.payment.breaker.record_errors");
}

TEST_CASE("a bad value in the YAML file is rejected naming the key and the line") {
  auto schema = payment_schema();
  yaml_file file{"resilience:\n  dependencies:\n    payment:\n      retry:\n        "
                 "backoff: expo\n"};
  config_sources sources;
  sources.file = file.path();
  try {
    config::load(schema, sources);
    FAIL("the configuration was accepted");
  } catch (const config_error& e) {
    CHECK(e.key() == "resilience.dependencies.payment.retry.backoff");
    CHECK_THAT(e.what(), Catch::Contains("exponential_full_jitter"));
    CHECK_THAT(e.what(), Catch::Contains("line 5"));
  }
}

TEST_CASE("a valid configuration is accepted") {
  CHECK(rejected_key({{"resilience.dependencies.payment.breaker.failure_rate_threshold",
                       "1"}}) == "");
  CHECK(rejected_key({{"resilience.dependencies.payment.retry.backoff", "fibonacci"}}) ==
        "");
}

TEST_CASE("a timeout that is not positive is rejected naming the key, for dependencies "
          "and classes alike") {
  for (auto text : {"0s", "0ms", "-1s"}) {
    INFO(text);
    CHECK(rejected_key({{"resilience.dependencies.payment.timeout", text}}) ==
          "resilience.dependencies.payment.timeout");
    CHECK(rejected_key({{"resilience.classes.critical.timeout", text}}) ==
          "resilience.classes.critical.timeout");
  }
  auto schema = payment_schema();
  config_sources sources;
  sources.overrides = {{"resilience.dependencies.inventory.timeout", "0s"}};
  try {
    config::load(schema, sources);
    FAIL("the configuration was accepted");
  } catch (const config_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("resilience.dependencies.inventory.timeout"));
  }
  CHECK(rejected_key({{"resilience.dependencies.payment.timeout", "1ms"}}) == "");
}
