#include <troupe/outbox/event_bus_settings.hpp>

#include <catch2/catch.hpp>

namespace {

troupe::config load_with(std::vector<std::pair<std::string, std::string>> overrides) {
  troupe::config_schema schema;
  troupe::declare_event_bus_config(schema);
  troupe::config_sources src;
  src.overrides = std::move(overrides);
  return troupe::config::load(schema, src);
}

} // namespace

TEST_CASE("a destination no route matches goes to the embedded broker") {
  auto s = troupe::event_bus_settings_from(
      load_with({{"events.routes", "[orders.*=embedded, audit=embedded]"}}));
  REQUIRE(s.routes.size() == 2);
  CHECK(s.routes[0].pattern == "orders.*");
  CHECK(s.broker_for("orders.shipped") == "embedded");
  CHECK(s.broker_for("payments.charged") == "embedded");
}

TEST_CASE("a route to a broker this build does not have is a config error naming "
          "events.routes") {
  auto cfg = load_with({{"events.routes", "[orders.*=rabbitmq]"}});
  try {
    troupe::event_bus_settings_from(cfg);
    FAIL("accepted a route to rabbitmq");
  } catch (const troupe::config_error& e) {
    CHECK(e.key() == "events.routes");
    CHECK(std::string{e.what()}.find("rabbitmq") != std::string::npos);
  }
}

TEST_CASE("a route without a broker name is a config error naming events.routes") {
  auto cfg = load_with({{"events.routes", "[orders.*]"}});
  CHECK_THROWS_AS(troupe::event_bus_settings_from(cfg), troupe::config_error);
}

TEST_CASE("relay settings come from events.relay keys") {
  auto s =
      troupe::event_bus_settings_from(load_with({{"events.relay.batch_size", "64"},
                                                 {"events.relay.max_attempts", "4"},
                                                 {"events.relay.max_in_flight", "2"},
                                                 {"events.relay.backoff", "250ms"}}));
  CHECK(s.relay.batch_size == 64);
  CHECK(s.relay.max_attempts == 4);
  CHECK(s.relay.max_in_flight == 2);
  CHECK(s.relay.backoff.initial == std::chrono::milliseconds(250));
  CHECK(s.relay.backoff.after(3) == std::chrono::milliseconds(1000));
}
