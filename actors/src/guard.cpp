#include <troupe/actors/guard.hpp>

#include <troupe/runtime/message_catalog.hpp>

namespace troupe::resilience {

guard_state::~guard_state() {
  // The actor is stopping: answer what is still open rather than let callers
  // wait for their own timeouts.
  if (engine)
    engine->abandon(make_error(errc::shutting_down, engine->policy().dependency +
                                                        ": resilience guard stopped"));
}

void add_messages(message_catalog& catalog) {
  catalog.add<fault_settings>("troupe.resilience.fault_settings")
      .add<breaker_state_changed>("troupe.resilience.breaker_state_changed")
      .add<guard_stats>("troupe.resilience.guard_stats");
}

} // namespace troupe::resilience
