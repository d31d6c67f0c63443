#pragma once

#include <memory>
#include <string>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace troupe {

/// The node's Prometheus registry and troupe's own metric families. One per
/// process; components add their families to `registry()`.
class metrics {
public:
  /// The process-wide instance (created on first use).
  static metrics& instance();

  prometheus::Registry& registry() noexcept { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() const { return registry_; }

  /// Per actor type: messages handled, handling time, and requests answered
  /// `timeout` on arrival because their deadline had passed.
  struct actor_type_metrics {
    prometheus::Counter* handled;
    prometheus::Histogram* handling_seconds;
    prometheus::Counter* expired;
  };
  /// Stable pointers for one actor type; cache them, don't look up per message.
  actor_type_metrics for_actor_type(const std::string& type);

  prometheus::Counter& supervisor_restarts(const std::string& supervisor,
                                           const std::string& child);
  prometheus::Gauge& cluster_members(const std::string& state); ///< "up" / "down"
  prometheus::Gauge& registry_services();

  /// Text exposition of every registered family (what /metrics serves).
  std::string serialize() const;

private:
  metrics();
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_;
  prometheus::Family<prometheus::Counter>* handled_;
  prometheus::Family<prometheus::Histogram>* handling_seconds_;
  prometheus::Family<prometheus::Counter>* expired_;
  prometheus::Family<prometheus::Counter>* restarts_;
  prometheus::Family<prometheus::Gauge>* members_;
  prometheus::Family<prometheus::Gauge>* services_;
};

} // namespace troupe
