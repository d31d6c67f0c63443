// What a network can send the HTTP gateway, byte by byte: each case asserts
// the answer (a status or a clean close) and that the node keeps serving.

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "gateways/support/gateway_node.hpp"
#include "gateways/support/http_client.hpp"
#include "support/http_get.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
using strings = std::vector<std::string>;

constexpr auto patience = 60s;

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

// A node with tight limits: 500 ms to send a whole request.
// `defaults` with the keys `extra` names replaced, then `extra`.
strings merged(const strings& defaults, const strings& extra) {
  strings out;
  for (size_t i = 0; i + 1 < defaults.size(); i += 2)
    if (std::find(extra.begin(), extra.end(), defaults[i]) == extra.end())
      out.insert(out.end(), {defaults[i], defaults[i + 1]});
  return out + extra;
}

struct hardened_node {
  running_gateway g;
  explicit hardened_node(strings extra = {})
      : g(start_gateway_node(
            "h",
            merged({"--gateways.grpc.enabled", "false", "--gateways.limits.read_timeout",
                    "500ms", "--gateways.limits.idle_timeout", "5s",
                    "--gateways.limits.max_header_bytes", "8192",
                    "--gateways.limits.max_body_bytes", "65536"},
                   extra),
            within(patience))) {}
  uint16_t port() const { return g.http_port; }

  raw_tcp connect() const {
    auto c = raw_tcp::connect(port());
    REQUIRE(c);
    return std::move(*c);
  }

  // The node answers an ordinary request on a new connection.
  bool serves() const {
    http_client api{port(), {}, 10s};
    auto r = api.get("/v1/sagas");
    return r && r->status == 200;
  }
};

// The statuses of the HTTP answers in `data`, in order.
std::vector<int> statuses(const std::string& data) {
  static const std::regex status_re{R"(HTTP/1\.1 (\d{3}) )"};
  std::vector<int> out;
  for (auto it = std::sregex_iterator(data.begin(), data.end(), status_re);
       it != std::sregex_iterator(); ++it)
    out.push_back(std::stoi((*it)[1]));
  return out;
}

std::string post_start(const std::string& body) {
  return "POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
         "application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

} // namespace

TEST_CASE("garbage bytes get 400 and a close", "[gateway][http][hardening]") {
  hardened_node node;
  auto c = node.connect();
  static constexpr char garbage[] = "\x16\x03\x01\x00\xff garbage \x00\x01\r\n\r\n";
  REQUIRE(c.send(std::string(garbage, sizeof garbage - 1)));
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(statuses(reply.data) == std::vector<int>{400});
  CHECK(reply.data.find("INVALID_ARGUMENT") != std::string::npos);
  CHECK(node.serves());
}

