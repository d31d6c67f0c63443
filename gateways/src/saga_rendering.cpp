#include "saga_rendering.hpp"

#include <google/protobuf/util/time_util.h>

namespace troupe::gateways {

namespace {

void set_time(int64_t unix_ns, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::NanosecondsToTimestamp(unix_ns);
}

} // namespace

api::v1::SagaState to_api(saga_status status) {
  using api::v1::SagaState;
  switch (status) {
  case saga_status::running:
    return SagaState::SAGA_STATE_RUNNING;
  case saga_status::compensating:
    return SagaState::SAGA_STATE_COMPENSATING;
  case saga_status::parked:
    return SagaState::SAGA_STATE_PARKED;
  case saga_status::completed:
    return SagaState::SAGA_STATE_COMPLETED;
  case saga_status::compensated:
    return SagaState::SAGA_STATE_COMPENSATED;
  case saga_status::failed_compensation:
    return SagaState::SAGA_STATE_FAILED_COMPENSATION;
  case saga_status::cancelled:
    return SagaState::SAGA_STATE_CANCELLED;
  }
  return SagaState::SAGA_STATE_UNSPECIFIED;
}

std::optional<saga_status> from_api(api::v1::SagaState state) {
  using api::v1::SagaState;
  switch (state) {
  case SagaState::SAGA_STATE_RUNNING:
    return saga_status::running;
  case SagaState::SAGA_STATE_COMPENSATING:
    return saga_status::compensating;
  case SagaState::SAGA_STATE_PARKED:
    return saga_status::parked;
  case SagaState::SAGA_STATE_COMPLETED:
    return saga_status::completed;
  case SagaState::SAGA_STATE_COMPENSATED:
    return saga_status::compensated;
  case SagaState::SAGA_STATE_FAILED_COMPENSATION:
    return saga_status::failed_compensation;
  case SagaState::SAGA_STATE_CANCELLED:
    return saga_status::cancelled;
  default:
    return std::nullopt;
  }
}

api::v1::StepState to_api(step_status status) {
  using api::v1::StepState;
  switch (status) {
  case step_status::pending:
    return StepState::STEP_STATE_PENDING;
  case step_status::running:
    return StepState::STEP_STATE_RUNNING;
  case step_status::succeeded:
    return StepState::STEP_STATE_SUCCEEDED;
  case step_status::failed:
    return StepState::STEP_STATE_FAILED;
  case step_status::compensated:
    return StepState::STEP_STATE_COMPENSATED;
  case step_status::compensation_failed:
    return StepState::STEP_STATE_COMPENSATION_FAILED;
  }
  return StepState::STEP_STATE_UNSPECIFIED;
}

void render(const saga_snapshot& s, api::v1::Saga& out) {
  out.set_id(s.id);
  out.set_saga_type(s.type);
  out.set_version(s.version);
  out.set_idempotency_key(s.idempotency_key);
  out.set_correlation_id(s.correlation_id);
  out.set_state(to_api(s.status));
  out.set_reason(s.reason);
  out.set_cancel_requested(s.cancel_requested);
  out.set_input_text(s.input_text);
  out.set_current_step(current_step(s));
  set_time(s.created_ns, out.mutable_create_time());
  set_time(s.updated_ns, out.mutable_update_time());
  if (s.deadline_ns != 0)
    set_time(s.deadline_ns, out.mutable_deadline());
  if (s.ended_ns != 0)
    set_time(s.ended_ns, out.mutable_end_time());
  for (const auto& step : s.steps) {
    auto* st = out.add_steps();
    st->set_name(step.name);
    st->set_state(to_api(step.status));
    st->set_attempts(step.attempts);
    if (step.started_ns != 0)
      set_time(step.started_ns, st->mutable_start_time());
    if (step.ended_ns != 0)
      set_time(step.ended_ns, st->mutable_end_time());
    st->set_request(step.request_text);
    st->set_reply(step.reply_text);
    st->set_error(step.error);
    st->set_compensation_attempts(step.compensation_attempts);
    if (step.compensated_ns != 0)
      set_time(step.compensated_ns, st->mutable_compensate_time());
    st->set_compensation_error(step.compensation_error);
  }
}

void render(const saga_summary& s, api::v1::SagaSummary& out) {
  out.set_id(s.id);
  out.set_saga_type(s.type);
  out.set_state(to_api(s.status));
  out.set_current_step(s.current_step);
  set_time(s.created_ns, out.mutable_create_time());
  set_time(s.updated_ns, out.mutable_update_time());
}

} // namespace troupe::gateways
