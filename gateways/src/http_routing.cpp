#include "http_routing.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <vector>

#include <boost/beast/http/error.hpp>
#include <google/protobuf/util/json_util.h>

#include "header_text.hpp"

namespace troupe::gateways::http_api {

namespace http = boost::beast::http;

namespace {

refusal refuse(unsigned status, api_code code, std::string message,
               std::string allow = {}) {
  return refusal{status, code, std::move(message), std::move(allow)};
}

using detail::iequals;
using detail::trim;

// "application/json", optionally with parameters ("; charset=utf-8").
bool is_json_media_type(std::string_view value) {
  auto semi = value.find(';');
  return iequals(trim(value.substr(0, semi)), "application/json");
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t from = 0;
  for (;;) {
    auto at = s.find(sep, from);
    out.push_back(s.substr(from, at == std::string_view::npos ? std::string_view::npos
                                                              : at - from));
    if (at == std::string_view::npos)
      return out;
    from = at + 1;
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::optional<std::string> json_error(const google::protobuf::util::Status& st,
                                      const google::protobuf::Message& msg) {
  if (st.ok())
    return std::nullopt;
  std::string why{st.message()};
  return why.empty() ? "invalid JSON for " + msg.GetDescriptor()->full_name() : why;
}

// RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size())
      return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t min_of[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_of[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

// The API's JSON reading: strict, so a misspelt field is an error rather
// than silently ignored input. JSON is UTF-8 (RFC 8259); anything else is
// refused here rather than stored as a string no client can read back.
std::optional<std::string> parse_json(std::string_view body,
                                      google::protobuf::Message& msg) {
  if (!valid_utf8(body))
    return std::string{"the body is not valid UTF-8"};
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece{body.data(), body.size()}, &msg, opts);
  return json_error(st, msg);
}

// The query of a list: type, state, page_size, page_token; anything else
// is refused rather than ignored, like unknown JSON fields.
std::optional<refusal> parse_list_query(std::string_view query,
                                        api::v1::ListSagasRequest& out) {
  if (query.empty())
    return std::nullopt;
  for (auto pair : split(query, '&')) {
    if (pair.empty())
      continue;
    auto eq = pair.find('=');
    auto raw_name = pair.substr(0, eq);
    auto raw_value =
        eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    auto name = percent_decode(raw_name, true);
    auto value = percent_decode(raw_value, true);
    if (!name || !value)
      return refuse(400, api_code::invalid_argument,
                    "the query has a bad percent escape");
    if (*name == "type" || *name == "saga_type") {
      out.set_saga_type(*value);
    } else if (*name == "state") {
      auto state = parse_state(*value);
      if (!state)
        return refuse(400, api_code::invalid_argument,
                      "unknown saga state '" + value->substr(0, 64) +
                          "' (running, compensating, parked, completed, compensated, "
                          "failed_compensation, cancelled)");
      out.set_state(*state);
    } else if (*name == "page_size") {
      uint32_t n = 0;
      auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), n);
      if (value->empty() || ec != std::errc{} || end != value->data() + value->size())
        return refuse(400, api_code::invalid_argument,
                      "page_size must be a number from 0 to 1000");
      out.set_page_size(n);
    } else if (*name == "page_token") {
      out.set_page_token(*value);
    } else {
      return refuse(400, api_code::invalid_argument,
                    "unknown query parameter '" + name->substr(0, 64) +
                        "' (type, state, page_size, page_token)");
    }
  }
  return std::nullopt;
}

} // namespace

// --- reading ------------------------------------------------------------------

request_reader::request_reader(std::size_t max_header_bytes, std::size_t max_body_bytes)
    : max_header_bytes_(max_header_bytes)
    , max_body_bytes_(max_body_bytes) {
  reset();
}

void request_reader::reset() {
  parser_.emplace();
  parser_->header_limit(
      static_cast<std::uint32_t>(std::min<std::size_t>(max_header_bytes_, UINT32_MAX)));
  parser_->body_limit(max_body_bytes_);
  // The header is read alone first, so that a chunked body is refused
  // before the parser reads any of it: Beast 1.74's chunk parser asserts on
  // input the fuzzer found (a final chunk whose trailer arrives in pieces).
  parser_->eager(false);
  started_ = false;
}

request_reader::state request_reader::feed(boost::beast::flat_buffer& buffer) {
  while (buffer.size() > 0) {
    started_ = true;
    boost::beast::error_code ec;
    auto used = parser_->put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) {
      // The parser keeps nothing of a header it has not finished: it needs
      // the whole header in the buffer, which therefore bounds its size.
      if (!parser_->is_header_done() && buffer.size() > max_header_bytes_) {
        error_ = refuse(431, api_code::resource_exhausted,
                        "the request header is larger than " +
                            std::to_string(max_header_bytes_) + " bytes");
        return state::failed;
      }
      return state::need_more;
    }
    if (ec == http::error::header_limit) {
      error_ = refuse(431, api_code::resource_exhausted,
                      "the request header is larger than " +
                          std::to_string(max_header_bytes_) + " bytes");
      return state::failed;
    }
    if (ec == http::error::body_limit) {
      error_ = refuse(413, api_code::resource_exhausted,
                      "the request body is larger than " +
                          std::to_string(max_body_bytes_) + " bytes");
      return state::failed;
    }
    if (ec) {
      error_ = refuse(400, api_code::invalid_argument,
                      "malformed HTTP request: " + ec.message());
      return state::failed;
    }
    if (parser_->is_header_done() && !parser_->is_done() && !parser_->eager()) {
      if (parser_->chunked()) {
        error_ = refuse(411, api_code::invalid_argument,
                        "a request body needs a Content-Length (chunked bodies are "
                        "not accepted)");
        return state::failed;
      }
      parser_->eager(true);
      continue;
    }
    if (parser_->is_done())
      return state::done;
    if (used == 0)
      return state::need_more;
  }
  return parser_->is_done() ? state::done : state::need_more;
}

bool request_reader::header_done() const {
  return parser_->is_header_done();
}

const request& request_reader::header() const {
  return parser_->get();
}

request request_reader::take() {
  auto req = parser_->release();
  reset();
  return req;
}

// --- routing ------------------------------------------------------------------

std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size())
        return std::nullopt;
      int hi = hex_value(text[i + 1]);
      int lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0)
        return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0')
      return std::nullopt;
    out.push_back(c);
  }
  return out;
}

