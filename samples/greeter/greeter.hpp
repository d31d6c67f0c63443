#pragma once

// The sample service of the quick start: a greeter that answers on whatever
// node runs it, and a caller that greets it through the cluster registry.

#include <string>

#include <caf/meta/type_name.hpp>

#include <troupe/runtime/config.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/sagas/saga_definition.hpp>

namespace greeter {

/// Command: greet someone.
struct greet {
  std::string name;
};

/// Reply: the greeting and the node that produced it.
struct greeting {
  std::string text;
  std::string greeted_by;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, greet& x) {
  return f(caf::meta::type_name("greet"), x.name);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, greeting& x) {
  return f(caf::meta::type_name("greeting"), x.text, x.greeted_by);
}

using greeter_actor = troupe::service<troupe::handles<greet, greeting>>;

/// Registers the sample's messages in the node's catalog.
void add_messages(troupe::message_catalog& catalog);
/// Declares the sample's configuration keys (greeter.*, caller.*).
void declare_config(troupe::config_schema& schema);

/// The smallest durable saga: one step that greets. The gateway benchmarks
/// start it, because its cost is the engine's and the gateway's, not a workload's.
std::shared_ptr<const troupe::saga_definition> greeting_saga();

greeter_actor spawn_greeter(caf::actor_system& sys, const troupe::config& cfg);
caf::actor spawn_caller(caf::actor_system& sys, const troupe::config& cfg);

} // namespace greeter
