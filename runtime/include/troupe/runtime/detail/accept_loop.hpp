#pragma once

// The accept loop of every listening socket troupe owns (cluster gate,
// status endpoint, HTTP gateway). Asio shows through: include it from .cpp
// files only.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <string>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

namespace troupe::detail {

/// True for accept errors that mean "out of descriptors or memory": the
/// connection stays in the backlog, so accepting again at once would spin.
inline bool is_resource_shortage(const boost::system::error_code& ec) {
  namespace error = boost::asio::error;
  return ec == error::no_descriptors || ec == error::no_buffer_space ||
         ec == error::no_memory || ec.value() == ENFILE;
}

/// Accepts connections on an open acceptor and hands each socket to
/// `on_socket` (bound to the acceptor's executor, or to the executor that
/// `socket_executor` makes for it, e.g. a strand per connection). On a resource shortage
/// it waits, doubling from 10 ms up to 1 s, instead of spinning; the wait resets after
/// the next accepted connection. Stops when the acceptor is closed.
class accept_loop {
public:
  using tcp = boost::asio::ip::tcp;
  using executor = boost::asio::any_io_executor;
  using socket_handler = std::function<void(tcp::socket)>;

  accept_loop(tcp::acceptor& acceptor, std::string what, socket_handler on_socket)
      : acceptor_(acceptor)
      , timer_(acceptor.get_executor())
      , what_(std::move(what))
      , on_socket_(std::move(on_socket)) {}

  accept_loop(tcp::acceptor& acceptor, std::string what,
              std::function<executor()> socket_executor, socket_handler on_socket)
      : accept_loop(acceptor, std::move(what), std::move(on_socket)) {
    socket_executor_ = std::move(socket_executor);
  }

  accept_loop(const accept_loop&) = delete;
  accept_loop& operator=(const accept_loop&) = delete;

  void start() {
    if (socket_executor_)
      acceptor_.async_accept(socket_executor_(), [this](auto ec, tcp::socket s) {
        on_accept(ec, std::move(s));
      });
    else
      acceptor_.async_accept(
          [this](auto ec, tcp::socket s) { on_accept(ec, std::move(s)); });
  }

  /// Closes the acceptor and cancels a pending backoff; call on its executor.
  void close() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    timer_.cancel();
  }

  /// Times a resource shortage made the loop wait, for tests and metrics.
  uint64_t backoffs() const noexcept { return backoffs_; }

private:
  void on_accept(const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted || !acceptor_.is_open())
      return;
    if (ec && is_resource_shortage(ec)) {
      ++backoffs_;
      spdlog::warn("{}: cannot accept a connection ({}); retrying in {} ms", what_,
                   ec.message(), backoff_.count());
      timer_.expires_after(backoff_);
      backoff_ = std::min<std::chrono::milliseconds>(backoff_ * 2, max_backoff);
      timer_.async_wait([this](const boost::system::error_code& wait_ec) {
        if (!wait_ec && acceptor_.is_open())
          start();
      });
      return;
    }
    if (!ec) {
      backoff_ = min_backoff;
      on_socket_(std::move(socket));
    }
    start();
  }

  static constexpr std::chrono::milliseconds min_backoff{10};
  static constexpr std::chrono::milliseconds max_backoff{1000};

  tcp::acceptor& acceptor_;
  boost::asio::steady_timer timer_;
  std::string what_;
  socket_handler on_socket_;
  std::function<executor()> socket_executor_;
  std::chrono::milliseconds backoff_ = min_backoff;
  uint64_t backoffs_ = 0;
};

} // namespace troupe::detail
