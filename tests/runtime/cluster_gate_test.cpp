#include "../../runtime/src/cluster_gate.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <caf/atom.hpp>

#include <troupe/runtime/detail/accept_loop.hpp>
#include <troupe/runtime/detail/tcp_listen.hpp>

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

TEST_CASE("a refused frame leaves the whole valid frames read before it deliverable") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  std::vector<uint8_t> stream;
  append(stream, frame(client_handshake, 10, 10));
  append(stream, frame(direct_message, 7, 7));
  auto valid = stream.size();
  append(stream, frame(0x7F, 0, 0));
  CHECK_FALSE(checker.feed(stream.data(), stream.size()));
  CHECK(checker.valid_prefix() == valid);

  // A bad header begun in an earlier read: nothing of this read is valid.
  troupe::basp_frame_checker split{1 << 20, 1 << 16};
  auto hello = frame(client_handshake, 0, 0);
  REQUIRE(split.feed(hello.data(), hello.size()));
  auto odd = frame(0x7F, 0, 0);
  REQUIRE(split.feed(odd.data(), 5));
  CHECK_FALSE(split.feed(odd.data() + 5, odd.size() - 5));
  CHECK(split.valid_prefix() == 0);
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

namespace {

std::vector<uint8_t> named_message(uint64_t name) {
  auto bytes = frame(direct_message, 0, 0);
  bytes[3] = 0x01; // named receiver
  for (int i = 0; i < 8; ++i)
    bytes[24 + i] = static_cast<uint8_t>(name >> (56 - 8 * i));
  return bytes;
}

constexpr uint8_t server_handshake = 0x00;

} // namespace

TEST_CASE("a message to a registry name other than CAF's spawn server is refused") {
  troupe::basp_frame_checker checker{1 << 20, 1 << 16};
  auto hello = frame(client_handshake, 0, 0);
  REQUIRE(checker.feed(hello.data(), hello.size()));
  auto to_spawn_server = named_message(static_cast<uint64_t>(caf::atom("SpawnServ")));
  REQUIRE(checker.feed(to_spawn_server.data(), to_spawn_server.size()));
  auto to_cluster = named_message(static_cast<uint64_t>(caf::atom("cluster")));
  CHECK_FALSE(checker.feed(to_cluster.data(), to_cluster.size()));
  CHECK(checker.error().find("registry name") != std::string::npos);
}

TEST_CASE("what a dialed server sends must open with a server handshake") {
  using sender = troupe::basp_frame_checker::sender;
  troupe::basp_frame_checker from_server{1 << 20, 1 << 16, sender::server};
  auto client_hello = frame(client_handshake, 0, 0);
  CHECK_FALSE(from_server.feed(client_hello.data(), client_hello.size()));
  troupe::basp_frame_checker fresh{1 << 20, 1 << 16, sender::server};
  auto server_hello = frame(server_handshake, 20, 20);
  CHECK(fresh.feed(server_hello.data(), server_hello.size()));
  CHECK(fresh.handshake_done());
}

namespace {

// A loopback listener that never accepts: the kernel completes connections
// into its backlog, which is all a gate's backend needs here.
struct loopback_listener {
  int fd = -1;
  uint16_t port = 0;
  explicit loopback_listener(int backlog = 128) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, backlog) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~loopback_listener() { ::close(fd); }
};

int connect_to(uint16_t port, bool blocking = true) {
  int fd = ::socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (blocking)
    REQUIRE(rc == 0);
  return fd;
}

// True when the peer closes `fd` before the deadline.
bool closed_within(int fd, std::chrono::milliseconds deadline) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(deadline.count())) <= 0)
    return false;
  char byte;
  return ::recv(fd, &byte, 1, 0) <= 0;
}

troupe::cluster_gate::settings gate_settings() {
  troupe::cluster_gate::settings s;
  s.bind_host = "127.0.0.1";
  return s;
}

template <class Pred>
bool eventually(std::chrono::milliseconds deadline, Pred pred) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (pred())
      return true;
    std::this_thread::yield();
  }
  return pred();
}

// The dial's result, which must come within 10 s whatever `timeout` is.
troupe::dial_result dial_and_wait(troupe::cluster_gate& gate, const std::string& host,
                                  uint16_t port, std::chrono::milliseconds timeout) {
  // Shared: a late callback must not outlive a failed wait.
  auto result = std::make_shared<std::promise<troupe::dial_result>>();
  auto f = result->get_future();
  gate.dial(host, port, timeout,
            [result](troupe::dial_result r) { result->set_value(std::move(r)); });
  REQUIRE(f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  return f.get();
}

} // namespace

