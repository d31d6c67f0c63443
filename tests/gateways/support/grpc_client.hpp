#pragma once

// gRPC clients of a node's gateway for tests: channels to 127.0.0.1 (plain
// or TLS, with a client certificate for mTLS), contexts with a deadline,
// health checks, raw calls with bytes of the test's choosing, and server
// reflection's service list.
//
//   auto ch = troupe::test::loopback_channel(g.grpc_port);
//   auto sagas = troupe::api::v1::Sagas::NewStub(ch);
//   auto ctx = troupe::test::client_context(5s);
//   sagas->GetSaga(ctx.get(), req, &reply);
//
// Every call here has a deadline; none throws on network errors.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace troupe::test {

/// PEM files for a TLS channel; `cert`/`key` empty: no client certificate.
struct grpc_tls_files {
  std::filesystem::path ca;
  std::filesystem::path cert;
  std::filesystem::path key;
};

/// A channel to 127.0.0.1:`port`; with `tls`, the server's certificate must
/// be valid for "localhost" and signed by `tls->ca`. Each channel has
/// connections of its own (never shared with another channel).
std::shared_ptr<grpc::Channel>
loopback_channel(uint16_t port, const std::optional<grpc_tls_files>& tls = {});

/// A context whose deadline is `timeout` from now, with `metadata` added.
std::unique_ptr<grpc::ClientContext>
client_context(std::chrono::milliseconds timeout = std::chrono::seconds{10},
               const std::vector<std::pair<std::string, std::string>>& metadata = {});

/// The first value of `key` in server metadata, or nullopt.
std::optional<std::string>
metadata_value(const std::multimap<grpc::string_ref, grpc::string_ref>& md,
               const std::string& key);

/// grpc.health.v1 Check of `service` ("" = the server overall): the serving
/// status's number (1 = SERVING, 2 = NOT_SERVING), or the call's error.
struct health_answer {
  grpc::Status status;
  int serving_status = 0;
};
health_answer check_health(const std::shared_ptr<grpc::Channel>& channel,
                           const std::string& service = {},
                           std::chrono::milliseconds timeout = std::chrono::seconds{5});

/// A unary call of `method` ("/package.Service/Method") with `request` as
/// the message's bytes, whatever they are; the status and the reply's bytes.
struct raw_reply {
  grpc::Status status;
  std::string bytes;
};
raw_reply raw_unary_call(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& method, const std::string& request,
                         std::chrono::milliseconds timeout = std::chrono::seconds{10});

/// The services server reflection lists (grpc.reflection.v1alpha), or the
/// call's error.
struct reflection_answer {
  grpc::Status status;
  std::vector<std::string> services;
};
reflection_answer
list_services_by_reflection(const std::shared_ptr<grpc::Channel>& channel,
                            std::chrono::milliseconds timeout = std::chrono::seconds{10});

} // namespace troupe::test
