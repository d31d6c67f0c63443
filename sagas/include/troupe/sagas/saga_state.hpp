#pragma once

// What a saga instance is, as the log stores it and queries return it. Light:
// no CAF actor headers.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>

namespace troupe {

/// Where an instance is in its life. The last four are end states.
enum class saga_status : uint8_t {
  running,             ///< steps are running forward
  compensating,        ///< a step failed, the deadline passed or it was cancelled
  parked,              ///< its definition version is not registered: for an operator
  completed,           ///< every step succeeded
  compensated,         ///< a failure or the deadline undid every completed step
  failed_compensation, ///< a compensation never succeeded: for an operator
  cancelled,           ///< cancelled, and every completed step undone
};

const char* to_string(saga_status status);
/// "running", "completed", ...; false when `text` names no status.
bool parse_saga_status(const std::string& text, saga_status& out);
bool is_end_state(saga_status status) noexcept;

enum class step_status : uint8_t {
  pending,             ///< not started
  running,             ///< request sent (or about to be), no answer yet
  succeeded,           ///< its reply is recorded
  failed,              ///< failed after its retries; the saga compensates
  compensated,         ///< its compensation succeeded (or it has none)
  compensation_failed, ///< its compensation ran out of attempts
};

const char* to_string(step_status status);

/// How the error of a step whose outcome is unknown begins.
inline constexpr const char* outcome_unknown_prefix = "outcome unknown: ";

/// One step of an instance, keyed by the step's name (not its position), so
/// a changed definition never misreads an old log.
struct step_record {
  std::string name;
  step_status status = step_status::pending;
  uint32_t attempts = 0;
  int64_t started_ns = 0; ///< wall clock, ns since the Unix epoch
  int64_t ended_ns = 0;
  std::string reply; ///< the typed reply, in CAF's binary format
  std::string error; ///< the last attempt's error
  uint32_t compensation_attempts = 0;
  int64_t compensated_ns = 0;
  std::string compensation_error;
  // Filled in query answers only (never logged): human-readable renderings.
  std::string request_text;
  std::string reply_text;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_record& x) {
  return f(caf::meta::type_name("step_record"), x.name, x.status, x.attempts,
           x.started_ns, x.ended_ns, x.reply, x.error, x.compensation_attempts,
           x.compensated_ns, x.compensation_error, x.request_text, x.reply_text);
}

/// True for a failed step whose request may have been applied: it was sent
/// and no answer says it was not (every attempt timed out, or the saga began
/// compensating while it was unanswered, before or after a restart). A
/// compensating saga compensates such a step as if it had succeeded, without
/// its reply (see docs/SAGAS.md).
bool outcome_unknown(const step_record& step);

/// The whole state of one instance: what a snapshot record stores, what
/// `get_saga` answers and what watchers receive on every change.
struct saga_snapshot {
  std::string id;
  std::string type;
  uint32_t version = 0; ///< of the definition the instance started with
  std::string idempotency_key;
  std::string correlation_id;
  std::string input; ///< the typed input, in CAF's binary format
  saga_status status = saga_status::running;
  std::string reason;            ///< why it compensates or is parked
  bool cancel_requested = false; ///< compensating because of a cancel: ends `cancelled`
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  int64_t deadline_ns = 0; ///< 0 = none
  int64_t ended_ns = 0;
  std::vector<step_record> steps; ///< in definition order
  std::string input_text;         ///< query answers only
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, saga_snapshot& x) {
  return f(caf::meta::type_name("saga_snapshot"), x.id, x.type, x.version,
           x.idempotency_key, x.correlation_id, x.input, x.status, x.reason,
           x.cancel_requested, x.created_ns, x.updated_ns, x.deadline_ns, x.ended_ns,
           x.steps, x.input_text);
}

/// The step that is running or compensating now, or the last one; empty
/// before the first step.
std::string current_step(const saga_snapshot& s);

/// One line of a listing.
struct saga_summary {
  std::string id;
  std::string type;
  saga_status status = saga_status::running;
  std::string current_step;
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, saga_summary& x) {
  return f(caf::meta::type_name("saga_summary"), x.id, x.type, x.status, x.current_step,
           x.created_ns, x.updated_ns);
}

} // namespace troupe
