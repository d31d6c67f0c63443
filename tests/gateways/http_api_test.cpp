// The HTTP/JSON API driven by a real HTTP client against running troupe-node
// processes: sagas started, watched, listed and cancelled; every row of the
// error table; correlation; Invoke; TLS and mTLS.

#include <catch2/catch.hpp>

#include <csignal>
#include <set>
#include <string>
#include <vector>

#include <troupe/api/v1/sagas.pb.h>
#include <troupe/gateways/api_backend.hpp>

#include "gateways/support/api_json.hpp"
#include "gateways/support/gateway_node.hpp"
#include "gateways/support/http_client.hpp"
#include "gateways/support/test_tokens.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
namespace v1 = troupe::api::v1;
using strings = std::vector<std::string>;

constexpr auto patience = 60s;

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

const strings fast_detector{"--cluster.heartbeat_interval", "100ms",
                            "--cluster.failure_timeout",    "1s",
                            "--cluster.connect_timeout",    "1s"};

std::string order_json(const std::string& id, const std::string& sku = "widget",
                       int quantity = 1) {
  return R"({"orderId":)" + json_quote(id) + R"(,"customer":"c-1","sku":)" +
         json_quote(sku) + R"(,"quantity":)" + std::to_string(quantity) + "}";
}

// A StartSagaRequest body without sagaType: the path names the type.
std::string start_body(const std::string& key, const std::string& sku = "widget") {
  return R"({"json":)" + order_json(key, sku) + R"(,"idempotencyKey":)" +
         json_quote(key) + "}";
}

v1::Error error_of(const http_reply& r) {
  return parse<v1::Error>(r.body);
}

// A node running the order saga's services, sagas, the greeter and the
// gateway; payment takes a while so a saga can be cancelled while it runs.
struct order_node {
  running_gateway g;
  explicit order_node(strings extra = {}, std::string payment_latency = "1s")
      : g(start_gateway_node("a",
                             strings{"--payment.latency", std::move(payment_latency),
                                     "--gateways.grpc.enabled", "false"} +
                                 extra,
                             within(patience))) {}
  uint16_t port() const { return g.http_port; }
};

v1::StartSagaResponse start_order(http_client& api, const std::string& key,
                                  const std::string& sku = "widget") {
  auto r = api.post("/v1/sagas/order_processing", start_body(key, sku));
  REQUIRE(r);
  INFO(r->body);
  REQUIRE((r->status == 201 || r->status == 200));
  return parse<v1::StartSagaResponse>(r->body);
}

// Watches `id` to its end; returns every saga event and the end event.
struct watched {
  std::vector<v1::Saga> changes;
  std::optional<v1::Error> end;
};

watched watch_to_end(uint16_t port, const std::string& id,
                     const header_list& headers = {}) {
  sse_reader watch{port, "/v1/sagas/" + id + ":watch", headers};
  auto head = watch.open();
  REQUIRE(head);
  INFO(head->body);
  REQUIRE(head->status == 200);
  REQUIRE(head->header("content-type") == "text/event-stream");
  watched w;
  while (auto e = watch.next(patience)) {
    if (e->event == "saga") {
      w.changes.push_back(parse<v1::Saga>(e->data));
    } else if (e->event == "end") {
      w.end = parse<v1::Error>(e->data);
      break;
    }
  }
  // The stream closes after its end event.
  CHECK_FALSE(watch.next(10s));
  CHECK(watch.ended());
  return w;
}

} // namespace

