#pragma once

// The listening sockets of the status endpoint, the cluster gate and the
// HTTP gateway. Asio shows through: include it from .cpp files only.

#include <cstdint>
#include <stdexcept>
#include <string>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio/ip/tcp.hpp>

namespace troupe::detail {

/// Opens, binds (port 0 picks a free one) and listens; throws
/// std::runtime_error naming `what` and the address. Returns the bound port.
inline uint16_t listen_on(boost::asio::ip::tcp::acceptor& acceptor,
                          const std::string& host, uint16_t port,
                          const std::string& what) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  asio::ip::tcp::endpoint ep{asio::ip::make_address(host, ec), port};
  if (ec)
    throw std::runtime_error(what + ": bad address '" + host + "'");
  acceptor.open(ep.protocol(), ec);
  if (!ec)
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    acceptor.bind(ep, ec);
  if (!ec)
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error(what + ": cannot listen on " + host + ":" +
                             std::to_string(port) + ": " + ec.message());
  return acceptor.local_endpoint().port();
}

} // namespace troupe::detail
