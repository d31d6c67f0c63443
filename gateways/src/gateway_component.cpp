#include <troupe/gateways/gateways.hpp>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/gateways/api_backend.hpp>
#include <troupe/gateways/event_bus.hpp>
#include <troupe/gateways/saga_command_consumer.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/node.hpp>

#include "grpc_gateway.hpp"
#include "http_gateway.hpp"

namespace troupe::gateways {

namespace {

using health_tick_atom = caf::atom_constant<caf::atom("ghealth")>;

// The servers of one node. Their threads are their own; this actor only
// owns them, so it runs detached: stopping a server waits for its threads.
struct gateway_state {
  std::shared_ptr<api_backend> backend;
  std::unique_ptr<grpc_gateway> grpc;
  std::unique_ptr<http_gateway> http;
  // Subscriptions hold their consumer weakly: the gateway keeps it alive.
  event_consumer_actor saga_commands;
  bool serving = false;

  ~gateway_state() {
    if (http)
      http->stop();
    if (grpc)
      grpc->stop();
  }
};

caf::behavior gateway(caf::stateful_actor<gateway_state>* self,
                      std::shared_ptr<const api_catalog> catalog, gateway_settings s) {
  auto& st = self->state;
  try {
    st.backend = std::make_shared<api_backend>(self->system(), catalog, s);
    if (s.grpc_enabled) {
      st.grpc = std::make_unique<grpc_gateway>(st.backend, s);
      spdlog::info("grpc gateway listening on {}:{}{}", s.grpc_host, st.grpc->port(),
                   s.tls.enabled() ? " (TLS)" : "");
    }
    if (s.http_enabled) {
      st.http = std::make_unique<http_gateway>(st.backend, s);
      spdlog::info("http gateway listening on {}:{}{}", s.http_host, st.http->port(),
                   s.tls.enabled() ? " (TLS)" : "");
    }
    if (!s.saga_command_topics.empty()) {
      // The broker is the trust boundary of commands: whoever may publish to
      // the topic may start sagas, so the token and rate checks of the
      // public API do not apply.
      auto trusted = s;
      trusted.auth = auth_settings{};
      trusted.rate_per_client = 0;
      auto consumer = st.saga_commands = spawn_saga_command_consumer(
          self->system(),
          std::make_shared<api_backend>(self->system(), catalog, std::move(trusted)));
      self->link_to(consumer);
      for (auto& topic : s.saga_command_topics) {
        subscribe_events(self->system(), topic, s.saga_command_group, consumer);
        spdlog::info("saga commands: starting sagas from topic {} (group {})", topic,
                     s.saga_command_group);
      }
    }
  } catch (const std::exception& e) {
    spdlog::critical("gateway cannot start: {}", e.what());
    self->quit(make_error(errc::internal, e.what()));
    return {};
  }
  if (!s.tls.enabled())
    spdlog::warn("gateways serve without TLS (gateways.tls.cert_file is not set)");
  if (!s.auth.enabled)
    spdlog::warn("gateways accept requests without authentication (gateways.auth.enabled "
                 "is false)");
  self->send(self, health_tick_atom::value);
  return {
      [self](health_tick_atom) {
        auto& st = self->state;
        bool ready = st.backend->ready();
        if (ready != st.serving && st.grpc)
          st.grpc->set_serving(ready);
        st.serving = ready;
        self->delayed_send(self, std::chrono::milliseconds(200), health_tick_atom::value);
      },
      [self](drain_atom) {
        // Graceful shutdown: no new requests; those in flight finish.
        auto& st = self->state;
        if (st.grpc)
          st.grpc->set_serving(false);
        return drained_atom::value;
      },
  };
}

} // namespace

void add_gateways(node& n, std::shared_ptr<const api_catalog> catalog) {
  declare_gateway_config(n.schema());
  n.check_config("gateway", [](const config& cfg) { gateway_settings_from(cfg); });
  n.only_when_named("gateway");
  n.actor("gateway", [catalog](caf::actor_system& sys, const config& cfg) {
    return sys.spawn<caf::detached>(gateway, catalog, gateway_settings_from(cfg));
  });
}

} // namespace troupe::gateways
