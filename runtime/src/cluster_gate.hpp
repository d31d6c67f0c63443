#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace troupe {

/// The PEM files of the cluster's mutual TLS: every node holds a certificate
/// signed by the cluster CA and accepts only peers that present one.
struct cluster_tls_files {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  bool enabled() const noexcept { return !cert_file.empty(); }
};

/// Where a dial ended: the address CAF's middleman connects to (the peer
/// itself, or a loopback tunnel into its TLS connection), or why it failed.
struct dial_result {
  bool ok = false;
  std::string host;
  uint16_t port = 0;
  std::string error;
};

/// Owns the node's side of every connection between nodes, on an Asio thread
/// of its own, so that neither CAF's scheduler nor its middleman ever blocks
/// on the network.
///
/// Inbound: CAF 0.17's BASP trusts a frame header's payload length and
/// allocates it at once (32 bytes from anyone can make a node zero 4 GiB),
/// and drops malformed connections without telling the application. The
/// gate owns the public cluster port, relays to CAF's endpoint on loopback,
/// and closes — and logs — any connection whose first frame is not a
/// handshake, whose frames carry an unknown operation or exceed
/// `max_frame_bytes`, or that addresses an actor by a registry name other
/// than CAF's spawn server. With TLS it terminates mutual TLS first and
/// checks the decrypted stream. Connections are capped (by count and by the
/// memory their buffers take), must finish their handshakes within
/// `handshake_timeout`, and are closed after `idle_timeout` without traffic.
///
/// Outbound: `dial` resolves and connects without blocking anyone; without
/// TLS it only probes (CAF then connects to the resolved address, which just
/// answered), with TLS it keeps the connection and hands CAF a one-shot
/// loopback port tunnelled into it, checking what the peer sends back.
class cluster_gate {
public:
  struct settings {
    std::string bind_host;
    uint16_t port = 0; ///< 0 picks a free port
    uint32_t max_frame_bytes = 16u << 20;
    uint32_t max_handshake_bytes = 64u << 10;
    uint32_t max_connections = 256;
    /// Buffers of all connections together; caps connections further.
    uint64_t max_buffer_bytes = 64ull << 20;
    std::chrono::milliseconds handshake_timeout{5000};
    std::chrono::milliseconds idle_timeout{60000};
    cluster_tls_files tls;
  };

  /// `backend_port` names CAF's loopback endpoint (0 while it is not up);
  /// it is read for each new connection. Throws std::runtime_error when the
  /// port cannot be bound or the TLS files cannot be loaded.
  cluster_gate(settings s, std::function<uint16_t()> backend_port);
  ~cluster_gate();
  cluster_gate(const cluster_gate&) = delete;
  cluster_gate& operator=(const cluster_gate&) = delete;

  uint16_t port() const noexcept;
  /// Connections the gate holds open now, inbound and outbound.
  size_t open_connections() const noexcept;
  /// Connects to a peer's cluster port within `timeout` and calls `done` on
  /// the gate's thread; `done` must only hand the result on (e.g. as a
  /// message to an actor). Thread-safe.
  void dial(const std::string& host, uint16_t port, std::chrono::milliseconds timeout,
            std::function<void(dial_result)> done);
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Incremental checker of BASP framing on one inbound byte stream.
class basp_frame_checker {
public:
  static constexpr size_t header_size = 32;

  /// Which side of a connection the checked bytes come from: a client opens
  /// with a client handshake, a server (a peer this node dialed) with a
  /// server handshake.
  enum class sender { client, server };

  basp_frame_checker(uint32_t max_frame_bytes, uint32_t max_handshake_bytes,
                     sender from = sender::client)
      : max_frame_(max_frame_bytes)
      , max_handshake_(max_handshake_bytes)
      , from_(from) {}

  /// Consumes `n` bytes; false (with `error()` set) at the first violation.
  bool feed(const uint8_t* data, size_t n);
  /// After a failed feed: how many of its bytes came before the offending
  /// frame began; those are whole, valid frames and may still be delivered.
  size_t valid_prefix() const noexcept { return valid_prefix_; }
  const std::string& error() const noexcept { return error_; }
  uint64_t frames() const noexcept { return frames_; }
  /// True once the whole first frame (the handshake) has passed.
  bool handshake_done() const noexcept { return frames_ > 0 && !mid_frame(); }
  /// True between the first byte of a frame and its last.
  bool mid_frame() const noexcept { return header_have_ > 0 || payload_left_ > 0; }

private:
  bool check_header();

  uint32_t max_frame_;
  uint32_t max_handshake_;
  sender from_;
  uint8_t header_[header_size] = {};
  size_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  uint64_t frames_ = 0;
  size_t valid_prefix_ = 0;
  std::string error_;
};

} // namespace troupe
