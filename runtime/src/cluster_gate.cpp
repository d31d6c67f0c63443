#include "cluster_gate.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <thread>
// Boost 1.74's asio uses std::exchange without including <utility> in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/metrics.hpp>

#include <troupe/runtime/detail/tcp_listen.hpp>

namespace troupe {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// BASP operations of CAF 0.17 (caf/io/basp/message_type.hpp).
constexpr uint8_t client_handshake = 0x01;
constexpr uint8_t last_operation = 0x06; // heartbeat

} // namespace

bool basp_frame_checker::feed(const uint8_t* data, size_t n) {
  while (n > 0) {
    if (payload_left_ > 0) {
      auto take = static_cast<size_t>(std::min<uint64_t>(payload_left_, n));
      payload_left_ -= take;
      data += take;
      n -= take;
      continue;
    }
    auto take = std::min(header_size - header_have_, n);
    std::memcpy(header_ + header_have_, data, take);
    header_have_ += take;
    data += take;
    n -= take;
    if (header_have_ == header_size) {
      header_have_ = 0;
      if (!check_header())
        return false;
    }
  }
  return true;
}

bool basp_frame_checker::check_header() {
  uint8_t operation = header_[0];
  uint32_t payload = (uint32_t{header_[4]} << 24) | (uint32_t{header_[5]} << 16) |
                     (uint32_t{header_[6]} << 8) | uint32_t{header_[7]};
  if (frames_ == 0 && operation != client_handshake) {
    error_ =
        "first frame is not a handshake (operation " + std::to_string(operation) + ")";
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

class relay : public std::enable_shared_from_this<relay> {
public:
  relay(tcp::socket peer, uint16_t backend_port, const cluster_gate::settings& s,
        prometheus::Counter& rejected)
      : peer_(std::move(peer))
      , backend_(peer_.get_executor())
      , backend_port_(backend_port)
      , checker_(s.max_frame_bytes, s.max_handshake_bytes)
      , rejected_(rejected) {
    boost::system::error_code ec;
    auto ep = peer_.remote_endpoint(ec);
    peer_name_ = ec ? std::string{"unknown peer"}
                    : ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  void start() {
    auto self = shared_from_this();
    backend_.async_connect(tcp::endpoint{asio::ip::address_v4::loopback(), backend_port_},
                           [self](boost::system::error_code ec) {
                             if (ec) {
                               self->close();
                               return;
                             }
                             boost::system::error_code ignored;
                             self->peer_.set_option(tcp::no_delay(true), ignored);
                             self->backend_.set_option(tcp::no_delay(true), ignored);
                             self->pump_inbound();
                             self->pump_outbound();
                           });
  }

private:
  // Peer -> CAF: every byte passes the frame checker first.
  void pump_inbound() {
    auto self = shared_from_this();
    peer_.async_read_some(
        asio::buffer(in_), [self](boost::system::error_code ec, size_t n) {
          if (ec) {
            if (self->checker_.mid_frame())
              spdlog::warn("cluster gate: {} disconnected in the middle of a frame",
                           self->peer_name_);
            self->close();
            return;
          }
          if (!self->checker_.feed(self->in_.data(), n)) {
            spdlog::warn("cluster gate: closed connection from {}: {}", self->peer_name_,
                         self->checker_.error());
            self->rejected_.Increment();
            self->close();
            return;
          }
          asio::async_write(self->backend_, asio::buffer(self->in_.data(), n),
                            [self](boost::system::error_code ec, size_t) {
                              if (ec)
                                self->close();
                              else
                                self->pump_inbound();
                            });
        });
  }

  // CAF -> peer: CAF's own output needs no checking.
  void pump_outbound() {
    auto self = shared_from_this();
    backend_.async_read_some(
        asio::buffer(out_), [self](boost::system::error_code ec, size_t n) {
          if (ec) {
            self->close();
            return;
          }
          asio::async_write(self->peer_, asio::buffer(self->out_.data(), n),
                            [self](boost::system::error_code ec, size_t) {
                              if (ec)
                                self->close();
                              else
                                self->pump_outbound();
                            });
        });
  }

  void close() {
    boost::system::error_code ignored;
    peer_.close(ignored);
    backend_.close(ignored);
  }

  tcp::socket peer_;
  tcp::socket backend_;
  uint16_t backend_port_;
  basp_frame_checker checker_;
  prometheus::Counter& rejected_;
  std::string peer_name_;
  std::array<uint8_t, 64 * 1024> in_;
  std::array<uint8_t, 64 * 1024> out_;
};

} // namespace

struct cluster_gate::impl {
  impl(settings s, std::function<uint16_t()> backend)
      : settings_(std::move(s))
      , backend_port_(std::move(backend))
      , acceptor_(io_)
      , rejected_(prometheus::BuildCounter()
                      .Name("troupe_cluster_rejected_connections_total")
                      .Help("Inbound cluster connections closed for malformed framing.")
                      .Register(metrics::instance().registry())
                      .Add({})) {
    port_ = detail::listen_on(acceptor_, settings_.bind_host, settings_.port, "cluster");
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }

  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket peer) {
      if (ec == asio::error::operation_aborted)
        return;
      if (!ec) {
        auto backend = backend_port_();
        // Until CAF's endpoint is up there is nothing to talk to; the peer
        // retries its join.
        if (backend != 0)
          std::make_shared<relay>(std::move(peer), backend, settings_, rejected_)
              ->start();
      }
      accept();
    });
  }

  void stop() {
    if (!thread_.joinable())
      return;
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      io_.stop();
    });
    thread_.join();
  }

  settings settings_;
  std::function<uint16_t()> backend_port_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  prometheus::Counter& rejected_;
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

void cluster_gate::stop() {
  impl_->stop();
}

} // namespace troupe
