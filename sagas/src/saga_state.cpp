#include <troupe/sagas/saga_state.hpp>

namespace troupe {

namespace {

constexpr saga_status all_statuses[] = {
    saga_status::running,   saga_status::compensating, saga_status::parked,
    saga_status::completed, saga_status::compensated,  saga_status::failed_compensation,
    saga_status::cancelled,
};

} // namespace

const char* to_string(saga_status status) {
  switch (status) {
  case saga_status::running:
    return "running";
  case saga_status::compensating:
    return "compensating";
  case saga_status::parked:
    return "parked";
  case saga_status::completed:
    return "completed";
  case saga_status::compensated:
    return "compensated";
  case saga_status::failed_compensation:
    return "failed_compensation";
  case saga_status::cancelled:
    return "cancelled";
  }
  return "unknown";
}

bool parse_saga_status(const std::string& text, saga_status& out) {
  for (auto s : all_statuses)
    if (text == to_string(s)) {
      out = s;
      return true;
    }
  return false;
}

bool is_end_state(saga_status status) noexcept {
  return status == saga_status::completed || status == saga_status::compensated ||
         status == saga_status::failed_compensation || status == saga_status::cancelled;
}

const char* to_string(step_status status) {
  switch (status) {
  case step_status::pending:
    return "pending";
  case step_status::running:
    return "running";
  case step_status::succeeded:
    return "succeeded";
  case step_status::failed:
    return "failed";
  case step_status::compensated:
    return "compensated";
  case step_status::compensation_failed:
    return "compensation_failed";
  }
  return "unknown";
}

bool outcome_unknown(const step_record& step) {
  return step.status == step_status::failed &&
         step.error.rfind(outcome_unknown_prefix, 0) == 0;
}

std::string current_step(const saga_snapshot& s) {
  std::string last;
  if (s.status == saga_status::compensating) {
    // The latest step still to undo.
    for (auto it = s.steps.rbegin(); it != s.steps.rend(); ++it)
      if (it->status == step_status::succeeded || outcome_unknown(*it))
        return it->name;
  }
  for (auto& st : s.steps) {
    if (st.status == step_status::pending || st.status == step_status::running)
      return st.name;
    if (st.status != step_status::pending)
      last = st.name;
  }
  return last;
}

} // namespace troupe
