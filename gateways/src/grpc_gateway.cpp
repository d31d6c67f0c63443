#include "grpc_gateway.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <deque>
#include <fstream>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <troupe/api/v1/sagas.grpc.pb.h>
#include <troupe/runtime/detail/pem_material.hpp>

namespace troupe::gateways {

namespace {

namespace v1 = api::v1;
using namespace std::chrono_literals;

// Calls in flight at stop get this long to finish before they are cancelled.
constexpr auto shutdown_grace = 3s;
// Calls each completion queue keeps requested per method: an arriving call
// finds one waiting while the thread is busy with the previous.
constexpr int requests_per_method = 4;
// Changes a watch may queue for a client that reads slower than they come.
constexpr size_t max_queued_changes = 256;

class call_base;

enum class event : uint8_t { request, done, write, finish };

// A completion-queue tag. While an operation is pending its tag holds the
// call alive; the poller takes that reference when the tag comes back, so a
// call dies exactly when nothing is pending on it any more.
struct tag {
  event kind;
  std::shared_ptr<call_base> keep;
};

// Everything calls share with the server. gRPC's objects live here, not in
// grpc_gateway, because a backend callback may hold the last call (and so
// this) a moment after stop(); member order destroys the server first, then
// the services, then the queues, as gRPC requires.
struct server_shared {
  std::shared_ptr<api_backend> backend;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  v1::Sagas::AsyncService sagas;
  v1::Services::AsyncService services;
  std::unique_ptr<grpc::Server> server;

  // Whether operations may still be started: false once the completion
  // queues are shut down, when starting one would abort the process.
  std::shared_mutex gate;
  bool open = true;
  std::atomic<bool> stopping{false};

