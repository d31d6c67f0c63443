#include "support/http_get.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

// property_tree pulls in boost/bind.hpp, which warns about its global placeholders.
#define BOOST_BIND_GLOBAL_PLACEHOLDERS
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>

namespace troupe::test {

namespace {

using steady = std::chrono::steady_clock;
namespace http = boost::beast::http;

int remaining_ms(steady::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until `fd` is ready for `events`; false on deadline.
bool wait_ready(int fd, short events, steady::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0)
      return true;
    if (n == 0)
      return false;
    if (errno != EINTR)
      return false;
  }
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// A connected non-blocking socket, or -1.
int connect_loopback(uint16_t port, steady::time_point deadline) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  auto addr = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
    return fd;
  if (errno != EINPROGRESS || !wait_ready(fd, POLLOUT, deadline)) {
    ::close(fd);
    return -1;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, std::string_view bytes, steady::time_point deadline) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd, POLLOUT, deadline))
        return false;
      continue;
    }
    return false;
  }
  return true;
}

// One read: > 0 bytes, 0 on close/reset, -1 on deadline.
ssize_t read_some(int fd, char* buf, size_t size, steady::time_point deadline) {
  for (;;) {
    ssize_t n = ::recv(fd, buf, size, 0);
    if (n > 0)
      return n;
    if (n == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(fd, POLLIN, deadline))
        return -1;
      continue;
    }
    return 0; // ECONNRESET and friends: the peer is gone
  }
}

} // namespace

std::optional<http_response> http_get(uint16_t port, std::string_view target,
                                      std::chrono::milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  int fd = connect_loopback(port, deadline);
  if (fd < 0)
    return std::nullopt;
  std::string request = "GET ";
  request += target;
  request += " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
             "\r\nConnection: close\r\n\r\n";
  if (!send_all(fd, request, deadline)) {
    ::close(fd);
    return std::nullopt;
  }
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  parser.body_limit(64 * 1024 * 1024);
  std::string pending;
  char buf[16384];
  bool ok = false;
  for (;;) {
    ssize_t n = read_some(fd, buf, sizeof buf, deadline);
    if (n < 0)
      break; // deadline
    boost::beast::error_code ec;
    if (n == 0) {
      if (!parser.is_done()) {
        if (!pending.empty())
          parser.put(boost::asio::buffer(pending), ec);
        if (!ec || ec == http::error::need_more) {
          ec = {};
          parser.put_eof(ec);
        }
      }
      ok = !ec && parser.is_done();
      break;
    }
    pending.append(buf, static_cast<size_t>(n));
    while (!pending.empty() && !parser.is_done()) {
      auto used = parser.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec || used == 0)
        break;
    }
    if (ec)
      break;
    if (parser.is_done()) {
      ok = true;
      break;
    }
  }
  ::close(fd);
  if (!ok)
    return std::nullopt;
  auto res = parser.release();
  return http_response{static_cast<int>(res.result_int()), std::move(res.body())};
}

int http_status(uint16_t port, std::string_view target,
                std::chrono::milliseconds timeout) {
  auto res = http_get(port, target, timeout);
  return res ? res->status : 0;
}

const cluster_member* cluster_info::find(std::string_view name) const {
  for (auto& m : members)
    if (m.name == name)
      return &m;
  return nullptr;
}

std::vector<std::string> cluster_info::names() const {
  std::vector<std::string> result;
  for (auto& m : members)
    result.push_back(m.name);
  std::sort(result.begin(), result.end());
  return result;
}

std::optional<cluster_info> parse_cluster_json(const std::string& json) {
  namespace pt = boost::property_tree;
  pt::ptree doc;
  try {
    std::istringstream in{json};
    pt::read_json(in, doc);
    cluster_info info;
    info.node = doc.get<std::string>("node");
    info.node_id = doc.get<std::string>("node_id");
    info.joined = doc.get<std::string>("joined") == "true";
    for (auto& [key, m] : doc.get_child("members")) {
      cluster_member member;
      member.name = m.get<std::string>("name");
      member.address = m.get<std::string>("address");
      member.node_id = m.get<std::string>("node_id");
      if (auto services = m.get_child_optional("services"))
        for (auto& [k, svc] : *services)
          member.services.push_back(svc.data());
      info.members.push_back(std::move(member));
    }
    return info;
  } catch (const pt::ptree_error&) {
    return std::nullopt;
  }
}

std::optional<cluster_info> get_cluster(uint16_t status_port,
                                        std::chrono::milliseconds timeout) {
  auto res = http_get(status_port, "/cluster", timeout);
  if (!res || res->status != 200)
    return std::nullopt;
  return parse_cluster_json(res->body);
}

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error(std::string{"socket: "} + std::strerror(errno));
  auto addr = loopback(0);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    auto err = errno;
    ::close(fd);
    throw std::runtime_error(std::string{"bind: "} + std::strerror(err));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::optional<raw_tcp> raw_tcp::connect(uint16_t port,
                                        std::chrono::milliseconds timeout) {
  int fd = connect_loopback(port, steady::now() + timeout);
  if (fd < 0)
    return std::nullopt;
  return raw_tcp{fd};
}

raw_tcp::raw_tcp(raw_tcp&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

raw_tcp& raw_tcp::operator=(raw_tcp&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

raw_tcp::~raw_tcp() {
  close();
}

bool raw_tcp::send(std::string_view bytes, std::chrono::milliseconds timeout) {
  return fd_ >= 0 && send_all(fd_, bytes, steady::now() + timeout);
}

raw_tcp::reply raw_tcp::receive_until_closed(std::chrono::milliseconds timeout) {
  reply result;
  if (fd_ < 0) {
    result.closed = true;
    return result;
  }
  auto deadline = steady::now() + timeout;
  char buf[16384];
  for (;;) {
    ssize_t n = read_some(fd_, buf, sizeof buf, deadline);
    if (n < 0)
      return result;
    if (n == 0) {
      result.closed = true;
      return result;
    }
    result.data.append(buf, static_cast<size_t>(n));
  }
}

void raw_tcp::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void raw_tcp::reset() {
  if (fd_ >= 0) {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }
}

} // namespace troupe::test
