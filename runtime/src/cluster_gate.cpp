#include "cluster_gate.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <caf/atom.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/metrics.hpp>

#include <troupe/runtime/detail/accept_loop.hpp>
#include <troupe/runtime/detail/pem_material.hpp>
#include <troupe/runtime/detail/tcp_listen.hpp>

namespace troupe {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// BASP of CAF 0.17 (caf/io/basp/message_type.hpp, header.hpp).
constexpr uint8_t server_handshake = 0x00;
constexpr uint8_t client_handshake = 0x01;
constexpr uint8_t direct_message = 0x02;
constexpr uint8_t last_operation = 0x06; // heartbeat
constexpr uint8_t named_receiver_flag = 0x01;
// The only registry name CAF itself addresses on a peer (when it learns a
// new node). Every other named actor — the cluster actor, the store — is
// node-local and must not be reachable by name from the network.
constexpr uint64_t spawn_server_name = static_cast<uint64_t>(caf::atom("SpawnServ"));

uint64_t read_u64(const uint8_t* p) {
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i)
    x = (x << 8) | p[i];
  return x;
}

} // namespace

bool basp_frame_checker::feed(const uint8_t* data, size_t n) {
  const uint8_t* begin = data;
  // Where the frame under check began in this call (0 if in an earlier one).
  const uint8_t* frame_start = begin;
  while (n > 0) {
    if (payload_left_ > 0) {
      auto take = static_cast<size_t>(std::min<uint64_t>(payload_left_, n));
      payload_left_ -= take;
      data += take;
      n -= take;
      continue;
    }
    if (header_have_ == 0)
      frame_start = data;
    auto take = std::min(header_size - header_have_, n);
    std::memcpy(header_ + header_have_, data, take);
    header_have_ += take;
    data += take;
    n -= take;
    if (header_have_ == header_size) {
      header_have_ = 0;
      if (!check_header()) {
        valid_prefix_ = static_cast<size_t>(frame_start - begin);
        return false;
      }
    }
  }
  return true;
}

bool basp_frame_checker::check_header() {
  uint8_t operation = header_[0];
  uint32_t payload = (uint32_t{header_[4]} << 24) | (uint32_t{header_[5]} << 16) |
                     (uint32_t{header_[6]} << 8) | uint32_t{header_[7]};
  auto expected_first = from_ == sender::client ? client_handshake : server_handshake;
  if (frames_ == 0 && operation != expected_first) {
    error_ =
        "first frame is not a handshake (operation " + std::to_string(operation) + ")";
    return false;
  }
  if (operation == direct_message && (header_[3] & named_receiver_flag) != 0 &&
      read_u64(header_ + 24) != spawn_server_name) {
    error_ = "message to a registry name, which peers may not address";
    return false;
  }
  if (operation > last_operation) {
    error_ = "unknown operation " + std::to_string(operation);
    return false;
  }
  auto limit = frames_ == 0 ? max_handshake_ : max_frame_;
  if (payload > limit) {
    error_ = "frame of " + std::to_string(payload) + " bytes exceeds the limit of " +
             std::to_string(limit);
    return false;
  }
  payload_left_ = payload;
  ++frames_;
  return true;
}

namespace {

namespace ssl = asio::ssl;
using steady = std::chrono::steady_clock;
using tls_stream = ssl::stream<tcp::socket>;

constexpr size_t buffer_bytes = 64 * 1024;
// What OpenSSL keeps per connection (records, session), for the memory bound.
constexpr size_t tls_overhead_bytes = 48 * 1024;

std::string remote_name(const tcp::socket& s) {
  boost::system::error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string{"unknown peer"}
            : ep.address().to_string() + ":" + std::to_string(ep.port());
}

tcp::socket& plain_socket(tcp::socket& s) {
  return s;
}

tcp::socket& plain_socket(tls_stream& s) {
  return s.next_layer();
}

// One open connection as the gate's sweep sees it.
class connection {
public:
  virtual ~connection() = default;
  virtual void close() = 0;
  virtual bool handshake_done() const = 0;
  virtual const std::string& peer_name() const = 0;

