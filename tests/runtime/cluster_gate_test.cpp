#include "../../runtime/src/cluster_gate.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace {

std::vector<uint8_t> frame(uint8_t operation, uint32_t payload_len,
                           size_t payload_bytes) {
  std::vector<uint8_t> out(troupe::basp_frame_checker::header_size, 0);
  out[0] = operation;
  out[4] = static_cast<uint8_t>(payload_len >> 24);
  out[5] = static_cast<uint8_t>(payload_len >> 16);
  out[6] = static_cast<uint8_t>(payload_len >> 8);
  out[7] = static_cast<uint8_t>(payload_len);
  out.resize(out.size() + payload_bytes, 0xAB);
  return out;
}

void append(std::vector<uint8_t>& to, const std::vector<uint8_t>& bytes) {
  to.insert(to.end(), bytes.begin(), bytes.end());
}

constexpr uint8_t client_handshake = 0x01;
constexpr uint8_t direct_message = 0x02;

} // namespace

TEST_CASE("a handshake followed by messages passes however the stream is split") {
  std::vector<uint8_t> stream;
  append(stream, frame(client_handshake, 100, 100));
  append(stream, frame(direct_message, 5000, 5000));
  append(stream, frame(direct_message, 0, 0));
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{31}, size_t{32}, size_t{4096}}) {
    troupe::basp_frame_checker checker{1 << 20, 1 << 16};
    for (size_t at = 0; at < stream.size(); at += chunk) {
      auto n = std::min(chunk, stream.size() - at);
      REQUIRE(checker.feed(stream.data() + at, n));
    }
    CHECK(checker.frames() == 3);
    CHECK_FALSE(checker.mid_frame());
  }
}

TEST_CASE("a first frame that is not a client handshake is refused") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  auto bytes = frame(direct_message, 10, 10);
  CHECK_FALSE(checker.feed(bytes.data(), bytes.size()));
  CHECK(checker.error().find("not a handshake") != std::string::npos);
}

TEST_CASE("a frame announcing more than the limit is refused before its payload") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  auto hello = frame(client_handshake, 10, 10);
  REQUIRE(checker.feed(hello.data(), hello.size()));
  auto huge = frame(direct_message, 0xFFFFFFF0, 0);
  CHECK_FALSE(checker.feed(huge.data(), huge.size()));
  CHECK(checker.error().find("exceeds the limit") != std::string::npos);
}

TEST_CASE("a handshake larger than the handshake limit is refused") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  auto hello = frame(client_handshake, (1 << 16) + 1, 0);
  CHECK_FALSE(checker.feed(hello.data(), hello.size()));
}

TEST_CASE("an unknown operation is refused") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  auto hello = frame(client_handshake, 0, 0);
  REQUIRE(checker.feed(hello.data(), hello.size()));
  auto odd = frame(0x7F, 0, 0);
  CHECK_FALSE(checker.feed(odd.data(), odd.size()));
  CHECK(checker.error().find("unknown operation") != std::string::npos);
}

TEST_CASE("a stream cut inside a header or payload is reported as mid-frame") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  auto hello = frame(client_handshake, 64, 64);
  REQUIRE(checker.feed(hello.data(), 10));
  CHECK(checker.mid_frame());
  REQUIRE(checker.feed(hello.data() + 10, 30));
  CHECK(checker.mid_frame());
  REQUIRE(checker.feed(hello.data() + 40, hello.size() - 40));
  CHECK_FALSE(checker.mid_frame());
}
