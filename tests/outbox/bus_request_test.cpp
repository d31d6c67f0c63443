// Request/reply through the event bus: a service answers requests on a
// destination, and an actor asks whoever serves it, whichever broker the
// destination is routed to.

#include <troupe/gateways/event_bus.hpp>

#include <future>
#include <optional>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include <troupe/gateways/kafka_gateway.hpp>
#include <troupe/gateways/nats_gateway.hpp>
#include <troupe/outbox/event_bus_settings.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/readiness.hpp>

#include "outbox/events_fixture.hpp"
#include "support/nats_server_process.hpp"

namespace {

using namespace std::chrono_literals;
using troupe::errc;
using troupe::test::eventually;

struct price_query {
  std::string sku;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, price_query& x) {
  return f(caf::meta::type_name("price_query"), x.sku);
}

struct price_quote {
  std::string sku;
  int64_t cents = 0;
  std::string quoted_by;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, price_quote& x) {
  return f(caf::meta::type_name("price_quote"), x.sku, x.cents, x.quoted_by);
}

// Encodes as 12 bytes that do not read as a price_query: a zero-length sku
// followed by bytes left over.
struct stock_count {
  int32_t zero = 0;
  int64_t units = 7;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stock_count& x) {
  return f(caf::meta::type_name("stock_count"), x.zero, x.units);
}

troupe::config bus_config(std::vector<std::pair<std::string, std::string>> overrides) {
  troupe::config_schema schema;
  troupe::declare_event_bus_config(schema);
  troupe::gateways::declare_embedded_broker_config(schema);
  troupe::declare_kafka_config(schema);
  troupe::declare_nats_config(schema);
  troupe::config_sources src;
  src.overrides = std::move(overrides);
  return troupe::config::load(schema, src);
}

/// A reply or the error, as the asking actor saw it.
template <class Reply>
struct answer {
  std::optional<Reply> reply;
  caf::error error;
  std::chrono::steady_clock::duration took{};
};

/// A node's store with its event bus running over it.
struct bus_fixture : troupe::test::events_fixture {
  caf::actor bus;

  explicit bus_fixture(std::vector<std::pair<std::string, std::string>> overrides = {}) {
    bus = troupe::gateways::spawn_event_bus(*sys, bus_config(std::move(overrides)));
    REQUIRE(eventually(
        [&] { return static_cast<bool>(troupe::gateways::bus_requests(*sys)); }, 10s));
  }
  ~bus_fixture() {
    for (auto& h : handlers)
      stop(h);
    stop(bus);
  }

  std::vector<troupe::request_handler_actor> handlers;

  /// Serves price queries on `destination`, each quoted by `name`.
  troupe::request_handler_actor serve_prices(const std::string& destination,
                                             std::string name = "desk") {
    auto h = troupe::gateways::serve_requests_of<price_query>(
        *sys, destination, "pricing", [name](const price_query& q) {
          return price_quote{q.sku, static_cast<int64_t>(q.sku.size()) * 100, name};
        });
    handlers.push_back(h);
    return h;
  }

  template <class Reply, class Request>
  answer<Reply> ask(const std::string& destination, Request request,
                    caf::timespan deadline = 5s) {
    auto done = std::make_shared<std::promise<answer<Reply>>>();
    auto start = std::chrono::steady_clock::now();
    sys->spawn([=](caf::event_based_actor* self) {
      troupe::gateways::request_over_bus<Reply>(
          self, destination, request, deadline,
          [=](Reply& r) {
            done->set_value({std::move(r), {}, std::chrono::steady_clock::now() - start});
            self->quit();
          },
          [=](caf::error& err) {
            done->set_value(
                {std::nullopt, err, std::chrono::steady_clock::now() - start});
            self->quit();
          });
    });
    auto result = done->get_future();
    REQUIRE(result.wait_for(deadline + 10s) == std::future_status::ready);
    return result.get();
  }

  /// Waits until `/readyz` lists the bus's requests subscription of
  /// `destination` as serving.
  bool serving(const std::string& destination, const std::string& broker) {
    auto subject = "events requests " + destination + " (" + broker + ", group pricing)";
    return eventually(
        [&] {
          auto details = troupe::readiness_details();
          auto it = details.find(subject);
          return it != details.end() && it->second == "serving";
        },
        10s);
  }
};

} // namespace

TEST_CASE("a request over the embedded broker is answered by this node's handler of its "
          "destination") {
  bus_fixture f;
  f.serve_prices("pricing.quotes");
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
  REQUIRE(a.reply);
  CHECK(a.reply->sku == "widget");
  CHECK(a.reply->cents == 600);
}

