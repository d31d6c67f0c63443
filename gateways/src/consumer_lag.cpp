#include "consumer_lag.hpp"

#include <prometheus/family.h>

#include <troupe/runtime/metrics.hpp>

namespace troupe {

namespace {

prometheus::Family<prometheus::Gauge>& lag_family() {
  static auto& family =
      prometheus::BuildGauge()
          .Name("troupe_events_consumer_lag")
          .Help("Messages a consumer group has not acknowledged yet, per "
                "topic and partition")
          .Register(metrics::instance().registry());
  return family;
}

} // namespace

prometheus::Gauge& consumer_lag(const std::string& broker, const std::string& topic,
                                const std::string& group, const std::string& partition) {
  return lag_family().Add(
      {{"broker", broker}, {"topic", topic}, {"group", group}, {"partition", partition}});
}

void forget_consumer_lag(prometheus::Gauge& gauge) {
  lag_family().Remove(&gauge);
}

} // namespace troupe