TEST_CASE(
    "a saga started over HTTP answers 201 and is watched as server-sent events until "
    "it completes",
    "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  auto r = api.post("/v1/sagas/order_processing", start_body("o-1"));
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 201);
  CHECK(r->header("content-type") == "application/json");
  auto started = parse<v1::StartSagaResponse>(r->body);
  CHECK(started.created());
  CHECK(started.saga().saga_type() == "order_processing");
  CHECK(started.saga().idempotency_key() == "o-1");
  CHECK(r->header("location") == "/v1/sagas/" + started.saga().id());
  CHECK(started.saga().input().fields().at("orderId").string_value() == "o-1");

  auto w = watch_to_end(node.port(), started.saga().id());
  REQUIRE_FALSE(w.changes.empty());
  CHECK(w.changes.back().state() == v1::SAGA_STATE_COMPLETED);
  REQUIRE(w.end);
  CHECK(w.end->code() == "OK");
  for (auto& step : w.changes.back().steps())
    CHECK(step.state() == v1::STEP_STATE_SUCCEEDED);

  auto got = api.get("/v1/sagas/" + started.saga().id());
  REQUIRE(got);
  REQUIRE(got->status == 200);
  auto saga = parse<v1::Saga>(got->body);
  CHECK(saga.state() == v1::SAGA_STATE_COMPLETED);
  CHECK(saga.steps_size() >= 3);
  // All of it over one keep-alive connection (the watch had its own).
  CHECK(api.connections_opened() == 1);
}

TEST_CASE("an ended saga read again is answered from memory until retention removes "
          "it, then answers 404 within gateways.ended_cache_ttl",
          "[gateway][http]") {
  order_node node{{"--sagas.retention", "1500ms", "--sagas.sweep_interval", "100ms",
                   "--gateways.ended_cache_ttl", "300ms"}};
  http_client api{node.port()};
  auto started = start_order(api, "retained");
  auto id = started.saga().id();
  auto w = watch_to_end(node.port(), id);
  REQUIRE_FALSE(w.changes.empty());
  auto ended = w.changes.back();
  REQUIRE(ended.state() == v1::SAGA_STATE_COMPLETED);

  // Read twice: the second answer (from the gateway's memory) is the same.
  auto first = api.get("/v1/sagas/" + id);
  auto second = api.get("/v1/sagas/" + id);
  REQUIRE(first);
  REQUIRE(second);
  REQUIRE(first->status == 200);
  REQUIRE(second->status == 200);
  CHECK(first->body == second->body);
  CHECK(parse<v1::Saga>(second->body).update_time().seconds() ==
        ended.update_time().seconds());

  // Retention removes it; the gateway stops answering it soon after.
  int status = 200;
  CHECK(eventually(within(patience), [&] {
    auto r = api.get("/v1/sagas/" + id);
    status = r ? r->status : 0;
    return status != 200;
  }));
  CHECK(status == 404);
}

TEST_CASE(
    "starting again with the same idempotency key answers 200 with the first instance",
    "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  auto first = api.post("/v1/sagas/order_processing", start_body("same-key"));
  auto again = api.post("/v1/sagas/order_processing", start_body("same-key"));
  REQUIRE(first);
  REQUIRE(again);
  CHECK(first->status == 201);
  CHECK(again->status == 200);
  auto a = parse<v1::StartSagaResponse>(first->body);
  auto b = parse<v1::StartSagaResponse>(again->body);
  CHECK(a.created());
  CHECK_FALSE(b.created());
  CHECK(a.saga().id() == b.saga().id());
}

TEST_CASE("an order for an item out of stock compensates and its watch ends with the "
          "compensated saga",
          "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  auto started = start_order(api, "o-out", "discontinued");
  auto w = watch_to_end(node.port(), started.saga().id());
  REQUIRE_FALSE(w.changes.empty());
  CHECK(w.changes.back().state() == v1::SAGA_STATE_COMPENSATED);
  CHECK_FALSE(w.changes.back().reason().empty());
  REQUIRE(w.end);
  CHECK(w.end->code() == "OK");
}

TEST_CASE("a running saga cancelled over HTTP ends cancelled", "[gateway][http]") {
  // The card network answers too late for every attempt: the saga runs
  // until it is cancelled, however late the cancel comes.
  order_node node{{}, "10m"};
  http_client api{node.port()};
  auto started = start_order(api, "o-cancel");
  auto r = api.post("/v1/sagas/" + started.saga().id() + ":cancel", "");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  auto cancelled = parse<v1::Saga>(r->body);
  CHECK(cancelled.cancel_requested());
  auto w = watch_to_end(node.port(), started.saga().id());
  REQUIRE_FALSE(w.changes.empty());
  CHECK(w.changes.back().state() == v1::SAGA_STATE_CANCELLED);
}

TEST_CASE("sagas are listed page by page, filtered by type and state",
          "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.insert(start_order(api, "o-list-" + std::to_string(i)).saga().id());

  std::set<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    auto r = api.get("/v1/sagas?type=order_processing&page_size=2" +
                     (token.empty() ? std::string{} : "&page_token=" + token));
    REQUIRE(r);
    INFO(r->body);
    REQUIRE(r->status == 200);
    auto page = parse<v1::ListSagasResponse>(r->body);
    CHECK(page.sagas_size() <= 2);
    for (auto& s : page.sagas()) {
      CHECK(s.saga_type() == "order_processing");
      listed.insert(s.id());
    }
    token = page.next_page_token();
    REQUIRE(++pages < 10);
  } while (!token.empty());
  CHECK(listed == ids);
  CHECK(pages >= 3);

  // Each ends completed; then the state filter finds them all.
  for (auto& id : ids)
    watch_to_end(node.port(), id);
  for (std::string state : {"completed", "SAGA_STATE_COMPLETED"}) {
    auto r = api.get("/v1/sagas?state=" + state + "&page_size=100");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    auto page = parse<v1::ListSagasResponse>(r->body);
    CHECK(page.sagas_size() == 5);
    for (auto& s : page.sagas())
      CHECK(s.state() == v1::SAGA_STATE_COMPLETED);
  }
  auto none = api.get("/v1/sagas?state=running");
  REQUIRE(none);
  CHECK(parse<v1::ListSagasResponse>(none->body).sagas_size() == 0);
  auto bad = api.get("/v1/sagas?state=sleeping");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(error_of(*bad).code() == "INVALID_ARGUMENT");
}

TEST_CASE("bad input over HTTP answers 400 INVALID_ARGUMENT naming the problem",
          "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  struct bad_case {
    const char* what;
    std::string body;
  };
  std::vector<bad_case> cases{
      {"syntax", R"({"json":)"},
      {"an unknown field", R"({"jsn":{"orderId":"x"}})"},
      {"a wrong type", R"({"json":{"orderId":"x"},"idempotencyKey":{"a":1}})"},
      {"an unknown field of the input",
       R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":1,"colour":"red"}})"},
      {"a wrong type in the input",
       R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":"many"}})"},
      {"input the saga type rejects",
       R"({"json":{"orderId":"x","customer":"c","sku":"widget","quantity":0}})"},
      {"a sagaType other than the path's",
       R"({"sagaType":"greeting","json":{"name":"x"}})"},
      {"an empty body", ""},
  };
  for (auto& c : cases) {
    INFO(c.what);
    auto r = api.post("/v1/sagas/order_processing", c.body);
    REQUIRE(r);
    INFO(r->body);
    CHECK(r->status == 400);
    auto e = error_of(*r);
    CHECK(e.code() == "INVALID_ARGUMENT");
    CHECK_FALSE(e.message().empty());
    CHECK_FALSE(e.correlation_id().empty());
  }
  auto timeout = api.get("/v1/sagas", {{"x-request-timeout", "soon"}});
  REQUIRE(timeout);
  CHECK(timeout->status == 400);
}

TEST_CASE("unknown saga types, ids and routes answer 404, wrong methods 405 with Allow",
          "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  auto type = api.post("/v1/sagas/no_such_type", R"({"json":{}})");
  REQUIRE(type);
  CHECK(type->status == 404);
  CHECK(error_of(*type).code() == "NOT_FOUND");
  auto id = api.get("/v1/sagas/000000000000deadbeef.a");
  REQUIRE(id);
  CHECK(id->status == 404);
  CHECK(error_of(*id).code() == "NOT_FOUND");
  auto watch = sse_reader{node.port(), "/v1/sagas/000000000000deadbeef.a:watch"};
  auto w = watch.open();
  REQUIRE(w);
  CHECK(w->status == 404);
  CHECK(error_of(*w).code() == "NOT_FOUND");
  auto route = api.get("/v2/everything");
  REQUIRE(route);
  CHECK(route->status == 404);
  CHECK(error_of(*route).code() == "NOT_FOUND");

  auto del = api.request("DELETE", "/v1/sagas");
  REQUIRE(del);
  CHECK(del->status == 405);
  CHECK(del->header("allow") == "GET");
  auto put = api.request("PUT", "/v1/sagas/x", "{}");
  REQUIRE(put);
  CHECK(put->status == 405);
  CHECK(put->header("allow") == "GET, POST");
  auto get_cancel = api.get("/v1/sagas/x:cancel");
  REQUIRE(get_cancel);
  CHECK(get_cancel->status == 405);
  CHECK(get_cancel->header("allow") == "POST");
  // Errors keep the connection.
  CHECK(api.connections_opened() == 1);
}

