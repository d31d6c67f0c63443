#pragma once

// Loopback clients for multi-process tests: a blocking HTTP GET with a
// timeout, the /cluster document of a node, and a raw TCP connection to send
// arbitrary bytes. Every call has a deadline; none throws on network errors.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::test {

struct http_response {
  int status = 0;
  std::string body;
};

/// GET `target` from 127.0.0.1:`port`; nullopt when the connection fails, the
/// answer is not HTTP or does not arrive within `timeout`.
std::optional<http_response>
http_get(uint16_t port, std::string_view target,
         std::chrono::milliseconds timeout = std::chrono::milliseconds{2000});

/// The status code of GET `target`, 0 when there is no HTTP answer.
int http_status(uint16_t port, std::string_view target,
                std::chrono::milliseconds timeout = std::chrono::milliseconds{2000});

/// One entry of a node's /cluster document.
struct cluster_member {
  std::string name;
  std::string address;
  std::string node_id;
  std::vector<std::string> services;
};

/// A node's /cluster document.
struct cluster_info {
  std::string node;
  std::string node_id;
  bool joined = false;
  std::vector<cluster_member> members; ///< includes the node itself

  const cluster_member* find(std::string_view name) const;
  /// Member names, sorted.
  std::vector<std::string> names() const;
};

std::optional<cluster_info> parse_cluster_json(const std::string& json);

/// GET /cluster from a node's status port, parsed.
std::optional<cluster_info>
get_cluster(uint16_t status_port,
            std::chrono::milliseconds timeout = std::chrono::milliseconds{2000});

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then
/// closed). Throws std::runtime_error when no socket can be bound.
uint16_t free_port();

/// A client TCP connection to 127.0.0.1 for sending arbitrary bytes.
class raw_tcp {
public:
  /// Connects within `timeout`; nullopt when refused or timed out.
  static std::optional<raw_tcp>
  connect(uint16_t port,
          std::chrono::milliseconds timeout = std::chrono::milliseconds{2000});

  raw_tcp(raw_tcp&& other) noexcept;
  raw_tcp& operator=(raw_tcp&& other) noexcept;
  raw_tcp(const raw_tcp&) = delete;
  raw_tcp& operator=(const raw_tcp&) = delete;
  ~raw_tcp();

  /// Sends all of `bytes` within `timeout`; false when the peer closed or
  /// reset the connection, or the deadline passed first.
  bool send(std::string_view bytes,
            std::chrono::milliseconds timeout = std::chrono::milliseconds{5000});

  /// What the peer sends until it closes the connection or `timeout` passes.
  struct reply {
    std::string data;
    bool closed = false; ///< the peer closed (FIN) or reset (RST) the connection
  };
  reply receive_until_closed(std::chrono::milliseconds timeout);

  /// Orderly close (FIN).
  void close();
  /// Abortive close (RST, SO_LINGER 0).
  void reset();

  bool is_open() const noexcept { return fd_ >= 0; }

private:
  explicit raw_tcp(int fd)
      : fd_(fd) {}
  int fd_ = -1;
};

} // namespace troupe::test
