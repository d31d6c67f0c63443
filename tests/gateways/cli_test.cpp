// The `troupe` CLI against running troupe-node processes: each command's
// human and JSON output, and its documented exit codes.

#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpc/health/v1/health.pb.h>

#include <troupe/api/v1/sagas.pb.h>

#include "gateways/support/gateway_node.hpp"
#include "gateways/support/test_tokens.hpp"
#include "support/http_get.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
using strings = std::vector<std::string>;
namespace v1 = troupe::api::v1;

constexpr auto patience = 60s;

// --- running the CLI ----------------------------------------------------------

struct cli_result {
  int code = -1;
  strings lines;
  std::string output;

  /// The first line that is a JSON object (stdout and stderr are merged).
  std::string json() const {
    for (const auto& l : lines)
      if (!l.empty() && l.front() == '{')
        return l;
    return {};
  }
  strings json_lines() const {
    strings out;
    for (const auto& l : lines)
      if (!l.empty() && l.front() == '{')
        out.push_back(l);
    return out;
  }
  bool has(const std::string& s) const { return output.find(s) != std::string::npos; }
};

cli_result troupe_cli(strings args, std::map<std::string, std::string> env = {}) {
  node_process p{TROUPE_CLI_BINARY, std::move(args), std::move(env), "troupe"};
  cli_result r;
  auto code = p.wait_exit(within(patience));
  r.code = code.value_or(-1);
  r.lines = p.lines();
  r.output = p.output();
  return r;
}

template <class Message>
Message parse(const std::string& json) {
  Message m;
  auto st = google::protobuf::util::JsonStringToMessage(json, &m);
  INFO(json);
  REQUIRE(st.ok());
  return m;
}

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

// --- a node with the gateway ----------------------------------------------------

struct gateway_node {
  running_gateway gateway;
  strings base; ///< --address and whatever every CLI call needs

  std::string address() const { return gateway.grpc_address(); }
  cli_result cli(strings args, std::map<std::string, std::string> env = {}) const {
    return troupe_cli(base + args, std::move(env));
  }
};

/// A node with the order services, the sagas, the greeter and the gateway
/// (support/gateway_node.hpp), once its gRPC health service says serving:
/// that follows readiness a moment later.
std::unique_ptr<gateway_node> start_gateway(strings extra = {}, strings cli_base = {}) {
  auto g = std::make_unique<gateway_node>();
  g->gateway = start_gateway_node("a", std::move(extra), within(patience));
  g->base = strings{"--address", g->address()} + cli_base;
  bool serving = eventually(
      within(patience), [&] { return g->cli({"health"}).code == 0; }, 100ms);
  if (!serving)
    throw std::runtime_error("the gateway never served:\n" + g->gateway->output());
  return g;
}

std::string order_json(const std::string& id, const std::string& sku = "widget",
                       int quantity = 1) {
  return R"({"orderId":")" + id + R"(","customer":"ada","sku":")" + sku +
         R"(","quantity":)" + std::to_string(quantity) + "}";
}

const std::regex started_line{R"(started (\S+) \(order_processing\): (\w+))"};

/// Starts an order through the CLI (human output); the saga's id.
std::string start_order(const gateway_node& g, const std::string& order_id,
                        strings extra = {}) {
  auto r = g.cli(
      strings{"saga", "start", "order_processing", "--input", order_json(order_id)} +
      extra);
  INFO(r.output);
  REQUIRE(r.code == 0);
  std::smatch m;
  REQUIRE(std::regex_search(r.output, m, started_line));
  return m[1];
}

} // namespace

// --- health -------------------------------------------------------------------

TEST_CASE("troupe health says a ready node is serving, in words and in JSON", "[cli]") {
  auto g = start_gateway();
  auto human = g->cli({"health"});
  INFO(human.output);
  CHECK(human.code == 0);
  CHECK(human.has(g->address() + ": serving"));

  auto json = g->cli({"status", "--output", "json"});
  INFO(json.output);
  REQUIRE(json.code == 0);
  auto resp = parse<grpc::health::v1::HealthCheckResponse>(json.json());
  CHECK(resp.status() == grpc::health::v1::HealthCheckResponse::SERVING);
}

// --- start, watch, get ----------------------------------------------------------

