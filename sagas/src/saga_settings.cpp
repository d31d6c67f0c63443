#include <troupe/sagas/saga_manager.hpp>

#include <troupe/actors/backoff.hpp>

namespace troupe {

void declare_saga_config(config_schema& s) {
  using namespace std::chrono_literals;
  if (s.find("sagas.owners") != nullptr)
    return;
  s.declare("sagas.owners", value_kind::string_list)
      .default_value("[]")
      .describe(
          "Node names that own sagas (stable names such as StatefulSet pods); a "
          "saga belongs to one of them by its idempotency key. Empty: cluster.members, "
          "and if that is empty too this node owns every saga it starts.");
  s.declare("sagas.step_timeout", value_kind::duration)
      .default_value("5s")
      .min(1ms)
      .max(24h)
      .describe("Default timeout of one step attempt.");
  s.declare("sagas.step_max_attempts", value_kind::integer)
      .default_value("3")
      .min(1)
      .max(1000)
      .describe("Default attempts of a step (the first included) before it fails.");
  s.declare("sagas.step_backoff", value_kind::duration)
      .default_value("100ms")
      .min(1ms)
      .max(1h)
      .describe("First retry delay of a step; grows exponentially with full jitter.");
  s.declare("sagas.compensation_max_attempts", value_kind::integer)
      .default_value("20")
      .min(1)
      .max(100000)
      .describe("Attempts of a compensation before the saga ends failed_compensation.");
  s.declare("sagas.compensation_backoff", value_kind::duration)
      .default_value("200ms")
      .min(1ms)
      .max(1h)
      .describe("First retry delay of a compensation; grows exponentially.");
  s.declare("sagas.max_backoff", value_kind::duration)
      .default_value("10s")
      .min(1ms)
      .max(24h)
      .describe("Longest delay between two attempts of a step or compensation.");
  s.declare("sagas.deadline", value_kind::duration)
      .default_value("5m")
      .min(1ms)
      .max(8760h)
      .describe("Default overall deadline of a saga; past it, the saga compensates.");
  s.declare("sagas.retention", value_kind::duration)
      .default_value("168h")
      .min(0ms)
      .max(87600h)
      .describe("How long finished sagas stay queryable before the sweep removes them.");
  s.declare("sagas.sweep_interval", value_kind::duration)
      .default_value("1m")
      .min(10ms)
      .max(24h)
      .describe("How often finished sagas past retention are removed and stalled ones "
                "reported.");
  s.declare("sagas.stall_after", value_kind::duration)
      .default_value("5m")
      .min(1ms)
      .max(8760h)
      .describe("A running saga without progress for this long is reported as stalled.");
  s.declare("sagas.ended_cache", value_kind::integer)
      .default_value("4096")
      .min(0)
      .max(1000000)
      .describe("Ended sagas whose state is kept in memory after a query read it, so "
                "that polling a finished saga does not read its log each time.");
  s.declare("sagas.recovery_batch", value_kind::integer)
      .default_value("256")
      .min(1)
      .max(100000)
      .describe("Unfinished sagas resumed per turn after a restart; between turns the "
                "manager answers requests.");
  s.declare("sagas.snapshot_every", value_kind::integer)
      .default_value("32")
      .min(2)
      .max(100000)
      .describe("Log records of one saga between snapshots, which bound its log.");
}

saga_settings saga_settings_from(const config& cfg) {
  using resilience::backoff_strategy;
  saga_settings s;
  s.node_name = cfg.get_string("node.name");
  s.owners = cfg.get_list("sagas.owners");
  // The cluster's member list is the natural owner list: the nodes that
  // count for quorum are the ones sagas are spread over.
  if (s.owners.empty() && cfg.has("cluster.members"))
    s.owners = cfg.get_list("cluster.members");
  if (!s.owners.empty()) {
    bool listed = false;
    for (auto& o : s.owners)
      listed |= o == s.node_name;
    if (!listed)
      throw config_error("sagas.owners",
                         "sagas.owners does not list this node ('" + s.node_name + "')");
  }
  s.step_timeout = cfg.get_duration("sagas.step_timeout");
  s.deadline = cfg.get_duration("sagas.deadline");
  auto max_backoff = cfg.get_duration("sagas.max_backoff");
  s.step_retry.max_attempts =
      static_cast<uint32_t>(cfg.get_int("sagas.step_max_attempts"));
  s.step_retry.backoff = {backoff_strategy::exponential_full_jitter,
                          cfg.get_duration("sagas.step_backoff"), max_backoff, 2.0};
  s.compensation_retry.max_attempts =
      static_cast<uint32_t>(cfg.get_int("sagas.compensation_max_attempts"));
  s.compensation_retry.backoff = {backoff_strategy::exponential,
                                  cfg.get_duration("sagas.compensation_backoff"),
                                  max_backoff, 2.0};
  s.retention = cfg.get_duration("sagas.retention");
  s.sweep_interval = cfg.get_duration("sagas.sweep_interval");
  s.stall_after = cfg.get_duration("sagas.stall_after");
  s.recovery_batch = static_cast<uint32_t>(cfg.get_int("sagas.recovery_batch"));
  s.snapshot_every = static_cast<uint32_t>(cfg.get_int("sagas.snapshot_every"));
  s.ended_cache = static_cast<uint32_t>(cfg.get_int("sagas.ended_cache"));
  return s;
}

} // namespace troupe
