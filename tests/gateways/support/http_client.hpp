#pragma once

// A blocking HTTP/1.1 client for the gateway tests: one keep-alive
// connection to 127.0.0.1, optionally TLS (with a client certificate for
// mTLS), every call bounded by a timeout; a reader of server-sent events;
// and a troupe-node started with its HTTP gateway listening.
//
//   troupe::test::http_client api{node.http_port};
//   auto r = api.post("/v1/sagas/order_processing", R"({"json":{...}})");
//   // r->status, r->body, r->header("x-request-id")

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::test {

/// TLS for a client: the CA that signed the server's certificate and,
/// for mTLS, the client's certificate and key. No CA: plain TCP.
struct client_tls {
  std::filesystem::path ca_cert;
  std::filesystem::path client_cert;
  std::filesystem::path client_key;
  bool enabled() const noexcept { return !ca_cert.empty(); }
};

using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_reply {
  int status = 0;
  std::string body;
  header_list headers;
  /// The value of a header (name compared case-insensitively), "" if absent.
  std::string header(std::string_view name) const;
};

/// One connection, opened on first use and again after the server closed it.
class http_client {
public:
  explicit http_client(uint16_t port, client_tls tls = {},
                       std::chrono::milliseconds timeout = std::chrono::seconds{15});
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  /// nullopt when connecting, the TLS handshake, sending or reading fails or
  /// times out; last_error() says which. `body` goes with Content-Type
  /// `content_type` unless that is empty.
  std::optional<http_reply> request(std::string_view method, std::string_view target,
                                    std::string_view body = {},
                                    const header_list& headers = {},
                                    std::string_view content_type = "application/json");
  std::optional<http_reply> get(std::string_view target, const header_list& headers = {});
  std::optional<http_reply> post(std::string_view target, std::string_view body,
                                 const header_list& headers = {});

  /// TCP connections opened so far (1 after any number of keep-alive requests).
  int connections_opened() const noexcept;
  const std::string& last_error() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

struct sse_event {
  std::string event; ///< "saga", "end"
  std::string data;
};

/// A GET whose answer is a stream of server-sent events, read event by event.
class sse_reader {
public:
  sse_reader(uint16_t port, std::string target, const header_list& headers = {},
             client_tls tls = {});
  ~sse_reader();
  sse_reader(const sse_reader&) = delete;
  sse_reader& operator=(const sse_reader&) = delete;

  /// The status and headers (and for a non-stream answer, its body); nullopt
  /// when none arrived within `timeout`.
  std::optional<http_reply> open(std::chrono::milliseconds timeout = std::chrono::seconds{
                                     15});
  /// The next event; nullopt when the stream ended or `timeout` passed first.
  std::optional<sse_event> next(std::chrono::milliseconds timeout = std::chrono::seconds{
                                    30});
  /// True once the server closed the stream.
  bool ended() const noexcept;
  /// Drops the connection (a client that goes away).
  void close();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// A JSON string literal of `text` (quotes and escapes added).
std::string json_quote(std::string_view text);

} // namespace troupe::test