TEST_CASE("troupe saga start prints the new saga and watch follows it to completion",
          "[cli]") {
  auto g = start_gateway();
  auto id = start_order(*g, "cli-1");

  auto watched = g->cli({"saga", "watch", id});
  INFO(watched.output);
  CHECK(watched.code == 0);
  CHECK(watched.has("saga " + id + " (order_processing): completed"));
  for (const char* step : {"validate", "reserve", "charge", "ship"})
    CHECK(watched.has(std::string{"step "} + step + ": succeeded"));

  auto got = g->cli({"saga", "get", id});
  INFO(got.output);
  CHECK(got.code == 0);
  CHECK(got.has("saga         " + id));
  CHECK(got.has("type         order_processing"));
  CHECK(got.has("state        completed"));
  CHECK(std::regex_search(got.output, std::regex{R"(STEP\s+STATE\s+ATTEMPTS\s+ERROR)"}));
  for (const char* step : {"validate", "reserve", "charge", "ship"})
    CHECK(std::regex_search(got.output,
                            std::regex{std::string{step} + R"(\s+succeeded\s+1\s+-)"}));
}

TEST_CASE("troupe saga start, watch and get print protobuf JSON with --output json",
          "[cli]") {
  auto g = start_gateway();
  auto started = g->cli({"--output", "json", "saga", "start", "order_processing",
                         "--input", order_json("j-1")});
  INFO(started.output);
  REQUIRE(started.code == 0);
  auto resp = parse<v1::StartSagaResponse>(started.json());
  CHECK(resp.created());
  CHECK(resp.saga().saga_type() == "order_processing");
  const auto id = resp.saga().id();
  REQUIRE_FALSE(id.empty());

  // Global options may follow the command.
  auto watched = g->cli({"saga", "watch", id, "--output", "json"});
  INFO(watched.output);
  CHECK(watched.code == 0);
  auto updates = watched.json_lines();
  REQUIRE_FALSE(updates.empty());
  auto last = parse<v1::Saga>(updates.back());
  CHECK(last.id() == id);
  CHECK(last.state() == v1::SAGA_STATE_COMPLETED);

  auto got = g->cli({"--output", "json", "saga", "get", id});
  INFO(got.output);
  REQUIRE(got.code == 0);
  auto saga = parse<v1::Saga>(got.json());
  CHECK(saga.id() == id);
  CHECK(saga.state() == v1::SAGA_STATE_COMPLETED);
  REQUIRE(saga.steps_size() == 4);
  CHECK(saga.steps(0).name() == "validate");
  CHECK(saga.steps(3).name() == "ship");
  for (const auto& step : saga.steps())
    CHECK(step.state() == v1::STEP_STATE_SUCCEEDED);
  CHECK(saga.input().fields().at("sku").string_value() == "widget");
}

TEST_CASE("troupe saga start --watch exits 1 when the saga compensates", "[cli]") {
  auto g = start_gateway();
  auto r = g->cli({"saga", "start", "order_processing", "--input",
                   order_json("doomed", "discontinued"), "--watch"});
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK(r.has("started "));
  CHECK(r.has("(order_processing): compensated"));
  CHECK(r.has("step reserve: failed"));
}

TEST_CASE("starting again with the same key returns the first saga", "[cli]") {
  auto g = start_gateway();
  auto first = start_order(*g, "twice", {"--key", "order-twice"});
  auto again = g->cli({"saga", "start", "order_processing", "--input",
                       order_json("twice"), "--key", "order-twice"});
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK(again.has("already started " + first));

  auto json = g->cli({"--output", "json", "saga", "start", "order_processing", "--input",
                      order_json("twice"), "--key", "order-twice"});
  INFO(json.output);
  REQUIRE(json.code == 0);
  auto resp = parse<v1::StartSagaResponse>(json.json());
  CHECK_FALSE(resp.created());
  CHECK(resp.saga().id() == first);
  CHECK(resp.saga().idempotency_key() == "order-twice");
}

// --- list -----------------------------------------------------------------------

TEST_CASE("troupe saga list shows sagas as a table and as JSON, page by page", "[cli]") {
  auto g = start_gateway();
  strings ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(start_order(*g, "list-" + std::to_string(i), {"--watch"}));

  auto table = g->cli({"saga", "list"});
  INFO(table.output);
  CHECK(table.code == 0);
  CHECK(std::regex_search(table.output,
                          std::regex{R"(ID\s+TYPE\s+STATE\s+STEP\s+UPDATED)"}));
  for (const auto& id : ids)
    CHECK(std::regex_search(table.output,
                            std::regex{id + R"(\s+order_processing\s+completed)"}));

  auto page = g->cli({"--output", "json", "saga", "list", "--page-size", "2"});
  INFO(page.output);
  REQUIRE(page.code == 0);
  auto first = parse<v1::ListSagasResponse>(page.json());
  CHECK(first.sagas_size() == 2);
  REQUIRE_FALSE(first.next_page_token().empty());

  auto human_page = g->cli({"saga", "list", "--page-size", "2"});
  CHECK(human_page.has("next page: --page-token " + first.next_page_token()));

  auto second = parse<v1::ListSagasResponse>(
      g->cli({"--output", "json", "saga", "list", "--page-size", "2", "--page-token",
              first.next_page_token()})
          .json());
  CHECK(second.sagas_size() == 1);
  CHECK(second.next_page_token().empty());

  auto all = g->cli({"--output", "json", "saga", "list", "--page-size", "1", "--all",
                     "--type", "order_processing", "--state", "completed"});
  INFO(all.output);
  REQUIRE(all.code == 0);
  auto every = parse<v1::ListSagasResponse>(all.json());
  REQUIRE(every.sagas_size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(every.sagas(i).id() == ids[static_cast<size_t>(i)]);
    CHECK(every.sagas(i).state() == v1::SAGA_STATE_COMPLETED);
  }

  auto none = g->cli({"saga", "list", "--state", "running"});
  CHECK(none.code == 0);
  CHECK(none.has("no sagas"));
}

