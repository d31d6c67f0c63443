#include <troupe/actors/dependency_metrics.hpp>

#include <mutex>

namespace troupe::resilience {

namespace {

struct families {
  prometheus::Family<prometheus::Counter>* calls;
  prometheus::Family<prometheus::Histogram>* latency;
  prometheus::Family<prometheus::Gauge>* breaker_state;
  prometheus::Family<prometheus::Counter>* transitions;
  prometheus::Family<prometheus::Gauge>* in_use;
  prometheus::Family<prometheus::Gauge>* queued;
};

const families& get_families() {
  static const families f = [] {
    auto& reg = metrics::instance().registry();
    families out;
    out.calls = &prometheus::BuildCounter()
                     .Name("troupe_dependency_calls_total")
                     .Help("Calls through a resilience guard, by dependency and outcome.")
                     .Register(reg);
    out.latency = &prometheus::BuildHistogram()
                       .Name("troupe_dependency_call_seconds")
                       .Help("Time from sending an attempt to its reply or failure.")
                       .Register(reg);
    out.breaker_state =
        &prometheus::BuildGauge()
             .Name("troupe_dependency_breaker_state")
             .Help("Circuit breaker state: 0 closed, 1 open, 2 half-open.")
             .Register(reg);
    out.transitions = &prometheus::BuildCounter()
                           .Name("troupe_dependency_breaker_transitions_total")
                           .Help("Circuit breaker state changes, by the state entered.")
                           .Register(reg);
    out.in_use = &prometheus::BuildGauge()
                      .Name("troupe_dependency_bulkhead_in_use")
                      .Help("Calls holding a bulkhead slot.")
                      .Register(reg);
    out.queued = &prometheus::BuildGauge()
                      .Name("troupe_dependency_bulkhead_queued")
                      .Help("Calls waiting in the bulkhead queue.")
                      .Register(reg);
    return out;
  }();
  return f;
}

const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries b{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
  return b;
}

} // namespace

const char* to_string(call_outcome o) {
  switch (o) {
  case call_outcome::success:
    return "success";
  case call_outcome::failure:
    return "failure";
  case call_outcome::timeout:
    return "timeout";
  case call_outcome::rejected_breaker:
    return "rejected_breaker";
  case call_outcome::rejected_bulkhead:
    return "rejected_bulkhead";
  case call_outcome::rate_limited:
    return "rate_limited";
  case call_outcome::retried:
    return "retried";
  case call_outcome::fallback:
    return "fallback";
  }
  return "unknown";
}

dependency_metrics dependency_metrics::for_dependency(const std::string& dependency) {
  // prometheus-cpp's Family::Add is thread-safe and returns the existing
  // metric for the same labels; the lock only keeps the lookups together.
  static std::mutex mtx;
  std::lock_guard<std::mutex> lock{mtx};
  auto& f = get_families();
  dependency_metrics m;
  for (size_t i = 0; i < call_outcome_count; ++i)
    m.calls_[i] = &f.calls->Add({{"dependency", dependency},
                                 {"outcome", to_string(static_cast<call_outcome>(i))}});
  for (size_t i = 0; i < 3; ++i)
    m.transitions_[i] = &f.transitions->Add(
        {{"dependency", dependency}, {"to", to_string(static_cast<breaker_state>(i))}});
  m.latency_ = &f.latency->Add({{"dependency", dependency}}, latency_buckets());
  m.breaker_state_ = &f.breaker_state->Add({{"dependency", dependency}});
  m.in_use_ = &f.in_use->Add({{"dependency", dependency}});
  m.queued_ = &f.queued->Add({{"dependency", dependency}});
  return m;
}

void dependency_metrics::breaker_changed(breaker_state to) const {
  breaker_state_->Set(static_cast<double>(static_cast<uint8_t>(to)));
  transitions_[static_cast<size_t>(to)]->Increment();
}

void dependency_metrics::bulkhead(size_t in_use, size_t queued) const {
  in_use_->Set(static_cast<double>(in_use));
  queued_->Set(static_cast<double>(queued));
}

} // namespace troupe::resilience
