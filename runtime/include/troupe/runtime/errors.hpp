#pragma once

#include <cstdint>
#include <string>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace troupe {

/// troupe's error codes. They cross actors and nodes as `caf::error` values in
/// the "troupe" category; each code knows whether retrying may help.
enum class errc : uint8_t {
  none = 0,
  timeout,                 ///< the call or its caller's deadline ran out
  overloaded,              ///< a bulkhead or mailbox bound rejected the call
  circuit_open,            ///< a circuit breaker is open for the dependency
  service_unavailable,     ///< no live node provides the service right now
  bad_input,               ///< the request itself is malformed; never retry
  not_found,               ///< the addressed entity does not exist
  rate_limited,            ///< a rate limiter refused the call
  restart_budget_exceeded, ///< a supervisor gave up restarting its children
  shutting_down,           ///< the node is draining and accepts no new work
  interface_mismatch,      ///< a service exists but speaks another interface
  internal,                ///< a bug or an unexpected failure
  cancelled,               ///< the caller withdrew the request
  rejected, ///< the service refused by its rules (out of stock); never retry
};

/// The error category atom of troupe's codes.
using troupe_category = caf::atom_constant<caf::atom("troupe")>;

/// Builds a `caf::error` from a code, optionally with a human-readable detail.
caf::error make_error(errc code);
caf::error make_error(errc code, std::string detail);

/// Maps any error (troupe's, or CAF's own `sec`) to troupe's code. The one
/// table: everything that decides on a CAF error (guards, sagas, gateways,
/// the cluster) asks this function, never CAF's codes directly.
///
/// - `sec::request_timeout`: timeout
/// - `sec::request_receiver_down`, `no_route_to_receiving_node`,
///   `cannot_connect_to_node`, `remote_linking_failed`: service_unavailable
/// - `sec::invalid_argument` (CAF's answer to a request to an invalid
///   handle: nobody there): service_unavailable
/// - `sec::unexpected_message`: bad_input
/// - `sec::unexpected_actor_messaging_interface`: interface_mismatch
/// - any other `sec`: internal
/// - an exit reason (the receiver is gone): service_unavailable
/// - troupe's own codes: themselves
errc classify(const caf::error& err);

/// True when sending the same request again may succeed.
bool is_retryable(errc code);
bool is_retryable(const caf::error& err);

/// The code's name, e.g. "circuit_open".
const char* to_string(errc code);

/// Renders an error of any category in one line, with its detail.
std::string describe(const caf::error& err);

} // namespace troupe
