#pragma once

// The consumer-lag gauge every broker gateway keeps for its subscriptions.

#include <string>

#include <prometheus/gauge.h>

namespace troupe {

/// `troupe_events_consumer_lag{broker, topic, group, partition}`: messages in
/// the topic (partition) that the group has not acknowledged yet, as far as
/// the gateway knows it. Safe to set from any thread.
prometheus::Gauge& consumer_lag(const std::string& broker, const std::string& topic,
                                const std::string& group, const std::string& partition);

/// Drops a gauge whose position this process no longer owns (a revoked
/// partition, an ended subscription).
void forget_consumer_lag(prometheus::Gauge& gauge);

} // namespace troupe
