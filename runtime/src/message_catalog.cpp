#include <troupe/runtime/message_catalog.hpp>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/cluster.hpp>

namespace troupe {

message_catalog::message_catalog() {
  // Short: CAF 0.17 writes this name into every message that crosses nodes.
  add<call_context>("troupe.ctx");
  add<service_entry>("troupe.service_entry");
  add<member_info>("troupe.member_info");
  add<std::vector<member_info>>("troupe.member_list");
  add<std::vector<std::string>>("troupe.string_list");
}

void message_catalog::apply_to(caf::actor_system_config& cfg) const {
  for (auto& entry : entries_)
    entry(cfg);
}

} // namespace troupe
