#include "gateways/support/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <troupe/runtime/detail/json_text.hpp>
#include "support/node_process.hpp"

namespace troupe::test {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// A connection to 127.0.0.1: plain or TLS, each operation run to completion
// on a private io_context with the stream's own timeout.
class link {
public:
  link(uint16_t port, const client_tls& tls)
      : port_(port) {
    if (tls.enabled()) {
      ctx_ = std::make_unique<ssl::context>(ssl::context::tls_client);
      ctx_->load_verify_file(tls.ca_cert.string());
      ctx_->set_verify_mode(ssl::verify_peer);
      if (!tls.client_cert.empty()) {
        ctx_->use_certificate_chain_file(tls.client_cert.string());
        ctx_->use_private_key_file(tls.client_key.string(), ssl::context::pem);
      }
    }
  }

  bool open(std::chrono::milliseconds timeout, std::string& error) {
    close();
    tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), port_};
    beast::error_code ec;
    if (ctx_) {
      tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io_, *ctx_);
      tls_->set_verify_callback(ssl::host_name_verification("127.0.0.1"));
      auto& low = beast::get_lowest_layer(*tls_);
      low.expires_after(timeout);
      low.async_connect(ep, [&](beast::error_code e) { ec = e; });
      run();
      if (!ec) {
        low.expires_after(timeout);
        tls_->async_handshake(ssl::stream_base::client,
                              [&](beast::error_code e) { ec = e; });
        run();
      }
    } else {
      plain_ = std::make_unique<beast::tcp_stream>(io_);
      plain_->expires_after(timeout);
      plain_->async_connect(ep, [&](beast::error_code e) { ec = e; });
      run();
    }
    if (ec) {
      error = "connect: " + ec.message();
      close();
      return false;
    }
    buffer_.clear();
    return true;
  }

  bool is_open() const {
    return (plain_ && plain_->socket().is_open()) ||
           (tls_ && beast::get_lowest_layer(*tls_).socket().is_open());
  }

  void close() {
    beast::error_code ignored;
    if (plain_)
      plain_->socket().close(ignored);
    if (tls_)
      beast::get_lowest_layer(*tls_).socket().close(ignored);
    run();
    plain_.reset();
    tls_.reset();
  }

  template <class F>
  void with_stream(std::chrono::milliseconds timeout, F&& f) {
    if (tls_) {
      beast::get_lowest_layer(*tls_).expires_after(timeout);
      f(*tls_);
    } else {
      plain_->expires_after(timeout);
      f(*plain_);
    }
    run();
  }

  beast::error_code write(std::string_view bytes, std::chrono::milliseconds timeout) {
    beast::error_code ec;
    with_stream(timeout, [&](auto& s) {
      asio::async_write(s, asio::buffer(bytes.data(), bytes.size()),
                        [&](beast::error_code e, size_t) { ec = e; });
    });
    return ec;
  }

  beast::error_code read_response(http::response_parser<http::string_body>& parser,
                                  std::chrono::milliseconds timeout) {
    beast::error_code ec;
    with_stream(timeout, [&](auto& s) {
      http::async_read(s, buffer_, parser, [&](beast::error_code e, size_t) { ec = e; });
    });
    return ec;
  }

  beast::error_code read_header(http::response_parser<http::string_body>& parser,
                                std::chrono::milliseconds timeout) {
    beast::error_code ec;
    with_stream(timeout, [&](auto& s) {
      http::async_read_header(s, buffer_, parser,
                              [&](beast::error_code e, size_t) { ec = e; });
    });
    return ec;
  }

  // Whatever arrives next (or what the buffer holds already).
  beast::error_code read_some(std::string& into, std::chrono::milliseconds timeout) {
    if (buffer_.size() > 0) {
      into += beast::buffers_to_string(buffer_.data());
      buffer_.consume(buffer_.size());
      return {};
    }
    beast::error_code ec;
    std::array<char, 4096> chunk{};
    size_t got = 0;
    with_stream(timeout, [&](auto& s) {
      s.async_read_some(asio::buffer(chunk), [&](beast::error_code e, size_t n) {
        ec = e;
        got = n;
      });
    });
    into.append(chunk.data(), got);
    return ec;
  }

private:
  void run() {
    io_.restart();
    io_.run();
  }

  uint16_t port_;
  asio::io_context io_;
  std::unique_ptr<ssl::context> ctx_;
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
};

std::string serialize(std::string_view method, std::string_view target,
                      std::string_view body, const header_list& headers,
                      std::string_view content_type, bool keep_alive) {
  std::string out;
  out.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  out.append("Host: 127.0.0.1\r\n");
  if (!keep_alive)
    out.append("Connection: close\r\n");
  for (auto& [name, value] : headers)
    out.append(name).append(": ").append(value).append("\r\n");
  if (!body.empty() || method == "POST" || method == "PUT") {
    if (!content_type.empty())
      out.append("Content-Type: ").append(content_type).append("\r\n");
    out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  out.append("\r\n").append(body);
  return out;
}

http_reply reply_of(const http::response<http::string_body>& res) {
  http_reply r;
  r.status = static_cast<int>(res.result_int());
  r.body = res.body();
  for (auto& f : res)
    r.headers.emplace_back(std::string{f.name_string()}, std::string{f.value()});
  return r;
}

} // namespace

