// The HTTP/JSON gateway. Decisions that shape it:
//
// - Its own port. The API listens on gateways.http.port; /healthz, /readyz
//   and /metrics stay on status.port. Probes and scrapes must not pass the
//   API's TLS, authentication and rate limit (a kubelet has no token, and a
//   rate-limited probe would restart a healthy pod), and an overloaded API —
//   every connection slot taken, a flood of slow clients — must not fail
//   liveness. The two ports can also be exposed differently (the API to
//   clients, the status port only inside the cluster).
// - A start answers 201 Created (with Location) when it created the
//   instance and 200 when the idempotency key returned an existing one; the
//   body is the StartSagaResponse either way, whose `created` says the same.
// - Over gateways.limits.max_connections a connection is accepted, answered
//   503 with Retry-After and closed (a plain refusal would leave the client
//   guessing); with TLS it is closed without a handshake, which would cost
//   more than the refusal saves.
// - Watches beyond max_concurrent_streams get 429 RESOURCE_EXHAUSTED with
//   Retry-After, like any other capacity refusal of the API.
// - One connection runs on one strand. There is always at most one read
//   outstanding, also while a request waits for the backend or a watch
//   streams: that read is how a client that went away is noticed (and what
//   it started cancelled), and it queues pipelined bytes, which are parsed
//   only after the previous answer was written, so answers keep the
//   requests' order.
// - Backend callbacks arrive on CAF threads; they only post to the strand,
//   holding the connection by shared_ptr until the posted handler ran.
// - Reading a request has two clocks: idle_timeout until its first byte,
//   read_timeout from then until it is complete (so trickling bytes does not
//   keep a connection: slowloris). Writes have their own deadline.

#include "http_gateway.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/config.hpp>
#include <troupe/runtime/detail/accept_loop.hpp>
#include <troupe/runtime/detail/pem_material.hpp>
#include <troupe/runtime/detail/tcp_listen.hpp>

#include "api_json.hpp"
#include "http_routing.hpp"

namespace troupe::gateways {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace v1 = api::v1;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

class connection_base;

// What outlives the gateway object while connections still exist: the I/O
// context their sockets belong to, and the registry stop() closes them by.
// Every connection holds it, so the context is destroyed after its last socket.
struct shared_core {
  gateway_settings settings;
  std::shared_ptr<api_backend> backend;
  asio::io_context io;
  std::unique_ptr<ssl::context> tls;
  std::atomic<uint32_t> connections{0};
  std::atomic<uint32_t> streams{0};

  std::mutex mtx;
  bool stopping = false;
  std::unordered_map<const connection_base*, std::weak_ptr<connection_base>> live;

  shared_core(std::shared_ptr<api_backend> b, const gateway_settings& s)
      : settings(s)
      , backend(std::move(b))
      , io(static_cast<int>(std::max<uint32_t>(1, s.http_threads))) {}

  // Runs `f` on `ex` unless the gateway stopped: a callback arriving after
  // stop() must not queue work no thread will run.
  template <class Executor, class F>
  void post(const Executor& ex, F&& f) {
    std::lock_guard<std::mutex> guard{mtx};
    if (!stopping)
      asio::post(ex, std::forward<F>(f));
  }
};

class connection_base : public std::enable_shared_from_this<connection_base> {
public:
  explicit connection_base(std::shared_ptr<shared_core> core)
      : core_(std::move(core)) {}
  virtual ~connection_base() {
    core_->connections.fetch_sub(1, std::memory_order_relaxed);
  }

  // Closes from outside the strand (stop()).
  virtual void close_soon() = 0;
  // Closes on the calling thread; only once no I/O thread runs.
  virtual void close_now() = 0;
  // Closes from outside the strand if the deadline has passed by the time
  // the strand gets to it (the sweep).
  virtual void close_if_expired() = 0;

  /// When the sweep closes the connection (steady clock, ns); 0: never.
  /// One store per phase instead of a timer per phase: arming and
  /// cancelling a timer for every read and write cost more than the rest
  /// of a small request.
  std::atomic<int64_t> deadline_ns{0};

