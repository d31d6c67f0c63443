#pragma once

// The HTTP/JSON face of troupe's public API (Boost.Beast, HTTP/1.1
// keep-alive, optional TLS): the routes of troupe.api.v1 as JSON in
// protobuf's JSON mapping, watches as server-sent events, every request
// through api_backend. Its I/O runs on threads of its own.

#include <cstdint>
#include <memory>

#include <troupe/gateways/api_backend.hpp>
#include <troupe/gateways/gateway_settings.hpp>

namespace troupe::gateways {

class http_gateway {
public:
  /// Binds `s.http_host:s.http_port` (port 0 picks one) and starts serving
  /// on `s.http_threads` threads; throws std::runtime_error naming the
  /// address when it cannot listen or the TLS files cannot be loaded.
  http_gateway(std::shared_ptr<api_backend> backend, const gateway_settings& s);
  ~http_gateway();
  http_gateway(const http_gateway&) = delete;
  http_gateway& operator=(const http_gateway&) = delete;

  uint16_t port() const;
  /// Stops accepting, closes every connection (cancelling what they wait
  /// for) and joins the threads, within a few seconds; idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::gateways
