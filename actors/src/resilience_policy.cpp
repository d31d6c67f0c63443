#include <troupe/actors/resilience_policy.hpp>

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string_view>

namespace troupe::resilience {

namespace {

using namespace std::chrono_literals;
using ns = std::chrono::nanoseconds;

constexpr const char* classes_prefix = "resilience.classes.";
constexpr const char* dependencies_prefix = "resilience.dependencies.";

double nanos(ns d) {
  return static_cast<double>(d.count());
}

std::string text_of(bool b) {
  return b ? "true" : "false";
}

std::string text_of(ns d) {
  return format_duration(d);
}

std::string text_of(double v) {
  auto s = std::to_string(v);
  // "0.500000" -> "0.5"
  while (s.size() > 1 && s.back() == '0')
    s.pop_back();
  if (!s.empty() && s.back() == '.')
    s.pop_back();
  return s;
}

std::string text_of(const std::vector<errc>& codes) {
  std::string out = "[";
  for (size_t i = 0; i < codes.size(); ++i)
    out += (i > 0 ? ", " : "") + std::string{to_string(codes[i])};
  return out + "]";
}

std::vector<errc> codes_of(const std::vector<std::string>& names) {
  std::vector<errc> out;
  for (auto& n : names)
    if (auto code = parse_error_name(n))
      out.push_back(*code);
  return out;
}

/// One configuration key of a dependency: declared once, from this table,
/// for classes and dependencies alike, and read back through `read`.
struct field {
  const char* key;
  value_kind kind;
  std::optional<double> min;
  std::optional<double> max;
  std::vector<std::string> choices;
  const char* description;
  std::function<std::string(const resilience_policy&)> show;
  std::function<void(resilience_policy&, const config&, const std::string&)> read;
};

template <class T>
T as(const config& cfg, const std::string& key);

template <>
bool as<bool>(const config& cfg, const std::string& key) {
  return cfg.get_bool(key);
}
template <>
ns as<ns>(const config& cfg, const std::string& key) {
  return cfg.get_duration(key);
}
template <>
double as<double>(const config& cfg, const std::string& key) {
  return cfg.get_double(key);
}
template <>
size_t as<size_t>(const config& cfg, const std::string& key) {
  return static_cast<size_t>(cfg.get_int(key));
}
template <>
std::string as<std::string>(const config& cfg, const std::string& key) {
  return cfg.get_string(key);
}

const std::vector<field>& fields() {
  using p = resilience_policy;
  using cfg_t = const config&;
  using key_t = const std::string&;
  static const std::vector<std::string> scopes{"dependency", "caller"};
  static const std::vector<std::string> windows{"count", "time"};
  static const std::vector<field> table{
      {"timeout",
       value_kind::duration,
       nanos(1us),
       nanos(24h),
       {},
       "Time limit of one attempt, queue wait included; the caller's deadline may "
       "shorten it.",
       [](const p& x) { return text_of(x.timeout); },
       [](p& x, cfg_t c, key_t k) { x.timeout = as<ns>(c, k); }},
      {"bulkhead.enabled",
       value_kind::boolean,
       {},
       {},
       {},
       "Limit concurrent and queued calls to the dependency.",
       [](const p& x) { return text_of(x.bulkhead.enabled); },
       [](p& x, cfg_t c, key_t k) { x.bulkhead.enabled = as<bool>(c, k); }},
      {"bulkhead.max_concurrent",
       value_kind::integer,
       1,
       1e6,
       {},
       "Calls in flight at once; more wait in the queue.",
       [](const p& x) { return std::to_string(x.bulkhead.max_concurrent); },
       [](p& x, cfg_t c, key_t k) { x.bulkhead.max_concurrent = as<size_t>(c, k); }},
      {"bulkhead.max_queued",
       value_kind::integer,
       0,
       1e6,
       {},
       "Calls waiting for a slot; beyond that a call fails at once with overloaded.",
       [](const p& x) { return std::to_string(x.bulkhead.max_queued); },
       [](p& x, cfg_t c, key_t k) { x.bulkhead.max_queued = as<size_t>(c, k); }},
      {"breaker.enabled",
       value_kind::boolean,
       {},
       {},
       {},
       "Guard the dependency with a circuit breaker.",
       [](const p& x) { return text_of(x.breaker.enabled); },
       [](p& x, cfg_t c, key_t k) { x.breaker.enabled = as<bool>(c, k); }},
      {"breaker.window",
       value_kind::string,
       {},
       {},
       windows,
       "Judge the last window_size calls (count) or the calls of the last window_span "
       "(time).",
       [](const p& x) {
         return std::string{x.breaker.window == window_kind::count ? "count" : "time"};
       },
       [](p& x, cfg_t c, key_t k) {
         x.breaker.window =
             as<std::string>(c, k) == "time" ? window_kind::time : window_kind::count;
       }},
      {"breaker.window_size",
       value_kind::integer,
       1,
       1e6,
       {},
       "Calls in a count-based window.",
       [](const p& x) { return std::to_string(x.breaker.window_size); },
       [](p& x, cfg_t c, key_t k) { x.breaker.window_size = as<size_t>(c, k); }},
      {"breaker.window_span",
       value_kind::duration,
       nanos(1ms),
       nanos(24h),
       {},
       "Length of a time-based window.",
       [](const p& x) { return text_of(x.breaker.window_span); },
       [](p& x, cfg_t c, key_t k) { x.breaker.window_span = as<ns>(c, k); }},
      {"breaker.minimum_calls",
       value_kind::integer,
       1,
       1e6,
       {},
       "Calls the window must hold before the breaker may trip.",
       [](const p& x) { return std::to_string(x.breaker.minimum_calls); },
       [](p& x, cfg_t c, key_t k) { x.breaker.minimum_calls = as<size_t>(c, k); }},
      {"breaker.failure_rate_threshold",
       value_kind::floating,
       0,
       1,
       {},
       "Failure rate (0..1) at or above which the breaker opens.",
       [](const p& x) { return text_of(x.breaker.failure_rate_threshold); },
       [](p& x, cfg_t c, key_t k) {
         x.breaker.failure_rate_threshold = as<double>(c, k);
       }},
      {"breaker.slow_call_duration",
       value_kind::duration,
       nanos(1us),
       nanos(24h),
       {},
       "A call taking at least this long counts as slow.",
       [](const p& x) { return text_of(x.breaker.slow_call_duration); },
       [](p& x, cfg_t c, key_t k) { x.breaker.slow_call_duration = as<ns>(c, k); }},
      {"breaker.slow_call_rate_threshold",
       value_kind::floating,
       0,
       1,
       {},
       "Slow-call rate (0..1) at or above which the breaker opens.",
       [](const p& x) { return text_of(x.breaker.slow_call_rate_threshold); },
       [](p& x, cfg_t c, key_t k) {
         x.breaker.slow_call_rate_threshold = as<double>(c, k);
       }},
      {"breaker.wait_in_open",
       value_kind::duration,
       nanos(1ms),
       nanos(24h),
       {},
       "Time the breaker stays open after its first trip before letting probes through.",
       [](const p& x) { return text_of(x.breaker.wait_in_open); },
       [](p& x, cfg_t c, key_t k) { x.breaker.wait_in_open = as<ns>(c, k); }},
      {"breaker.wait_multiplier",
       value_kind::floating,
       1,
       100,
       {},
       "Factor the open time grows by with each consecutive trip (1 = constant).",
       [](const p& x) { return text_of(x.breaker.wait_multiplier); },
       [](p& x, cfg_t c, key_t k) { x.breaker.wait_multiplier = as<double>(c, k); }},
      {"breaker.max_wait",
       value_kind::duration,
       nanos(1ms),
       nanos(24h),
       {},
       "Longest open time (never below wait_in_open).",
       [](const p& x) { return text_of(x.breaker.max_wait); },
       [](p& x, cfg_t c, key_t k) { x.breaker.max_wait = as<ns>(c, k); }},
      {"breaker.half_open_calls",
       value_kind::integer,
       1,
       1000,
       {},
       "Probe calls let through when half-open; they decide between closed and open.",
       [](const p& x) { return std::to_string(x.breaker.half_open_calls); },
       [](p& x, cfg_t c, key_t k) { x.breaker.half_open_calls = as<size_t>(c, k); }},
      {"breaker.automatic_half_open",
       value_kind::boolean,
       {},
       {},
       {},
       "Move to half-open by a timer once the wait is over (else at the next call).",
       [](const p& x) { return text_of(x.breaker.automatic_half_open); },
       [](p& x, cfg_t c, key_t k) { x.breaker.automatic_half_open = as<bool>(c, k); }},
      {"breaker.record_errors",
       value_kind::string_list,
       {},
       {},
       error_names(),
       "Errors that count as failures; other replies count as successes.",
       [](const p& x) { return text_of(x.breaker.record_errors); },
       [](p& x, cfg_t c, key_t k) { x.breaker.record_errors = codes_of(c.get_list(k)); }},
      {"retry.max_attempts",
       value_kind::integer,
       1,
       100,
       {},
       "Attempts in total, the first included; 1 = no retries.",
       [](const p& x) { return std::to_string(x.retry.max_attempts); },
       [](p& x, cfg_t c, key_t k) {
         x.retry.max_attempts = static_cast<uint32_t>(c.get_int(k));
       }},
      {"retry.backoff",
       value_kind::string,
       {},
       {},
       backoff_strategy_names(),
       "Delay sequence between attempts.",
       [](const p& x) { return std::string{to_string(x.retry.backoff.strategy)}; },
       [](p& x, cfg_t c, key_t k) {
         x.retry.backoff.strategy = *parse_backoff_strategy(as<std::string>(c, k));
       }},
      {"retry.initial_delay",
       value_kind::duration,
       0,
       nanos(1h),
       {},
       "Base delay of the backoff (the first delay of most strategies).",
       [](const p& x) { return text_of(x.retry.backoff.initial); },
       [](p& x, cfg_t c, key_t k) { x.retry.backoff.initial = as<ns>(c, k); }},
      {"retry.max_delay",
       value_kind::duration,
       0,
       nanos(1h),
       {},
       "Cap of every delay (never below initial_delay).",
       [](const p& x) { return text_of(x.retry.backoff.max_delay); },
       [](p& x, cfg_t c, key_t k) { x.retry.backoff.max_delay = as<ns>(c, k); }},
      {"retry.multiplier",
       value_kind::floating,
       1,
       100,
       {},
       "Growth factor of the exponential strategies.",
       [](const p& x) { return text_of(x.retry.backoff.multiplier); },
       [](p& x, cfg_t c, key_t k) { x.retry.backoff.multiplier = as<double>(c, k); }},
      {"retry.budget",
       value_kind::duration,
       0,
       nanos(24h),
       {},
       "Total time for all attempts from the first; 0 = the caller's deadline only.",
       [](const p& x) { return text_of(x.retry.budget); },
       [](p& x, cfg_t c, key_t k) { x.retry.budget = as<ns>(c, k); }},
      {"rate_limit.enabled",
       value_kind::boolean,
       {},
       {},
       {},
       "Limit the call rate with a token bucket.",
       [](const p& x) { return text_of(x.rate_limit.enabled); },
       [](p& x, cfg_t c, key_t k) { x.rate_limit.enabled = as<bool>(c, k); }},
      {"rate_limit.rate",
       value_kind::floating,
       0.001,
       1e9,
       {},
       "Calls per second, on average.",
       [](const p& x) { return text_of(x.rate_limit.rate); },
       [](p& x, cfg_t c, key_t k) { x.rate_limit.rate = as<double>(c, k); }},
      {"rate_limit.burst",
       value_kind::integer,
       1,
       1e9,
       {},
       "Calls allowed at once after a quiet period (the bucket's size).",
       [](const p& x) {
         return std::to_string(static_cast<int64_t>(x.rate_limit.burst));
       },
       [](p& x, cfg_t c, key_t k) {
         x.rate_limit.burst = static_cast<double>(c.get_int(k));
       }},
      {"rate_limit.scope",
       value_kind::string,
       {},
       {},
       scopes,
       "One bucket for the dependency, or one per calling actor.",
       [](const p& x) {
         return std::string{
             x.rate_limit.scope == rate_limit_scope::caller ? "caller" : "dependency"};
       },
       [](p& x, cfg_t c, key_t k) {
         x.rate_limit.scope = as<std::string>(c, k) == "caller"
                                  ? rate_limit_scope::caller
                                  : rate_limit_scope::dependency;
       }},
      {"faults.enabled",
       value_kind::boolean,
       {},
       {},
       {},
       "Inject faults (chaos testing); off unless set. Switchable at run time.",
       [](const p& x) { return text_of(x.faults.enabled); },
       [](p& x, cfg_t c, key_t k) { x.faults.enabled = as<bool>(c, k); }},
      {"faults.latency",
       value_kind::duration,
       0,
       nanos(1h),
       {},
       "Latency added before a call is sent (lower end when latency_max is larger).",
       [](const p& x) { return text_of(x.faults.latency); },
       [](p& x, cfg_t c, key_t k) { x.faults.latency = as<ns>(c, k); }},
      {"faults.latency_max",
       value_kind::duration,
       0,
       nanos(1h),
       {},
       "Upper end of a random latency; not above faults.latency = fixed latency.",
       [](const p& x) { return text_of(x.faults.latency_max); },
       [](p& x, cfg_t c, key_t k) { x.faults.latency_max = as<ns>(c, k); }},
      {"faults.latency_probability",
       value_kind::floating,
       0,
       1,
       {},
       "Probability (0..1) that a call gets the latency.",
       [](const p& x) { return text_of(x.faults.latency_probability); },
       [](p& x, cfg_t c, key_t k) { x.faults.latency_probability = as<double>(c, k); }},
      {"faults.error_probability",
       value_kind::floating,
       0,
       1,
       {},
       "Probability (0..1) that a call fails with faults.error instead of being sent.",
       [](const p& x) { return text_of(x.faults.error_probability); },
       [](p& x, cfg_t c, key_t k) { x.faults.error_probability = as<double>(c, k); }},
      {"faults.error",
       value_kind::string,
       {},
       {},
       error_names(),
       "Error an injected failure answers with.",
       [](const p& x) { return std::string{to_string(x.faults.error)}; },
       [](p& x, cfg_t c, key_t k) {
         x.faults.error = *parse_error_name(as<std::string>(c, k));
       }},
      {"fallback.on",
       value_kind::string_list,
       {},
       {},
       error_names(),
       "Final errors for which the configured fallback answers instead.",
       [](const p& x) { return text_of(x.fallback_on); },
       [](p& x, cfg_t c, key_t k) { x.fallback_on = codes_of(c.get_list(k)); }},
  };
  return table;
}

void declare_field(config_schema& schema, const field& f, const std::string& name,
                   const std::optional<std::string>& default_text) {
  auto b = schema.declare(name, f.kind);
  if (default_text)
    b.default_value(*default_text);
  if (f.min)
    b.min(*f.min);
  if (f.max)
    b.max(*f.max);
  if (!f.choices.empty())
    b.choices(f.choices);
  b.describe(f.description);
}

std::string class_key(const std::string& cls, const char* key) {
  return std::string{classes_prefix} + cls + "." + key;
}

std::string dependency_key(const std::string& name, const char* key) {
  return std::string{dependencies_prefix} + name + "." + key;
}

std::vector<std::string> declared_classes(const config_schema& schema) {
  std::vector<std::string> out;
  const std::string prefix = classes_prefix;
  const std::string marker = ".timeout";
  for (auto& [key, decl] : schema.keys()) {
    if (key.compare(0, prefix.size(), prefix) == 0 &&
        key.size() > prefix.size() + marker.size() &&
        key.compare(key.size() - marker.size(), marker.size(), marker) == 0) {
      auto cls = key.substr(prefix.size(), key.size() - prefix.size() - marker.size());
      if (cls.find('.') == std::string::npos)
        out.push_back(cls);
    }
  }
  return out;
}

const resilience_policy& builtin_policy() {
  static const resilience_policy policy;
  return policy;
}

} // namespace

const std::vector<std::string>& error_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (auto i = static_cast<int>(errc::timeout); i <= static_cast<int>(errc::cancelled);
         ++i)
      out.emplace_back(to_string(static_cast<errc>(i)));
    return out;
  }();
  return names;
}

std::optional<errc> parse_error_name(const std::string& name) {
  for (auto i = static_cast<int>(errc::timeout); i <= static_cast<int>(errc::cancelled);
       ++i)
    if (name == to_string(static_cast<errc>(i)))
      return static_cast<errc>(i);
  return std::nullopt;
}

void declare_dependency_class(config_schema& schema, const std::string& class_name,
                              const resilience_policy& defaults) {
  for (auto& f : fields())
    declare_field(schema, f, class_key(class_name, f.key), f.show(defaults));
}

void declare_dependency(config_schema& schema, const std::string& name,
                        const std::string& default_class) {
  if (schema.find(class_key("default", "timeout")) == nullptr)
    declare_dependency_class(schema, "default", builtin_policy());
  auto classes = declared_classes(schema);
  if (std::find(classes.begin(), classes.end(), default_class) == classes.end())
    throw std::logic_error("resilience: dependency class '" + default_class +
                           "' must be declared before dependency '" + name + "'");
  schema.declare(std::string{dependencies_prefix} + name + ".class", value_kind::string)
      .default_value(default_class)
      .choices(classes)
      .describe(
          "Class of dependency whose settings apply where this dependency sets none.");
  for (auto& f : fields())
    declare_field(schema, f, dependency_key(name, f.key), std::nullopt);
}

resilience_policy policy_from_config(const config& cfg, const std::string& name) {
  resilience_policy policy;
  policy.dependency = name;
  auto cls = cfg.get_string(std::string{dependencies_prefix} + name + ".class");
  for (auto& f : fields()) {
    auto own = dependency_key(name, f.key);
    auto key = cfg.has(own) ? own : class_key(cls, f.key);
    f.read(policy, cfg, key);
    // The key's bounds keep it out of a loaded configuration; a guard must
    // never fall back to some timeout of its own.
    if (std::string_view{f.key} == "timeout" && policy.timeout <= ns{0})
      throw config_error(key, key + ": expected a positive duration, got " +
                                  text_of(policy.timeout));
  }
  return policy;
}

} // namespace troupe::resilience
