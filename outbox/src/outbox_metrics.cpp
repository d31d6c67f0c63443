#include "outbox_metrics.hpp"

#include <troupe/runtime/metrics.hpp>

namespace troupe {

outbox_metrics& outbox_metrics::instance() {
  static outbox_metrics m = [] {
    auto& reg = metrics::instance().registry();
    outbox_metrics out{};
    out.backlog_rows = &prometheus::BuildGauge()
                            .Name("troupe_outbox_backlog_rows")
                            .Help("Outbox rows committed and not yet published")
                            .Register(reg)
                            .Add({});
    out.oldest_row_age = &prometheus::BuildGauge()
                              .Name("troupe_outbox_oldest_row_age_seconds")
                              .Help("Age of the oldest unpublished outbox row")
                              .Register(reg)
                              .Add({});
    out.published = &prometheus::BuildCounter()
                         .Name("troupe_outbox_published_total")
                         .Help("Outbox rows acknowledged by their broker")
                         .Register(reg)
                         .Add({});
    out.publish_failures = &prometheus::BuildCounter()
                                .Name("troupe_outbox_publish_failures_total")
                                .Help("Failed publish attempts of outbox rows")
                                .Register(reg)
                                .Add({});
    out.dead_lettered = &prometheus::BuildCounter()
                             .Name("troupe_outbox_dead_lettered_total")
                             .Help("Outbox rows moved to dead letters")
                             .Register(reg)
                             .Add({});
    out.inbox_duplicates = &prometheus::BuildCounter()
                                .Name("troupe_inbox_duplicates_skipped_total")
                                .Help("Redelivered messages the inbox skipped")
                                .Register(reg)
                                .Add({});
    out.inbox_poison =
        &prometheus::BuildCounter()
             .Name("troupe_inbox_poison_messages_total")
             .Help("Undecodable messages sent to a dead-letter destination")
             .Register(reg)
             .Add({});
    out.route_backlog_rows =
        &prometheus::BuildGauge()
             .Name("troupe_outbox_route_backlog_rows")
             .Help("Outbox rows committed and not yet published, per route")
             .Register(reg);
    out.route_oldest_row_age =
        &prometheus::BuildGauge()
             .Name("troupe_outbox_route_oldest_row_age_seconds")
             .Help("Age of the oldest unpublished outbox row, per route")
             .Register(reg);
    return out;
  }();
  return m;
}

} // namespace troupe