  steady::time_point opened = steady::now();
  steady::time_point last_activity = opened;
};

// Relays bytes between a peer (plain TCP or TLS) and CAF's side of the
// connection (its loopback endpoint for inbound connections, the socket CAF
// opened to a tunnel for outbound ones). Everything the peer sends passes the
// frame checker before CAF sees it.
template <class PeerStream>
class relay : public connection, public std::enable_shared_from_this<relay<PeerStream>> {
public:
  relay(PeerStream peer, tcp::socket local, basp_frame_checker checker, std::string name,
        prometheus::Counter& rejected)
      : peer_(std::move(peer))
      , local_(std::move(local))
      , checker_(std::move(checker))
      , name_(std::move(name))
      , rejected_(rejected) {}

  /// Inbound: finish TLS (if any), then connect to CAF's endpoint and relay.
  void start_inbound(uint16_t backend_port) {
    auto self = this->shared_from_this();
    if constexpr (std::is_same_v<PeerStream, tls_stream>) {
      peer_.async_handshake(ssl::stream_base::server,
                            [self, backend_port](boost::system::error_code ec) {
                              if (ec) {
                                spdlog::warn("cluster gate: refused {}: TLS handshake "
                                             "failed: {}",
                                             self->name_, ec.message());
                                self->close();
                                return;
                              }
                              self->connect_backend(backend_port);
                            });
    } else {
      connect_backend(backend_port);
    }
  }

  /// Outbound: both sides are connected already.
  void start_tunnel() { pump(); }

  void close() override {
    closed_ = true;
    boost::system::error_code ignored;
    plain_socket(peer_).close(ignored);
    local_.close(ignored);
  }

  bool handshake_done() const override { return checker_.handshake_done(); }
  const std::string& peer_name() const override { return name_; }

private:
  void connect_backend(uint16_t backend_port) {
    auto self = this->shared_from_this();
    local_.async_connect(tcp::endpoint{asio::ip::address_v4::loopback(), backend_port},
                         [self](boost::system::error_code ec) {
                           if (ec || self->closed_) {
                             self->close();
                             return;
                           }
                           self->pump();
                         });
  }

  void pump() {
    boost::system::error_code ignored;
    plain_socket(peer_).set_option(tcp::no_delay(true), ignored);
    local_.set_option(tcp::no_delay(true), ignored);
    pump_from_peer();
    pump_to_peer();
  }

  void pump_from_peer() {
    auto self = this->shared_from_this();
    peer_.async_read_some(asio::buffer(in_), [self](boost::system::error_code ec,
                                                    size_t n) {
      if (ec) {
        if (self->checker_.mid_frame() && !self->closed_)
          spdlog::warn("cluster gate: {} disconnected in the middle of a frame",
                       self->name_);
        self->close();
        return;
      }
      self->last_activity = steady::now();
      if (!self->checker_.feed(self->in_.data(), n)) {
        spdlog::warn("cluster gate: closed connection from {}: {}", self->name_,
                     self->checker_.error());
        self->rejected_.Increment();
        // The frames before the offending one passed their checks: CAF
        // gets them (a peer's valid messages do not depend on how TCP
        // happened to batch them with a bad one), then the close.
        asio::async_write(self->local_,
                          asio::buffer(self->in_.data(), self->checker_.valid_prefix()),
                          [self](boost::system::error_code, size_t) { self->close(); });
        return;
      }
      asio::async_write(self->local_, asio::buffer(self->in_.data(), n),
                        [self](boost::system::error_code ec, size_t) {
                          if (ec)
                            self->close();
                          else
                            self->pump_from_peer();
                        });
    });
  }

  // CAF's own output needs no checking.
  void pump_to_peer() {
    auto self = this->shared_from_this();
    local_.async_read_some(
        asio::buffer(out_), [self](boost::system::error_code ec, size_t n) {
          if (ec) {
            self->close();
            return;
          }
          self->last_activity = steady::now();
          asio::async_write(self->peer_, asio::buffer(self->out_.data(), n),
                            [self](boost::system::error_code ec, size_t) {
                              if (ec)
                                self->close();
                              else
                                self->pump_to_peer();
                            });
        });
  }

