#include <troupe/gateways/event_bus.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/gateways/kafka_gateway.hpp>
#include <troupe/gateways/nats_gateway.hpp>
#include <troupe/outbox/event_bus_settings.hpp>
#include <troupe/outbox/route_publisher.hpp>
#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/message_origin.hpp>
#include <troupe/runtime/node.hpp>
#include <troupe/runtime/readiness.hpp>
#include <troupe/runtime/service.hpp>

namespace troupe::gateways {

namespace {

using served_destinations_atom = caf::atom_constant<caf::atom("evserved")>;
using serve_here_atom = caf::atom_constant<caf::atom("evhere")>;

/// What other nodes may ask of a node's embedded broker: to subscribe their
/// consumers to its topics (never to publish into them), which destinations
/// its request handlers serve, and to ask those handlers (destination,
/// request, deadline); drain answers at once, as a registered service must.
/// Each node's event bus offers it in the cluster registry.
using embedded_peer_actor = caf::typed_actor<
    caf::replies_to<subscribe_atom, std::string, std::string,
                    event_subscriber>::with<caf::ok_atom>,
    caf::replies_to<served_destinations_atom>::with<std::vector<std::string>>,
    caf::replies_to<serve_here_atom, std::string, std::string,
                    caf::timespan>::with<std::string>,
    caf::replies_to<drain_atom>::with<drained_atom>>;
constexpr const char* embedded_broker_service = "troupe.events.embedded";

using event_relay_atom = caf::atom_constant<caf::atom("evrelay")>;
using event_broker_atom = caf::atom_constant<caf::atom("evbroker")>;

// One node per process: its event sequence is opened once, on the main
// thread, when the store opens (opening commits a new epoch, a blocking write).
std::mutex sequence_mtx;
std::shared_ptr<outbox_sequence> node_sequence;
std::chrono::milliseconds node_inbox_retention{std::chrono::hours(24 * 7)};

std::chrono::milliseconds millis(const config& cfg, const std::string& key) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(cfg.get_duration(key));
}

bool routes_to(const event_bus_settings& s, const std::string& broker) {
  for (auto& r : s.routes)
    if (r.broker == broker)
      return true;
  return false;
}

// Subscriptions outlive a restart of the bus, which re-applies them; weak
// handles, so a subscription never keeps its consumer alive.
struct subscription_request {
  std::string destination;
  std::string group;
  caf::actor_addr consumer;
  uint32_t max_batch = 0;       ///< 0: a consumer of single events
  bool serves_requests = false; ///< consumer is a request_handler_actor
};

// The subscriber a request names, if its consumer still runs.
event_subscriber subscriber_of(const caf::actor_addr& addr, uint32_t max_batch) {
  if (max_batch == 0)
    return caf::actor_cast<event_consumer_actor>(addr);
  return {caf::actor_cast<event_batch_consumer_actor>(addr), max_batch};
}

std::mutex subscriptions_mtx;
std::vector<subscription_request> subscriptions;
caf::actor_addr running_bus; // guarded by subscriptions_mtx

using apply_subscription_atom = caf::atom_constant<caf::atom("evsubapply")>;

// NATS subject matching: `*` is one token, `>` the rest.
bool subject_matches(const std::string& pattern, const std::string& subject) {
  size_t p = 0;
  size_t s = 0;
  while (p < pattern.size() && s <= subject.size()) {
    auto pe = pattern.find('.', p);
    auto se = subject.find('.', s);
    auto ptok = pattern.substr(p, pe == std::string::npos ? std::string::npos : pe - p);
    if (ptok == ">")
      return s < subject.size();
    if (s >= subject.size())
      return false;
    auto stok = subject.substr(s, se == std::string::npos ? std::string::npos : se - s);
    if (ptok != "*" && ptok != stok)
      return false;
    if ((pe == std::string::npos) != (se == std::string::npos))
      return false;
    if (pe == std::string::npos)
      return true;
    p = pe + 1;
    s = se + 1;
  }
  return false;
}

// A durable consumer has one filter subject, so a group's durable is per
// destination; its name may not contain '.', '*', '>' or whitespace.
std::string durable_name(const std::string& group, const std::string& destination) {
  std::string out = group + "-" + destination;
  for (auto& c : out)
    if (c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t')
      c = '_';
  return out;
}

std::string subscription_subject(const std::string& destination, const std::string& group,
                                 const std::string& broker) {
  return "events subscription " + destination + " (" + broker + ", group " + group + ")";
}

struct event_bus_state {
  static inline const char* name = "event_bus";
  event_bus_state() = default;
  event_bus_settings settings;
  // Parsed once at start, for the brokers a route names.
  std::optional<kafka_settings> kafka_config;
  std::optional<nats_settings> nats_config;
  embedded_broker_actor broker;
  // Kafka subscriptions own a poll thread: stopping one joins it, which is
  // why the bus runs detached.
  std::multimap<caf::actor_addr, std::unique_ptr<kafka_subscription>> kafka;
  std::multimap<caf::actor_addr, caf::actor> nats;
  // Embedded destinations' request handlers, asked in turn.
  struct responder {
    std::string destination;
    request_handler_actor handler;
  };
  std::vector<responder> responders;
  size_t next_responder = 0;
  nats_requester_actor nats_requester; ///< spawned by the first NATS request
  std::set<std::string> details;
  // Embedded subscriptions, also made on the embedded brokers of the other
  // nodes of the cluster, which the bus looks up every remote_broker_scan.
  struct embedded_subscription {
    std::string destination;
    std::string group;
    event_subscriber consumer;
  };
  std::vector<embedded_subscription> embedded;
  embedded_peer_actor offered;             ///< this node's, in the registry
  std::vector<std::string> peer_interface; ///< what `offered` understands
  // Other nodes' brokers, with the destinations their request handlers
  // serve (as of the last scan).
  struct remote_broker {
    embedded_peer_actor handle;
    std::vector<std::string> serves;
  };
  std::map<caf::actor_addr, remote_broker> remote_brokers;
  size_t next_remote = 0;

  ~event_bus_state() {
    for (auto& [addr, sub] : kafka)
      sub->stop();
    for (auto& d : details)
      set_readiness_detail(d, {});
  }
};

using bus_pointer = caf::stateful_actor<event_bus_state>*;

void show_subscription(bus_pointer self, const std::string& subject, std::string state) {
  self->state.details.insert(subject);
  set_readiness_detail(subject, std::move(state));
}

using remote_broker_scan_atom = caf::atom_constant<caf::atom("rbrkscan")>;
constexpr auto remote_broker_scan = std::chrono::seconds(1);

/// Subscribes `consumer` on another node's embedded broker; a failure
/// forgets that broker, so the next scan finds it again and retries.
void subscribe_remote(bus_pointer self, const embedded_peer_actor& broker,
                      const event_bus_state::embedded_subscription& sub) {
  self->request(broker, std::chrono::seconds(10), subscribe_atom::value, sub.destination,
                sub.group, sub.consumer)
      .then([](caf::ok_atom) {},
            [self, broker, destination = sub.destination](caf::error& err) {
              spdlog::warn("event bus: cannot subscribe to {} on another node: {}",
                           destination, describe(err));
              // Forgotten, so the next scan finds it again and retries.
              self->demonitor(broker.address());
              self->state.remote_brokers.erase(broker.address());
            });
}

/// Asks this node's bus on behalf of another node's. A request, not a
/// delegation: the bus takes messages only from its node, and a delegated
/// one would still name the peer as its sender. The bus by address: it owns
/// the peer actor, not the other way.
template <class Reply, class... Ts>
caf::typed_response_promise<Reply> ask_bus(embedded_peer_actor::pointer gate,
                                           const caf::actor_addr& bus_addr,
                                           caf::timespan timeout, Ts&&... xs) {
  auto rp = gate->make_response_promise<Reply>();
  gate->request(caf::actor_cast<caf::actor>(bus_addr), timeout, std::forward<Ts>(xs)...)
      .then([rp](Reply& reply) mutable { rp.deliver(std::move(reply)); },
            [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
  return rp;
}

/// Looks up the embedded brokers of the other nodes and subscribes every
/// embedded subscription on the ones not seen before.
void scan_remote_brokers(bus_pointer self) {
  auto cluster = local_cluster(self->system());
  if (!cluster)
    return;
  self->request(cluster, std::chrono::seconds(2), find_services_atom::value,
                std::string{embedded_broker_service}, self->state.peer_interface)
      .then(
          [self](std::vector<caf::actor>& found) {
            auto& st = self->state;
            // A broker the registry no longer lists (its node was marked
            // down, even if its connection lingers) takes no more requests.
            for (auto it = st.remote_brokers.begin(); it != st.remote_brokers.end();) {
              bool listed = std::any_of(found.begin(), found.end(), [&](auto& h) {
                return h.address() == it->first;
              });
              if (listed) {
                ++it;
              } else {
                self->demonitor(it->second.handle.address());
                it = st.remote_brokers.erase(it);
              }
            }
            for (auto& h : found) {
              if (h.address() == st.offered.address())
                continue;
              auto broker = caf::actor_cast<embedded_peer_actor>(h);
              if (st.remote_brokers.count(h.address()) == 0) {
                st.remote_brokers.emplace(h.address(),
                                          event_bus_state::remote_broker{broker, {}});
                self->monitor(broker);
                for (auto& sub : st.embedded)
                  subscribe_remote(self, broker, sub);
              }
              self->request(broker, std::chrono::seconds(2),
                            served_destinations_atom::value)
                  .then(
                      [self, addr = h.address()](std::vector<std::string>& serves) {
                        auto it = self->state.remote_brokers.find(addr);
                        if (it != self->state.remote_brokers.end())
                          it->second.serves = std::move(serves);
                      },
                      [](caf::error&) {});
            }
          },
          // None offered (no other node runs the bus yet): nothing to do.
          [](caf::error&) {});
}

void apply_subscription(bus_pointer self, const std::string& destination,
                        const std::string& group, const event_subscriber& consumer) {
  auto& st = self->state;
  auto& sys = self->system();
  auto broker = st.settings.broker_for(destination);
  auto subject = subscription_subject(destination, group, broker);
  self->monitor(consumer.handle());
  auto failing = [self, subject, destination](const std::string& why) {
    spdlog::error("event bus: cannot subscribe to {}: {}", destination, why);
    show_subscription(self, subject, "failing: " + why);
  };
  try {
    if (broker == "embedded") {
      self->request(st.broker, std::chrono::seconds(10), subscribe_atom::value,
                    destination, group, consumer)
          .then([=](caf::ok_atom) { show_subscription(self, subject, "subscribed"); },
                [=](caf::error& err) { failing(self->system().render(err)); });
      st.embedded.push_back({destination, group, consumer});
      for (auto& [addr, remote] : st.remote_brokers)
        subscribe_remote(self, remote.handle, st.embedded.back());
      return;
    }
    if (broker == "kafka" ? !st.kafka_config : !st.nats_config)
      return failing("no " + broker + " gateway runs on this node");
    if (broker == "kafka") {
      st.kafka.emplace(consumer.address(), subscribe_kafka(sys, *st.kafka_config,
                                                           destination, group, consumer));
      show_subscription(self, subject, "subscribed");
      return;
    }
    auto& nats = *st.nats_config;
    nats_subscription_actor sub;
    if (nats.jetstream) {
      const nats_stream* stream = nullptr;
      for (auto& candidate : nats.streams)
        for (auto& pattern : candidate.subjects)
          if (stream == nullptr && subject_matches(pattern, destination))
            stream = &candidate;
      if (stream == nullptr)
        return failing("no stream in events.nats.streams holds the subject");
      sub = spawn_nats_pull_consumer(sys, nats, stream->name,
                                     durable_name(group, destination), destination,
                                     consumer);
    } else {
      sub = spawn_nats_subscriber(sys, nats, destination, group, consumer);
    }
    // Linked: a subscription that dies takes the bus down, and its restart
    // subscribes again.
    self->link_to(sub);
    st.nats.emplace(consumer.address(), caf::actor_cast<caf::actor>(sub));
    self->request(sub, std::chrono::seconds(30), nats_ready_atom::value)
        .then([=](caf::ok_atom) { show_subscription(self, subject, "subscribed"); },
              [=](caf::error& err) { failing(self->system().render(err)); });
  } catch (const std::exception& e) {
    failing(e.what());
  }
}

const char* no_kafka_requests = "Kafka routes carry no requests: route the destination "
                                "to nats or embedded in events.routes";

void apply_responder(bus_pointer self, const std::string& destination,
                     const std::string& group, const request_handler_actor& handler) {
  auto& st = self->state;
  auto broker = st.settings.broker_for(destination);
  auto subject =
      "events requests " + destination + " (" + broker + ", group " + group + ")";
  self->monitor(handler);
  auto failing = [self, subject, destination](const std::string& why) {
    spdlog::error("event bus: cannot serve requests on {}: {}", destination, why);
    show_subscription(self, subject, "failing: " + why);
  };
  if (broker == "embedded") {
    st.responders.push_back({destination, handler});
    show_subscription(self, subject, "serving");
    return;
  }
  if (broker == "kafka")
    return failing(no_kafka_requests);
  if (!st.nats_config)
    return failing("no nats gateway runs on this node");
  auto sub =
      spawn_nats_responder(self->system(), *st.nats_config, destination, group, handler);
  self->link_to(sub);
  st.nats.emplace(handler.address(), caf::actor_cast<caf::actor>(sub));
  self->request(sub, std::chrono::seconds(30), nats_ready_atom::value)
      .then([=](caf::ok_atom) { show_subscription(self, subject, "serving"); },
            [=](caf::error& err) { failing(self->system().render(err)); });
}

void apply(bus_pointer self, const subscription_request& r) {
  if (r.serves_requests) {
    if (auto handler = caf::actor_cast<request_handler_actor>(r.consumer))
      apply_responder(self, r.destination, r.group, handler);
  } else if (auto consumer = subscriber_of(r.consumer, r.max_batch)) {
    apply_subscription(self, r.destination, r.group, consumer);
  }
}

/// The next of this node's handlers serving `destination`, in turn; null
/// when none does.
const request_handler_actor* next_local_handler(bus_pointer self,
                                                const std::string& destination) {
  auto& st = self->state;
  std::vector<size_t> matching;
  for (size_t i = 0; i < st.responders.size(); ++i)
    if (subject_matches(st.responders[i].destination, destination))
      matching.push_back(i);
  if (matching.empty())
    return nullptr;
  return &st.responders[matching[st.next_responder++ % matching.size()]].handler;
}

/// Asks `target` (a handler here, or another node's bus) with `deadline`;
/// the requester sees the reply, or why there is none.
template <class Handle, class... Ts>
caf::result<std::string> ask_for_reply(bus_pointer self, const Handle& target,
                                       const std::string& destination,
                                       caf::timespan deadline, Ts&&... xs) {
  auto rp = self->make_response_promise<std::string>();
  self->request(target, deadline, std::forward<Ts>(xs)...)
      .then([rp](std::string& reply) mutable { rp.deliver(std::move(reply)); },
            [rp, destination](caf::error& err) mutable {
              // The handler's own refusals arrive as rejected; a handler
              // (or node) that is gone by now is nobody serving, worth
              // asking again.
              switch (classify(err)) {
              case errc::timeout:
                rp.deliver(make_error(errc::timeout, "no reply from " + destination));
                break;
              case errc::service_unavailable:
                rp.deliver(make_error(errc::service_unavailable,
                                      "the handler of " + destination + " is gone"));
                break;
              default:
                rp.deliver(make_error(errc::rejected, describe(err)));
              }
            });
  return rp;
}

/// A request another node's bus forwards: this node's handlers only.
caf::result<std::string> serve_here(bus_pointer self, const std::string& destination,
                                    std::string& payload, caf::timespan deadline) {
  if (auto* handler = next_local_handler(self, destination))
    return ask_for_reply(self, *handler, destination, deadline, serve_request_atom::value,
                         destination, std::move(payload));
  return make_error(errc::service_unavailable,
                    "nobody serves requests on " + destination + " on this node");
}

caf::result<std::string> route_request(bus_pointer self, const std::string& destination,
                                       std::string& payload, caf::timespan deadline) {
  auto& st = self->state;
  auto broker = st.settings.broker_for(destination);
  if (broker == "kafka")
    return make_error(errc::rejected, destination + ": " + no_kafka_requests);
  if (broker == "nats") {
    if (!st.nats_config)
      return make_error(errc::service_unavailable, "no nats gateway runs on this node");
    if (!st.nats_requester) {
      st.nats_requester = spawn_nats_requester(self->system(), *st.nats_config);
      self->link_to(st.nats_requester);
    }
    return self->delegate(st.nats_requester, nats_request_atom::value, destination,
                          std::move(payload), deadline);
  }
  // Embedded: this node's handlers of the destination in turn, else those
  // of other nodes' buses that serve it.
  if (auto* handler = next_local_handler(self, destination))
    return ask_for_reply(self, *handler, destination, deadline, serve_request_atom::value,
                         destination, std::move(payload));
  std::vector<const embedded_peer_actor*> remote;
  for (auto& [addr, peer] : st.remote_brokers)
    for (auto& served : peer.serves)
      if (subject_matches(served, destination)) {
        remote.push_back(&peer.handle);
        break;
      }
  if (remote.empty())
    return make_error(errc::service_unavailable,
                      "nobody serves requests on " + destination + " in the cluster");
  auto& peer = *remote[st.next_remote++ % remote.size()];
  return ask_for_reply(self, peer, destination, deadline, serve_here_atom::value,
                       destination, std::move(payload), deadline);
}

void drop_subscriptions_of(bus_pointer self, const caf::actor_addr& consumer) {
  auto& st = self->state;
  for (auto [it, end] = st.kafka.equal_range(consumer); it != end; ++it)
    it->second->stop();
  st.kafka.erase(consumer);
  for (auto [it, end] = st.nats.equal_range(consumer); it != end; ++it) {
    self->unlink_from(it->second);
    self->send_exit(it->second, caf::exit_reason::user_shutdown);
  }
  st.nats.erase(consumer);
  st.responders.erase(
      std::remove_if(st.responders.begin(), st.responders.end(),
                     [&](auto& r) { return r.handler.address() == consumer; }),
      st.responders.end());
  // Other nodes' brokers drop it themselves: their deliveries to it fail.
  st.embedded.erase(
      std::remove_if(st.embedded.begin(), st.embedded.end(),
                     [&](auto& e) { return e.consumer.address() == consumer; }),
      st.embedded.end());
  std::lock_guard<std::mutex> guard{subscriptions_mtx};
  subscriptions.erase(std::remove_if(subscriptions.begin(), subscriptions.end(),
                                     [&](auto& s) { return s.consumer == consumer; }),
                      subscriptions.end());
}

// Owns the bus's actors through links: one of them failing takes the
// others down and the supervisor restarts the whole bus, which reloads its
// state from the store.
caf::behavior event_bus(bus_pointer self, event_bus_settings settings,
                        embedded_broker_settings embedded, config cfg) {
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
      self->state.kafka_config = kafka_settings_from(cfg);
      brokers["kafka"] = spawn_kafka_publisher(sys, *self->state.kafka_config);
      self->link_to(brokers["kafka"]);
    }
    if (routes_to(settings, "nats")) {
      self->state.nats_config = nats_settings_from(cfg);
      brokers["nats"] = spawn_nats_publisher(sys, *self->state.nats_config);
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
  auto relay_settings = settings.relay;
  relay_settings.route_of = [settings](const std::string& destination) {
    return settings.route_for(destination);
  };
  auto relay = spawn_relay(sys, store, routes, std::move(relay_settings));
  self->link_to(relay);
  sys.registry().put(event_relay_atom::value,
                     caf::actor_cast<caf::strong_actor_ptr>(relay));
  sys.registry().put(event_broker_atom::value,
                     caf::actor_cast<caf::strong_actor_ptr>(broker));
  self->attach_functor([&sys, addr = self->address()] {
    sys.registry().erase(event_relay_atom::value);
    sys.registry().erase(event_broker_atom::value);
    std::lock_guard<std::mutex> guard{subscriptions_mtx};
    if (running_bus == addr)
      running_bus = caf::actor_addr{};
  });
  spdlog::info("event bus: relay publishing through {} route(s) to {}",
               settings.routes.size(), names);
  self->state.settings = std::move(settings);
  self->state.broker = broker;
  std::vector<subscription_request> pending;
  {
    std::lock_guard<std::mutex> guard{subscriptions_mtx};
    running_bus = self->address();
    // Consumers that ended before any bus saw them leave nothing behind.
    subscriptions.erase(
        std::remove_if(subscriptions.begin(), subscriptions.end(),
                       [](auto& s) { return !caf::actor_cast<caf::actor>(s.consumer); }),
        subscriptions.end());
    pending = subscriptions;
  }
  // Other nodes subscribe and ask this node's handlers through this; they
  // never publish.
  self->state.offered = sys.spawn(
      [broker, bus_addr = self->address()](
          embedded_peer_actor::pointer gate) -> embedded_peer_actor::behavior_type {
        return {
            [gate, broker](subscribe_atom a, std::string& topic, std::string& group,
                           event_subscriber& consumer) {
              return gate->delegate(broker, a, std::move(topic), std::move(group),
                                    std::move(consumer));
            },
            [gate, bus_addr](served_destinations_atom a) {
              return ask_bus<std::vector<std::string>>(gate, bus_addr,
                                                       std::chrono::seconds(2), a);
            },
            [gate, bus_addr](serve_here_atom a, std::string& destination,
                             std::string& payload, caf::timespan deadline) {
              // From another node: bounded before any arithmetic on it.
              deadline = std::clamp<caf::timespan>(deadline, std::chrono::milliseconds(1),
                                                   longest_bus_request);
              return ask_bus<std::string>(
                  gate, bus_addr, deadline + std::chrono::seconds(1), a,
                  std::move(destination), std::move(payload), deadline);
            },
            // Nothing of its own to finish: the bus drains with the node.
            [](drain_atom) { return drained_atom::value; },
        };
      });
  self->link_to(self->state.offered);
  auto peer_types = sys.message_types<embedded_peer_actor>();
  self->state.peer_interface.assign(peer_types.begin(), peer_types.end());
  register_service(sys, embedded_broker_service,
                   caf::actor_cast<caf::actor>(self->state.offered),
                   self->state.peer_interface);
  for (auto& p : pending)
    apply(self, p);
  scan_remote_brokers(self);
  self->delayed_send(self, remote_broker_scan, remote_broker_scan_atom::value);
  self->set_down_handler([self](const caf::down_msg& down) {
    if (self->state.remote_brokers.erase(down.source) > 0)
      return;
    drop_subscriptions_of(self, down.source);
  });
  return {
      [self](remote_broker_scan_atom) {
        scan_remote_brokers(self);
        self->delayed_send(self, remote_broker_scan, remote_broker_scan_atom::value);
      },
      [self](apply_subscription_atom, const std::string& destination,
             const std::string& group, const caf::actor_addr& addr, uint32_t max_batch,
             bool serves_requests) {
        if (!sent_from_this_node(self))
          return;
        apply(self, {destination, group, addr, max_batch, serves_requests});
      },
      [self](bus_request_atom, const std::string& destination, std::string& payload,
             caf::timespan deadline) -> caf::result<std::string> {
        if (!sent_from_this_node(self))
          return make_error(errc::rejected, "the event bus takes requests of its node");
        return route_request(self, destination, payload, deadline);
      },
      [self](serve_here_atom, const std::string& destination, std::string& payload,
             caf::timespan deadline) -> caf::result<std::string> {
        if (!sent_from_this_node(self))
          return make_error(errc::rejected, "the event bus takes requests of its node");
        return serve_here(self, destination, payload, deadline);
      },
      [self](served_destinations_atom) {
        std::vector<std::string> out;
        if (!sent_from_this_node(self))
          return out;
        for (auto& r : self->state.responders)
          if (std::find(out.begin(), out.end(), r.destination) == out.end())
            out.push_back(r.destination);
        return out;
      },
  };
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
    node_inbox_retention = event_bus_settings_from(cfg).inbox_retention;
  });
  // What other nodes' buses send this one's embedded broker, and it them.
  n.messages()
      .add<event_subscriber>("troupe.event_subscriber")
      .add<delivered_event>("troupe.delivered_event")
      .add<std::vector<delivered_event>>("troupe.delivered_events");
  n.actor("events", spawn_event_bus);
}

caf::actor spawn_event_bus(caf::actor_system& sys, const config& cfg) {
  return sys.spawn<caf::detached>(event_bus, event_bus_settings_from(cfg),
                                  embedded_broker_settings_from(cfg), cfg);
}

bus_requests_actor bus_requests(caf::actor_system&) {
  std::lock_guard<std::mutex> guard{subscriptions_mtx};
  return caf::actor_cast<bus_requests_actor>(running_bus);
}

event_bus_handles local_event_bus(caf::actor_system& sys) {
  event_bus_handles h;
  {
    std::lock_guard<std::mutex> guard{sequence_mtx};
    h.sequence = node_sequence;
    h.inbox_retention = node_inbox_retention;
  }
  h.store = local_store(sys);
  h.relay = caf::actor_cast<relay_actor>(sys.registry().get(event_relay_atom::value));
  h.broker = caf::actor_cast<embedded_broker_actor>(
      sys.registry().get(event_broker_atom::value));
  return h;
}

namespace {

void add_subscription(std::string destination, std::string group, caf::actor_addr addr,
                      uint32_t max_batch, bool serves_requests = false) {
  caf::actor bus;
  {
    std::lock_guard<std::mutex> guard{subscriptions_mtx};
    subscriptions.push_back({destination, group, addr, max_batch, serves_requests});
    bus = caf::actor_cast<caf::actor>(running_bus);
  }
  // A bus starting meanwhile reads the list after setting running_bus, so
  // the subscription is applied exactly once either way.
  if (bus)
    // Sent as the bus itself: the bus takes subscriptions only from its node,
    // and an anonymous message could have come from anywhere.
    caf::send_as(bus, bus, apply_subscription_atom::value, std::move(destination),
                 std::move(group), std::move(addr), max_batch, serves_requests);
}

} // namespace

void subscribe_events(caf::actor_system&, std::string destination, std::string group,
                      event_consumer_actor consumer) {
  add_subscription(std::move(destination), std::move(group), consumer.address(), 0);
}

void subscribe_event_batches(caf::actor_system&, std::string destination,
                             std::string group, event_batch_consumer_actor consumer,
                             uint32_t max_batch) {
  add_subscription(std::move(destination), std::move(group), consumer.address(),
                   std::max<uint32_t>(1, max_batch));
}

void serve_requests(caf::actor_system&, std::string destination, std::string group,
                    request_handler_actor handler) {
  add_subscription(std::move(destination), std::move(group), handler.address(), 0, true);
}

} // namespace troupe::gateways