TEST_CASE("handlers serving one destination with a wildcard take its requests in turn") {
  bus_fixture f;
  f.serve_prices("pricing.*", "left");
  f.serve_prices("pricing.quotes", "right");
  REQUIRE(f.serving("pricing.*", "embedded"));
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  std::map<std::string, int> quoted_by;
  for (int i = 0; i < 6; ++i) {
    auto a = f.ask<price_quote>("pricing.quotes", price_query{"bolt"});
    REQUIRE(a.reply);
    ++quoted_by[a.reply->quoted_by];
  }
  CHECK(quoted_by["left"] == 3);
  CHECK(quoted_by["right"] == 3);
}

TEST_CASE("a request nobody serves fails as service unavailable naming the destination") {
  bus_fixture f;
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::service_unavailable);
  CHECK_THAT(troupe::describe(a.error), Catch::Contains("pricing.quotes"));
}

TEST_CASE("a handler that does not answer within the deadline fails the request as a "
          "timeout at the deadline") {
  bus_fixture f;
  auto held = std::make_shared<std::vector<caf::typed_response_promise<std::string>>>();
  auto silent = f.sys->spawn([held](troupe::request_handler_actor::pointer self)
                                 -> troupe::request_handler_actor::behavior_type {
    return {[=](troupe::serve_request_atom, const std::string&,
                const std::string&) -> caf::result<std::string> {
      held->push_back(self->make_response_promise<std::string>());
      return held->back();
    }};
  });
  f.handlers.push_back(silent);
  troupe::gateways::serve_requests(*f.sys, "pricing.quotes", "pricing", silent);
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"}, 300ms);
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::timeout);
  CHECK(a.took >= 300ms);
}

TEST_CASE("a handler's error reaches the requester as rejected with its reason") {
  bus_fixture f;
  auto h = troupe::gateways::serve_requests_of<price_query>(
      *f.sys, "pricing.quotes", "pricing",
      [](const price_query& q) -> caf::expected<price_quote> {
        return troupe::make_error(errc::rejected, "no price for " + q.sku);
      });
  f.handlers.push_back(h);
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"gizmo"});
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::rejected);
  CHECK_THAT(troupe::describe(a.error), Catch::Contains("no price for gizmo"));
}

TEST_CASE(
    "a request of another type than the handler takes is rejected naming the type") {
  bus_fixture f;
  f.serve_prices("pricing.quotes");
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  auto a = f.ask<price_quote>("pricing.quotes", stock_count{});
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::rejected);
  CHECK_THAT(troupe::describe(a.error), Catch::Contains("is not a price_query"));
}

TEST_CASE("a reply of another type than the requester expects is rejected naming the "
          "type") {
  bus_fixture f;
  f.serve_prices("pricing.quotes");
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  auto a = f.ask<stock_count>("pricing.quotes", price_query{"widget"});
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::rejected);
  CHECK_THAT(troupe::describe(a.error), Catch::Contains("is not a stock_count"));
}

TEST_CASE("a handler that ended is no longer asked: its destination becomes unserved") {
  bus_fixture f;
  auto h = f.serve_prices("pricing.quotes");
  REQUIRE(f.serving("pricing.quotes", "embedded"));
  REQUIRE(f.ask<price_quote>("pricing.quotes", price_query{"widget"}).reply);
  f.stop(h);
  f.handlers.clear();
  REQUIRE(eventually(
      [&] {
        auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
        return !a.reply && troupe::classify(a.error) == errc::service_unavailable;
      },
      10s));
}

TEST_CASE("a request to a destination routed to Kafka is rejected naming events.routes") {
  bus_fixture f{{{"events.routes", "[pricing.*=kafka]"},
                 {"events.kafka.bootstrap_servers", "127.0.0.1:1"}}};
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::rejected);
  CHECK_THAT(troupe::describe(a.error), Catch::Contains("events.routes"));
}

TEST_CASE("a request over a NATS route is answered by a handler serving it through the "
          "server") {
  troupe::test::nats_server_process server;
  server.start();
  bus_fixture f{{{"events.routes", "[pricing.*=nats]"},
                 {"events.nats.servers", "[" + server.url() + "]"}}};
  f.serve_prices("pricing.quotes");
  REQUIRE(f.serving("pricing.quotes", "nats"));
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"sprocket"});
  REQUIRE(a.reply);
  CHECK(a.reply->cents == 800);
}

