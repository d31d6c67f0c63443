#include <troupe/runtime/errors.hpp>

#include <caf/all.hpp>

namespace troupe {

caf::error make_error(errc code) {
  return caf::error{static_cast<uint8_t>(code), troupe_category::value};
}

caf::error make_error(errc code, std::string detail) {
  return caf::error{static_cast<uint8_t>(code), troupe_category::value,
                    caf::make_message(std::move(detail))};
}

// The one table of what errors mean to troupe: guards, sagas, gateways and
// the cluster all decide on this function's answer, never on CAF's codes.
errc classify(const caf::error& err) {
  if (!err)
    return errc::none;
  if (err.category() == troupe_category::value)
    return static_cast<errc>(err.code());
  if (err.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(err.code())) {
    case caf::sec::request_timeout:
      return errc::timeout;
    case caf::sec::request_receiver_down:
    case caf::sec::no_route_to_receiving_node:
    case caf::sec::cannot_connect_to_node:
    case caf::sec::remote_linking_failed:
    // CAF answers a request to an invalid (null) handle with invalid_argument
    // (mixin/requester.hpp): nobody is there to receive it, e.g. no cluster
    // actor on this node. troupe validates its callers' input itself and
    // answers that with errc::bad_input; CAF's code never means bad input.
    case caf::sec::invalid_argument:
      return errc::service_unavailable;
    case caf::sec::unexpected_message:
      return errc::bad_input;
    case caf::sec::unexpected_actor_messaging_interface:
      return errc::interface_mismatch;
    default:
      return errc::internal;
    }
  }
  if (err.category() == caf::atom("exit")) {
    if (static_cast<caf::exit_reason>(err.code()) ==
        caf::exit_reason::remote_link_unreachable)
      return errc::service_unavailable;
    return errc::service_unavailable;
  }
  return errc::internal;
}

bool is_retryable(errc code) {
  switch (code) {
  case errc::timeout:
  case errc::overloaded:
  case errc::circuit_open:
  case errc::service_unavailable:
  case errc::rate_limited:
  case errc::shutting_down:
    return true;
  default:
    return false;
  }
}

bool is_retryable(const caf::error& err) {
  return is_retryable(classify(err));
}

const char* to_string(errc code) {
  switch (code) {
  case errc::none:
    return "none";
  case errc::timeout:
    return "timeout";
  case errc::overloaded:
    return "overloaded";
  case errc::circuit_open:
    return "circuit_open";
  case errc::service_unavailable:
    return "service_unavailable";
  case errc::bad_input:
    return "bad_input";
  case errc::not_found:
    return "not_found";
  case errc::rate_limited:
    return "rate_limited";
  case errc::restart_budget_exceeded:
    return "restart_budget_exceeded";
  case errc::shutting_down:
    return "shutting_down";
  case errc::interface_mismatch:
    return "interface_mismatch";
  case errc::internal:
    return "internal";
  case errc::cancelled:
    return "cancelled";
  case errc::rejected:
    return "rejected";
  }
  return "unknown";
}

std::string describe(const caf::error& err) {
  if (!err)
    return "none";
  std::string out;
  if (err.category() == troupe_category::value) {
    out = to_string(static_cast<errc>(err.code()));
    const auto& ctx = err.context();
    if (ctx.match_elements<std::string>())
      out += ": " + ctx.get_as<std::string>(0);
    return out;
  }
  out = caf::to_string(err);
  return out;
}

} // namespace troupe