  static int64_t steady_now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

protected:
  // Declared first, destroyed last: the sockets of the derived class belong
  // to core_->io.
  std::shared_ptr<shared_core> core_;
};

std::string error_json(const api_status& st, const std::string& correlation) {
  v1::Error e;
  e.set_code(to_string(st.code));
  e.set_message(st.message);
  e.set_details(st.details);
  e.set_retry_after_seconds(
      static_cast<uint32_t>(std::max<int64_t>(0, st.retry_after.count())));
  e.set_correlation_id(correlation);
  return to_json(e);
}

std::string_view view(beast::string_view s) {
  return {s.data(), s.size()};
}

bool is_benign(const beast::error_code& ec) {
  return ec == asio::error::operation_aborted || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::ssl::error::stream_truncated;
}

// The connection's stream: plain TCP or TLS over TCP.
template <class Stream>
struct stream_traits;

template <>
struct stream_traits<beast::tcp_stream> {
  static constexpr bool tls = false;
  static beast::tcp_stream make(tcp::socket socket, shared_core&) {
    return beast::tcp_stream{std::move(socket)};
  }
};

template <>
struct stream_traits<beast::ssl_stream<beast::tcp_stream>> {
  static constexpr bool tls = true;
  static beast::ssl_stream<beast::tcp_stream> make(tcp::socket socket,
                                                   shared_core& core) {
    return beast::ssl_stream<beast::tcp_stream>{beast::tcp_stream{std::move(socket)},
                                                *core.tls};
  }
};

template <class Stream>
class connection final : public connection_base {
public:
  connection(std::shared_ptr<shared_core> core, tcp::socket socket, std::string peer)
      : connection_base(std::move(core))
      , stream_(stream_traits<Stream>::make(std::move(socket), *core_))
      , reader_(core_->settings.limits.max_header_bytes,
                core_->settings.limits.max_body_bytes)
      , peer_(std::move(peer)) {}

  ~connection() override {
    release_stream();
    std::lock_guard<std::mutex> guard{core_->mtx};
    core_->live.erase(this);
  }

  // Serves the connection; `refuse` answers 503 and closes (over the
  // connection limit).
  void start(bool refuse) {
    {
      std::lock_guard<std::mutex> guard{core_->mtx};
      core_->live.emplace(this, weak_from_this());
    }
    if constexpr (stream_traits<Stream>::tls) {
      if (refuse)
        return close_now();
      arm(core_->settings.limits.read_timeout);
      stream_.async_handshake(
          ssl::stream_base::server,
          [self = me()](beast::error_code ec) { self->on_handshake(ec); });
    } else {
      if (refuse) {
        auto st = api_status::failure(
            api_code::unavailable,
            "the gateway has no free connection slot (" +
                std::to_string(core_->settings.limits.max_connections) + " in use)");
        st.retry_after = 1s;
        correlation_ = correlation_from({}, {});
        keep_alive_ = false;
        return write_error(st, 503, {});
      }
      begin_request();
    }
  }

  auto stream_executor() { return stream_.get_executor(); }

  void close_soon() override {
    asio::post(stream_.get_executor(), [self = me()] { self->close_now(); });
  }

  void close_if_expired() override {
    asio::post(stream_.get_executor(), [self = me()] {
      auto d = self->deadline_ns.load(std::memory_order_relaxed);
      if (d != 0 && d <= steady_now_ns())
        self->close_now();
    });
  }

  void close_now() override {
    if (closed_)
      return;
    closed_ = true;
    if (cancel_)
      cancel_->cancel();
    release_stream();
    disarm();
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().socket().close(ignored);
  }

private:
  enum class phase { reading, waiting, streaming, closing };

  std::shared_ptr<connection> me() {
    return std::static_pointer_cast<connection>(shared_from_this());
  }

  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  // --- deadlines ---------------------------------------------------------------

  void arm(std::chrono::nanoseconds d) {
    deadline_ns.store(steady_now_ns() + d.count(), std::memory_order_relaxed);
  }

  void disarm() { deadline_ns.store(0, std::memory_order_relaxed); }

  std::chrono::nanoseconds write_timeout() const {
    return std::max<std::chrono::nanoseconds>(core_->settings.limits.read_timeout, 5s);
  }

  // --- reading -----------------------------------------------------------------

  void on_handshake(beast::error_code ec) {
    disarm();
    if (closed_)
      return;
    if (ec) {
      spdlog::debug("http gateway: TLS handshake with {} failed: {}", peer_,
                    ec.message());
      return close_now();
    }
    begin_request();
  }

  void begin_request() {
    phase_ = phase::reading;
    request_clock_ = false;
    continue_sent_ = false;
    arm(core_->settings.limits.idle_timeout);
    parse_buffered();
  }