TEST_CASE("a truncated request followed by a close is dropped quietly",
          "[gateway][http][hardening]") {
  hardened_node node;
  {
    auto c = node.connect();
    REQUIRE(c.send("POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   "application/json\r\nContent-Length: 100\r\n\r\n{\"js"));
    c.close();
  }
  {
    auto c = node.connect();
    REQUIRE(c.send("GET /v1/sag"));
    c.close();
  }
  CHECK(node.serves());
}

TEST_CASE("a request line of 100 KB gets 431 and a close", "[gateway][http][hardening]") {
  hardened_node node;
  auto c = node.connect();
  REQUIRE(
      c.send("GET /" + std::string(100 * 1024, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(statuses(reply.data) == std::vector<int>{431});
  CHECK(node.serves());
}

TEST_CASE("headers over max_header_bytes get 431 and a close",
          "[gateway][http][hardening]") {
  hardened_node node;
  std::string req = "GET /v1/sagas HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 200; ++i)
    req += "x-filler-" + std::to_string(i) + ": " + std::string(100, 'f') + "\r\n";
  req += "\r\n";
  auto c = node.connect();
  REQUIRE(c.send(req));
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(statuses(reply.data) == std::vector<int>{431});
  CHECK(node.serves());
}

TEST_CASE("a body over max_body_bytes gets 413 before it is sent, and a close",
          "[gateway][http][hardening]") {
  hardened_node node;
  SECTION("declared by Content-Length") {
    auto c = node.connect();
    REQUIRE(c.send("POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   "application/json\r\nContent-Length: 10000000\r\n\r\n"));
    auto reply = c.receive_until_closed(10s);
    CHECK(reply.closed);
    CHECK(statuses(reply.data) == std::vector<int>{413});
  }
  SECTION("chunked") {
    auto c = node.connect();
    std::string req =
        "POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 20; ++i)
      req += "1000\r\n" + std::string(0x1000, ' ') + "\r\n";
    c.send(req); // the server may stop reading once it answered
    auto reply = c.receive_until_closed(10s);
    CHECK(reply.closed);
    CHECK(statuses(reply.data) == std::vector<int>{411}); // chunked bodies are refused
  }
  CHECK(node.serves());
}

TEST_CASE(
    "a body shorter than its Content-Length is closed at the read timeout, a longer "
    "one is answered and its excess refused as a malformed request",
    "[gateway][http][hardening]") {
  hardened_node node;
  SECTION("shorter") {
    auto c = node.connect();
    REQUIRE(c.send("POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   "application/json\r\nContent-Length: 50\r\n\r\n{}"));
    auto reply = c.receive_until_closed(10s);
    CHECK(reply.closed);
    CHECK(reply.data.empty());
  }
  SECTION("longer") {
    auto c = node.connect();
    REQUIRE(
        c.send("POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
               "application/json\r\nContent-Length: 2\r\n\r\n{}\x01\x02garbage\r\n\r\n"));
    auto reply = c.receive_until_closed(10s);
    CHECK(reply.closed);
    // {} is a start without input (400), the rest no HTTP at all (400).
    CHECK(statuses(reply.data) == std::vector<int>{400, 400});
  }
  CHECK(node.serves());
}

TEST_CASE("a chunked body, even with a bad chunk size, gets 411 and a close",
          "[gateway][http][hardening]") {
  hardened_node node;
  auto c = node.connect();
  REQUIRE(c.send(
      "POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"));
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(statuses(reply.data) == std::vector<int>{411});
  CHECK(node.serves());
}

TEST_CASE("a client trickling a request (slowloris) is closed at the read timeout",
          "[gateway][http][hardening]") {
  hardened_node node;
  auto c = node.connect();
  REQUIRE(c.send("GET /v1/sagas HTTP/1.1\r\nHo"));
  // read_timeout is 500 ms; the margin is for a loaded machine.
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(reply.data.empty());
  CHECK(node.serves());
}

TEST_CASE("an idle keep-alive connection is closed at the idle timeout",
          "[gateway][http][hardening]") {
  hardened_node node{{"--gateways.limits.idle_timeout", "300ms"}};
  auto c = node.connect();
  REQUIRE(c.send("GET /v1/sagas HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(statuses(reply.data) == std::vector<int>{200});
  CHECK(node.serves());
}

TEST_CASE(
    "connections reset in the middle of a body or of a pending answer leave the node "
    "serving, and their descriptors are released",
    "[gateway][http][hardening]") {
  hardened_node node;
  CHECK(node.serves());
  auto fds = [&] {
    size_t count = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(
             "/proc/" + std::to_string(node.g->pid()) + "/fd"))
      ++count;
    return count;
  };
  auto before = fds();
  for (int i = 0; i < 50; ++i) {
    auto c = node.connect();
    REQUIRE(c.send("POST /v1/sagas/order_processing HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   "application/json\r\nContent-Length: 1000\r\n\r\n" +
                   std::string(300, ' ')));
    c.reset();
  }
  // And reset while the answer is pending.
  for (int i = 0; i < 50; ++i) {
    auto c = node.connect();
    REQUIRE(c.send("GET /v1/sagas HTTP/1.1\r\nHost: x\r\n\r\n"));
    c.reset();
  }
  CHECK(node.serves());
  CHECK(eventually(
      within(patience), [&] { return fds() <= before; }, 50ms));
}

TEST_CASE("pipelined requests are answered in order on one connection",
          "[gateway][http][hardening]") {
  hardened_node node;
  auto c = node.connect();
  std::string batch;
  for (int i = 0; i < 5; ++i)
    batch += "GET /v1/" + std::string(i % 2 == 0 ? "sagas" : "missing") +
             " HTTP/1.1\r\nHost: x\r\nx-request-id: pipe-" + std::to_string(i) + "\r\n" +
             (i == 4 ? "Connection: close\r\n" : "") + "\r\n";
  REQUIRE(c.send(batch));
  auto reply = c.receive_until_closed(10s);
  CHECK(reply.closed);
  CHECK(statuses(reply.data) == std::vector<int>{200, 404, 200, 404, 200});
  size_t at = 0;
  for (int i = 0; i < 5; ++i) {
    auto next = reply.data.find("pipe-" + std::to_string(i), at);
    REQUIRE(next != std::string::npos);
    at = next;
  }
  CHECK(node.serves());
}

TEST_CASE("connections over max_connections get 503 with Retry-After and a close",
          "[gateway][http][hardening]") {
  hardened_node node{{"--gateways.limits.max_connections", "50",
                      "--gateways.limits.idle_timeout", "30s"}};
  std::vector<raw_tcp> held;
  for (int i = 0; i < 200; ++i)
    held.push_back(node.connect());
  int refused = 0;
  for (size_t i = 50; i < held.size(); ++i) {
    auto reply = held[i].receive_until_closed(10s);
    CHECK(reply.closed);
    auto s = statuses(reply.data);
    if (s == std::vector<int>{503}) {
      ++refused;
      CHECK(reply.data.find("Retry-After: 1") != std::string::npos);
    }
  }
  CHECK(refused == 150);
  // The first 50 are still served.
  REQUIRE(held[0].send("GET /v1/sagas HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  auto first = held[0].receive_until_closed(10s);
  CHECK(statuses(first.data) == std::vector<int>{200});
  held.clear();
  CHECK(eventually(
      within(patience), [&] { return node.serves(); }, 50ms));
}

TEST_CASE("invalid UTF-8, deeply nested and huge-number JSON get 400",
          "[gateway][http][hardening]") {
  hardened_node node;
  std::vector<std::pair<const char*, std::string>> bodies{
      {"invalid UTF-8", "{\"json\":{\"orderId\":\"\xff\xfe\xc3\x28\",\"customer\":\"c\","
                        "\"sku\":\"widget\","
                        "\"quantity\":1}}"},
      {"10,000 '['", R"({"json":{"orderId":)" + std::string(10000, '[') +
                         std::string(10000, ']') + "}}"},
      {"10,000 nested objects",
       [] {
         std::string s =
             R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":1,"x":)";
         for (int i = 0; i < 10000; ++i)
           s += R"({"a":)";
         s += "1" + std::string(10000, '}') + "}}";
         return s;
       }()},
      {"a huge exponent",
       R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":1e400}})"},
      {"a huge integer",
       R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":99999999999999999999999}})"},
      {"a negative quantity",
       R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":-5}})"},
  };
  for (auto& [what, body] : bodies) {
    INFO(what);
    auto c = node.connect();
    REQUIRE(c.send(post_start(body)));
    REQUIRE(c.send("GET /v1/sagas HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    auto reply = c.receive_until_closed(10s);
    CHECK(reply.closed);
    // The bad body is refused and the connection goes on with the next request.
    CHECK(statuses(reply.data) == std::vector<int>{400, 200});
  }
  CHECK(node.serves());
}

TEST_CASE("watches beyond max_concurrent_streams get 429, and a watch whose client left "
          "frees its slot",
          "[gateway][http][hardening]") {
  hardened_node node{
      {"--gateways.limits.max_concurrent_streams", "1", "--payment.latency", "30s"}};
  http_client api{node.port()};
  auto r = api.post(
      "/v1/sagas/order_processing",
      R"({"json":{"orderId":"slow","customer":"c","sku":"widget","quantity":1}})");
  REQUIRE(r);
  REQUIRE(r->status == 201);
  static const std::regex id_re{R"re("id":"([^"]+)")re"};
  std::smatch m;
  REQUIRE(std::regex_search(r->body, m, id_re));
  auto target = "/v1/sagas/" + m[1].str() + ":watch";

  auto first = std::make_unique<sse_reader>(node.port(), target);
  auto head = first->open();
  REQUIRE(head);
  REQUIRE(head->status == 200);
  REQUIRE(first->next(10s));

  sse_reader second{node.port(), target};
  auto refused = second.open();
  REQUIRE(refused);
  CHECK(refused->status == 429);
  CHECK(refused->header("retry-after") == "1");

  first->close();
  first.reset();
  CHECK(eventually(
      within(patience),
      [&] {
        sse_reader again{node.port(), target};
        auto h = again.open();
        return h && h->status == 200;
      },
      50ms));
  CHECK(node.serves());
}

TEST_CASE(
    "out of file descriptors, the gateway backs off and accepts again once they are "
    "free",
    "[gateway][http][hardening]") {
  auto n = start_gateway_node(
      "g", strings{"--services.enabled", "[gateway]", "--gateways.grpc.enabled", "false"},
      within(patience));
  auto pid = n.node->pid();
  auto open_fds = [&] {
    size_t count = 0;
    for ([[maybe_unused]] auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
      ++count;
    return count;
  };
  rlimit old{};
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, nullptr, &old) == 0);
  rlimit tight = old;
  tight.rlim_cur = open_fds() + 3;
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &tight, nullptr) == 0);
  auto mark = n->line_count();
  std::vector<raw_tcp> clients;
  for (int i = 0; i < 20; ++i)
    if (auto c = raw_tcp::connect(n.http_port))
      clients.push_back(std::move(*c));
  CHECK(n->wait_for_line("cannot accept a connection", within(patience), mark));
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &old, nullptr) == 0);
  clients.clear();
  CHECK(eventually(
      within(patience),
      [&] {
        http_client api{n.http_port, {}, 5s};
        auto r = api.get("/v1/no-such-route");
        return r && r->status == 404;
      },
      50ms));
  CHECK(n->running());
}
