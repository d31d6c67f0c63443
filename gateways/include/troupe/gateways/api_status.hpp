#pragma once

// The outcome of one API call, transport-neutral, and the one table that
// maps troupe's error codes to it and it to gRPC status codes and HTTP
// statuses. Both gateways answer errors only through this table.

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/fwd.hpp>

namespace troupe::gateways {

/// The API's error codes; their numbers are gRPC's status codes.
enum class api_code : uint8_t {
  ok = 0,
  cancelled = 1,
  invalid_argument = 3,
  deadline_exceeded = 4,
  not_found = 5,
  permission_denied = 7,
  resource_exhausted = 8,
  failed_precondition = 9,
  unimplemented = 12,
  internal = 13,
  unavailable = 14,
  unauthenticated = 16,
};

/// An API outcome: the code, a message for the client, troupe's own code and
/// detail, and for retryable refusals how long to wait.
struct api_status {
  api_code code = api_code::ok;
  std::string message;
  std::string details; ///< e.g. "troupe.service_unavailable: owner node-b is down"
  std::chrono::seconds retry_after{0};

  bool ok() const noexcept { return code == api_code::ok; }

  static api_status success() { return {}; }
  static api_status failure(api_code code, std::string message);
  /// Maps an actor error through the table (timeout → DEADLINE_EXCEEDED,
  /// overloaded → RESOURCE_EXHAUSTED, circuit open or owner down →
  /// UNAVAILABLE with a retry hint, bad input → INVALID_ARGUMENT, ...).
  static api_status from_error(const caf::error& err);
};

/// "INVALID_ARGUMENT", "NOT_FOUND", ...
const char* to_string(api_code code);
/// The gRPC status code (as grpc::StatusCode's number).
int grpc_status_code(api_code code) noexcept;
/// The HTTP status: 400, 401, 403, 404, 409, 429, 499, 500, 501, 503, 504.
unsigned http_status(api_code code) noexcept;

} // namespace troupe::gateways
