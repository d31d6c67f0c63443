#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <caf/all.hpp>

#include <troupe/outbox/route_publisher.hpp>
#include <troupe/runtime/readiness.hpp>

using namespace std::chrono_literals;

namespace {

// A broker that records what it is given and fails every event when told to.
struct fake_broker {
  std::mutex mtx;
  std::vector<std::string> destinations;
  std::string failure; ///< empty: acknowledge everything
};

troupe::publisher_actor::behavior_type fake_publisher(troupe::publisher_actor::pointer,
                                                      std::shared_ptr<fake_broker> b) {
  return {
      [b](troupe::publish_atom, std::vector<troupe::outbound_event>& events) {
        std::lock_guard<std::mutex> guard{b->mtx};
        for (auto& ev : events)
          b->destinations.push_back(ev.destination);
        return std::vector<std::string>(events.size(), b->failure);
      },
  };
}

troupe::outbound_event event(std::string destination, std::string key) {
  troupe::outbound_event ev;
  ev.id = destination + "/" + key;
  ev.destination = std::move(destination);
  ev.key = std::move(key);
  return ev;
}

troupe::event_bus_settings kafka_for_orders() {
  troupe::event_bus_settings s;
  s.routes.push_back({"orders.*", "kafka"});
  s.relay.publish_timeout = 5s;
  return s;
}

std::vector<std::string> publish(caf::actor_system& sys, troupe::publisher_actor p,
                                 std::vector<troupe::outbound_event> events) {
  caf::scoped_actor self{sys};
  std::vector<std::string> out;
  self->request(p, 5s, troupe::publish_atom::value, std::move(events))
      .receive([&](std::vector<std::string>& r) { out = std::move(r); },
               [&](caf::error& err) { FAIL(sys.render(err)); });
  return out;
}

} // namespace

TEST_CASE("the route publisher sends each event to its route's broker and answers in "
          "the order it was given") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto kafka = std::make_shared<fake_broker>();
  auto embedded = std::make_shared<fake_broker>();
  auto routes =
      troupe::spawn_route_publisher(sys, kafka_for_orders(),
                                    {{"kafka", sys.spawn(fake_publisher, kafka)},
                                     {"embedded", sys.spawn(fake_publisher, embedded)}});
  auto results = publish(sys, routes,
                         {event("orders.placed", "1"), event("audit.login", "2"),
                          event("orders.shipped", "3")});
  CHECK(results == std::vector<std::string>(3));
  CHECK(kafka->destinations ==
        std::vector<std::string>{"orders.placed", "orders.shipped"});
  CHECK(embedded->destinations == std::vector<std::string>{"audit.login"});
  CHECK(troupe::readiness_details()[troupe::route_detail_subject("orders.*", "kafka")] ==
        "publishing");
  caf::anon_send_exit(routes, caf::exit_reason::user_shutdown);
}

TEST_CASE("an event waits behind a failed earlier event of its key sent to another "
          "broker, and the failing route shows in the readiness details") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto kafka = std::make_shared<fake_broker>();
  kafka->failure = "broker unreachable";
  auto embedded = std::make_shared<fake_broker>();
  auto routes =
      troupe::spawn_route_publisher(sys, kafka_for_orders(),
                                    {{"kafka", sys.spawn(fake_publisher, kafka)},
                                     {"embedded", sys.spawn(fake_publisher, embedded)}});
  auto results = publish(sys, routes,
                         {event("orders.placed", "7"), event("audit.order", "7"),
                          event("audit.order", "8")});
  REQUIRE(results.size() == 3);
  CHECK(results[0] == "broker unreachable");
  CHECK(results[1].find("held back") != std::string::npos);
  CHECK(results[2].empty());
  auto details = troupe::readiness_details();
  CHECK(details[troupe::route_detail_subject("orders.*", "kafka")] ==
        "failing: broker unreachable");
  CHECK(details[troupe::route_detail_subject("*", "embedded")] == "publishing");
  caf::anon_send_exit(routes, caf::exit_reason::user_shutdown);
}

TEST_CASE("an event routed to a broker this node does not run fails naming the broker") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto embedded = std::make_shared<fake_broker>();
  auto routes = troupe::spawn_route_publisher(
      sys, kafka_for_orders(), {{"embedded", sys.spawn(fake_publisher, embedded)}});
  auto results =
      publish(sys, routes, {event("orders.placed", "1"), event("audit.x", "2")});
  REQUIRE(results.size() == 2);
  CHECK(results[0].find("'kafka'") != std::string::npos);
  CHECK(results[1].empty());
  caf::anon_send_exit(routes, caf::exit_reason::user_shutdown);
}