// --- cancel ---------------------------------------------------------------------

TEST_CASE("troupe saga cancel stops a running saga, which then ends not completed",
          "[cli]") {
  // The card network never answers in time, so charges keep the sagas
  // running (timeouts and retries) until they are cancelled.
  auto g = start_gateway({"--payment.latency", "10m"});
  auto id = start_order(*g, "to-cancel");
  auto cancelled = g->cli({"saga", "cancel", id});
  INFO(cancelled.output);
  CHECK(cancelled.code == 0);
  CHECK(cancelled.has("cancel requested for " + id + " (order_processing)"));
  auto watched = g->cli({"saga", "watch", id});
  INFO(watched.output);
  CHECK(watched.code == 1);

  auto other = start_order(*g, "to-cancel-json");
  auto json = g->cli({"--output", "json", "saga", "cancel", other});
  INFO(json.output);
  REQUIRE(json.code == 0);
  auto saga = parse<v1::Saga>(json.json());
  CHECK(saga.id() == other);
  CHECK(saga.cancel_requested());
}

// --- invoke ---------------------------------------------------------------------

TEST_CASE("troupe invoke calls a method a service exposed", "[cli]") {
  auto g = start_gateway();
  auto human = g->cli({"invoke", "greeter", "greet", "--input", R"({"name":"ada"})"});
  INFO(human.output);
  CHECK(human.code == 0);
  CHECK(human.has("\"text\""));
  CHECK(human.has("ada"));

  auto json = g->cli(
      {"--output", "json", "invoke", "greeter", "greet", "--input", R"({"name":"ada"})"});
  INFO(json.output);
  REQUIRE(json.code == 0);
  auto resp = parse<v1::InvokeResponse>(json.json());
  REQUIRE(resp.json().fields().count("text") == 1);
  CHECK(resp.json().fields().at("text").string_value().find("ada") != std::string::npos);
}

// --- exit codes -----------------------------------------------------------------

TEST_CASE("bad usage and bad input exit 2 with one error line", "[cli]") {
  SECTION("caught by the CLI itself") {
    // No node needed: these never reach the network.
    strings address{"--address", "127.0.0.1:" + std::to_string(free_port())};
    for (const auto& args : std::vector<strings>{
             {"saga", "start", "order_processing", "--input", "not json"},
             {"saga", "start", "order_processing", "--input", "[1,2]"},
             {"saga", "start", "order_processing"},
             {"saga", "list", "--state", "sideways"},
             {"saga", "list", "--page-size", "0"},
             {"saga", "get"},
             {"saga", "frobnicate"},
             {"--output", "yaml", "health"},
             {"--timeout", "soon", "health"},
             {"saga", "start", "x", "--input-file", "/nonexistent/in.json"},
             {}}) {
      auto r = troupe_cli(address + args);
      INFO(r.output);
      CHECK(r.code == 2);
      CHECK(r.has("troupe: INVALID_ARGUMENT: "));
    }
  }
  SECTION("refused by the node") {
    auto g = start_gateway();
    auto r = g->cli({"saga", "start", "order_processing", "--input", R"({"bogus":1})"});
    INFO(r.output);
    CHECK(r.code == 2);
    CHECK(r.has("troupe: INVALID_ARGUMENT: "));
    auto malformed = g->cli({"saga", "get", "not-a-saga-id"});
    INFO(malformed.output);
    CHECK(malformed.code == 2);
    CHECK(malformed.has("troupe: INVALID_ARGUMENT: "));
  }
}

TEST_CASE("help exits 0", "[cli]") {
  auto r = troupe_cli({"saga", "start", "--help"});
  CHECK(r.code == 0);
  CHECK(r.has("--input"));
}

