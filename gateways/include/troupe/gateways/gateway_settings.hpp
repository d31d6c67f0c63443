#pragma once

// The gateways.* configuration: where the gRPC and HTTP APIs listen, their
// TLS, authentication, access rules, rate limit and input limits.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace troupe {
class config;
class config_schema;
} // namespace troupe

namespace troupe::gateways {

/// Certificate and key files; with `client_ca_file`, clients must present a
/// certificate it signed (mTLS).
struct tls_settings {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
  bool enabled() const noexcept { return !cert_file.empty(); }
  bool verifies_clients() const noexcept { return !client_ca_file.empty(); }
};

/// JWT bearer authentication (HS256 with a shared secret, RS256 with a public key).
struct auth_settings {
  bool enabled = false;
  std::string issuer;   ///< required `iss`
  std::string audience; ///< required in `aud`
  std::string hs256_secret;
  std::string rs256_public_key_file; ///< PEM
  std::string roles_claim = "roles"; ///< array of strings (or one space-separated string)
  std::chrono::seconds leeway{30};   ///< clock skew allowed on exp and nbf
};

/// Who may do what, by role from the token. An empty list allows every
/// authenticated caller; the rules apply only when authentication is on.
struct access_rules {
  /// "saga_type:role" or "*:role" entries.
  std::vector<std::string> start;
  std::vector<std::string> read; ///< get, list, watch
  std::vector<std::string> cancel;
  /// "service/method:role" or "*:role" entries.
  std::vector<std::string> invoke;
};

/// What one request or connection may use.
struct input_limits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_message_bytes = 4 * 1024 * 1024; ///< gRPC messages
  uint32_t max_connections = 1024;
  uint32_t max_concurrent_streams = 256; ///< per gRPC connection; SSE watches per node
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::nanoseconds read_timeout = std::chrono::seconds(10); ///< a whole request
};

struct gateway_settings {
  bool grpc_enabled = true;
  std::string grpc_host = "127.0.0.1";
  uint16_t grpc_port = 7070; ///< 0 picks a free port
  uint32_t grpc_threads = 1; ///< completion-queue threads
  bool reflection = true;
  bool http_enabled = true;
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 8080;
  uint32_t http_threads = 1;
  tls_settings tls;
  auth_settings auth;
  access_rules access;
  double rate_per_client = 0; ///< requests per second per client; 0 = no limit
  uint32_t rate_burst = 50;
  std::chrono::nanoseconds default_timeout = std::chrono::seconds(10);
  /// How long a saga read in an end state is answered from the gateway's
  /// memory (an ended saga no longer changes); 0 = always ask its owner.
  std::chrono::nanoseconds ended_cache_ttl = std::chrono::seconds(2);
  input_limits limits;
  /// Services and methods callable by Invoke, "service/method" or "service/*";
  /// the application must also expose them in the api_catalog.
  std::vector<std::string> invocable;
  /// Topics whose messages start sagas (StartSagaRequest), consumed as
  /// `saga_command_group`; empty: none.
  std::vector<std::string> saga_command_topics;
  std::string saga_command_group = "troupe-saga-commands";
  std::string node_name;
};

/// Declares the gateways.* keys.
void declare_gateway_config(config_schema& schema);
/// Reads the gateways.* keys; throws config_error naming a bad key.
gateway_settings gateway_settings_from(const config& cfg);

} // namespace troupe::gateways
