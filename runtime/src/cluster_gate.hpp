#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace troupe {

/// Checks the framing of everything peers send to this node before CAF sees
/// it. CAF 0.17's BASP trusts a frame header's payload length and allocates
/// it at once (32 bytes from anyone can make a node zero 4 GiB), and drops
/// malformed connections without telling the application. The gate owns the
/// public cluster port, relays to CAF's endpoint on loopback, and closes —
/// and logs — any connection whose first frame is not a client handshake, or
/// whose frames carry an unknown operation or exceed `max_frame_bytes`.
class cluster_gate {
public:
  struct settings {
    std::string bind_host;
    uint16_t port = 0; ///< 0 picks a free port
    uint32_t max_frame_bytes = 16u << 20;
    uint32_t max_handshake_bytes = 64u << 10;
  };

  /// `backend_port` names CAF's loopback endpoint (0 while it is not up);
  /// it is read for each new connection. Throws std::runtime_error when the
  /// port cannot be bound.
  cluster_gate(settings s, std::function<uint16_t()> backend_port);
  ~cluster_gate();
  cluster_gate(const cluster_gate&) = delete;
  cluster_gate& operator=(const cluster_gate&) = delete;

  uint16_t port() const noexcept;
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Incremental checker of BASP framing on one inbound byte stream.
class basp_frame_checker {
public:
  static constexpr size_t header_size = 32;

  basp_frame_checker(uint32_t max_frame_bytes, uint32_t max_handshake_bytes)
      : max_frame_(max_frame_bytes)
      , max_handshake_(max_handshake_bytes) {}

  /// Consumes `n` bytes; false (with `error()` set) at the first violation.
  bool feed(const uint8_t* data, size_t n);
  const std::string& error() const noexcept { return error_; }
  uint64_t frames() const noexcept { return frames_; }
  /// True between the first byte of a frame and its last.
  bool mid_frame() const noexcept { return header_have_ > 0 || payload_left_ > 0; }

private:
  bool check_header();

  uint32_t max_frame_;
  uint32_t max_handshake_;
  uint8_t header_[header_size] = {};
  size_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  uint64_t frames_ = 0;
  std::string error_;
};

} // namespace troupe