TEST_CASE("a request over a NATS route that nobody serves fails as service unavailable") {
  troupe::test::nats_server_process server;
  server.start();
  bus_fixture f{{{"events.routes", "[pricing.*=nats]"},
                 {"events.nats.servers", "[" + server.url() + "]"}}};
  // The requester connects on the first request; ask until it is connected.
  answer<price_quote> a;
  REQUIRE(eventually(
      [&] {
        a = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
        return troupe::describe(a.error).find("no responder") != std::string::npos;
      },
      10s));
  CHECK(troupe::classify(a.error) == errc::service_unavailable);
}

namespace {

using answer_later_atom = caf::atom_constant<caf::atom("answerlate")>;

/// Answers each price query after `delay`, the way a slow handler would.
troupe::request_handler_actor spawn_slow_desk(caf::actor_system& sys,
                                              std::chrono::milliseconds delay) {
  using slow_desk =
      troupe::request_handler_actor::extend<caf::reacts_to<answer_later_atom, uint64_t>>;
  struct state {
    uint64_t next = 0;
    std::map<uint64_t, caf::typed_response_promise<std::string>> held;
  };
  auto desk = sys.spawn([delay](slow_desk::stateful_pointer<state> self)
                            -> slow_desk::behavior_type {
    return {
        [=](troupe::serve_request_atom, const std::string&,
            const std::string&) -> caf::result<std::string> {
          auto id = self->state.next++;
          self->state.held.emplace(id, self->make_response_promise<std::string>());
          self->delayed_send(self, delay, answer_later_atom::value, id);
          return self->state.held.at(id);
        },
        [=](answer_later_atom, uint64_t id) {
          auto it = self->state.held.find(id);
          it->second.deliver(troupe::encode_event(price_quote{"slow", 1, "slow desk"}));
          self->state.held.erase(it);
        },
    };
  });
  return caf::actor_cast<troupe::request_handler_actor>(desk);
}

} // namespace

TEST_CASE("a NATS responder gives its handler the time the requester waits, not the "
          "delivery timeout") {
  troupe::test::nats_server_process server;
  server.start();
  bus_fixture f{{{"events.routes", "[pricing.*=nats]"},
                 {"events.nats.servers", "[" + server.url() + "]"},
                 {"events.nats.deliver_timeout", "100ms"}}};
  auto desk = spawn_slow_desk(*f.sys, 400ms);
  f.handlers.push_back(desk);
  troupe::gateways::serve_requests(*f.sys, "pricing.quotes", "pricing", desk);
  REQUIRE(f.serving("pricing.quotes", "nats"));
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"}, 5s);
  INFO(troupe::describe(a.error));
  REQUIRE(a.reply);
  CHECK(a.reply->quoted_by == "slow desk");
}

TEST_CASE("a NATS request whose handler misses the requester's deadline fails as a "
          "timeout") {
  troupe::test::nats_server_process server;
  server.start();
  bus_fixture f{{{"events.routes", "[pricing.*=nats]"},
                 {"events.nats.servers", "[" + server.url() + "]"}}};
  auto desk = spawn_slow_desk(*f.sys, 2s);
  f.handlers.push_back(desk);
  troupe::gateways::serve_requests(*f.sys, "pricing.quotes", "pricing", desk);
  REQUIRE(f.serving("pricing.quotes", "nats"));
  auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"}, 300ms);
  REQUIRE_FALSE(a.reply);
  CHECK(troupe::classify(a.error) == errc::timeout);
}

TEST_CASE("a handler serving a NATS route that ends leaves the event bus running") {
  troupe::test::nats_server_process server;
  server.start();
  bus_fixture f{{{"events.routes", "[pricing.*=nats]"},
                 {"events.nats.servers", "[" + server.url() + "]"}}};
  auto bus = troupe::gateways::bus_requests(*f.sys);
  auto h = f.serve_prices("pricing.quotes");
  REQUIRE(f.serving("pricing.quotes", "nats"));
  REQUIRE(f.ask<price_quote>("pricing.quotes", price_query{"widget"}).reply);
  // An error exit, as when the component owning the handler fails.
  caf::scoped_actor self{*f.sys};
  self->send_exit(h, caf::exit_reason::unhandled_exception);
  self->wait_for(h);
  f.handlers.clear();
  REQUIRE(eventually(
      [&] {
        auto a = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
        return troupe::describe(a.error).find("no responder") != std::string::npos;
      },
      10s));
  // The same bus answered: it did not go down with the responder.
  CHECK(troupe::gateways::bus_requests(*f.sys) == bus);
  auto after = f.ask<price_quote>("pricing.quotes", price_query{"widget"});
  CHECK(troupe::describe(after.error).find("no responder") != std::string::npos);
  CHECK(troupe::gateways::bus_requests(*f.sys) == bus);
}
