#include <troupe/outbox/route_publisher.hpp>

#include <memory>
#include <set>

#include <caf/all.hpp>

#include <troupe/runtime/readiness.hpp>

namespace troupe {

namespace {

// The answers of one publish call, filled in as the brokers reply.
struct merge {
  std::vector<outbound_event> events;
  std::vector<std::string> results;
  size_t pending = 0;
  caf::typed_response_promise<std::vector<std::string>> promise;
};

void finish(merge& m) {
  // A broker only orders the events it was given; a failed event of a key
  // must also hold back that key's later events sent to other brokers.
  hold_back_after_failures(
      m.results, [&](size_t i) -> const std::string& { return m.events[i].key; },
      "routes");
  m.promise.deliver(std::move(m.results));
}

struct route_state {
  static inline const char* name = "event_routes";
  route_state() = default;
  event_bus_settings routes;
  std::map<std::string, publisher_actor> brokers;
  std::map<std::string, std::string> shown; ///< the detail last set, per route
};

using route_pointer = publisher_actor::stateful_pointer<route_state>;

void show(route_pointer self, const std::string& pattern, const std::string& broker,
          std::string state) {
  auto& shown = self->state.shown[pattern];
  if (shown == state)
    return;
  shown = state;
  set_readiness_detail(route_detail_subject(pattern, broker), std::move(state));
}

publisher_actor::behavior_type
route_publisher(route_pointer self, event_bus_settings routes,
                std::map<std::string, publisher_actor> brokers) {
  self->state.routes = std::move(routes);
  self->state.brokers = std::move(brokers);
  for (auto& r : self->state.routes.routes)
    show(self, r.pattern, r.broker, "idle");
  show(self, "*", "embedded", "idle");
  self->attach_functor([routes = self->state.routes] {
    for (auto& r : routes.routes)
      set_readiness_detail(route_detail_subject(r.pattern, r.broker), {});
    set_readiness_detail(route_detail_subject("*", "embedded"), {});
  });
  return {
      [=](publish_atom,
          std::vector<outbound_event>& events) -> caf::result<std::vector<std::string>> {
        auto& st = self->state;
        auto m = std::make_shared<merge>();
        m->results.resize(events.size());
        // Per broker: the events it gets and where their answers go.
        std::map<std::string, std::pair<std::vector<outbound_event>, std::vector<size_t>>>
            parts;
        for (size_t i = 0; i < events.size(); ++i) {
          auto broker = st.routes.broker_for(events[i].destination);
          if (st.brokers.count(broker) == 0) {
            m->results[i] = "no broker '" + broker + "' runs on this node";
            continue;
          }
          auto& part = parts[broker];
          part.first.push_back(events[i]);
          part.second.push_back(i);
        }
        m->events = std::move(events);
        m->promise = self->make_response_promise<std::vector<std::string>>();
        m->pending = parts.size();
        if (parts.empty()) {
          finish(*m);
          return m->promise;
        }
        for (auto& [broker, part] : parts) {
          auto indices = part.second;
          auto name = broker;
          self->request(st.brokers[broker], st.routes.relay.publish_timeout,
                        publish_atom::value, std::move(part.first))
              .then(
                  [=](std::vector<std::string>& answers) {
                    for (size_t j = 0; j < indices.size(); ++j) {
                      auto i = indices[j];
                      m->results[i] =
                          j < answers.size()
                              ? std::move(answers[j])
                              : std::string{"broker answered too few results"};
                      auto pattern =
                          self->state.routes.route_for(m->events[i].destination);
                      show(self, pattern, name,
                           m->results[i].empty() ? "publishing"
                                                 : "failing: " + m->results[i]);
                    }
                    if (--m->pending == 0)
                      finish(*m);
                  },
                  [=](caf::error& err) {
                    auto text = "broker '" + name + "': " + self->system().render(err);
                    for (auto i : indices) {
                      m->results[i] = text;
                      show(self, self->state.routes.route_for(m->events[i].destination),
                           name, "failing: " + text);
                    }
                    if (--m->pending == 0)
                      finish(*m);
                  });
        }
        return m->promise;
      },
  };
}

} // namespace

std::string route_detail_subject(const std::string& pattern, const std::string& broker) {
  return "events route " + pattern + " (" + broker + ")";
}

publisher_actor spawn_route_publisher(caf::actor_system& sys, event_bus_settings routes,
                                      std::map<std::string, publisher_actor> brokers) {
  return sys.spawn(route_publisher, std::move(routes), std::move(brokers));
}

} // namespace troupe