TEST_CASE("a POST body that is not application/json answers 415", "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  auto r = api.request("POST", "/v1/sagas/order_processing", start_body("o-415"), {},
                       "text/plain");
  REQUIRE(r);
  CHECK(r->status == 415);
  CHECK(error_of(*r).code() == "INVALID_ARGUMENT");
  auto with_charset =
      api.request("POST", "/v1/sagas/order_processing", start_body("o-utf8"), {},
                  "application/json; charset=utf-8");
  REQUIRE(with_charset);
  CHECK(with_charset->status == 201);
}

TEST_CASE("a body over max_body_bytes answers 413 and a header over max_header_bytes 431",
          "[gateway][http]") {
  order_node node{{"--gateways.limits.max_body_bytes", "4096",
                   "--gateways.limits.max_header_bytes", "4096"}};
  {
    http_client api{node.port()};
    auto r = api.post("/v1/sagas/order_processing",
                      R"({"json":{"orderId":")" + std::string(8000, 'x') + R"("}})");
    REQUIRE(r);
    CHECK(r->status == 413);
    CHECK(error_of(*r).code() == "RESOURCE_EXHAUSTED");
  }
  {
    http_client api{node.port()};
    auto r = api.get("/v1/sagas", {{"x-padding", std::string(8000, 'p')}});
    REQUIRE(r);
    CHECK(r->status == 431);
  }
  http_client api{node.port()};
  auto ok = api.get("/v1/sagas");
  REQUIRE(ok);
  CHECK(ok->status == 200);
}

TEST_CASE("with authentication on, a request without a token answers 401 and one without "
          "the role 403",
          "[gateway][http]") {
  const std::string secret = "an-hs256-secret-of-at-least-32-bytes!";
  order_node node{{"--gateways.auth.enabled", "true", "--gateways.auth.hs256_secret",
                   secret, "--gateways.auth.issuer", "tests", "--gateways.auth.audience",
                   "troupe", "--gateways.access.start", "[order_processing:operator]"}};
  http_client api{node.port()};
  auto anonymous = api.post("/v1/sagas/order_processing", start_body("o-auth"));
  REQUIRE(anonymous);
  CHECK(anonymous->status == 401);
  CHECK(error_of(*anonymous).code() == "UNAUTHENTICATED");

  auto claims = [](std::vector<std::string> roles) {
    return token_claims{}.subject("alice").issuer("tests").audience("troupe").roles(
        std::move(roles));
  };
  auto viewer = "Bearer " + hs256_token(secret, claims({"viewer"}));
  auto denied = api.post("/v1/sagas/order_processing", start_body("o-auth"),
                         {{"Authorization", viewer}});
  REQUIRE(denied);
  CHECK(denied->status == 403);
  CHECK(error_of(*denied).code() == "PERMISSION_DENIED");

  auto forged = "Bearer " + hs256_token("another-secret-of-at-least-32-bytes!!",
                                        claims({"operator"}));
  auto bad_signature = api.post("/v1/sagas/order_processing", start_body("o-auth"),
                                {{"Authorization", forged}});
  REQUIRE(bad_signature);
  CHECK(bad_signature->status == 401);

  auto operator_token = "Bearer " + hs256_token(secret, claims({"operator"}));
  auto allowed = api.post("/v1/sagas/order_processing", start_body("o-auth"),
                          {{"Authorization", operator_token}});
  REQUIRE(allowed);
  CHECK(allowed->status == 201);
}

