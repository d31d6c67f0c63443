#pragma once

// troupe's saga state as the public API's messages, and back for filters.

#include <optional>
#include <string>

#include <troupe/api/v1/sagas.pb.h>
#include <troupe/sagas/saga_state.hpp>

namespace troupe::gateways {

api::v1::SagaState to_api(saga_status status);
/// The status a list filter names; nullopt for SAGA_STATE_UNSPECIFIED.
std::optional<saga_status> from_api(api::v1::SagaState state);
api::v1::StepState to_api(step_status status);

/// Fills `out` from a snapshot; `input` (the input in its JSON mapping) is
/// set by the caller, which knows the saga type's binding.
void render(const saga_snapshot& snapshot, api::v1::Saga& out);
void render(const saga_summary& summary, api::v1::SagaSummary& out);

} // namespace troupe::gateways
