#include <troupe/gateways/gateway_settings.hpp>

#include <algorithm>

#include <troupe/runtime/config.hpp>

namespace troupe::gateways {

void declare_gateway_config(config_schema& s) {
  using namespace std::chrono_literals;
  if (s.find("gateways.grpc.port") != nullptr)
    return;
  s.declare("gateways.grpc.enabled", value_kind::boolean)
      .default_value("true")
      .describe("Serve the API over gRPC (troupe.api.v1, grpc.health.v1).");
  s.declare("gateways.grpc.host", value_kind::string)
      .default_value("127.0.0.1")
      .describe("Address the gRPC gateway listens on.");
  s.declare("gateways.grpc.port", value_kind::integer)
      .default_value("7070")
      .min(0)
      .max(65535)
      .describe("Port of the gRPC gateway; 0 picks a free port.");
  s.declare("gateways.grpc.threads", value_kind::integer)
      .default_value("1")
      .min(1)
      .max(64)
      .describe("Completion-queue threads of the gRPC gateway.");
  s.declare("gateways.grpc.reflection", value_kind::boolean)
      .default_value("true")
      .describe("Offer gRPC server reflection (for grpcurl and similar tools).");
  s.declare("gateways.http.enabled", value_kind::boolean)
      .default_value("true")
      .describe("Serve the API as JSON over HTTP/1.1.");
  s.declare("gateways.http.host", value_kind::string)
      .default_value("127.0.0.1")
      .describe("Address the HTTP gateway listens on.");
  s.declare("gateways.http.port", value_kind::integer)
      .default_value("8080")
      .min(0)
      .max(65535)
      .describe("Port of the HTTP gateway; 0 picks a free port.");
  s.declare("gateways.http.threads", value_kind::integer)
      .default_value("1")
      .min(1)
      .max(64)
      .describe("I/O threads of the HTTP gateway.");
  s.declare("gateways.tls.cert_file", value_kind::string)
      .describe("PEM certificate chain of both gateways; empty: plain TCP.");
  s.declare("gateways.tls.key_file", value_kind::string)
      .describe("PEM private key of gateways.tls.cert_file.");
  s.declare("gateways.tls.client_ca_file", value_kind::string)
      .describe("PEM CA bundle; when set, clients must present a certificate it signed "
                "(mutual TLS).");
  s.declare("gateways.auth.enabled", value_kind::boolean)
      .default_value("false")
      .describe("Require a JWT bearer token on every API request.");
  s.declare("gateways.auth.issuer", value_kind::string)
      .describe("Required iss claim; empty: any issuer.");
  s.declare("gateways.auth.audience", value_kind::string)
      .describe("Required entry of the aud claim; empty: any audience.");
  s.declare("gateways.auth.hs256_secret", value_kind::string)
      .secret()
      .describe("Shared secret of HS256 tokens (use ${file:...} or ${env:...}); never "
                "printed.");
  s.declare("gateways.auth.rs256_public_key_file", value_kind::string)
      .describe("PEM public key of RS256 tokens.");
  s.declare("gateways.auth.roles_claim", value_kind::string)
      .default_value("roles")
      .describe(
          "Claim holding the caller's roles (an array, or a space-separated string).");
  s.declare("gateways.auth.leeway", value_kind::duration)
      .default_value("30s")
      .min(0s)
      .max(1h)
      .describe("Clock skew allowed when checking exp and nbf.");
  s.declare("gateways.access.start", value_kind::string_list)
      .default_value("[]")
      .describe("Who may start sagas: \"saga_type:role\" or \"*:role\"; empty: every "
                "authenticated caller.");
  s.declare("gateways.access.read", value_kind::string_list)
      .default_value("[]")
      .describe("Roles that may get, list and watch sagas; empty: every authenticated "
                "caller.");
  s.declare("gateways.access.cancel", value_kind::string_list)
      .default_value("[]")
      .describe("Roles that may cancel sagas; empty: every authenticated caller.");
  s.declare("gateways.access.invoke", value_kind::string_list)
      .default_value("[]")
      .describe("Who may invoke services: \"service/method:role\" or \"*:role\"; empty: "
                "every authenticated caller.");
  s.declare("gateways.invocable", value_kind::string_list)
      .default_value("[]")
      .describe("Service requests callable from outside, \"service/method\" or "
                "\"service/*\"; each must also be exposed by the application.");
  s.declare("gateways.saga_commands.topics", value_kind::string_list)
      .default_value("[]")
      .describe("Event-bus topics whose messages (StartSagaRequest, JSON or protobuf by "
                "content type) start sagas, each once however often it is delivered; "
                "the broker is the one events.routes names. Needs the events service.");
  s.declare("gateways.saga_commands.group", value_kind::string)
      .default_value("troupe-saga-commands")
      .describe("Consumer group of the saga command topics; nodes in one group share "
                "the commands.");
  s.declare("gateways.rate_limit.per_client", value_kind::floating)
      .default_value("0")
      .min(0)
      .max(1e9)
      .describe("Requests per second one client (token subject, else address) may make; "
                "0: no limit.");
  s.declare("gateways.rate_limit.burst", value_kind::integer)
      .default_value("50")
      .min(1)
      .max(1000000)
      .describe("Requests a client may make at once after a quiet period.");
  s.declare("gateways.default_timeout", value_kind::duration)
      .default_value("10s")
      .min(1ms)
      .max(1h)
      .describe("Timeout of a request whose client sets no deadline.");
  s.declare("gateways.ended_cache_ttl", value_kind::duration)
      .default_value("2s")
      .min(0ms)
      .max(1h)
      .describe("How long a saga read in an end state is answered from the gateway's "
                "memory, since it no longer changes (a removal by sagas.retention shows "
                "after at most this long); 0: every read asks the saga's owner.");
  s.declare("gateways.limits.max_header_bytes", value_kind::integer)
      .default_value("16384")
      .min(1024)
      .max(1048576)
      .describe("Largest header block of a request (HTTP headers, gRPC metadata).");
  s.declare("gateways.limits.max_body_bytes", value_kind::integer)
      .default_value("1048576")
      .min(1024)
      .max(268435456)
      .describe("Largest HTTP request body.");
  s.declare("gateways.limits.max_message_bytes", value_kind::integer)
      .default_value("4194304")
      .min(1024)
      .max(268435456)
      .describe("Largest gRPC message, received or sent.");
  s.declare("gateways.limits.max_connections", value_kind::integer)
      .default_value("1024")
      .min(1)
      .max(1000000)
      .describe("Open HTTP connections beyond which new ones are refused.");
  s.declare("gateways.limits.max_concurrent_streams", value_kind::integer)
      .default_value("256")
      .min(1)
      .max(100000)
      .describe("Concurrent streams of one gRPC connection, and open watches over HTTP.");
  s.declare("gateways.limits.idle_timeout", value_kind::duration)
      .default_value("60s")
      .min(10ms)
      .max(24h)
      .describe("An idle connection is closed after this long.");
  s.declare("gateways.limits.read_timeout", value_kind::duration)
      .default_value("10s")
      .min(10ms)
      .max(1h)
      .describe("Time a client has to send one whole request (and a TLS handshake).");
}

gateway_settings gateway_settings_from(const config& cfg) {
  gateway_settings s;
  s.node_name = cfg.get_string("node.name");
  s.grpc_enabled = cfg.get_bool("gateways.grpc.enabled");
  s.grpc_host = cfg.get_string("gateways.grpc.host");
  s.grpc_port = static_cast<uint16_t>(cfg.get_int("gateways.grpc.port"));
  s.grpc_threads = static_cast<uint32_t>(cfg.get_int("gateways.grpc.threads"));
  s.reflection = cfg.get_bool("gateways.grpc.reflection");
  s.http_enabled = cfg.get_bool("gateways.http.enabled");
  s.http_host = cfg.get_string("gateways.http.host");
  s.http_port = static_cast<uint16_t>(cfg.get_int("gateways.http.port"));
  s.http_threads = static_cast<uint32_t>(cfg.get_int("gateways.http.threads"));
  s.tls.cert_file = cfg.get_string_or_empty("gateways.tls.cert_file");
  s.tls.key_file = cfg.get_string_or_empty("gateways.tls.key_file");
  s.tls.client_ca_file = cfg.get_string_or_empty("gateways.tls.client_ca_file");
  if (s.tls.enabled() && s.tls.key_file.empty())
    throw config_error("gateways.tls.key_file",
                       "gateways.tls.key_file is required with gateways.tls.cert_file");
  if (!s.tls.enabled() && !s.tls.client_ca_file.empty())
    throw config_error("gateways.tls.client_ca_file",
                       "gateways.tls.client_ca_file needs gateways.tls.cert_file");
  s.auth.enabled = cfg.get_bool("gateways.auth.enabled");
  s.auth.issuer = cfg.get_string_or_empty("gateways.auth.issuer");
  s.auth.audience = cfg.get_string_or_empty("gateways.auth.audience");
  s.auth.hs256_secret = cfg.get_string_or_empty("gateways.auth.hs256_secret");
  s.auth.rs256_public_key_file =
      cfg.get_string_or_empty("gateways.auth.rs256_public_key_file");
  s.auth.roles_claim = cfg.get_string("gateways.auth.roles_claim");
  s.auth.leeway = std::chrono::duration_cast<std::chrono::seconds>(
      cfg.get_duration("gateways.auth.leeway"));
  if (s.auth.enabled && s.auth.hs256_secret.empty() &&
      s.auth.rs256_public_key_file.empty())
    throw config_error("gateways.auth.enabled",
                       "gateways.auth.enabled needs gateways.auth.hs256_secret or "
                       "gateways.auth.rs256_public_key_file");
  s.access.start = cfg.get_list("gateways.access.start");
  s.access.read = cfg.get_list("gateways.access.read");
  s.access.cancel = cfg.get_list("gateways.access.cancel");
  s.access.invoke = cfg.get_list("gateways.access.invoke");
  s.invocable = cfg.get_list("gateways.invocable");
  s.saga_command_topics = cfg.get_list("gateways.saga_commands.topics");
  s.saga_command_group = cfg.get_string("gateways.saga_commands.group");
  if (!s.saga_command_topics.empty()) {
    auto enabled = cfg.get_list("services.enabled");
    if (std::find(enabled.begin(), enabled.end(), "events") == enabled.end())
      throw config_error("gateways.saga_commands.topics",
                         "gateways.saga_commands.topics needs the event bus: add events "
                         "to services.enabled");
    for (auto& t : s.saga_command_topics)
      if (t.empty() || t.find_first_of("*> \t") != std::string::npos)
        throw config_error("gateways.saga_commands.topics",
                           "'" + t + "' is not a topic name (no wildcards or spaces)");
    if (s.saga_command_group.empty())
      throw config_error("gateways.saga_commands.group",
                         "gateways.saga_commands.group must not be empty");
  }
  s.rate_per_client = cfg.get_double("gateways.rate_limit.per_client");
  s.rate_burst = static_cast<uint32_t>(cfg.get_int("gateways.rate_limit.burst"));
  s.default_timeout = cfg.get_duration("gateways.default_timeout");
  s.ended_cache_ttl = cfg.get_duration("gateways.ended_cache_ttl");
  auto& l = s.limits;
  l.max_header_bytes =
      static_cast<std::size_t>(cfg.get_int("gateways.limits.max_header_bytes"));
  l.max_body_bytes =
      static_cast<std::size_t>(cfg.get_int("gateways.limits.max_body_bytes"));
  l.max_message_bytes =
      static_cast<std::size_t>(cfg.get_int("gateways.limits.max_message_bytes"));
  l.max_connections =
      static_cast<uint32_t>(cfg.get_int("gateways.limits.max_connections"));
  l.max_concurrent_streams =
      static_cast<uint32_t>(cfg.get_int("gateways.limits.max_concurrent_streams"));
  l.idle_timeout = cfg.get_duration("gateways.limits.idle_timeout");
  l.read_timeout = cfg.get_duration("gateways.limits.read_timeout");
  return s;
}

} // namespace troupe::gateways
