// Hostile input on a node's two listening ports: its cluster port (CAF's
// BASP) and its status port (HTTP). After each case the node must still be
// alive, within sane memory, and still serving its peers.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "support/http_get.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
using strings = std::vector<std::string>;

constexpr auto patience = 15s;
constexpr uint64_t memory_limit_kib = 1024 * 1024; // 1 GiB

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

const strings fast_detector{"--cluster.heartbeat_interval", "100ms",
                            "--cluster.failure_timeout",    "1s",
                            "--cluster.connect_timeout",    "1s"};

// --- BASP frames (caf/io/basp/header.hpp, CAF 0.17) ---------------------------
//
// A 32-byte header in network byte order: operation (1 byte), two padding
// bytes, flags (1), payload_len (4), operation_data (8), source_actor (8),
// dest_actor (8); then payload_len bytes of payload.

constexpr size_t basp_header_size = 32;
constexpr uint8_t client_handshake = 0x01;

void put_be(std::string& out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

std::string basp_header(uint8_t operation, uint32_t payload_len,
                        uint64_t operation_data = 0, uint64_t source_actor = 0,
                        uint64_t dest_actor = 0) {
  std::string out;
  out.push_back(static_cast<char>(operation));
  out.push_back(0);
  out.push_back(0);
  out.push_back(0); // flags
  put_be(out, payload_len, 4);
  put_be(out, operation_data, 8);
  put_be(out, source_actor, 8);
  put_be(out, dest_actor, 8);
  return out;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen{seed};
  std::uniform_int_distribution<int> byte{0, 255};
  std::string out(n, '\0');
  for (auto& c : out)
    c = static_cast<char>(byte(gen));
  return out;
}

// --- memory watch -------------------------------------------------------------

// Samples the node's VmRSS while hostile input is processed and remembers the
// peak. Over the limit it kills the node, so a runaway allocation cannot take
// the machine down with it; the test then fails on the recorded peak.
class rss_watch {
public:
  rss_watch(node_process& proc, uint64_t limit_kib)
      : proc_(proc)
      , limit_kib_(limit_kib) {
    thread_ = std::thread([this] { loop(); });
  }
  ~rss_watch() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  rss_watch(const rss_watch&) = delete;
  rss_watch& operator=(const rss_watch&) = delete;

  uint64_t peak_kib() const { return peak_kib_; }
  bool killed() const { return killed_; }

private:
  void loop() {
    std::unique_lock<std::mutex> lock{mtx_};
    while (!stop_) {
      if (auto rss = proc_.rss_kib()) {
        peak_kib_ = std::max<uint64_t>(peak_kib_, *rss);
        if (*rss > limit_kib_ && !killed_) {
          killed_ = true;
          proc_.kill(SIGKILL);
        }
      }
      cv_.wait_for(lock, 10ms, [this] { return stop_; });
    }
  }

  node_process& proc_;
  uint64_t limit_kib_;
  std::atomic<uint64_t> peak_kib_{0};
  std::atomic<bool> killed_{false};
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

size_t open_fds(const node_process& proc) {
  std::error_code ec;
  size_t n = 0;
  for (auto it =
           std::filesystem::directory_iterator{
               "/proc/" + std::to_string(proc.pid()) + "/fd", ec};
       !ec && it != std::filesystem::directory_iterator{}; it.increment(ec))
    ++n;
  return n;
}

// --- the node under attack and a peer that keeps calling it -------------------

struct target_and_caller {
  running_node target; // runs greeter, starts the cluster
  running_node caller; // calls greeter every 100ms
};

target_and_caller start_pair() {
  target_and_caller n;
  n.target = start_node("t", fast_detector + strings{"--services.enabled", "greeter"},
                        within(patience));
  n.caller = start_node("a",
                        fast_detector +
                            strings{"--services.enabled", "caller", "--caller.interval",
                                    "100ms", "--caller.timeout", "500ms",
                                    "--cluster.seeds", n.target.cluster_address()},
                        within(patience));
  auto answered = n.caller->wait_for_line("answered by node t", within(patience));
  if (!answered)
    throw std::runtime_error("the caller never reached the target; its log:\n" +
                             n.caller->output());
  return n;
}

std::string memory_report(const node_process& target, const rss_watch& watch) {
  std::string out =
      "peak VmRSS of the target: " + std::to_string(watch.peak_kib() / 1024) + " MiB";
  if (watch.killed())
    out += " (killed by the test at the limit of " +
           std::to_string(memory_limit_kib / 1024) + " MiB)";
  if (auto rss = target.rss_kib())
    out += ", now " + std::to_string(*rss / 1024) + " MiB";
  return out;
}

// The target survived and serves: the caller gets three NEW answers from it
// (after `mark`) and never marks it down, it runs and answers /healthz, both
// still see each other, and its memory stayed sane throughout.
// Sends `bytes` on two connections, hanging up the first with a FIN and the
// second with a reset (RST).
void send_then_hang_up(uint16_t port, const std::string& bytes) {
  for (bool abort : {false, true}) {
    auto conn = raw_tcp::connect(port);
    REQUIRE(conn.has_value());
    REQUIRE(conn->send(bytes));
    if (abort)
      conn->reset();
    else
      conn->close();
  }
}

void check_still_serving(const target_and_caller& n, const rss_watch& watch,
                         size_t mark) {
  const std::regex answered_or_down{"answered by node t|member t at .* is down"};
  for (int answers = 0; answers < 3; ++answers) {
    auto event = n.caller->wait_for(answered_or_down, within(patience), mark);
    INFO(memory_report(*n.target.process, watch));
    INFO("log of t:\n" << n.target->output());
    INFO("log of a:\n" << n.caller->output());
    REQUIRE(event.has_value());
    REQUIRE_THAT(event->text, Catch::Contains("answered by node t"));
    mark = event->index + 1;
  }
  REQUIRE(n.target->running());
  CHECK(http_status(n.target.status_port, "/healthz") == 200);
  for (auto* node : {&n.target, &n.caller}) {
    std::optional<cluster_info> view;
    bool both = eventually(within(patience), [&] {
      view = get_cluster(node->status_port);
      return view && view->names() == strings{"a", "t"};
    });
    INFO("/cluster of " << node->name);
    CHECK(both);
  }
  INFO(memory_report(*n.target.process, watch));
  CHECK_FALSE(watch.killed());
  CHECK(watch.peak_kib() < memory_limit_kib);
}

// An HTTP answer to hostile input: a 4xx status, or the connection closed
// without one. Never a success, a server error or silence.
void check_rejected(raw_tcp::reply reply) {
  INFO("answer: " << reply.data.substr(0, 200));
  if (reply.data.empty()) {
    CHECK(reply.closed);
    return;
  }
  REQUIRE(reply.data.rfind("HTTP/1.", 0) == 0);
  auto space = reply.data.find(' ');
  REQUIRE(space != std::string::npos);
  CHECK(reply.data[space + 1] == '4');
}

} // namespace

TEST_CASE("random bytes on the cluster port leave the node serving", "[cluster]") {
  auto n = start_pair();
  rss_watch watch{*n.target.process, memory_limit_kib};
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    auto conn = raw_tcp::connect(n.target.cluster_port);
    REQUIRE(conn.has_value());
    conn->send(random_bytes(64 * 1024, seed));
    // The node should drop the connection; either way we hang up.
    conn->receive_until_closed(2s);
  }
  // The node says why it closed each connection.
  CHECK(n.target->wait_for_line("cluster gate: closed connection from", within(patience))
            .has_value());
  check_still_serving(n, watch, n.caller->line_count());
}

