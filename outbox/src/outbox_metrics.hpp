#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

namespace troupe {

/// The outbox's and inbox's metric families, registered once per process in
/// the node's registry.
struct outbox_metrics {
  static outbox_metrics& instance();
  prometheus::Gauge* backlog_rows;
  prometheus::Gauge* oldest_row_age;
  prometheus::Counter* published;
  prometheus::Counter* publish_failures;
  prometheus::Counter* dead_lettered;
  prometheus::Counter* inbox_duplicates;
  prometheus::Counter* inbox_poison;
  /// Per route (the `events.routes` pattern serving the rows, "*" for the
  /// default): rows waiting, and the age of the oldest.
  prometheus::Family<prometheus::Gauge>* route_backlog_rows;
  prometheus::Family<prometheus::Gauge>* route_oldest_row_age;
};

} // namespace troupe
