#pragma once

// The gRPC face of the API: an asynchronous server for troupe.api.v1.Sagas
// and troupe.api.v1.Services (plus grpc.health.v1 and server reflection),
// with completion queues on threads of its own. Every request goes through
// api_backend; nothing here blocks a CAF scheduler thread.

#include <cstdint>
#include <memory>

#include <troupe/gateways/api_backend.hpp>
#include <troupe/gateways/gateway_settings.hpp>

namespace troupe::gateways {

class grpc_gateway {
public:
  /// Binds and starts serving; throws std::runtime_error naming host:port
  /// when it cannot listen, or the gateways.tls.* key of an unreadable file.
  grpc_gateway(std::shared_ptr<api_backend> backend, const gateway_settings& s);
  ~grpc_gateway();
  grpc_gateway(const grpc_gateway&) = delete;
  grpc_gateway& operator=(const grpc_gateway&) = delete;

  /// The port it listens on (the chosen one when the setting was 0).
  uint16_t port() const;

  /// What grpc.health.v1 reports, overall and for troupe.api.v1.Sagas.
  void set_serving(bool serving);

  /// Stops accepting, ends watches, gives calls in flight a few seconds and
  /// cancels the rest, then joins the threads. Idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::gateways