TEST_CASE("a truncated BASP frame on the cluster port leaves the node serving",
          "[cluster]") {
  auto n = start_pair();
  rss_watch watch{*n.target.process, memory_limit_kib};
  // A valid header announcing 4 KiB of payload, then 1 KiB, then hang up.
  send_then_hang_up(n.target.cluster_port,
                    basp_header(client_handshake, 4096) + random_bytes(1024, 7));
  CHECK(n.target->wait_for_line("disconnected in the middle of a frame", within(patience))
            .has_value());
  check_still_serving(n, watch, n.caller->line_count());
}

TEST_CASE(
    "a peer that disconnects in the middle of a BASP header leaves the node serving",
    "[cluster]") {
  auto n = start_pair();
  rss_watch watch{*n.target.process, memory_limit_kib};
  auto header = basp_header(client_handshake, 64);
  for (size_t cut : {size_t{1}, size_t{10}, basp_header_size - 1})
    send_then_hang_up(n.target.cluster_port, header.substr(0, cut));
  CHECK(n.target->wait_for_line("disconnected in the middle of a frame", within(patience))
            .has_value());
  check_still_serving(n, watch, n.caller->line_count());
}

// CAF 0.17.6's BASP sizes its receive buffer from the header's payload_len
// before any handshake: without troupe's cluster gate, 32 bytes from anyone
// make the node's I/O thread allocate and zero ~4 GiB.
TEST_CASE("a BASP header claiming an enormous payload does not make the node allocate it",
          "[cluster]") {
  auto n = start_pair();
  rss_watch watch{*n.target.process, memory_limit_kib};
  const uint32_t enormous = 0xFFFFFFF0;

  SECTION("and then nothing") {
    auto conn = raw_tcp::connect(n.target.cluster_port);
    REQUIRE(conn.has_value());
    REQUIRE(conn->send(basp_header(client_handshake, enormous)));
    CHECK(n.target->wait_for_line("exceeds the limit", within(patience)).has_value());
    // The node goes on serving its peers.
    check_still_serving(n, watch, n.caller->line_count());
    conn->close();
    check_still_serving(n, watch, n.caller->line_count());
  }
  SECTION("and then close") {
    {
      auto conn = raw_tcp::connect(n.target.cluster_port);
      REQUIRE(conn.has_value());
      REQUIRE(conn->send(basp_header(client_handshake, enormous) + random_bytes(100, 3)));
    }
    check_still_serving(n, watch, n.caller->line_count());
  }
}

