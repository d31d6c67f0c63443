#include <troupe/gateways/event_bus.hpp>

#include <mutex>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/gateways/kafka_gateway.hpp>
#include <troupe/gateways/nats_gateway.hpp>
#include <troupe/outbox/event_bus_settings.hpp>
#include <troupe/outbox/route_publisher.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/node.hpp>

namespace troupe::gateways {

namespace {

using event_relay_atom = caf::atom_constant<caf::atom("evrelay")>;
using event_broker_atom = caf::atom_constant<caf::atom("evbroker")>;

// One node per process: its event sequence is opened once, on the main
// thread, when the store opens (opening commits a new epoch, a blocking write).
std::mutex sequence_mtx;
std::shared_ptr<outbox_sequence> node_sequence;

std::chrono::milliseconds millis(const config& cfg, const std::string& key) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(cfg.get_duration(key));
}

bool routes_to(const event_bus_settings& s, const std::string& broker) {
  for (auto& r : s.routes)
    if (r.broker == broker)
      return true;
  return false;
}

struct event_bus_state {
  static inline const char* name = "event_bus";
  event_bus_state() = default;
};

// Owns the bus's actors through links: one of them failing takes the
// others down and the supervisor restarts the whole bus, which reloads its
// state from the store.
caf::behavior event_bus(caf::stateful_actor<event_bus_state>* self,
                        event_bus_settings settings, embedded_broker_settings embedded,
                        config cfg) {
  auto& sys = self->system();
  auto store = local_store(sys);
  if (!store) {
    self->quit(make_error(errc::internal, "the event bus needs the node's store"));
    return {};
  }
  auto broker = spawn_embedded_broker(sys, store, embedded);
  self->link_to(broker);
  std::map<std::string, publisher_actor> brokers{{"embedded", broker}};
  // External brokers connect in the background: one that cannot be reached
  // fails its publishes and the relay retries them; the node keeps serving.
  try {
    if (routes_to(settings, "kafka")) {
      brokers["kafka"] = spawn_kafka_publisher(sys, kafka_settings_from(cfg));
      self->link_to(brokers["kafka"]);
    }
    if (routes_to(settings, "nats")) {
      brokers["nats"] = spawn_nats_publisher(sys, nats_settings_from(cfg));
      self->link_to(brokers["nats"]);
    }
  } catch (const std::exception& e) {
    spdlog::critical("event bus cannot start a broker gateway: {}", e.what());
    self->quit(make_error(errc::internal, e.what()));
    return {};
  }
  std::string names;
  for (auto& [name, handle] : brokers)
    names += (names.empty() ? "" : ", ") + name;
  auto routes = spawn_route_publisher(sys, settings, std::move(brokers));
  self->link_to(routes);
  auto relay = spawn_relay(sys, store, routes, settings.relay);
  self->link_to(relay);
  sys.registry().put(event_relay_atom::value,
                     caf::actor_cast<caf::strong_actor_ptr>(relay));
  sys.registry().put(event_broker_atom::value,
                     caf::actor_cast<caf::strong_actor_ptr>(broker));
  self->attach_functor([&sys] {
    sys.registry().erase(event_relay_atom::value);
    sys.registry().erase(event_broker_atom::value);
  });
  spdlog::info("event bus: relay publishing through {} route(s) to {}",
               settings.routes.size(), names);
  return {[](caf::ok_atom) {}};
}

} // namespace

void declare_embedded_broker_config(config_schema& s) {
  using namespace std::chrono_literals;
  if (s.find("events.embedded.retention") != nullptr)
    return;
  s.declare("events.embedded.retention", value_kind::duration)
      .default_value("168h")
      .min(1s)
      .max(24h * 3650)
      .describe("How long the embedded broker keeps a message after appending it.");
  s.declare("events.embedded.deliver_timeout", value_kind::duration)
      .default_value("10s")
      .min(1ms)
      .max(1h)
      .describe(
          "A consumer that does not acknowledge a delivery within this gets it again.");
}

embedded_broker_settings embedded_broker_settings_from(const config& cfg) {
  embedded_broker_settings s;
  s.retention = millis(cfg, "events.embedded.retention");
  s.deliver_timeout = millis(cfg, "events.embedded.deliver_timeout");
  return s;
}

void add_event_bus(node& n) {
  declare_event_bus_config(n.schema());
  declare_embedded_broker_config(n.schema());
  declare_kafka_config(n.schema());
  declare_nats_config(n.schema());
  n.check_config("events", [](const config& cfg) {
    auto s = event_bus_settings_from(cfg);
    if (routes_to(s, "kafka"))
      kafka_settings_from(cfg);
    if (routes_to(s, "nats"))
      nats_settings_from(cfg);
  });
  n.needs_store("events");
  n.only_when_named("events");
  n.on_store_open([](store& db, const config& cfg) {
    auto seq = outbox_sequence::open(db, cfg.get_string("node.name"));
    std::lock_guard<std::mutex> guard{sequence_mtx};
    node_sequence = std::move(seq);
  });
  n.actor("events", [](caf::actor_system& sys, const config& cfg) {
    return sys.spawn(event_bus, event_bus_settings_from(cfg),
                     embedded_broker_settings_from(cfg), cfg);
  });
}

event_bus_handles local_event_bus(caf::actor_system& sys) {
  event_bus_handles h;
  {
    std::lock_guard<std::mutex> guard{sequence_mtx};
    h.sequence = node_sequence;
  }
  h.store = local_store(sys);
  h.relay = caf::actor_cast<relay_actor>(sys.registry().get(event_relay_atom::value));
  h.broker = caf::actor_cast<embedded_broker_actor>(
      sys.registry().get(event_broker_atom::value));
  return h;
}

} // namespace troupe::gateways
