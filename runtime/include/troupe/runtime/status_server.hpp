#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace troupe {

/// The node's operational HTTP endpoint: `/metrics` (Prometheus text),
/// `/healthz` (alive), `/readyz` (ready to serve), `/cluster` (membership
/// and registry as JSON). Runs on its own thread; handlers must be thread-safe
/// and must not block on actors.
class status_server {
public:
  struct handlers {
    std::function<bool()> ready;
    std::function<std::string()> metrics_text;
    std::function<std::string()> cluster_json;
  };

  /// Binds at once (port 0 picks a free port); throws std::runtime_error
  /// when the address cannot be bound.
  status_server(const std::string& host, uint16_t port, handlers h);
  ~status_server();
  status_server(const status_server&) = delete;
  status_server& operator=(const status_server&) = delete;

  uint16_t port() const noexcept;
  /// Stops accepting and joins the thread; idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe
