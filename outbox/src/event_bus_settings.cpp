#include <troupe/outbox/event_bus_settings.hpp>

#include <algorithm>

namespace troupe {

namespace {

std::string trim(std::string s) {
  auto first = s.find_first_not_of(" \t");
  auto last = s.find_last_not_of(" \t");
  return first == std::string::npos ? std::string{} : s.substr(first, last - first + 1);
}

bool matches(const std::string& pattern, const std::string& destination) {
  if (!pattern.empty() && pattern.back() == '*')
    return destination.compare(0, pattern.size() - 1, pattern, 0, pattern.size() - 1) ==
           0;
  return pattern == destination;
}

std::chrono::milliseconds millis(const config& cfg, const std::string& key) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(cfg.get_duration(key));
}

} // namespace

std::string event_bus_settings::broker_for(const std::string& destination) const {
  for (auto& r : routes)
    if (matches(r.pattern, destination))
      return r.broker;
  return "embedded";
}

std::string event_bus_settings::route_for(const std::string& destination) const {
  for (auto& r : routes)
    if (matches(r.pattern, destination))
      return r.pattern;
  return "*";
}

const std::vector<std::string>& known_brokers() {
  static const std::vector<std::string> names{"embedded", "kafka", "nats"};
  return names;
}

void declare_event_bus_config(config_schema& s) {
  using namespace std::chrono_literals;
  if (s.find("events.routes") != nullptr)
    return;
  s.declare("events.routes", value_kind::string_list)
      .default_value("[]")
      .describe("Which broker serves which destination, as \"pattern=broker\" "
                "(\"orders.*=embedded\"); the first match wins; unmatched: embedded.");
  s.declare("events.relay.batch_size", value_kind::integer)
      .default_value("2048")
      .min(1)
      .max(100000)
      .describe("Outbox rows the relay publishes per broker call.");
  s.declare("events.relay.max_in_flight", value_kind::integer)
      .default_value("8")
      .min(1)
      .max(64)
      .describe("Publish calls the relay keeps waiting for brokers at once.");
  s.declare("events.relay.poll_interval", value_kind::duration)
      .default_value("500ms")
      .min(1ms)
      .max(1h)
      .describe("How often the relay looks for rows besides the wake-up after a commit.");
  s.declare("events.relay.max_attempts", value_kind::integer)
      .default_value("10")
      .min(1)
      .max(1000000)
      .describe("Failed publish attempts after which a row moves to dead letters.");
  s.declare("events.relay.backoff", value_kind::duration)
      .default_value("100ms")
      .min(1ms)
      .max(1h)
      .describe("Wait after a row's first failed attempt; doubles per attempt.");
  s.declare("events.relay.max_backoff", value_kind::duration)
      .default_value("30s")
      .min(1ms)
      .max(24h)
      .describe("Longest wait between two attempts of one row.");
  s.declare("events.relay.publish_timeout", value_kind::duration)
      .default_value("10s")
      .min(1ms)
      .max(1h)
      .describe("How long the relay waits for a broker's acknowledgement.");
  s.declare("events.relay.max_rate", value_kind::floating)
      .default_value("0")
      .min(0)
      .max(10000000)
      .describe("Rows per second the relay publishes at most (a second's worth in a "
                "burst), so a backlog left by an outage does not flood the broker; 0: "
                "no limit.");
  s.declare("events.inbox.retention", value_kind::duration)
      .default_value("168h")
      .min(1ms)
      .max(87600h)
      .describe("How long a consumer remembers a processed message id.");
}

event_bus_settings event_bus_settings_from(const config& cfg) {
  event_bus_settings out;
  for (auto& entry : cfg.get_list("events.routes")) {
    auto eq = entry.find('=');
    if (eq == std::string::npos)
      throw config_error("events.routes",
                         "events.routes: '" + entry +
                             "' is not \"pattern=broker\" (e.g. orders.*=embedded)");
    event_route r{trim(entry.substr(0, eq)), trim(entry.substr(eq + 1))};
    if (r.pattern.empty())
      throw config_error("events.routes",
                         "events.routes: '" + entry + "' has an empty pattern");
    if (auto star = r.pattern.find('*');
        star != std::string::npos && star + 1 != r.pattern.size())
      throw config_error("events.routes",
                         "events.routes: '" + entry + "': '*' may only end a pattern");
    auto& known = known_brokers();
    if (std::find(known.begin(), known.end(), r.broker) == known.end()) {
      std::string names;
      for (auto& k : known)
        names += (names.empty() ? "" : ", ") + k;
      throw config_error("events.routes",
                         "events.routes: '" + entry + "' names broker '" + r.broker +
                             "', which this build does not have (known: " + names + ")");
    }
    out.routes.push_back(std::move(r));
  }
  auto& rs = out.relay;
  rs.batch_size = static_cast<uint32_t>(cfg.get_int("events.relay.batch_size"));
  rs.max_in_flight = static_cast<uint32_t>(cfg.get_int("events.relay.max_in_flight"));
  rs.poll_interval = millis(cfg, "events.relay.poll_interval");
  rs.max_attempts = static_cast<uint32_t>(cfg.get_int("events.relay.max_attempts"));
  rs.backoff.initial = millis(cfg, "events.relay.backoff");
  rs.backoff.max = millis(cfg, "events.relay.max_backoff");
  rs.publish_timeout = millis(cfg, "events.relay.publish_timeout");
  rs.max_rate = cfg.get_double("events.relay.max_rate");
  if (rs.backoff.max < rs.backoff.initial)
    throw config_error("events.relay.max_backoff",
                       "is shorter than events.relay.backoff");
  out.inbox_retention = millis(cfg, "events.inbox.retention");
  return out;
}

} // namespace troupe
