#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <troupe/outbox/relay.hpp>
#include <troupe/runtime/config.hpp>

namespace troupe {

/// One `events.routes` entry: destinations matching `pattern` (exact, or a
/// prefix ending in `*`) go to the broker named `broker`.
struct event_route {
  std::string pattern;
  std::string broker;
};

/// The event bus's configuration, parsed once at start.
struct event_bus_settings {
  std::vector<event_route> routes;
  relay_settings relay;
  std::chrono::milliseconds inbox_retention = std::chrono::hours(24 * 7);

  /// The broker serving `destination`: the first matching route, else
  /// "embedded".
  std::string broker_for(const std::string& destination) const;
  /// The pattern of the route serving `destination`, or "*" for the default.
  std::string route_for(const std::string& destination) const;
};

/// Brokers a route may name in this build.
const std::vector<std::string>& known_brokers();

/// Declares `events.routes`, `events.relay.*` and `events.inbox.retention`.
void declare_event_bus_config(config_schema& schema);

/// Throws config_error naming `events.routes` for an entry that is not
/// `pattern=broker` or names a broker this build does not have.
event_bus_settings event_bus_settings_from(const config& cfg);

} // namespace troupe
