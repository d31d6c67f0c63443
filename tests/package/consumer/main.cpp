// A project outside troupe's tree: proves the installed package is usable.
#include <iostream>

#include <troupe/runtime/config.hpp>
#include <troupe/runtime/node.hpp>

int main() {
  troupe::config_schema schema;
  troupe::declare_runtime_config(schema);
  std::cout << schema.keys().size() << " keys\n";
  return schema.find("node.name") != nullptr ? 0 : 1;
}