TEST_CASE("the gate refuses connections beyond its cap and keeps those it holds") {
  loopback_listener backend;
  auto s = gate_settings();
  s.max_connections = 2;
  troupe::cluster_gate gate{s, [&] { return backend.port; }};
  int first = connect_to(gate.port());
  int second = connect_to(gate.port());
  REQUIRE(
      eventually(std::chrono::seconds(10), [&] { return gate.open_connections() == 2; }));
  int third = connect_to(gate.port());
  CHECK(closed_within(third, std::chrono::seconds(10)));
  CHECK_FALSE(closed_within(first, std::chrono::milliseconds(0)));
  CHECK_FALSE(closed_within(second, std::chrono::milliseconds(0)));
  CHECK(gate.open_connections() == 2);
  for (int fd : {first, second, third})
    ::close(fd);
}

TEST_CASE("the memory bound caps connections below the connection limit") {
  loopback_listener backend;
  auto s = gate_settings();
  s.max_connections = 100;
  s.max_buffer_bytes = 128 * 1024; // one connection's two buffers
  troupe::cluster_gate gate{s, [&] { return backend.port; }};
  int first = connect_to(gate.port());
  REQUIRE(
      eventually(std::chrono::seconds(10), [&] { return gate.open_connections() == 1; }));
  int second = connect_to(gate.port());
  CHECK(closed_within(second, std::chrono::seconds(10)));
  ::close(first);
  ::close(second);
}

TEST_CASE("a connection that sends no handshake within the deadline is closed") {
  loopback_listener backend;
  auto s = gate_settings();
  s.handshake_timeout = std::chrono::milliseconds(100);
  troupe::cluster_gate gate{s, [&] { return backend.port; }};
  int fd = connect_to(gate.port());
  CHECK(closed_within(fd, std::chrono::seconds(10)));
  ::close(fd);
}

TEST_CASE("a connection without traffic is closed after the idle timeout") {
  loopback_listener backend;
  auto s = gate_settings();
  s.idle_timeout = std::chrono::milliseconds(200);
  troupe::cluster_gate gate{s, [&] { return backend.port; }};
  int fd = connect_to(gate.port());
  auto hello = frame(client_handshake, 8, 8);
  REQUIRE(::send(fd, hello.data(), hello.size(), 0) ==
          static_cast<ssize_t>(hello.size()));
  CHECK(closed_within(fd, std::chrono::seconds(10)));
  ::close(fd);
}

TEST_CASE("a dial of a listening port reports the address that answered") {
  loopback_listener peer;
  troupe::cluster_gate gate{gate_settings(), [] { return uint16_t{0}; }};
  auto r = dial_and_wait(gate, "localhost", peer.port, std::chrono::seconds(5));
  CHECK(r.ok);
  CHECK(r.port == peer.port);
  CHECK((r.host == "127.0.0.1" || r.host == "::1"));
}

TEST_CASE("a dial of an address that never answers fails at its timeout") {
  // A full backlog: the kernel drops further SYNs, as a route to nowhere does.
  loopback_listener hole{0};
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i)
    fillers.push_back(connect_to(hole.port, false));
  troupe::cluster_gate gate{gate_settings(), [] { return uint16_t{0}; }};
  auto r = dial_and_wait(gate, "127.0.0.1", hole.port, std::chrono::milliseconds(200));
  CHECK_FALSE(r.ok);
  CHECK(r.error.find("no answer within 200 ms") != std::string::npos);
  for (int fd : fillers)
    ::close(fd);
}

TEST_CASE("the accept loop backs off while out of descriptors and accepts afterwards") {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor{io};
  troupe::detail::listen_on(acceptor, "127.0.0.1", 0, "test");
  int accepted = 0;
  troupe::detail::accept_loop loop{acceptor, "test",
                                   [&](asio::ip::tcp::socket) { ++accepted; }};
  int client = connect_to(acceptor.local_endpoint().port());
  rlimit saved{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
  // No descriptor left for accept(): the lowest free one is above the limit.
  int probe = ::dup(0);
  REQUIRE(probe >= 0);
  ::close(probe);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(probe);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  loop.start();
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (loop.backoffs() < 2 && std::chrono::steady_clock::now() < until)
    io.run_one_for(std::chrono::milliseconds(100));
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
  CHECK(loop.backoffs() >= 2);
  CHECK(accepted == 0);
  until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (accepted == 0 && std::chrono::steady_clock::now() < until)
    io.run_one_for(std::chrono::milliseconds(100));
  CHECK(accepted == 1);
  loop.close();
  ::close(client);
}