  // The running watches, to end them at stop instead of letting each hold
  // the shutdown for its whole grace period.
  std::mutex watches_mtx;
  std::unordered_map<uint64_t, std::weak_ptr<call_base>> watches;
  uint64_t next_watch_id = 0;
};

class call_base : public std::enable_shared_from_this<call_base> {
public:
  virtual ~call_base() = default;
  virtual void on_event(event e, bool ok) = 0;
  // Ends a watch because the server stops; nothing for unary calls.
  virtual void end_for_shutdown() {}

protected:
  void* arm(tag& t) {
    t.keep = shared_from_this();
    return &t;
  }
};

// --- requests ------------------------------------------------------------------

std::string metadata(const grpc::ServerContext& ctx, std::string_view key) {
  const auto& md = ctx.client_metadata();
  auto it = md.find(grpc::string_ref{key.data(), key.size()});
  if (it == md.end())
    return {};
  return std::string{it->second.data(), it->second.size()};
}

// The request's info; `expired` when the client's deadline has already
// passed (its client has given up: nothing should start for it).
request_info info_of(const grpc::ServerContext& ctx, bool& expired) {
  request_info info;
  info.correlation_id =
      correlation_from(metadata(ctx, "traceparent"), metadata(ctx, "x-request-id"));
  info.authorization = metadata(ctx, "authorization");
  info.peer = ctx.peer();
  expired = false;
  auto deadline = ctx.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    auto left = deadline - std::chrono::system_clock::now();
    if (left <= decltype(left)::zero())
      expired = true;
    else
      info.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(left);
  }
  return info;
}

api_status expired_status() {
  return api_status::failure(api_code::deadline_exceeded,
                             "the client's deadline passed before the request was read");
}

// Metadata values must be printable ASCII.
std::string printable(std::string_view text, size_t max = 512) {
  std::string out;
  out.reserve(std::min(text.size(), max));
  for (char c : text) {
    if (out.size() >= max)
      break;
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return out;
}

grpc::Status to_grpc(const api_status& st) {
  return grpc::Status{static_cast<grpc::StatusCode>(grpc_status_code(st.code)),
                      st.message};
}

// The retry hint and troupe's own code go out as trailers of an error.
void add_error_trailers(grpc::ServerContext& ctx, const api_status& st) {
  if (st.retry_after.count() > 0)
    ctx.AddTrailingMetadata("retry-after", std::to_string(st.retry_after.count()));
  if (!st.details.empty())
    ctx.AddTrailingMetadata("troupe-error-details", printable(st.details));
}

// --- unary calls ---------------------------------------------------------------

// One unary method: how to ask gRPC for its next call and which backend
// function answers it.
#define TROUPE_UNARY_METHOD(name, service_member, rpc, request_t, reply_t, backend_fn)   \
  struct name {                                                                          \
    using request = request_t;                                                           \
    using reply = reply_t;                                                               \
    static void ask(server_shared& sh, grpc::ServerContext* ctx, request* req,           \
                    grpc::ServerAsyncResponseWriter<reply>* writer,                      \
                    grpc::ServerCompletionQueue* cq, void* t) {                          \
      sh.service_member.Request##rpc(ctx, req, writer, cq, cq, t);                       \
    }                                                                                    \
    static void call(api_backend& b, const request_info& info, const request& req,       \
                     api_backend::reply_fn<reply> done,                                  \
                     std::shared_ptr<cancel_handle> cancel) {                            \
      b.backend_fn(info, req, std::move(done), std::move(cancel));                       \
    }                                                                                    \
  }

TROUPE_UNARY_METHOD(start_saga_method, sagas, StartSaga, v1::StartSagaRequest,
                    v1::StartSagaResponse, start_saga);
TROUPE_UNARY_METHOD(get_saga_method, sagas, GetSaga, v1::GetSagaRequest, v1::Saga,
                    get_saga);
TROUPE_UNARY_METHOD(list_sagas_method, sagas, ListSagas, v1::ListSagasRequest,
                    v1::ListSagasResponse, list_sagas);
TROUPE_UNARY_METHOD(cancel_saga_method, sagas, CancelSaga, v1::CancelSagaRequest,
                    v1::Saga, cancel_saga);
TROUPE_UNARY_METHOD(invoke_method, services, Invoke, v1::InvokeRequest,
                    v1::InvokeResponse, invoke);

#undef TROUPE_UNARY_METHOD

// One unary call: requested, read, answered by the backend (on whatever
// thread its callback runs), finished. The backend's callback holds the
// call only weakly: a client that cancels frees it at once.
template <class Method>
class unary_call final : public call_base {
public:
  using request_type = typename Method::request;
  using reply_type = typename Method::reply;

  unary_call(std::shared_ptr<server_shared> sh, grpc::ServerCompletionQueue* cq)
      : sh_(std::move(sh))
      , cq_(cq) {}

  /// Asks gRPC for the next call of this method on `cq`.
  static void listen(const std::shared_ptr<server_shared>& sh,
                     grpc::ServerCompletionQueue* cq) {
    auto call = std::make_shared<unary_call>(sh, cq);
    std::shared_lock lock{sh->gate};
    if (!sh->open)
      return;
    call->ctx_.AsyncNotifyWhenDone(call->arm(call->done_));
    Method::ask(*sh, &call->ctx_, &call->request_, &call->responder_, cq,
                call->arm(call->request_tag_));
  }

  void on_event(event e, bool ok) override {
    switch (e) {
    case event::request:
      return on_request(ok);
    case event::done:
      // Finished or cancelled (by the client, its deadline, or the
      // shutdown): either way nothing more may happen for it.
      cancel_->cancel();
      return;
    case event::write:
    case event::finish:
      return;
    }
  }

private:
  void on_request(bool ok) {
    if (!ok) {
      // The server shuts down. gRPC sends the done tag only for calls that
      // started, so its reference goes here.
      done_.keep.reset();
      return;
    }
    listen(sh_, cq_);
    bool expired = false;
    auto info = info_of(ctx_, expired);
    ctx_.AddInitialMetadata("x-request-id", info.correlation_id);
    if (expired)
      return answer(expired_status(), {});
    std::weak_ptr<unary_call> weak =
        std::static_pointer_cast<unary_call>(shared_from_this());
    try {
      Method::call(
          *sh_->backend, info, request_,
          [weak](const api_status& st, reply_type reply) {
            if (auto self = weak.lock())
              self->answer(st, std::move(reply));
          },
          cancel_);
    } catch (const std::exception& e) {
      answer(api_status::failure(api_code::internal, e.what()), {});
    }
  }

  void answer(const api_status& st, reply_type reply) {
    if (answered_.exchange(true))
      return;
    std::shared_lock lock{sh_->gate};
    if (!sh_->open)
      return;
    if (st.ok()) {
      responder_.Finish(reply, grpc::Status::OK, arm(finish_));
    } else {
      add_error_trailers(ctx_, st);
      responder_.FinishWithError(to_grpc(st), arm(finish_));
    }
  }

  std::shared_ptr<server_shared> sh_; // first: outlives the gRPC objects below
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext ctx_;
  request_type request_;
  grpc::ServerAsyncResponseWriter<reply_type> responder_{&ctx_};
  std::shared_ptr<cancel_handle> cancel_ = std::make_shared<cancel_handle>();
  std::atomic<bool> answered_{false};
  tag request_tag_{event::request, nullptr};
  tag done_{event::done, nullptr};
  tag finish_{event::finish, nullptr};
};

// --- watches -------------------------------------------------------------------

// One WatchSaga stream: changes from the backend are queued and written one
// at a time in their order; the status the backend ends with finishes the
// stream after the last write.
class watch_call final : public call_base {
public:
  watch_call(std::shared_ptr<server_shared> sh, grpc::ServerCompletionQueue* cq)
      : sh_(std::move(sh))
      , cq_(cq) {}

  ~watch_call() override {
    if (registered_) {
      std::lock_guard guard{sh_->watches_mtx};
      sh_->watches.erase(id_);
    }
  }

  static void listen(const std::shared_ptr<server_shared>& sh,
                     grpc::ServerCompletionQueue* cq) {
    auto call = std::make_shared<watch_call>(sh, cq);
    std::shared_lock lock{sh->gate};
    if (!sh->open)
      return;
    call->ctx_.AsyncNotifyWhenDone(call->arm(call->done_));
    sh->sagas.RequestWatchSaga(&call->ctx_, &call->request_, &call->writer_, cq, cq,
                               call->arm(call->request_tag_));
  }

  void on_event(event e, bool ok) override {
    switch (e) {
    case event::request:
      return on_request(ok);
    case event::done: {
      cancel_->cancel();
      std::lock_guard guard{mtx_};
      gone_ = true;
      return;
    }
    case event::write: {
      std::lock_guard guard{mtx_};
      writing_ = false;
      in_flight_.Clear();
      if (!ok) {
        // The client is gone; the done tag follows.
        gone_ = true;
        cancel_->cancel();
        return;
      }
      pump();
      return;
    }
    case event::finish:
      return;
    }
  }

  void end_for_shutdown() override {
    {
      std::lock_guard guard{mtx_};
      shutting_down_ = true;
    }
    cancel_->cancel();
  }

private:
  void on_request(bool ok) {
    if (!ok) {
      done_.keep.reset();
      return;
    }
    listen(sh_, cq_);
    {
      std::lock_guard guard{sh_->watches_mtx};
      id_ = sh_->next_watch_id++;
      sh_->watches.emplace(id_, weak_from_this());
      registered_ = true;
    }
    if (sh_->stopping.load())
      end_for_shutdown();
    bool expired = false;
    auto info = info_of(ctx_, expired);
    ctx_.AddInitialMetadata("x-request-id", info.correlation_id);
    if (expired)
      return on_end(expired_status());
    std::weak_ptr<watch_call> weak =
        std::static_pointer_cast<watch_call>(shared_from_this());
    try {
      sh_->backend->watch_saga(
          info, request_,
          [weak](const v1::Saga& saga) {
            if (auto self = weak.lock())
              self->on_change(saga);
          },
          [weak](const api_status& st) {
            if (auto self = weak.lock())
              self->on_end(st);
          },
          cancel_);
    } catch (const std::exception& e) {
      on_end(api_status::failure(api_code::internal, e.what()));
    }
  }

  void on_change(const v1::Saga& saga) {
    std::lock_guard guard{mtx_};
    if (end_ || gone_)
      return;
    if (queue_.size() >= max_queued_changes) {
      end_ =
          api_status::failure(api_code::resource_exhausted,
                              "the client reads the watch slower than the saga changes");
      cancel_->cancel();
      queue_.clear();
      pump();
      return;
    }
    queue_.push_back(saga);
    pump();
  }

  void on_end(const api_status& st) {
    std::lock_guard guard{mtx_};
    if (end_)
      return;
    end_ = st;
    if (shutting_down_ && st.code == api_code::cancelled) {
      end_ = api_status::failure(api_code::unavailable, "the node is stopping");
      end_->retry_after = 1s;
    }
    pump();
  }

  // Starts the next write, or the finish once every change is written.
  // Called with mtx_ held.
  void pump() {
    if (writing_ || finishing_ || gone_)
      return;
    std::shared_lock lock{sh_->gate};
    if (!sh_->open)
      return;
    if (!queue_.empty()) {
      in_flight_.Swap(&queue_.front());
      queue_.pop_front();
      writing_ = true;
      writer_.Write(in_flight_, arm(write_));
      return;
    }
    if (!end_)
      return;
    finishing_ = true;
    if (end_->ok()) {
      writer_.Finish(grpc::Status::OK, arm(finish_));
    } else {
      add_error_trailers(ctx_, *end_);
      writer_.Finish(to_grpc(*end_), arm(finish_));
    }
  }

  std::shared_ptr<server_shared> sh_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext ctx_;
  v1::WatchSagaRequest request_;
  grpc::ServerAsyncWriter<v1::Saga> writer_{&ctx_};
  std::shared_ptr<cancel_handle> cancel_ = std::make_shared<cancel_handle>();
  uint64_t id_ = 0;
  bool registered_ = false;

  std::mutex mtx_;
  std::deque<v1::Saga> queue_;
  v1::Saga in_flight_;
  std::optional<api_status> end_;
  bool writing_ = false;
  bool finishing_ = false;
  bool gone_ = false; ///< the call is over for gRPC: no operation may follow
  bool shutting_down_ = false;

  tag request_tag_{event::request, nullptr};
  tag done_{event::done, nullptr};
  tag write_{event::write, nullptr};
  tag finish_{event::finish, nullptr};
};

// --- building ------------------------------------------------------------------

// gRPC accepts any bytes as PEM and fails later, with a message that names
// no file: check them now. An encrypted key is refused (no passphrase
// prompt: gRPC could not use it anyway).
struct pem_check {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  pem_check() = default;
  pem_check(const pem_check&) = delete;
  pem_check& operator=(const pem_check&) = delete;
  ~pem_check() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
};

int no_passphrase(char*, int, int, void*) {
  return 0;
}

void require_pem(const std::string& pem, bool is_key, const char* key,
                 const std::string& path, pem_check& out) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio != nullptr) {
    if (is_key)
      out.key = PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr);
    else
      out.cert = PEM_read_bio_X509(bio, nullptr, no_passphrase, nullptr);
    BIO_free(bio);
  }
  if (is_key ? out.key == nullptr : out.cert == nullptr) {
    ERR_clear_error();
    throw std::runtime_error(
        std::string{key} + ": " + troupe::detail::pem_source(path) + " holds no " +
        (is_key ? "unencrypted PEM private key" : "PEM certificate"));
  }
}

