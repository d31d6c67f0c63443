#pragma once

#include <chrono>
#include <map>
#include <string>

#include <caf/fwd.hpp>

#include <troupe/outbox/event_bus_settings.hpp>
#include <troupe/outbox/outbound_event.hpp>

namespace troupe {

/// The publisher the relay sees on a node with several brokers: each event
/// goes to the broker its destination is routed to, the answer merges theirs
/// in order, and the per-key contract of `publisher_actor` holds across
/// brokers (an event waits behind a failed earlier one of its key, whichever
/// broker that went to). Each route's state (publishing, or failing with the
/// broker's error) is a readiness detail, so `/readyz` tells which route
/// backs up. A broker missing from `brokers` fails its events, naming it.
publisher_actor spawn_route_publisher(caf::actor_system& sys, event_bus_settings routes,
                                      std::map<std::string, publisher_actor> brokers);

/// The readiness-detail subject of the route `pattern` ("*": the default).
std::string route_detail_subject(const std::string& pattern, const std::string& broker);

} // namespace troupe
