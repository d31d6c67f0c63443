#include "greeter.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/service_ref.hpp>

namespace greeter {

using namespace std::chrono_literals;

void add_messages(troupe::message_catalog& catalog) {
  catalog.add<greet>("greeter.greet").add<greeting>("greeter.greeting");
}

void declare_config(troupe::config_schema& schema) {
  using troupe::value_kind;
  schema.declare("greeter.salutation", value_kind::string)
      .default_value("Hello")
      .describe("Word the greeter starts each greeting with.");
  schema.declare("caller.target", value_kind::string)
      .default_value("greeter")
      .describe("Service the caller greets.");
  schema.declare("caller.interval", value_kind::duration)
      .default_value("500ms")
      .min(1ms)
      .describe("Time between two calls.");
  schema.declare("caller.timeout", value_kind::duration)
      .default_value("1s")
      .min(1ms)
      .describe("Timeout of one call.");
  schema.declare("caller.count", value_kind::integer)
      .default_value("0")
      .min(0)
      .describe("Calls to make before the caller finishes; 0 = keep calling.");
}

namespace {

struct greeter_state {
  static inline const char* name = "greeter";
  int64_t greeted = 0;
};

struct caller_state {
  static inline const char* name = "caller";
  troupe::service_ref<greeter_actor> greeter;
  int64_t sent = 0;
  int64_t ok = 0;
  int64_t failed = 0;
};

using tick_atom = caf::atom_constant<caf::atom("tick")>;

void call_once(caf::stateful_actor<caller_state>* self, std::chrono::nanoseconds timeout,
               int64_t count) {
  auto n = ++self->state.sent;
  auto started = std::chrono::steady_clock::now();
  auto finish = [=](bool ok) {
    ++(ok ? self->state.ok : self->state.failed);
    if (count > 0 && self->state.ok + self->state.failed >= count) {
      spdlog::info("caller finished: {} calls answered, {} failed", self->state.ok,
                   self->state.failed);
      self->quit();
    }
  };
  troupe::call(self, self->state.greeter, timeout, greet{"caller #" + std::to_string(n)})
      .then(
          [=](const greeting& reply) {
            auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now() - started)
                          .count();
            spdlog::info("call {} answered by node {} in {}us: \"{}\"", n,
                         reply.greeted_by, us, reply.text);
            finish(true);
          },
          [=](caf::error& err) {
            spdlog::warn("call {} failed: {}", n, troupe::describe(err));
            finish(false);
          });
}

} // namespace

greeter_actor spawn_greeter(caf::actor_system& sys, const troupe::config& cfg) {
  auto salutation = cfg.get_string("greeter.salutation");
  auto node_name = cfg.get_string("node.name");
  return sys.spawn(
      [salutation, node_name](greeter_actor::stateful_pointer<greeter_state> self) {
        return troupe::serve(self, [=](const greet& cmd) -> greeting {
          ++self->state.greeted;
          spdlog::info("greeting {}", cmd.name);
          return {salutation + ", " + cmd.name + "!", node_name};
        });
      });
}

caf::actor spawn_caller(caf::actor_system& sys, const troupe::config& cfg) {
  auto target = cfg.get_string("caller.target");
  auto interval = cfg.get_duration("caller.interval");
  auto timeout = cfg.get_duration("caller.timeout");
  auto count = cfg.get_int("caller.count");
  return sys.spawn([=](caf::stateful_actor<caller_state>* self) -> caf::behavior {
    self->state.greeter = troupe::service_ref<greeter_actor>(self, target);
    // The first call waits one interval: the node joins the cluster meanwhile.
    self->delayed_send(self, interval, tick_atom::value);
    return {
        [=](tick_atom) {
          call_once(self, timeout, count);
          if (count == 0 || self->state.sent < count)
            self->delayed_send(self, interval, tick_atom::value);
        },
    };
  });
}

std::shared_ptr<const troupe::saga_definition> greeting_saga() {
  return troupe::saga<greet>("greeting", 1)
      .step("greet", troupe::via<greeter_actor>("greeter"),
            [](const greet& g) { return g; })
      .build();
}

} // namespace greeter
