#pragma once

// The saga log's records and keys. Every instance's records sit together
// under "i/<id>/" followed by a big-endian sequence number, so one prefix
// scan reads an instance and a full scan streams instances one after another.
// A record is either a snapshot (the whole state) or an event (one change);
// recovery starts from the newest snapshot and applies the events after it.
//
// Record layout: 'S' or 'E' | format version (1) | CRC-32 of the body (4
// bytes, little endian) | body in CAF's binary format.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <caf/fwd.hpp>
#include <caf/meta/type_name.hpp>

#include <troupe/sagas/saga_state.hpp>

namespace troupe::saga_log {

inline constexpr uint8_t format_version = 1;

enum class event_kind : uint8_t {
  step_succeeded = 1,
  step_attempt_failed,
  step_failed,
  compensation_succeeded,
  compensation_attempt_failed,
  compensation_gave_up,
  compensation_requested, ///< cancel or deadline; data = reason
  ended,
  /// The step failed, or the saga compensates while it was unanswered, and its
  /// request may have been applied (sent, no answer that says it was not):
  /// like `step_failed`, and the step is compensated without a reply.
  step_outcome_unknown,
};

struct event {
  event_kind kind = event_kind::ended;
  std::string step;
  uint32_t attempt = 0;
  int64_t at_ns = 0;
  std::string data;                          ///< reply bytes, error text or reason
  saga_status status = saga_status::running; ///< for `ended`
  bool cancel = false;                       ///< for `compensation_requested`
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("saga_event"), x.kind, x.step, x.attempt, x.at_ns, x.data,
           x.status, x.cancel);
}

/// "i/<id>/" — every record of one instance starts with it.
std::string instance_prefix(const std::string& id);
inline constexpr std::string_view all_instances_prefix = "i/";
std::string record_key(const std::string& id, uint64_t seq);
/// Splits a record key; false when it is not one.
bool parse_record_key(std::string_view key, std::string& id, uint64_t& seq);

std::string encode_snapshot(caf::actor_system& sys, const saga_snapshot& s);
std::string encode_event(caf::actor_system& sys, const event& e);

/// A decoded record: exactly one of the two is set.
struct record {
  std::optional<saga_snapshot> snapshot;
  std::optional<event> change;
};

/// Decodes and validates a record; the error text says what is wrong.
std::optional<record> decode(caf::actor_system& sys, std::string_view bytes,
                             std::string& error);

/// Applies one event to a snapshot; false (with `error`) when the event does
/// not fit it (it names an unknown step).
bool apply(saga_snapshot& s, const event& e, std::string& error);

} // namespace troupe::saga_log
