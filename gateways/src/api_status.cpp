#include <troupe/gateways/api_status.hpp>

#include <caf/error.hpp>

#include <troupe/runtime/errors.hpp>

namespace troupe::gateways {

namespace {

// The one table: troupe's code → the API's code, and how soon a retry may
// succeed (0: do not retry).
struct mapping {
  api_code code;
  std::chrono::seconds retry_after;
};

mapping map(errc code) {
  using std::chrono::seconds;
  switch (code) {
  case errc::none:
    return {api_code::ok, seconds{0}};
  case errc::bad_input:
    return {api_code::invalid_argument, seconds{0}};
  case errc::not_found:
    return {api_code::not_found, seconds{0}};
  case errc::overloaded:
    return {api_code::resource_exhausted, seconds{1}};
  case errc::rate_limited:
    return {api_code::resource_exhausted, seconds{1}};
  case errc::circuit_open:
    return {api_code::unavailable, seconds{5}};
  case errc::service_unavailable:
    return {api_code::unavailable, seconds{2}};
  case errc::shutting_down:
    return {api_code::unavailable, seconds{2}};
  case errc::timeout:
    return {api_code::deadline_exceeded, seconds{0}};
  case errc::cancelled:
    return {api_code::cancelled, seconds{0}};
  case errc::rejected:
    return {api_code::failed_precondition, seconds{0}};
  case errc::interface_mismatch:
    return {api_code::unimplemented, seconds{0}};
  case errc::restart_budget_exceeded:
  case errc::internal:
    return {api_code::internal, seconds{0}};
  }
  return {api_code::internal, seconds{0}};
}

} // namespace

api_status api_status::failure(api_code code, std::string message) {
  api_status s;
  s.code = code;
  s.message = std::move(message);
  return s;
}

api_status api_status::from_error(const caf::error& err) {
  if (!err)
    return {};
  auto code = classify(err);
  auto m = map(code);
  api_status s;
  s.code = m.code;
  s.retry_after = m.retry_after;
  s.details = std::string{"troupe."} + describe(err);
  // The detail after "code: " is meant for people; the code alone says little.
  auto text = describe(err);
  auto colon = text.find(": ");
  s.message = colon == std::string::npos ? text : text.substr(colon + 2);
  return s;
}

const char* to_string(api_code code) {
  switch (code) {
  case api_code::ok:
    return "OK";
  case api_code::cancelled:
    return "CANCELLED";
  case api_code::invalid_argument:
    return "INVALID_ARGUMENT";
  case api_code::deadline_exceeded:
    return "DEADLINE_EXCEEDED";
  case api_code::not_found:
    return "NOT_FOUND";
  case api_code::permission_denied:
    return "PERMISSION_DENIED";
  case api_code::resource_exhausted:
    return "RESOURCE_EXHAUSTED";
  case api_code::failed_precondition:
    return "FAILED_PRECONDITION";
  case api_code::unimplemented:
    return "UNIMPLEMENTED";
  case api_code::internal:
    return "INTERNAL";
  case api_code::unavailable:
    return "UNAVAILABLE";
  case api_code::unauthenticated:
    return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

int grpc_status_code(api_code code) noexcept {
  return static_cast<int>(code);
}

unsigned http_status(api_code code) noexcept {
  switch (code) {
  case api_code::ok:
    return 200;
  case api_code::cancelled:
    return 499; // client closed request
  case api_code::invalid_argument:
    return 400;
  case api_code::deadline_exceeded:
    return 504;
  case api_code::not_found:
    return 404;
  case api_code::permission_denied:
    return 403;
  case api_code::resource_exhausted:
    return 429;
  case api_code::failed_precondition:
    return 409;
  case api_code::unimplemented:
    return 501;
  case api_code::internal:
    return 500;
  case api_code::unavailable:
    return 503;
  case api_code::unauthenticated:
    return 401;
  }
  return 500;
}

} // namespace troupe::gateways