  void parse_buffered() {
    if (closed_ || phase_ != phase::reading)
      return;
    if (buffer_.size() > 0 && !request_clock_) {
      // The first byte of a request starts its read timeout.
      request_clock_ = true;
      arm(core_->settings.limits.read_timeout);
    }
    switch (reader_.feed(buffer_)) {
    case http_api::request_reader::state::done:
      disarm();
      return handle(reader_.take());
    case http_api::request_reader::state::failed: {
      correlation_ = correlation_from({}, {});
      keep_alive_ = false;
      const auto& e = reader_.error();
      api_status st = api_status::failure(e.code, e.message);
      return write_error(st, e.status, {});
    }
    case http_api::request_reader::state::need_more:
      if (reader_.header_done() && !continue_sent_) {
        continue_sent_ = true;
        auto expect = reader_.header()[http::field::expect];
        if (beast::iequals(expect, "100-continue"))
          return write_continue();
      }
      return read_more();
    }
  }

  // One read at a time, into a buffer of its own: the request buffer is only
  // touched by handlers on the strand, never by an operation in flight.
  void read_more() {
    if (reading_ || closed_)
      return;
    // While busy, queued bytes are only pipelined requests: hold back a
    // client that sends more than two whole requests ahead.
    auto cap = 2 * (core_->settings.limits.max_header_bytes +
                    core_->settings.limits.max_body_bytes);
    if (phase_ != phase::reading && phase_ != phase::closing && buffer_.size() > cap)
      return;
    reading_ = true;
    stream_.async_read_some(
        asio::buffer(chunk_),
        [self = me()](beast::error_code ec, size_t n) { self->on_read(ec, n); });
  }

  void on_read(beast::error_code ec, size_t n) {
    reading_ = false;
    if (closed_)
      return;
    if (ec) {
      // The client went away (or half-closed): nobody is left to answer,
      // and what its request started is cancelled.
      if (!is_benign(ec))
        spdlog::debug("http gateway: reading from {}: {}", peer_, ec.message());
      return close_now();
    }
    if (phase_ == phase::closing) {
      // Lingering close: what a refused client still sends is dropped, so
      // the kernel does not reset the connection before it read the answer.
      return read_more();
    }
    auto room = buffer_.prepare(n);
    std::memcpy(room.data(), chunk_.data(), n);
    buffer_.commit(n);
    if (phase_ == phase::reading)
      return parse_buffered();
    read_more();
  }

  void write_continue() {
    static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
    writing_ = true;
    asio::async_write(stream_, asio::buffer(interim.data(), interim.size()),
                      [self = me()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec || self->closed_)
                          return self->close_now();
                        self->read_more();
                      });
  }

  // --- requests ----------------------------------------------------------------

  void handle(http_api::request req) {
    correlation_ = correlation_from(view(req["traceparent"]), view(req["x-request-id"]));
    keep_alive_ = req.keep_alive();
    auto d = http_api::decide(req);
    if (!d.match) {
      api_status st = api_status::failure(d.error.code, d.error.message);
      return write_error(st, d.error.status, d.error.allow);
    }
    request_info info;
    info.correlation_id = correlation_;
    info.authorization = std::string{view(req[http::field::authorization])};
    info.peer = peer_;
    if (auto t = req["x-request-timeout"]; !t.empty()) {
      try {
        info.timeout = parse_duration(std::string{view(t)});
      } catch (const std::exception&) {
        info.timeout = -1ns;
      }
      if (info.timeout < 0ns || info.timeout > 24h)
        return write_error(
            api_status::failure(api_code::invalid_argument,
                                "x-request-timeout must be a duration such as "
                                "500ms or 2s, at most 24h"),
            400, {});
    }
    phase_ = phase::waiting;
    cancel_ = std::make_shared<cancel_handle>();
    // Watches the socket meanwhile, to notice a client that leaves.
    read_more();
    auto& r = *d.match;
    auto& backend = *core_->backend;
    switch (r.kind) {
    case http_api::route_kind::start_saga: {
      v1::StartSagaRequest msg;
      if (auto bad = http_api::start_request_from(r.saga_type, req.body(), msg))
        return reply_error(api_status::failure(api_code::invalid_argument, *bad));
      return backend.start_saga(
          info, msg,
          on_strand<v1::StartSagaResponse>([](connection& c, v1::StartSagaResponse m) {
            std::string location = "/v1/sagas/" + m.saga().id();
            c.write_json(m.created() ? 201 : 200, json_of(m), std::move(location));
          }),
          cancel_);
    }
    case http_api::route_kind::get_saga: {
      v1::GetSagaRequest msg;
      msg.set_id(r.id);
      return backend.get_saga(info, msg, on_strand<v1::Saga>(json_200<v1::Saga>),
                              cancel_);
    }
    case http_api::route_kind::list_sagas:
      return backend.list_sagas(
          info, r.list, on_strand<v1::ListSagasResponse>(json_200<v1::ListSagasResponse>),
          cancel_);
    case http_api::route_kind::cancel_saga: {
      v1::CancelSagaRequest msg;
      if (auto bad = http_api::cancel_request_from(r.id, req.body(), msg))
        return reply_error(api_status::failure(api_code::invalid_argument, *bad));
      return backend.cancel_saga(info, msg, on_strand<v1::Saga>(json_200<v1::Saga>),
                                 cancel_);
    }
    case http_api::route_kind::invoke: {
      v1::InvokeRequest msg;
      if (auto bad = http_api::invoke_request_from(r.service, r.method, req.body(), msg))
        return reply_error(api_status::failure(api_code::invalid_argument, *bad));
      return backend.invoke(
          info, msg,
          on_strand<v1::InvokeResponse>([](connection& c, v1::InvokeResponse m) {
            c.write_json(200, json_of(m.json()), {});
          }),
          cancel_);
    }
    case http_api::route_kind::watch_saga:
      return watch(info, r.id);
    }
  }

