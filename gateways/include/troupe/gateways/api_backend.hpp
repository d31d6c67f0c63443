#pragma once

// The transport-neutral half of both gateways: authenticates, authorizes and
// rate-limits a request, converts it to troupe's messages, and sends it to
// the saga manager (or an exposed service) from a bridge actor. gRPC
// completion-queue threads and HTTP I/O threads call it; nothing here blocks
// them, and no callback blocks a scheduler thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <caf/fwd.hpp>

#include <troupe/api/v1/sagas.pb.h>
#include <troupe/gateways/api_catalog.hpp>
#include <troupe/gateways/api_status.hpp>
#include <troupe/gateways/gateway_settings.hpp>
#include <troupe/gateways/security.hpp>

namespace troupe::gateways {

/// What a transport knows of one request besides its message.
struct request_info {
  std::string correlation_id;          ///< from `correlation_from`
  std::chrono::nanoseconds timeout{0}; ///< the client's deadline; 0 = none given
  std::string authorization;           ///< the raw Authorization header or metadata
  std::string peer;                    ///< the client's address, for the rate limit
};

/// The correlation id of a request: the trace id of a valid W3C
/// `traceparent`, else a sane `x-request-id` (printable, at most 128
/// characters), else a new one.
std::string correlation_from(std::string_view traceparent, std::string_view request_id);

/// Cancels what a request started when its client goes away; safe to call
/// from any thread, more than once, or after the request finished.
class cancel_handle {
public:
  void cancel() noexcept { cancelled_.store(true, std::memory_order_release); }
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }

private:
  std::atomic<bool> cancelled_{false};
};

class api_backend {
public:
  /// Callbacks run exactly once (a watch's `on_change` once per change),
  /// on a CAF worker or the calling thread; they must not block.
  template <class Reply>
  using reply_fn = std::function<void(const api_status&, Reply)>;

  api_backend(caf::actor_system& sys, std::shared_ptr<const api_catalog> catalog,
              gateway_settings settings);
  ~api_backend();
  api_backend(const api_backend&) = delete;
  api_backend& operator=(const api_backend&) = delete;

  /// Whether the node is ready to take new work (the gRPC health service and
  /// new starts follow it).
  bool ready() const;

  void start_saga(const request_info& info, const api::v1::StartSagaRequest& req,
                  reply_fn<api::v1::StartSagaResponse> done,
                  std::shared_ptr<cancel_handle> cancel = nullptr);
  void get_saga(const request_info& info, const api::v1::GetSagaRequest& req,
                reply_fn<api::v1::Saga> done,
                std::shared_ptr<cancel_handle> cancel = nullptr);
  void list_sagas(const request_info& info, const api::v1::ListSagasRequest& req,
                  reply_fn<api::v1::ListSagasResponse> done,
                  std::shared_ptr<cancel_handle> cancel = nullptr);
  void cancel_saga(const request_info& info, const api::v1::CancelSagaRequest& req,
                   reply_fn<api::v1::Saga> done,
                   std::shared_ptr<cancel_handle> cancel = nullptr);
  /// Sends the instance now and on every change to `on_change`, then calls
  /// `on_end` once: OK after an end state, or the error. Cancelling `cancel`
  /// ends the watch (on_end is then called with CANCELLED).
  void watch_saga(const request_info& info, const api::v1::WatchSagaRequest& req,
                  std::function<void(const api::v1::Saga&)> on_change,
                  std::function<void(const api_status&)> on_end,
                  std::shared_ptr<cancel_handle> cancel);
  void invoke(const request_info& info, const api::v1::InvokeRequest& req,
              reply_fn<api::v1::InvokeResponse> done,
              std::shared_ptr<cancel_handle> cancel = nullptr);

  const gateway_settings& settings() const noexcept;
  const api_catalog& catalog() const noexcept;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

/// JSON of a message in protobuf's JSON mapping (lowerCamelCase names).
std::string to_json(const google::protobuf::Message& msg);
/// Parses JSON into `msg`; INVALID_ARGUMENT naming the problem (syntax,
/// unknown field, wrong type) when it does not fit.
api_status from_json(std::string_view json, google::protobuf::Message& msg);

} // namespace troupe::gateways