TEST_CASE("a client over its rate limit gets 429 with Retry-After", "[gateway][http]") {
  order_node node{
      {"--gateways.rate_limit.per_client", "0.5", "--gateways.rate_limit.burst", "2"}};
  http_client api{node.port()};
  std::optional<http_reply> limited;
  for (int i = 0; i < 20 && !limited; ++i) {
    auto r = api.get("/v1/sagas");
    REQUIRE(r);
    if (r->status == 429)
      limited = r;
    else
      CHECK(r->status == 200);
  }
  REQUIRE(limited);
  CHECK(error_of(*limited).code() == "RESOURCE_EXHAUSTED");
  CHECK(std::stoi(limited->header("retry-after")) >= 1);
  CHECK(error_of(*limited).retry_after_seconds() >= 1);
}

TEST_CASE("a request whose x-request-timeout passes answers 504", "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  // Once the gateway knows the saga manager, a start is one request to it,
  // which cannot answer within a nanosecond: it writes to the store first.
  auto warm = api.get("/v1/sagas");
  REQUIRE(warm);
  REQUIRE(warm->status == 200);
  auto r = api.post("/v1/sagas/order_processing", start_body("o-504"),
                    {{"x-request-timeout", "1ns"}});
  REQUIRE(r);
  INFO(r->body);
  CHECK(r->status == 504);
  CHECK(error_of(*r).code() == "DEADLINE_EXCEEDED");
  auto after = api.get("/v1/sagas");
  REQUIRE(after);
  CHECK(after->status == 200);
}

TEST_CASE("x-request-id is echoed and a traceparent's trace id becomes the saga's "
          "correlation id",
          "[gateway][http]") {
  order_node node;
  http_client api{node.port()};
  auto r = api.get("/v1/sagas", {{"x-request-id", "req-42"}});
  REQUIRE(r);
  CHECK(r->header("x-request-id") == "req-42");
  auto missing = api.get("/v1/nothing", {{"x-request-id", "req-43"}});
  REQUIRE(missing);
  CHECK(missing->header("x-request-id") == "req-43");
  CHECK(error_of(*missing).correlation_id() == "req-43");
  auto fresh = api.get("/v1/sagas");
  REQUIRE(fresh);
  CHECK_FALSE(fresh->header("x-request-id").empty());

  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto started = api.post("/v1/sagas/order_processing", start_body("o-trace"),
                          {{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}});
  REQUIRE(started);
  REQUIRE(started->status == 201);
  CHECK(started->header("x-request-id") == trace);
  auto saga = parse<v1::StartSagaResponse>(started->body).saga();
  CHECK(saga.correlation_id() == trace);
}

TEST_CASE(
    "a start sent to a node that does not own the key is forwarded to the owner, and "
    "answers 503 with Retry-After while the owner is down",
    "[gateway][http][cluster]") {
  temp_dir dir;
  auto owners = strings{"--sagas.owners", "[a, b]"} + fast_detector;
  auto a = start_gateway_node("a", strings{"--gateways.grpc.enabled", "false"} + owners,
                              within(patience));
  auto b = start_node("b",
                      strings{"--services.enabled",
                              "[orders, inventory, payment, shipping, sagas]",
                              "--store.path", (dir.path() / "b").string(),
                              "--cluster.seeds", a.node.cluster_address()} +
                          owners,
                      within(patience));
  http_client api{a.http_port};
  // The saga id ends in its owner's name: try keys until one belongs to b.
  std::string key;
  std::string id;
  REQUIRE(eventually(
      within(patience),
      [&] {
        for (int i = 0; i < 32; ++i) {
          auto k = "o-owner-" + std::to_string(i);
          auto r = api.post("/v1/sagas/order_processing", start_body(k));
          if (!r || (r->status != 201 && r->status != 200))
            return false;
          auto s = parse<v1::StartSagaResponse>(r->body).saga();
          if (s.id().size() > 2 && s.id().substr(s.id().size() - 2) == ".b") {
            key = k;
            id = s.id();
            return true;
          }
        }
        return false;
      },
      200ms));
  // Read through a, from b.
  auto got = api.get("/v1/sagas/" + id);
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(parse<v1::Saga>(got->body).idempotency_key() == key);

  b->kill(SIGKILL);
  REQUIRE(b->wait_exit(within(patience)));
  std::optional<http_reply> refused;
  REQUIRE(eventually(
      within(patience),
      [&] {
        auto r = api.post("/v1/sagas/order_processing", start_body(key));
        if (r && r->status == 503)
          refused = r;
        return refused.has_value();
      },
      100ms));
  CHECK(error_of(*refused).code() == "UNAVAILABLE");
  CHECK(std::stoi(refused->header("retry-after")) >= 1);
}

