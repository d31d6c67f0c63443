// A troupe node that provides the echo service behind a resilience guard
// configured from its own configuration ("echo" dependency keys), so a test
// can switch fault injection on and off at run time from another process.

#include <string>

#include <caf/all.hpp>

#include <troupe/actors/guard.hpp>
#include <troupe/actors/resilience_policy.hpp>
#include <troupe/runtime/node.hpp>
#include <troupe/runtime/service.hpp>

#include "echo.hpp"

namespace {

echo::echo_actor::behavior_type echo_service(echo::echo_actor::pointer self,
                                             std::string node_name) {
  return troupe::serve(self, [node_name](const echo::ping& p) -> echo::pong {
    return {p.n, node_name};
  });
}

} // namespace

int main(int argc, char** argv) {
  troupe::node node{"actors-test-peer"};
  echo::add_messages(node.messages());
  troupe::resilience::add_messages(node.messages());
  troupe::resilience::declare_dependency(node.schema(), "echo");
  node.service<echo::echo_actor>("echo", [](caf::actor_system& sys,
                                            const troupe::config& cfg) {
    auto raw = sys.spawn(echo_service, cfg.get_string("node.name"));
    return troupe::resilience::guard(sys, raw,
                                     troupe::resilience::policy_from_config(cfg, "echo"));
  });
  return node.run(argc, argv);
}