std::shared_ptr<grpc::ServerCredentials> credentials_of(const tls_settings& tls) {
  if (!tls.enabled())
    return grpc::InsecureServerCredentials();
  if (tls.key_file.empty())
    throw std::runtime_error(
        "gateways.tls.key_file: required with gateways.tls.cert_file");
  grpc::SslServerCredentialsOptions opts{
      tls.verifies_clients() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE};
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  pem_check server;
  pair.cert_chain = troupe::detail::pem_material(tls.cert_file, "gateways.tls.cert_file");
  require_pem(pair.cert_chain, false, "gateways.tls.cert_file", tls.cert_file, server);
  pair.private_key = troupe::detail::pem_material(tls.key_file, "gateways.tls.key_file");
  require_pem(pair.private_key, true, "gateways.tls.key_file", tls.key_file, server);
  if (X509_check_private_key(server.cert, server.key) != 1)
    throw std::runtime_error(
        "gateways.tls.key_file: " + troupe::detail::pem_source(tls.key_file) +
        " is not the key of gateways.tls.cert_file " +
        troupe::detail::pem_source(tls.cert_file));
  opts.pem_key_cert_pairs.push_back(std::move(pair));
  if (tls.verifies_clients()) {
    opts.pem_root_certs =
        troupe::detail::pem_material(tls.client_ca_file, "gateways.tls.client_ca_file");
    pem_check ca;
    require_pem(opts.pem_root_certs, false, "gateways.tls.client_ca_file",
                tls.client_ca_file, ca);
  }
  return grpc::SslServerCredentials(opts);
}