  PeerStream peer_;
  tcp::socket local_;
  basp_frame_checker checker_;
  std::string name_;
  prometheus::Counter& rejected_;
  bool closed_ = false;
  std::array<uint8_t, buffer_bytes> in_;
  std::array<uint8_t, buffer_bytes> out_;
};

std::unique_ptr<ssl::context> make_tls_context(const cluster_tls_files& files,
                                               bool server) {
  auto ctx = std::make_unique<ssl::context>(server ? ssl::context::tls_server
                                                   : ssl::context::tls_client);
  try {
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                     ssl::context::no_tlsv1_1);
    const auto& key = files.key_file.empty() ? files.cert_file : files.key_file;
    ctx->use_certificate_chain(
        asio::buffer(detail::pem_material(files.cert_file, "cluster.tls.cert_file")));
    ctx->use_private_key(asio::buffer(detail::pem_material(key, "cluster.tls.key_file")),
                         ssl::context::pem);
    ctx->add_certificate_authority(
        asio::buffer(detail::pem_material(files.ca_file, "cluster.tls.ca_file")));
    // Peers are known by the cluster CA's signature, not by host name: node
    // addresses change (pods), the CA that admits them does not.
    ctx->set_verify_mode(server ? ssl::verify_peer | ssl::verify_fail_if_no_peer_cert
                                : ssl::verify_peer);
  } catch (const std::exception& e) {
    throw std::runtime_error(
        "cluster: cannot load the TLS CA, certificate or key (cluster.tls.*): " +
        std::string{e.what()});
  }
  return ctx;
}

} // namespace

struct cluster_gate::impl {
  impl(settings s, std::function<uint16_t()> backend)
      : settings_(std::move(s))
      , backend_port_(std::move(backend))
      , acceptor_(io_)
      , sweep_timer_(io_)
      , rejected_(prometheus::BuildCounter()
                      .Name("troupe_cluster_rejected_connections_total")
                      .Help("Inbound cluster connections closed for malformed framing.")
                      .Register(metrics::instance().registry())
                      .Add({}))
      , refused_family_(prometheus::BuildCounter()
                            .Name("troupe_cluster_refused_connections_total")
                            .Help("Cluster connections refused or closed by the gate's "
                                  "limits, by reason.")
                            .Register(metrics::instance().registry()))
      , refused_full_(refused_family_.Add({{"reason", "capacity"}}))
      , refused_handshake_(refused_family_.Add({{"reason", "handshake_timeout"}}))
      , refused_idle_(refused_family_.Add({{"reason", "idle"}})) {
    if (settings_.tls.enabled()) {
      server_tls_ = make_tls_context(settings_.tls, true);
      client_tls_ = make_tls_context(settings_.tls, false);
    }
    port_ = detail::listen_on(acceptor_, settings_.bind_host, settings_.port, "cluster");
    auto per_connection = 2 * buffer_bytes + (server_tls_ ? tls_overhead_bytes : 0);
    capacity_ = static_cast<size_t>(std::min<uint64_t>(
        settings_.max_connections, settings_.max_buffer_bytes / per_connection));
    capacity_ = std::max<size_t>(capacity_, 1);
    accept_loop_.emplace(acceptor_, "cluster gate",
                         [this](tcp::socket peer) { on_accept(std::move(peer)); });
    accept_loop_->start();
    sweep_period_ = std::clamp<std::chrono::milliseconds>(
        std::min(settings_.handshake_timeout, settings_.idle_timeout) / 4,
        std::chrono::milliseconds{10}, std::chrono::milliseconds{1000});
    sweep();
    thread_ = std::thread([this] { io_.run(); });
  }

