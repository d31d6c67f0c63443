#include <troupe/runtime/scheduler_tuning.hpp>

#include <caf/actor_system_config.hpp>
#include <caf/timespan.hpp>

namespace troupe {

void apply(caf::actor_system_config& cfg, const scheduler_tuning& t) {
  cfg.set("work-stealing.aggressive-poll-attempts", t.spin_attempts);
  cfg.set("work-stealing.moderate-poll-attempts", t.nap_attempts);
  cfg.set("work-stealing.moderate-sleep-duration", caf::timespan{t.nap_duration});
  cfg.set("work-stealing.relaxed-sleep-duration", caf::timespan{t.idle_wakeup});
}

} // namespace troupe