std::string http_reply::header(std::string_view name) const {
  for (auto& [n, v] : headers)
    if (iequal(n, name))
      return v;
  return {};
}

// --- http_client ----------------------------------------------------------------

struct http_client::impl {
  impl(uint16_t port, client_tls tls, std::chrono::milliseconds timeout)
      : conn(port, tls)
      , timeout(timeout) {}
  link conn;
  std::chrono::milliseconds timeout;
  int opened = 0;
  std::string error;
};

http_client::http_client(uint16_t port, client_tls tls, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>(port, std::move(tls), timeout)) {}

http_client::~http_client() = default;

std::optional<http_reply> http_client::request(std::string_view method,
                                               std::string_view target,
                                               std::string_view body,
                                               const header_list& headers,
                                               std::string_view content_type) {
  auto& c = impl_->conn;
  impl_->error.clear();
  if (!c.is_open()) {
    if (!c.open(impl_->timeout, impl_->error))
      return std::nullopt;
    ++impl_->opened;
  }
  if (auto ec = c.write(serialize(method, target, body, headers, content_type, true),
                        impl_->timeout)) {
    impl_->error = "write: " + ec.message();
    c.close();
    return std::nullopt;
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  if (method == "HEAD")
    parser.skip(true);
  if (auto ec = c.read_response(parser, impl_->timeout)) {
    impl_->error = "read: " + ec.message();
    c.close();
    return std::nullopt;
  }
  auto res = parser.release();
  if (!res.keep_alive())
    c.close();
  return reply_of(res);
}

std::optional<http_reply> http_client::get(std::string_view target,
                                           const header_list& headers) {
  return request("GET", target, {}, headers);
}

std::optional<http_reply> http_client::post(std::string_view target,
                                            std::string_view body,
                                            const header_list& headers) {
  return request("POST", target, body, headers);
}

int http_client::connections_opened() const noexcept {
  return impl_->opened;
}

const std::string& http_client::last_error() const noexcept {
  return impl_->error;
}

// --- sse_reader -----------------------------------------------------------------

struct sse_reader::impl {
  impl(uint16_t port, client_tls tls)
      : conn(port, tls) {}
  link conn;
  std::string target;
  header_list headers;
  std::string pending; // bytes of events not yet returned
  bool ended = false;
};

sse_reader::sse_reader(uint16_t port, std::string target, const header_list& headers,
                       client_tls tls)
    : impl_(std::make_unique<impl>(port, std::move(tls))) {
  impl_->target = std::move(target);
  impl_->headers = headers;
}

sse_reader::~sse_reader() = default;

std::optional<http_reply> sse_reader::open(std::chrono::milliseconds timeout) {
  std::string error;
  auto& c = impl_->conn;
  if (!c.open(timeout, error))
    return std::nullopt;
  auto headers = impl_->headers;
  headers.emplace_back("Accept", "text/event-stream");
  if (c.write(serialize("GET", impl_->target, {}, headers, {}, true), timeout))
    return std::nullopt;
  http::response_parser<http::string_body> parser;
  if (c.read_header(parser, timeout))
    return std::nullopt;
  auto& res = parser.get();
  if (res[http::field::content_type].find("text/event-stream") ==
      beast::string_view::npos) {
    // An ordinary answer (an error): read its body too.
    if (c.read_response(parser, timeout))
      return std::nullopt;
    impl_->ended = true;
    return reply_of(parser.get());
  }
  return reply_of(res);
}

std::optional<sse_event> sse_reader::next(std::chrono::milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    auto end = impl_->pending.find("\n\n");
    if (end != std::string::npos) {
      auto block = impl_->pending.substr(0, end);
      impl_->pending.erase(0, end + 2);
      sse_event e;
      size_t from = 0;
      while (from <= block.size()) {
        auto nl = block.find('\n', from);
        auto line =
            block.substr(from, nl == std::string::npos ? std::string::npos : nl - from);
        if (line.rfind("event:", 0) == 0)
          e.event = line.substr(line.size() > 6 && line[6] == ' ' ? 7 : 6);
        else if (line.rfind("data:", 0) == 0)
          e.data += line.substr(line.size() > 5 && line[5] == ' ' ? 6 : 5);
        if (nl == std::string::npos)
          break;
        from = nl + 1;
      }
      if (e.event.empty() && e.data.empty())
        continue; // a comment or keep-alive
      return e;
    }
    if (impl_->ended)
      return std::nullopt;
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
    if (left.count() <= 0)
      return std::nullopt;
    if (auto ec = impl_->conn.read_some(impl_->pending, left)) {
      if (ec != beast::error::timeout)
        impl_->ended = true;
      else
        return std::nullopt;
    }
  }
}

bool sse_reader::ended() const noexcept {
  return impl_->ended;
}

void sse_reader::close() {
  impl_->conn.close();
  impl_->ended = true;
}

std::string json_quote(std::string_view text) {
  std::string out;
  troupe::detail::append_json_string(out, text);
  return out;
}

} // namespace troupe::test
