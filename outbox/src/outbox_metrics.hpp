#pragma once

#include <prometheus/counter.h>
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
};

} // namespace troupe