  template <class Reply>
  static void json_200(connection& c, Reply m) {
    c.write_json(200, json_of(m), {});
  }

  // A backend callback that hops to this connection's strand and answers
  // there; the connection lives until it ran.
  template <class Reply, class OnOk>
  api_backend::reply_fn<Reply> on_strand(OnOk on_ok) {
    return [self = me(), on_ok](const api_status& st, Reply reply) {
      auto ex = self->stream_.get_executor();
      self->core_->post(ex, [self, on_ok, st, reply = std::move(reply)]() mutable {
        if (self->closed_ || self->phase_ != phase::waiting)
          return;
        self->cancel_.reset();
        if (!st.ok())
          return self->write_error(st, http_status(st.code), {});
        on_ok(*self, std::move(reply));
      });
    };
  }

  void reply_error(const api_status& st) {
    cancel_.reset();
    write_error(st, http_status(st.code), {});
  }

  // --- answers -----------------------------------------------------------------

  void write_json(unsigned status, std::string body, std::string location) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->result(status);
    res->set(http::field::content_type, "application/json");
    if (!location.empty())
      res->set(http::field::location, location);
    res->body() = std::move(body);
    write(std::move(res));
  }

  void write_error(const api_status& st, unsigned status, const std::string& allow) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->result(status);
    res->set(http::field::content_type, "application/json");
    if (st.retry_after.count() > 0)
      res->set(http::field::retry_after, std::to_string(st.retry_after.count()));
    if (!allow.empty())
      res->set(http::field::allow, allow);
    res->body() = error_json(st, correlation_);
    write(std::move(res));
  }

  void write(std::shared_ptr<http::response<http::string_body>> res) {
    res->set("x-request-id", correlation_);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    bool close = !keep_alive_;
    phase_ = phase::waiting; // until written, nothing else is parsed
    writing_ = true;
    arm(write_timeout());
    http::async_write(stream_, *res,
                      [self = me(), res, close](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        self->disarm();
                        if (self->closed_)
                          return;
                        if (ec)
                          return self->close_now();
                        if (close)
                          return self->linger();
                        self->begin_request();
                      });
  }

  // Half-closes after the last answer and drops what still arrives for a
  // moment, then closes.
  void linger() {
    phase_ = phase::closing;
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    arm(1s);
    read_more();
  }

  // --- watches (server-sent events) --------------------------------------------

  void release_stream() {
    if (counted_stream_) {
      counted_stream_ = false;
      core_->streams.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  void watch(const request_info& info, const std::string& id) {
    auto limit = core_->settings.limits.max_concurrent_streams;
    if (core_->streams.fetch_add(1, std::memory_order_relaxed) >= limit) {
      core_->streams.fetch_sub(1, std::memory_order_relaxed);
      auto st = api_status::failure(api_code::resource_exhausted,
                                    "the gateway serves " + std::to_string(limit) +
                                        " watches already");
      st.retry_after = 1s;
      return reply_error(st);
    }
    counted_stream_ = true;
    v1::WatchSagaRequest msg;
    msg.set_id(id);
    auto self = me();
    auto ex = stream_.get_executor();
    core_->backend->watch_saga(
        info, msg,
        [self, ex](const v1::Saga& s) {
          self->core_->post(ex, [self, s] { self->on_change(s); });
        },
        [self, ex](const api_status& st) {
          self->core_->post(ex, [self, st] { self->on_end(st); });
        },
        cancel_);
  }

  void on_change(const v1::Saga& s) {
    if (closed_)
      return;
    if (phase_ == phase::waiting) {
      phase_ = phase::streaming;
      std::string head = "HTTP/1.1 200 OK\r\n"
                         "Content-Type: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\n"
                         "Connection: close\r\n"
                         "x-request-id: " +
                         correlation_ + "\r\n\r\n";
      queue(std::move(head));
    }
    if (phase_ != phase::streaming)
      return;
    queue("event: saga\ndata: " + json_of(s) + "\n\n");
  }

  void on_end(const api_status& st) {
    if (closed_)
      return;
    if (phase_ == phase::waiting) {
      // Nothing was streamed yet: an ordinary error answer.
      release_stream();
      cancel_.reset();
      return write_error(st, http_status(st.code), {});
    }
    if (phase_ != phase::streaming)
      return;
    release_stream();
    cancel_.reset();
    queue("event: end\ndata: " + error_json(st, correlation_) + "\n\n");
    stream_ended_ = true;
    flush();
  }

  void queue(std::string text) {
    // A client that reads slower than its saga changes is dropped rather
    // than buffered without bound.
    if (out_.size() >= 1024)
      return close_now();
    out_.push_back(std::move(text));
    flush();
  }

  void flush() {
    if (writing_ || closed_)
      return;
    if (out_.empty()) {
      if (stream_ended_)
        linger();
      return;
    }
    writing_ = true;
    arm(write_timeout());
    asio::async_write(stream_, asio::buffer(out_.front()),
                      [self = me()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        self->disarm();
                        if (self->closed_)
                          return;
                        if (ec)
                          return self->close_now();
                        self->out_.pop_front();
                        self->flush();
                      });
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::array<char, 8192> chunk_{};
  http_api::request_reader reader_;
  std::string peer_;
  phase phase_ = phase::reading;
  bool reading_ = false;
  bool writing_ = false;
  bool closed_ = false;
  bool keep_alive_ = true;
  bool request_clock_ = false;
  bool continue_sent_ = false;
  bool counted_stream_ = false;
  bool stream_ended_ = false;
  std::string correlation_;
  std::shared_ptr<cancel_handle> cancel_;
  std::deque<std::string> out_;
};

std::unique_ptr<ssl::context> make_tls(const tls_settings& tls,
                                       const std::string& where) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  try {
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                     ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    namespace detail = troupe::detail;
    ctx->use_certificate_chain(
        asio::buffer(detail::pem_material(tls.cert_file, "gateways.tls.cert_file")));
    ctx->use_private_key(asio::buffer(detail::pem_material(
                             tls.key_file.empty() ? tls.cert_file : tls.key_file,
                             "gateways.tls.key_file")),
                         ssl::context::pem);
    if (tls.verifies_clients()) {
      ctx->add_certificate_authority(asio::buffer(
          detail::pem_material(tls.client_ca_file, "gateways.tls.client_ca_file")));
      ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("http gateway on " + where +
                             ": cannot load the TLS certificate, key or client CA (" +
                             e.what() + ")");
  }
  return ctx;
}

} // namespace

struct http_gateway::impl {
  std::shared_ptr<shared_core> core;
  tcp::acceptor acceptor;
  std::optional<troupe::detail::accept_loop> accept_loop;
  // Closes connections past their deadline, a few times per shortest timeout.
  asio::steady_timer sweep_timer;
  std::chrono::nanoseconds sweep_period;
  uint16_t port = 0;
  std::vector<std::thread> threads;
  std::mutex run_mtx;
  std::condition_variable run_cv;
  size_t running = 0;
  std::atomic<bool> stopped{false};

  impl(std::shared_ptr<api_backend> backend, const gateway_settings& s)
      : core(std::make_shared<shared_core>(std::move(backend), s))
      , acceptor(asio::make_strand(core->io))
      , sweep_timer(acceptor.get_executor())
      , sweep_period(std::clamp<std::chrono::nanoseconds>(
            std::min({s.limits.read_timeout, s.limits.idle_timeout,
                      std::chrono::nanoseconds{1s}}) /
                8,
            5ms, 100ms)) {
    auto where = s.http_host + ":" + std::to_string(s.http_port);
    if (s.tls.enabled())
      core->tls = make_tls(s.tls, where);
    port = troupe::detail::listen_on(acceptor, s.http_host, s.http_port, "http gateway");
    accept_loop.emplace(
        acceptor, "http gateway", [this] { return asio::make_strand(core->io); },
        [this](tcp::socket socket) { serve(std::move(socket)); });
    accept_loop->start();
    sweep();
    auto n = std::max<uint32_t>(1, s.http_threads);
    running = n;
    for (uint32_t i = 0; i < n; ++i)
      threads.emplace_back([this] { run(); });
  }

  void run() {
    for (;;) {
      try {
        core->io.run();
        break;
      } catch (const std::exception& e) {
        // A handler never throws by design; if one does, the thread goes on.
        spdlog::error("http gateway: {}", e.what());
      }
    }
    std::lock_guard<std::mutex> guard{run_mtx};
    --running;
    run_cv.notify_all();
  }

  void sweep() {
    sweep_timer.expires_after(sweep_period);
    sweep_timer.async_wait([this](beast::error_code ec) {
      if (ec || !acceptor.is_open())
        return;
      auto now = connection_base::steady_now_ns();
      std::vector<std::shared_ptr<connection_base>> expired;
      {
        std::lock_guard<std::mutex> guard{core->mtx};
        for (auto& [ptr, weak] : core->live) {
          auto d = ptr->deadline_ns.load(std::memory_order_relaxed);
          if (d != 0 && d <= now)
            if (auto c = weak.lock())
              expired.push_back(std::move(c));
        }
      }
      for (auto& c : expired)
        c->close_if_expired();
      sweep();
    });
  }

  void serve(tcp::socket socket) {
    beast::error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (ec)
      return; // gone already
    socket.set_option(tcp::no_delay(true), ec);
    auto peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    auto count = core->connections.fetch_add(1, std::memory_order_relaxed) + 1;
    bool refuse = count > core->settings.limits.max_connections;
    if (core->tls) {
      auto c = std::make_shared<connection<beast::ssl_stream<beast::tcp_stream>>>(
          core, std::move(socket), std::move(peer));
      asio::dispatch(c->stream_executor(), [c, refuse] { c->start(refuse); });
    } else {
      auto c = std::make_shared<connection<beast::tcp_stream>>(core, std::move(socket),
                                                               std::move(peer));
      asio::dispatch(c->stream_executor(), [c, refuse] { c->start(refuse); });
    }
  }

  void stop() {
    if (stopped.exchange(true))
      return;
    std::vector<std::weak_ptr<connection_base>> open;
    {
      std::lock_guard<std::mutex> guard{core->mtx};
      for (auto& [ptr, weak] : core->live)
        open.push_back(weak);
    }
    asio::post(acceptor.get_executor(), [this] {
      accept_loop->close();
      sweep_timer.cancel();
    });
    for (auto& weak : open)
      if (auto c = weak.lock())
        c->close_soon();
    {
      // From now on callbacks are dropped instead of posted.
      std::lock_guard<std::mutex> guard{core->mtx};
      core->stopping = true;
    }
    {
      std::unique_lock<std::mutex> lock{run_mtx};
      if (!run_cv.wait_for(lock, 5s, [this] { return running == 0; }))
        core->io.stop();
    }
    for (auto& t : threads)
      t.join();
    threads.clear();
    // No I/O thread runs now: close what is left here and let the aborted
    // operations release their connections.
    open.clear();
    {
      std::lock_guard<std::mutex> guard{core->mtx};
      for (auto& [ptr, weak] : core->live)
        open.push_back(weak);
    }
    for (auto& weak : open)
      if (auto c = weak.lock())
        c->close_now();
    open.clear();
    beast::error_code ignored;
    acceptor.close(ignored);
    core->io.restart();
    core->io.poll();
  }
};

http_gateway::http_gateway(std::shared_ptr<api_backend> backend,
                           const gateway_settings& s)
    : impl_(std::make_unique<impl>(std::move(backend), s)) {}

http_gateway::~http_gateway() {
  stop();
}

uint16_t http_gateway::port() const {
  return impl_->port;
}

void http_gateway::stop() {
  impl_->stop();
}

} // namespace troupe::gateways