  void on_accept(tcp::socket peer) {
    auto backend = backend_port_();
    // Until CAF's endpoint is up there is nothing to talk to; the peer
    // retries its join.
    if (backend == 0)
      return;
    purge();
    auto name = remote_name(peer);
    if (open_.size() >= capacity_) {
      refused_full_.Increment();
      auto now = steady::now();
      if (now - last_full_warning_ > std::chrono::seconds(1)) {
        last_full_warning_ = now;
        spdlog::warn("cluster gate: refused {}: {} connections open, the limit "
                     "(cluster.max_connections, cluster.max_buffer_memory)",
                     name, open_.size());
      }
      return;
    }
    basp_frame_checker checker{settings_.max_frame_bytes, settings_.max_handshake_bytes};
    auto start = [&](auto stream) {
      auto r = std::make_shared<relay<decltype(stream)>>(
          std::move(stream), tcp::socket{io_}, std::move(checker), std::move(name),
          rejected_);
      track(r);
      r->start_inbound(backend);
    };
    if (server_tls_)
      start(tls_stream{std::move(peer), *server_tls_});
    else
      start(std::move(peer));
  }

  void track(std::shared_ptr<connection> c) {
    open_.push_back(c);
    open_count_.store(open_.size(), std::memory_order_relaxed);
  }

  void purge() {
    open_.erase(
        std::remove_if(open_.begin(), open_.end(),
                       [](const std::weak_ptr<connection>& w) { return w.expired(); }),
        open_.end());
    open_count_.store(open_.size(), std::memory_order_relaxed);
  }

