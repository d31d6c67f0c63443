// The cluster port against peers it must not trust: mutual TLS between
// nodes (and the nodes it refuses), the closed peer protocol checked from a
// real second process, and dialing that a blackholed seed cannot stall.

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/cluster_nodes.hpp"
#include "support/http_get.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace {

using namespace troupe::test;

const std::regex greeting_answered{
    R"(call \d+ answered by node a in \d+us: "Hello, caller #\d+!")"};

strings tls_flags(const std::filesystem::path& ca, const std::filesystem::path& cert,
                  const std::filesystem::path& key) {
  return {"--cluster.tls.ca_file",  ca.string(), "--cluster.tls.cert_file", cert.string(),
          "--cluster.tls.key_file", key.string()};
}

// A listening socket whose backlog is full and which never accepts: the
// kernel drops further SYNs, so connecting to it hangs until a timeout, like
// a route to nowhere.
class blackhole {
public:
  blackhole() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 0) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    // Fill the accept queue (its length is the backlog plus one).
    for (int i = 0; i < 4; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      fillers_.push_back(fd);
    }
  }
  ~blackhole() {
    for (int fd : fillers_)
      ::close(fd);
    ::close(listener_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

private:
  int listener_ = -1;
  uint16_t port_ = 0;
  std::vector<int> fillers_;
};

// `a` refuses `b` at the TLS handshake and stays alone. b retries every
// heartbeat; two refusals show the second try fared no better.
void require_refused(const running_node& a, const running_node& b) {
  auto first = a->wait_for("TLS handshake failed", within(patience));
  INFO("log of a:\n" << a->output());
  REQUIRE(first.has_value());
  REQUIRE(a->wait_for("TLS handshake failed", within(patience), first->index + 1));
  auto view = get_cluster(a.status_port);
  REQUIRE(view.has_value());
  CHECK(view->names() == strings{"a"});
  CHECK(b->count_lines("joined the cluster") == 0);
}

} // namespace

TEST_CASE("nodes with certificates of the cluster CA, given as files or as secrets, join "
          "over mutual TLS and call each other",
          "[cluster][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto tls = tls_flags(certs.ca_cert, certs.node_cert, certs.node_key);
  auto a = start_node("a", fast_detector + runs_greeter + tls, within(patience));
  // b gets its certificate and key as secrets, i.e. as PEM text, not as paths.
  strings secrets{"--cluster.tls.ca_file",   certs.ca_cert.string(),
                  "--cluster.tls.cert_file", "${env:NODE_CERT}",
                  "--cluster.tls.key_file",  "${file:" + certs.node_key.string() + "}"};
  auto b = start_node("b", fast_detector + runs_caller + secrets + seeded_by(a),
                      within(patience), {{"NODE_CERT", read_text_file(certs.node_cert)}});
  require_members(a, {"a", "b"});
  require_members(b, {"a", "b"});
  INFO("log of b:\n" << b->output());
  CHECK(b->wait_for_line(greeting_answered, within(patience)).has_value());
  CHECK(a->count_lines("is unauthenticated") == 0);
}

TEST_CASE("a node without a certificate cannot join a cluster that uses mutual TLS",
          "[cluster][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto a = start_node("a",
                      fast_detector + runs_greeter +
                          tls_flags(certs.ca_cert, certs.node_cert, certs.node_key),
                      within(patience));
  auto b = start_node("b", fast_detector + runs_caller + seeded_by(a), within(patience));
  require_refused(a, b);
  CHECK(b->count_lines("answered by node a") == 0);
}

TEST_CASE("a node whose certificate another CA signed cannot join", "[cluster][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto a = start_node("a",
                      fast_detector + runs_greeter +
                          tls_flags(certs.ca_cert, certs.node_cert, certs.node_key),
                      within(patience));
  // b trusts the cluster CA, so it accepts a; a must refuse b.
  auto b = start_node(
      "b",
      fast_detector + runs_caller +
          tls_flags(certs.ca_cert, certs.rogue_node_cert, certs.rogue_node_key) +
          seeded_by(a),
      within(patience));
  require_refused(a, b);
}

TEST_CASE("a node without cluster TLS warns once that its cluster port is "
          "unauthenticated",
          "[cluster][tls]") {
  auto a = start_node("a", fast_detector + runs_nothing, within(patience));
  REQUIRE(a->wait_for_line("is unauthenticated", within(patience)));
  auto b = start_node("b", fast_detector + runs_nothing + seeded_by(a), within(patience));
  require_members(a, {"a", "b"});
  CHECK(a->count_lines("is unauthenticated") == 1);
}

TEST_CASE("a peer cannot use the node-local registry API, speak for another member, or "
          "look actors up by name",
          "[cluster][peer-protocol]") {
  auto a = start_node("a", fast_detector + runs_nothing, within(patience));
  auto b = start_node("b", fast_detector + runs_greeter + seeded_by(a), within(patience));
  require_members(a, {"a", "b"});
  auto before = get_cluster(a.status_port);
  REQUIRE(before.has_value());
  REQUIRE(before->find("b")->services == strings{"greeter"});

  node_process rogue{TROUPE_ROGUE_PEER_BINARY,
                     {"127.0.0.1", std::to_string(a.cluster_port), "b", "greeter"},
                     {},
                     "rogue"};
  auto done = rogue.wait_for_line("done", within(patience));
  INFO("rogue peer:\n" << rogue.output());
  INFO("log of a:\n" << a->output());
  REQUIRE(done.has_value());
  // Requests come back refused...
  for (auto what : {"members", "find_service", "leave_cluster", "join as another node"})
    CHECK(rogue.count_lines(std::string{what} + ": refused") == 1);
  CHECK(rogue.count_lines("ACCEPTED") == 0);
  // ...and the node logs each refusal, one-way messages included.
  for (auto what :
       {"refused members", "refused lookup of greeter", "refused leave_cluster",
        "refused register of service evil", "refused join as b", "refused leave of b",
        "refused service up of evil on b", "refused service down of greeter on b"})
    CHECK(a->wait_for_line(what, within(patience)).has_value());
  CHECK(a->wait_for_line("message to a registry name", within(patience)).has_value());

  // Nothing changed: b is still a member with its service, a is still joined,
  // and no service called "evil" appeared.
  auto after = get_cluster(a.status_port);
  REQUIRE(after.has_value());
  CHECK(after->joined);
  CHECK(after->names() == strings{"a", "b"});
  CHECK(after->find("b")->services == strings{"greeter"});
  CHECK(after->find("a")->services.empty());
}

TEST_CASE("a blackholed seed does not stall joining through the other seeds",
          "[cluster][dialer]") {
  blackhole hole;
  auto a = start_node("a", fast_detector + runs_greeter, within(patience));
  auto b = start_node("b",
                      strings{"--cluster.heartbeat_interval", "100ms",
                              "--cluster.failure_timeout", "1s",
                              "--cluster.connect_timeout", "30s", "--cluster.seeds",
                              "[" + hole.address() + ", " + a.cluster_address() + "]",
                              "--log.level", "debug"} +
                          runs_caller,
                      within(patience));
  // The dial to the hole is still waiting for its 30 s timeout while b joins
  // through a and calls its greeter.
  auto joined =
      b->wait_for("joined the cluster through " + a.cluster_address(), within(patience));
  INFO("log of b:\n" << b->output());
  REQUIRE(joined.has_value());
  CHECK(b->wait_for_line(greeting_answered, within(patience)).has_value());
  CHECK(b->count_lines("cannot reach " + hole.address()) == 0);
}