TEST_CASE("an unknown saga id or saga type exits 3", "[cli]") {
  auto g = start_gateway();
  // Well-formed, owned by this node ("a"), never started.
  const std::string unknown = "00000000000000000000.a";
  for (const auto& args : std::vector<strings>{
           {"saga", "get", unknown},
           {"saga", "cancel", unknown},
           {"--timeout", "20s", "saga", "watch", unknown},
           {"saga", "start", "no_such_type", "--input", "{}"},
       }) {
    auto r = g->cli(args);
    INFO(r.output);
    CHECK(r.code == 3);
    CHECK(r.has("troupe: NOT_FOUND: "));
  }
}

TEST_CASE("an unreachable node exits 4", "[cli]") {
  strings address{"--address", "127.0.0.1:" + std::to_string(free_port()), "--timeout",
                  "5s"};
  for (const auto& args : std::vector<strings>{
           {"health"}, {"saga", "get", "x"}, {"saga", "list"}, {"saga", "watch", "x"}}) {
    auto r = troupe_cli(address + args);
    INFO(r.output);
    CHECK(r.code == 4);
    CHECK(r.has("troupe: UNAVAILABLE: "));
    CHECK(r.lines.size() == 1);
  }
}

TEST_CASE("with authentication on, a missing or rejected token exits 5 and a good one "
          "passes",
          "[cli]") {
  const std::string secret = "cli-test-secret-0123456789abcdef";
  auto claims = [] {
    return token_claims{}.subject("cli").issuer("tests").audience("troupe");
  };
  auto good = hs256_token(secret, claims().roles({"reader"}));
  auto g = start_gateway({"--gateways.auth.enabled", "true",
                          "--gateways.auth.hs256_secret", secret,
                          "--gateways.auth.issuer", "tests", "--gateways.auth.audience",
                          "troupe", "--gateways.access.cancel", "[operator]"},
                         {"--token", good});
  strings address{"--address", g->address()};

  auto missing = troupe_cli(address + strings{"saga", "list"});
  INFO(missing.output);
  CHECK(missing.code == 5);
  CHECK(missing.has("troupe: UNAUTHENTICATED: "));

  auto forged = hs256_token("not-the-secret", claims());
  auto rejected = troupe_cli(address + strings{"--token", forged, "saga", "list"});
  INFO(rejected.output);
  CHECK(rejected.code == 5);
  CHECK(rejected.has("troupe: UNAUTHENTICATED: "));
  CHECK_FALSE(rejected.has(forged));

  auto expired = hs256_token(secret, claims().expires_in(-1h));
  CHECK(troupe_cli(address + strings{"--token", expired, "saga", "list"}).code == 5);

  CHECK(troupe_cli(address + strings{"--token", good, "saga", "list"}).code == 0);
  CHECK(troupe_cli(address + strings{"saga", "list"}, {{"TROUPE_TOKEN", good}}).code ==
        0);
  temp_dir dir;
  auto file = dir.write("token", good + "\n");
  CHECK(
      troupe_cli(address + strings{"--token-file", file.string(), "saga", "list"}).code ==
      0);

  // A valid token without the role cancelling needs.
  auto id = start_order(*g, "auth-1", {"--watch"});
  auto denied = g->cli({"saga", "cancel", id});
  INFO(denied.output);
  CHECK(denied.code == 5);
  CHECK(denied.has("troupe: PERMISSION_DENIED: "));
  CHECK_FALSE(denied.has(good));
}

TEST_CASE("troupe talks TLS, and mTLS with a client certificate", "[cli]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto g =
      start_gateway({"--gateways.tls.cert_file", certs.server_cert.string(),
                     "--gateways.tls.key_file", certs.server_key.string(),
                     "--gateways.tls.client_ca_file", certs.ca_cert.string()},
                    {"--tls-ca", certs.ca_cert.string(), "--tls-cert",
                     certs.client_cert.string(), "--tls-key", certs.client_key.string()});
  auto ok = g->cli({"saga", "list"});
  INFO(ok.output);
  CHECK(ok.code == 0);

  strings address{"--address", g->address(), "--timeout", "5s"};
  auto plain = troupe_cli(address + strings{"saga", "list"});
  INFO(plain.output);
  CHECK(plain.code == 4);

  auto no_client_cert =
      troupe_cli(address + strings{"--tls-ca", certs.ca_cert.string(), "saga", "list"});
  INFO(no_client_cert.output);
  CHECK(no_client_cert.code == 4);

  auto rogue =
      troupe_cli(address + strings{"--tls-ca", certs.ca_cert.string(), "--tls-cert",
                                   certs.rogue_client_cert.string(), "--tls-key",
                                   certs.rogue_client_key.string(), "saga", "list"});
  INFO(rogue.output);
  CHECK(rogue.code == 4);
}