  // Closes connections past their handshake deadline or idle too long.
  void sweep() {
    purge();
    auto now = steady::now();
    for (auto& weak : open_) {
      auto c = weak.lock();
      if (!c)
        continue;
      if (!c->handshake_done() && now - c->opened > settings_.handshake_timeout) {
        spdlog::warn("cluster gate: closed connection from {}: no handshake within {} ms",
                     c->peer_name(), settings_.handshake_timeout.count());
        refused_handshake_.Increment();
        c->close();
      } else if (now - c->last_activity > settings_.idle_timeout) {
        spdlog::info("cluster gate: closed connection from {}: idle for {} ms",
                     c->peer_name(), settings_.idle_timeout.count());
        refused_idle_.Increment();
        c->close();
      }
    }
    sweep_timer_.expires_after(sweep_period_);
    sweep_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec)
        sweep();
    });
  }

  struct dial_op : std::enable_shared_from_this<dial_op> {
    dial_op(impl& gate, std::string host, uint16_t port,
            std::function<void(dial_result)> done)
        : gate(gate)
        , host(std::move(host))
        , port(port)
        , done(std::move(done))
        , resolver(gate.io_)
        , socket(gate.io_)
        , timer(gate.io_)
        , tunnel(gate.io_) {}

    void start(std::chrono::milliseconds timeout) {
      auto self = shared_from_this();
      timer.expires_after(timeout);
      timer.async_wait([self, timeout](boost::system::error_code ec) {
        if (ec)
          return;
        self->fail("no answer within " + std::to_string(timeout.count()) + " ms");
      });
      resolver.async_resolve(
          host, std::to_string(port),
          [self](boost::system::error_code ec, tcp::resolver::results_type results) {
            if (self->finished)
              return;
            if (ec) {
              self->fail("cannot resolve: " + ec.message());
              return;
            }
            asio::async_connect(self->socket, results,
                                [self](boost::system::error_code ec,
                                       const tcp::endpoint&) { self->on_connect(ec); });
          });
    }

    void on_connect(boost::system::error_code ec) {
      if (finished)
        return;
      if (ec) {
        fail(ec.message());
        return;
      }
      if (!gate.client_tls_) {
        // A probe only: CAF connects to the address that just answered.
        boost::system::error_code ignored;
        auto ep = socket.remote_endpoint(ignored);
        socket.close(ignored);
        succeed(ep.address().to_string(), ep.port());
        return;
      }
      tls.emplace(std::move(socket), *gate.client_tls_);
      auto self = shared_from_this();
      tls->async_handshake(ssl::stream_base::client,
                           [self](boost::system::error_code ec) {
                             if (self->finished)
                               return;
                             if (ec) {
                               self->fail("TLS handshake failed: " + ec.message());
                               return;
                             }
                             self->open_tunnel();
                           });
    }

    // A one-shot loopback port that CAF's middleman connects to; its
    // connection is spliced into the TLS stream.
    void open_tunnel() {
      boost::system::error_code ec;
      tcp::endpoint local{asio::ip::address_v4::loopback(), 0};
      tunnel.open(local.protocol(), ec);
      if (!ec)
        tunnel.bind(local, ec);
      if (!ec)
        tunnel.listen(1, ec);
      if (ec) {
        fail("cannot open a loopback tunnel: " + ec.message());
        return;
      }
      auto tunnel_port = tunnel.local_endpoint().port();
      auto self = shared_from_this();
      tunnel.async_accept([self](boost::system::error_code ec, tcp::socket caf_side) {
        boost::system::error_code ignored;
        self->timer.cancel();
        self->tunnel.close(ignored);
        if (ec || !self->tls)
          return;
        basp_frame_checker checker{self->gate.settings_.max_frame_bytes,
                                   self->gate.settings_.max_handshake_bytes,
                                   basp_frame_checker::sender::server};
        auto r = std::make_shared<relay<tls_stream>>(
            std::move(*self->tls), std::move(caf_side), std::move(checker),
            self->host + ":" + std::to_string(self->port), self->gate.rejected_);
        self->tls.reset();
        self->gate.track(r);
        r->start_tunnel();
      });
      // The deadline keeps running until CAF has connected.
      report({true, "127.0.0.1", tunnel_port, {}});
    }

    void succeed(std::string at, uint16_t at_port) {
      timer.cancel();
      report({true, std::move(at), at_port, {}});
    }

    void fail(std::string why) {
      boost::system::error_code ignored;
      resolver.cancel();
      socket.close(ignored);
      if (tls)
        tls->next_layer().close(ignored);
      tunnel.close(ignored);
      timer.cancel();
      report({false, {}, 0, std::move(why)});
    }

    void report(dial_result r) {
      if (finished)
        return;
      finished = true;
      done(std::move(r));
    }

    impl& gate;
    std::string host;
    uint16_t port;
    std::function<void(dial_result)> done;
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;
    tcp::acceptor tunnel;
    std::optional<tls_stream> tls;
    bool finished = false;
  };

  void dial(std::string host, uint16_t port, std::chrono::milliseconds timeout,
            std::function<void(dial_result)> done) {
    asio::post(io_, [this, host = std::move(host), port, timeout,
                     done = std::move(done)]() mutable {
      std::make_shared<dial_op>(*this, std::move(host), port, std::move(done))
          ->start(timeout);
    });
  }

  void stop() {
    if (!thread_.joinable())
      return;
    asio::post(io_, [this] {
      accept_loop_->close();
      sweep_timer_.cancel();
      for (auto& weak : open_)
        if (auto c = weak.lock())
          c->close();
      io_.stop();
    });
    thread_.join();
  }

  settings settings_;
  std::function<uint16_t()> backend_port_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer sweep_timer_;
  std::chrono::milliseconds sweep_period_{100};
  std::optional<detail::accept_loop> accept_loop_;
  std::unique_ptr<ssl::context> server_tls_;
  std::unique_ptr<ssl::context> client_tls_;
  prometheus::Counter& rejected_;
  prometheus::Family<prometheus::Counter>& refused_family_;
  prometheus::Counter& refused_full_;
  prometheus::Counter& refused_handshake_;
  prometheus::Counter& refused_idle_;
  std::vector<std::weak_ptr<connection>> open_;
  std::atomic<size_t> open_count_{0};
  size_t capacity_ = 0;
  steady::time_point last_full_warning_{};
  uint16_t port_ = 0;
  std::thread thread_;
};

cluster_gate::cluster_gate(settings s, std::function<uint16_t()> backend_port)
    : impl_(std::make_unique<impl>(std::move(s), std::move(backend_port))) {}

cluster_gate::~cluster_gate() {
  stop();
}

uint16_t cluster_gate::port() const noexcept {
  return impl_->port_;
}

size_t cluster_gate::open_connections() const noexcept {
  return impl_->open_count_.load(std::memory_order_relaxed);
}

void cluster_gate::dial(const std::string& host, uint16_t port,
                        std::chrono::milliseconds timeout,
                        std::function<void(dial_result)> done) {
  impl_->dial(host, port, timeout, std::move(done));
}

void cluster_gate::stop() {
  impl_->stop();
}

} // namespace troupe