TEST_CASE(
    "Invoke calls greeter/greet when gateways.invocable lists it, and answers 403 or "
    "404 for what it does not",
    "[gateway][http]") {
  order_node node{{"--gateways.invocable", "[greeter/greet, greeter/shout]"}};
  http_client api{node.port()};
  auto r = api.post("/v1/services/greeter/greet", R"({"name":"Ada"})");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  auto reply = parse<google::protobuf::Struct>(r->body);
  CHECK(reply.fields().at("text").string_value().find("Ada") != std::string::npos);
  CHECK(reply.fields().count("greetedBy") == 1);

  auto bad = api.post("/v1/services/greeter/greet", R"({"nom":"Ada"})");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  auto unlisted = api.post("/v1/services/orders/place", "{}");
  REQUIRE(unlisted);
  CHECK(unlisted->status == 403);
  CHECK(error_of(*unlisted).code() == "PERMISSION_DENIED");
  auto unexposed = api.post("/v1/services/greeter/shout", R"({"name":"Ada"})");
  REQUIRE(unexposed);
  CHECK(unexposed->status == 404);
  auto get = api.get("/v1/services/greeter/greet");
  REQUIRE(get);
  CHECK(get->status == 405);
}

TEST_CASE("the HTTP gateway serves over TLS, and with a client CA only to clients with a "
          "certificate it signed",
          "[gateway][http][tls]") {
  temp_dir certs_dir;
  auto certs = make_test_certs(certs_dir.path());
  SECTION("TLS") {
    order_node node{{"--gateways.tls.cert_file", certs.server_cert.string(),
                     "--gateways.tls.key_file", certs.server_key.string()}};
    http_client tls_api{node.port(), client_tls{certs.ca_cert, {}, {}}};
    auto r = tls_api.get("/v1/sagas");
    REQUIRE(r);
    CHECK(r->status == 200);
    auto started = tls_api.post("/v1/sagas/order_processing", start_body("o-tls"));
    REQUIRE(started);
    CHECK(started->status == 201);
    http_client plain{node.port(), {}, 3s};
    CHECK_FALSE(plain.get("/v1/sagas"));
    // The node still serves TLS after the plaintext attempt.
    CHECK(tls_api.get("/v1/sagas"));
  }
  SECTION("TLS with the certificate and key given as secrets, i.e. as PEM text") {
    order_node node{
        {"--gateways.tls.cert_file", "${file:" + certs.server_cert.string() + "}",
         "--gateways.tls.key_file", "${file:" + certs.server_key.string() + "}"}};
    http_client tls_api{node.port(), client_tls{certs.ca_cert, {}, {}}};
    auto r = tls_api.get("/v1/sagas");
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  SECTION("mTLS") {
    order_node node{{"--gateways.tls.cert_file", certs.server_cert.string(),
                     "--gateways.tls.key_file", certs.server_key.string(),
                     "--gateways.tls.client_ca_file", certs.ca_cert.string()}};
    http_client with_cert{node.port(),
                          client_tls{certs.ca_cert, certs.client_cert, certs.client_key}};
    auto r = with_cert.get("/v1/sagas");
    REQUIRE(r);
    CHECK(r->status == 200);
    http_client without_cert{node.port(), client_tls{certs.ca_cert, {}, {}}, 3s};
    CHECK_FALSE(without_cert.get("/v1/sagas"));
    http_client rogue{
        node.port(),
        client_tls{certs.ca_cert, certs.rogue_client_cert, certs.rogue_client_key}, 3s};
    CHECK_FALSE(rogue.get("/v1/sagas"));
    http_client again{node.port(),
                      client_tls{certs.ca_cert, certs.client_cert, certs.client_key}};
    CHECK(again.get("/v1/sagas"));
  }
}