int clamp_int(uint64_t v) {
  return static_cast<int>(std::min<uint64_t>(v, INT_MAX));
}

std::string listen_address(const std::string& host, uint16_t port) {
  bool v6 = host.find(':') != std::string::npos && host.front() != '[';
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// gRPC's reflection library registers its plugin for every server once it
// is loaded; a server that must not offer reflection drops it here.
class without_reflection final : public grpc::ServerBuilderOption {
public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(
      std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const auto& p) {
                                    return p->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};

void poll(grpc::ServerCompletionQueue* cq) {
  void* raw = nullptr;
  bool ok = false;
  while (cq->Next(&raw, &ok)) {
    auto* t = static_cast<tag*>(raw);
    auto call = std::move(t->keep);
    call->on_event(t->kind, ok);
  }
}

} // namespace

struct grpc_gateway::impl {
  std::shared_ptr<server_shared> sh = std::make_shared<server_shared>();
  std::vector<std::thread> threads;
  uint16_t port = 0;
  std::mutex mtx; ///< serializes stop and set_serving
  bool stopped = false;

  void stop() {
    std::lock_guard guard{mtx};
    if (stopped)
      return;
    stopped = true;
    sh->stopping = true;
    if (sh->server) {
      if (auto* health = sh->server->GetHealthCheckService())
        health->SetServingStatus(false);
      std::vector<std::shared_ptr<call_base>> watches;
      {
        std::lock_guard lock{sh->watches_mtx};
        for (auto& [id, weak] : sh->watches)
          if (auto w = weak.lock())
            watches.push_back(std::move(w));
      }
      for (auto& w : watches)
        w->end_for_shutdown();
      watches.clear();
      sh->server->Shutdown(std::chrono::system_clock::now() + shutdown_grace);
    }
    {
      std::unique_lock lock{sh->gate};
      sh->open = false;
    }
    for (auto& cq : sh->cqs)
      cq->Shutdown();
    for (auto& t : threads)
      if (t.joinable())
        t.join();
    threads.clear();
  }
};

grpc_gateway::grpc_gateway(std::shared_ptr<api_backend> backend,
                           const gateway_settings& s)
    : impl_(std::make_unique<impl>()) {
  auto& sh = *impl_->sh;
  sh.backend = std::move(backend);
  auto address = listen_address(s.grpc_host, s.grpc_port);

  grpc::EnableDefaultHealthCheckService(true);
  if (s.reflection)
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!s.reflection)
    builder.SetOption(std::make_unique<without_reflection>());
  int selected_port = 0;
  builder.AddListeningPort(address, credentials_of(s.tls), &selected_port);
  builder.RegisterService(&sh.sagas);
  builder.RegisterService(&sh.services);
  builder.SetMaxReceiveMessageSize(clamp_int(s.limits.max_message_bytes));
  builder.SetMaxSendMessageSize(clamp_int(s.limits.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             clamp_int(s.limits.max_concurrent_streams));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             clamp_int(s.limits.max_header_bytes));
  auto idle_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(s.limits.idle_timeout);
  if (idle_ms.count() > 0)
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               clamp_int(static_cast<uint64_t>(idle_ms.count())));
  // A connection must finish its handshake (TLS and the client's HTTP/2
  // settings) within the read timeout: a client that connects and trickles
  // or sends nothing is closed.
  auto handshake_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(s.limits.read_timeout);
  if (handshake_ms.count() > 0)
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                               clamp_int(static_cast<uint64_t>(handshake_ms.count())));
  // Reflection and health are gRPC's own synchronous services: one small
  // pool is plenty for them.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  auto threads = std::max<uint32_t>(1, s.grpc_threads);
  for (uint32_t i = 0; i < threads; ++i)
    sh.cqs.push_back(builder.AddCompletionQueue());
  sh.server = builder.BuildAndStart();
  if (!sh.server || selected_port == 0) {
    sh.server.reset();
    for (auto& cq : sh.cqs) {
      cq->Shutdown();
      void* ignored_tag = nullptr;
      bool ignored_ok = false;
      while (cq->Next(&ignored_tag, &ignored_ok)) {
      }
    }
    impl_->stopped = true;
    throw std::runtime_error("the gRPC gateway cannot listen on " + address +
                             " (gateways.grpc.host, gateways.grpc.port)");
  }
  impl_->port = static_cast<uint16_t>(selected_port);
  // Not serving until the node says it is ready.
  if (auto* health = sh.server->GetHealthCheckService()) {
    health->SetServingStatus(false);
    health->SetServingStatus("troupe.api.v1.Sagas", false);
  }
  for (auto& cq : sh.cqs) {
    for (int i = 0; i < requests_per_method; ++i) {
      unary_call<start_saga_method>::listen(impl_->sh, cq.get());
      unary_call<get_saga_method>::listen(impl_->sh, cq.get());
      unary_call<list_sagas_method>::listen(impl_->sh, cq.get());
      unary_call<cancel_saga_method>::listen(impl_->sh, cq.get());
      unary_call<invoke_method>::listen(impl_->sh, cq.get());
      watch_call::listen(impl_->sh, cq.get());
    }
    impl_->threads.emplace_back(poll, cq.get());
  }
}

grpc_gateway::~grpc_gateway() {
  impl_->stop();
}

uint16_t grpc_gateway::port() const {
  return impl_->port;
}

void grpc_gateway::set_serving(bool serving) {
  std::lock_guard guard{impl_->mtx};
  if (impl_->stopped || !impl_->sh->server)
    return;
  if (auto* health = impl_->sh->server->GetHealthCheckService()) {
    health->SetServingStatus(serving);
    health->SetServingStatus("troupe.api.v1.Sagas", serving);
  }
}

void grpc_gateway::stop() {
  impl_->stop();
}

} // namespace troupe::gateways
