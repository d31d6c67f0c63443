// troupe-node: the stock node, written the way any user's node is written.

#include <troupe/runtime/node.hpp>

#include "greeter/greeter.hpp"

int main(int argc, char** argv) {
  troupe::node node{"troupe-node"};
  greeter::add_messages(node.messages());
  greeter::declare_config(node.schema());
  node.service<greeter::greeter_actor>("greeter", greeter::spawn_greeter);
  node.actor("caller", greeter::spawn_caller, troupe::restart_policy::transient);
  return node.run(argc, argv);
}
