#pragma once

// The HTTP gateway's request path without the network and without the
// backend: reading requests from raw bytes under the input limits, and
// mapping each to a route of the API or to the error it gets. Plain code, so
// the fuzzer drives exactly what the gateway runs.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <troupe/api/v1/sagas.pb.h>
#include <troupe/gateways/api_status.hpp>

namespace troupe::gateways::http_api {

using request = boost::beast::http::request<boost::beast::http::string_body>;

/// An answer decided before the request reaches the backend.
struct refusal {
  unsigned status = 400;
  api_code code = api_code::invalid_argument;
  std::string message;
  std::string allow; ///< the Allow header of a 405
};

/// Reads requests one after another from bytes as they arrive (pipelined
/// requests stay in order). Header and body sizes are bounded by the limits;
/// an over-long header is 431, an over-long body 413, malformed HTTP 400.
class request_reader {
public:
  request_reader(std::size_t max_header_bytes, std::size_t max_body_bytes);

  enum class state {
    need_more, ///< no whole request yet: read more bytes
    done,      ///< take() returns the request
    failed,    ///< error() says what to answer; the connection must close after it
  };

  /// Parses from the front of `buffer`, consuming what it used.
  state feed(boost::beast::flat_buffer& buffer);
  /// True once the header of the request in progress was read completely.
  bool header_done() const;
  /// True once any byte of the request in progress was consumed.
  bool started() const noexcept { return started_; }
  /// The header of the request in progress (after header_done()).
  const request& header() const;
  /// The request read, and a fresh parser for the next one.
  request take();
  const refusal& error() const noexcept { return error_; }

private:
  void reset();

  std::size_t max_header_bytes_;
  std::size_t max_body_bytes_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>>
      parser_;
  refusal error_;
  bool started_ = false;
};

enum class route_kind {
  start_saga,
  get_saga,
  list_sagas,
  cancel_saga,
  watch_saga,
  invoke
};

/// What a request asks for, with its arguments taken from the path, the
/// query and (for starts) the body.
struct route {
  route_kind kind = route_kind::get_saga;
  std::string saga_type; ///< start
  std::string id;        ///< get, cancel, watch
  std::string service;   ///< invoke
  std::string method;    ///< invoke
  api::v1::ListSagasRequest list;
};

/// The route of `req`, or the refusal: unknown path 404, wrong method 405
/// (with Allow), a POST body that is not application/json 415, a bad query
/// 400.
struct decision {
  std::optional<route> match;
  refusal error;
};
decision decide(const request& req);

/// A start's body (StartSagaRequest JSON without sagaType, or with the
/// path's) completed with the path's type; the message when it does not fit.
std::optional<std::string> start_request_from(std::string_view type,
                                              std::string_view body,
                                              api::v1::StartSagaRequest& out);
/// An Invoke's body (the request's JSON object) as an InvokeRequest.
std::optional<std::string> invoke_request_from(std::string_view service,
                                               std::string_view method,
                                               std::string_view body,
                                               api::v1::InvokeRequest& out);
/// A cancel's body: empty, or a CancelSagaRequest whose id (if any) is the path's.
std::optional<std::string> cancel_request_from(std::string_view id, std::string_view body,
                                               api::v1::CancelSagaRequest& out);

/// Percent-decodes a path segment or query value ('+' stays '+' in paths,
/// is a space in queries); nullopt for a bad escape or a NUL byte.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

/// Parses a saga state as troupe names it ("running", "completed", ...) or
/// as the enum names it ("SAGA_STATE_RUNNING"); empty is any state.
std::optional<api::v1::SagaState> parse_state(std::string_view text);

} // namespace troupe::gateways::http_api
