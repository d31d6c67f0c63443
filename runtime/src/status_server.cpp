#include <troupe/runtime/status_server.hpp>

#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <troupe/runtime/detail/accept_loop.hpp>
#include <troupe/runtime/detail/tcp_listen.hpp>
#include <troupe/runtime/readiness.hpp>

namespace troupe {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// Requests to a status endpoint have no body; anything large is hostile.
constexpr size_t max_request_bytes = 16 * 1024;

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket socket, const status_server::handlers& h)
      : stream_(std::move(socket))
      , handlers_(h) {}

  void start() { read(); }

private:
  void read() {
    parser_.emplace();
    parser_->header_limit(max_request_bytes);
    parser_->body_limit(max_request_bytes);
    stream_.expires_after(std::chrono::seconds(10));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) {
      close();
      return;
    }
    if (ec) {
      respond(http::status::bad_request, "text/plain", "bad request\n", false);
      return;
    }
    auto req = parser_->release();
    bool keep_alive = req.keep_alive();
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      respond(http::status::method_not_allowed, "text/plain", "GET only\n", keep_alive);
      return;
    }
    std::string_view target{req.target().data(), req.target().size()};
    if (auto q = target.find('?'); q != std::string_view::npos)
      target = target.substr(0, q);
    if (target == "/healthz") {
      respond(http::status::ok, "text/plain", "ok\n", keep_alive);
    } else if (target == "/readyz") {
      bool ready = handlers_.ready && handlers_.ready();
      std::string body = ready ? "ready\n" : "not ready\n";
      for (auto& [subject, state] : readiness_details())
        body += subject + ": " + state + "\n";
      respond(ready ? http::status::ok : http::status::service_unavailable, "text/plain",
              std::move(body), keep_alive);
    } else if (target == "/metrics" && handlers_.metrics_text) {
      respond(http::status::ok, "text/plain; version=0.0.4", handlers_.metrics_text(),
              keep_alive);
    } else if (target == "/cluster" && handlers_.cluster_json) {
      respond(http::status::ok, "application/json", handlers_.cluster_json(), keep_alive);
    } else {
      respond(http::status::not_found, "text/plain", "not found\n", keep_alive);
    }
  }

  void respond(http::status status, const char* type, std::string body, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::content_type, type);
    res->set(http::field::server, "troupe");
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    http::async_write(
        stream_, *res,
        [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
          if (!ec && keep_alive)
            self->read();
          else
            self->close();
        });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const status_server::handlers& handlers_;
};

} // namespace

struct status_server::impl {
  impl(const std::string& host, uint16_t port, handlers h)
      : handlers_(std::move(h))
      , acceptor_(io_) {
    port_ = detail::listen_on(acceptor_, host, port, "status server");
    accept_loop_.emplace(acceptor_, "status server", [this](tcp::socket socket) {
      std::make_shared<session>(std::move(socket), handlers_)->start();
    });
    accept_loop_->start();
    thread_ = std::thread([this] { io_.run(); });
  }

  void stop() {
    if (!thread_.joinable())
      return;
    asio::post(io_, [this] {
      accept_loop_->close();
      io_.stop();
    });
    thread_.join();
  }

  handlers handlers_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  std::optional<detail::accept_loop> accept_loop_;
  uint16_t port_ = 0;
  std::thread thread_;
};

status_server::status_server(const std::string& host, uint16_t port, handlers h)
    : impl_(std::make_unique<impl>(host, port, std::move(h))) {}

status_server::~status_server() {
  stop();
}

uint16_t status_server::port() const noexcept {
  return impl_->port_;
}

void status_server::stop() {
  impl_->stop();
}

} // namespace troupe
