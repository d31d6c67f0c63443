#pragma once

// Starting sagas from a broker: other systems publish a command, troupe
// starts the saga once, however often the broker delivers it.

#include <memory>

#include <caf/fwd.hpp>

#include <troupe/outbox/outbound_event.hpp>

namespace troupe::gateways {

class api_backend;

/// The content types a saga command may have; without one, JSON.
inline constexpr const char* json_content_type = "application/json";
inline constexpr const char* protobuf_content_type = "application/x-protobuf";

/// Starts a saga for each delivered message, whose payload is a
/// troupe.api.v1.StartSagaRequest in protobuf's JSON mapping or binary
/// (by content type). Its idempotency key — without one, "<topic>/<message
/// id>" — makes a redelivered command answer the first instance, so each
/// command starts one saga. A command that can never start (not a
/// StartSagaRequest, unknown saga type, invalid input) goes to
/// `<topic>.dead-letters` through the node's outbox with an `error` header
/// and is acknowledged; a refusal that may pass later (not ready,
/// overloaded, timeout) is answered with an error, so the broker delivers it
/// again. `backend` must be one without authentication: the broker is the
/// trust boundary.
event_consumer_actor spawn_saga_command_consumer(caf::actor_system& sys,
                                                 std::shared_ptr<api_backend> backend);

} // namespace troupe::gateways