std::optional<api::v1::SagaState> parse_state(std::string_view text) {
  if (text.empty())
    return api::v1::SAGA_STATE_UNSPECIFIED;
  if (text.size() > 64)
    return std::nullopt;
  std::string name;
  for (char c : text)
    name.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (name.rfind("SAGA_STATE_", 0) != 0)
    name = "SAGA_STATE_" + name;
  api::v1::SagaState state{};
  if (!api::v1::SagaState_Parse(name, &state))
    return std::nullopt;
  return state;
}

decision decide(const request& req) {
  decision d;
  std::string_view target{req.target().data(), req.target().size()};
  auto qmark = target.find('?');
  auto path = target.substr(0, qmark);
  auto query =
      qmark == std::string_view::npos ? std::string_view{} : target.substr(qmark + 1);
  if (path.rfind("/v1/", 0) != 0) {
    d.error = refuse(404, api_code::not_found, "no such route (the API is under /v1/)");
    return d;
  }
  auto parts = split(path.substr(4), '/');
  std::vector<std::string> segs;
  for (auto p : parts) {
    auto s = percent_decode(p, false);
    if (!s || s->empty()) {
      d.error = refuse(404, api_code::not_found, "no such route");
      return d;
    }
    segs.push_back(std::move(*s));
  }
  auto verb = req.method();
  auto not_allowed = [&](std::string allow) {
    d.error =
        refuse(405, api_code::unimplemented,
               std::string{req.method_string().substr(0, 16)} + " is not allowed here",
               std::move(allow));
    return d;
  };
  auto no_query = [&]() -> bool {
    if (query.empty())
      return true;
    d.error =
        refuse(400, api_code::invalid_argument, "this route takes no query parameters");
    return false;
  };
  // Bodies of POSTs are JSON; a bodiless POST (a cancel) needs no type.
  auto json_body = [&]() -> bool {
    auto type = req[http::field::content_type];
    bool has_type = !type.empty();
    if ((!req.body().empty() || has_type) &&
        !is_json_media_type(std::string_view{type.data(), type.size()})) {
      d.error =
          refuse(415, api_code::invalid_argument, "the body must be application/json");
      return false;
    }
    return true;
  };
  route r;
  if (segs.size() == 1 && segs[0] == "sagas") {
    if (verb != http::verb::get)
      return not_allowed("GET");
    if (auto bad = parse_list_query(query, r.list)) {
      d.error = *bad;
      return d;
    }
    r.kind = route_kind::list_sagas;
  } else if (segs.size() == 2 && segs[0] == "sagas") {
    auto& last = segs[1];
    auto colon = last.rfind(':');
    auto verb_part = colon == std::string::npos ? std::string{} : last.substr(colon + 1);
    if (verb_part == "cancel" || verb_part == "watch") {
      r.id = last.substr(0, colon);
      if (r.id.empty()) {
        d.error = refuse(404, api_code::not_found, "no such route");
        return d;
      }
      if (verb_part == "cancel") {
        if (verb != http::verb::post)
          return not_allowed("POST");
        r.kind = route_kind::cancel_saga;
        if (!json_body())
          return d;
      } else {
        if (verb != http::verb::get)
          return not_allowed("GET");
        r.kind = route_kind::watch_saga;
      }
    } else if (verb == http::verb::get) {
      r.kind = route_kind::get_saga;
      r.id = last;
    } else if (verb == http::verb::post) {
      r.kind = route_kind::start_saga;
      r.saga_type = last;
      if (!json_body())
        return d;
    } else {
      return not_allowed("GET, POST");
    }
    if (!no_query())
      return d;
  } else if (segs.size() == 3 && segs[0] == "services") {
    if (verb != http::verb::post)
      return not_allowed("POST");
    r.kind = route_kind::invoke;
    r.service = segs[1];
    r.method = segs[2];
    if (!json_body() || !no_query())
      return d;
  } else {
    d.error = refuse(404, api_code::not_found, "no such route");
    return d;
  }
  d.match = std::move(r);
  return d;
}

std::optional<std::string> start_request_from(std::string_view type,
                                              std::string_view body,
                                              api::v1::StartSagaRequest& out) {
  if (auto bad = parse_json(body, out))
    return bad;
  if (!out.saga_type().empty() && out.saga_type() != type)
    return "the body names saga type '" + out.saga_type().substr(0, 128) +
           "' but the path names '" + std::string{type.substr(0, 128)} + "'";
  out.set_saga_type(std::string{type});
  return std::nullopt;
}

std::optional<std::string> invoke_request_from(std::string_view service,
                                               std::string_view method,
                                               std::string_view body,
                                               api::v1::InvokeRequest& out) {
  out.set_service(std::string{service});
  out.set_method(std::string{method});
  if (auto bad = parse_json(body, *out.mutable_json()))
    return bad;
  return std::nullopt;
}

std::optional<std::string> cancel_request_from(std::string_view id, std::string_view body,
                                               api::v1::CancelSagaRequest& out) {
  if (!body.empty())
    if (auto bad = parse_json(body, out))
      return bad;
  if (!out.id().empty() && out.id() != id)
    return std::string{"the body names another saga than the path"};
  out.set_id(std::string{id});
  return std::nullopt;
}

} // namespace troupe::gateways::http_api