TEST_CASE("a flood of 200 connections to the cluster port leaves the node serving",
          "[cluster]") {
  auto n = start_pair();
  rss_watch watch{*n.target.process, memory_limit_kib};
  auto fds_before = open_fds(*n.target.process);

  std::vector<raw_tcp> conns;
  for (int i = 0; i < 200; ++i) {
    auto conn = raw_tcp::connect(n.target.cluster_port, 5s);
    REQUIRE(conn.has_value());
    conns.push_back(std::move(*conn));
  }
  for (size_t i = 0; i < conns.size(); ++i) {
    if (i % 2 == 0)
      conns[i].close();
    else
      conns[i].reset();
  }
  conns.clear();
  check_still_serving(n, watch, n.caller->line_count());

  // And it let go of them.
  size_t fds_after = 0;
  bool released = eventually(within(patience), [&] {
    fds_after = open_fds(*n.target.process);
    return fds_after <= fds_before + 4;
  });
  INFO("open fds before " << fds_before << ", after " << fds_after);
  CHECK(released);
}

TEST_CASE("hostile HTTP requests on the status port are refused and /healthz keeps "
          "answering",
          "[cluster]") {
  auto n = start_pair();
  rss_watch watch{*n.target.process, memory_limit_kib};
  auto port = n.target.status_port;

  SECTION("a request line of 1 MiB") {
    auto conn = raw_tcp::connect(port);
    REQUIRE(conn.has_value());
    std::string request =
        "GET /" + std::string(1024 * 1024, 'a') + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    conn->send(request); // the node may hang up before it has read it all
    check_rejected(conn->receive_until_closed(10s));
  }
  SECTION("garbage bytes") {
    auto conn = raw_tcp::connect(port);
    REQUIRE(conn.has_value());
    conn->send(random_bytes(4096, 11) + "\r\n\r\n");
    check_rejected(conn->receive_until_closed(10s));
  }
  SECTION("an unsupported method") {
    for (std::string method : {"DELETE", "POST", "BREW"}) {
      auto conn = raw_tcp::connect(port);
      REQUIRE(conn.has_value());
      REQUIRE(conn->send(method +
                         " /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                         "0\r\nConnection: close\r\n\r\n"));
      auto reply = conn->receive_until_closed(10s);
      INFO(method << " answered: " << reply.data.substr(0, 200));
      CHECK(reply.data.rfind("HTTP/1.1 405", 0) == 0);
    }
  }
  CHECK(http_status(port, "/healthz") == 200);
  check_still_serving(n, watch, n.caller->line_count());
}
