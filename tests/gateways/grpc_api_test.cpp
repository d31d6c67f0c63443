// The gRPC API driven by a real gRPC client (generated stubs) against running
// troupe-node processes: sagas started, watched, listed and cancelled; every
// row of the error table that a client can provoke; deadlines and client
// cancellation; a start sent to a node that does not own the key; health,
// reflection, TLS, mTLS, JWT, access rules and the rate limit; input gRPC
// itself refuses.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <latch>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/json_util.h>

#include <troupe/api/v1/sagas.grpc.pb.h>
#include <troupe/sagas/saga_manager.hpp>

#include "gateways/support/gateway_node.hpp"
#include "gateways/support/grpc_client.hpp"
#include "gateways/support/test_tokens.hpp"
#include "support/http_get.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
namespace v1 = troupe::api::v1;
using strings = std::vector<std::string>;
using metadata_list = std::vector<std::pair<std::string, std::string>>;

constexpr auto patience = 60s;

std::string order_json(const std::string& id, const std::string& sku = "widget",
                       int quantity = 1) {
  return R"({"orderId":")" + id + R"(","customer":"ada","sku":")" + sku +
         R"(","quantity":)" + std::to_string(quantity) + "}";
}

google::protobuf::Struct json_struct(const std::string& json) {
  google::protobuf::Struct s;
  INFO(json);
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, &s).ok());
  return s;
}

v1::StartSagaRequest order_start(const std::string& key,
                                 const std::string& sku = "widget", int quantity = 1) {
  v1::StartSagaRequest req;
  req.set_saga_type("order_processing");
  *req.mutable_json() = json_struct(order_json(key, sku, quantity));
  req.set_idempotency_key(key);
  return req;
}

bool is_end_state(v1::SagaState s) {
  return s == v1::SAGA_STATE_COMPLETED || s == v1::SAGA_STATE_COMPENSATED ||
         s == v1::SAGA_STATE_FAILED_COMPENSATION || s == v1::SAGA_STATE_CANCELLED;
}

struct watched {
  grpc::Status status;
  std::vector<v1::Saga> changes;
  v1::SagaState last() const {
    return changes.empty() ? v1::SAGA_STATE_UNSPECIFIED : changes.back().state();
  }
};

// A client of one node's gRPC gateway; `metadata` goes with every call.
struct api_client {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Sagas::Stub> sagas;
  std::unique_ptr<v1::Services::Stub> services;
  metadata_list metadata;

  explicit api_client(uint16_t port, std::optional<grpc_tls_files> tls = {},
                      metadata_list md = {})
      : channel(loopback_channel(port, tls))
      , sagas(v1::Sagas::NewStub(channel))
      , services(v1::Services::NewStub(channel))
      , metadata(std::move(md)) {}

  std::unique_ptr<grpc::ClientContext> context(std::chrono::milliseconds timeout = 20s,
                                               const metadata_list& extra = {}) const {
    auto md = metadata;
    md.insert(md.end(), extra.begin(), extra.end());
    return client_context(timeout, md);
  }

  grpc::Status start(const v1::StartSagaRequest& req, v1::StartSagaResponse& out) const {
    auto ctx = context();
    return sagas->StartSaga(ctx.get(), req, &out);
  }
  grpc::Status get(const std::string& id, v1::Saga& out) const {
    v1::GetSagaRequest req;
    req.set_id(id);
    auto ctx = context();
    return sagas->GetSaga(ctx.get(), req, &out);
  }
  grpc::Status cancel(const std::string& id, v1::Saga& out) const {
    v1::CancelSagaRequest req;
    req.set_id(id);
    auto ctx = context();
    return sagas->CancelSaga(ctx.get(), req, &out);
  }
  grpc::Status list(const v1::ListSagasRequest& req, v1::ListSagasResponse& out) const {
    auto ctx = context();
    return sagas->ListSagas(ctx.get(), req, &out);
  }
  grpc::Status invoke(const std::string& service, const std::string& method,
                      const std::string& json, v1::InvokeResponse& out) const {
    v1::InvokeRequest req;
    req.set_service(service);
    req.set_method(method);
    *req.mutable_json() = json_struct(json);
    auto ctx = context();
    return services->Invoke(ctx.get(), req, &out);
  }
  watched watch(const std::string& id,
                std::chrono::milliseconds timeout = patience) const {
    v1::WatchSagaRequest req;
    req.set_id(id);
    auto ctx = context(timeout);
    auto reader = sagas->WatchSaga(ctx.get(), req);
    watched w;
    v1::Saga s;
    while (reader->Read(&s))
      w.changes.push_back(s);
    w.status = reader->Finish();
    return w;
  }

  /// Starts an order and returns its saga; the start must succeed.
  v1::Saga start_order(const std::string& key, const std::string& sku = "widget",
                       int quantity = 1) const {
    v1::StartSagaResponse resp;
    auto st = start(order_start(key, sku, quantity), resp);
    INFO(st.error_message());
    REQUIRE(st.ok());
    return resp.saga();
  }
};

// Whether the call ended with `code`, with its message for the report.
#define CHECK_CODE(status, code)                                                         \
  do {                                                                                   \
    const grpc::Status& st_ = (status);                                                  \
    INFO("status " << st_.error_code() << ": " << st_.error_message());                  \
    CHECK(st_.error_code() == (code));                                                   \
  } while (false)

// The node answers a plain call: it kept serving.
void require_serving(const api_client& api) {
  v1::ListSagasRequest req;
  v1::ListSagasResponse resp;
  auto st = api.list(req, resp);
  INFO(st.error_message());
  REQUIRE(st.ok());
}

bool metrics_count(uint16_t status_port, const std::string& method,
                   const std::string& code) {
  auto r = http_get(status_port, "/metrics");
  if (!r || r->status != 200)
    return false;
  std::regex line{"troupe_gateway_requests_total\\{[^}]*\\} [1-9]"};
  std::istringstream in{r->body};
  for (std::string l; std::getline(in, l);)
    if (std::regex_search(l, line) &&
        l.find("method=\"" + method + "\"") != std::string::npos &&
        l.find("code=\"" + code + "\"") != std::string::npos)
      return true;
  return false;
}

} // namespace

// --- start, watch, get ---------------------------------------------------------------

TEST_CASE("a saga started over gRPC with JSON input is watched to completion",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  v1::StartSagaResponse resp;
  auto ctx = api.context(20s, {{"x-request-id", "grpc-test-start-1"}});
  auto st = api.sagas->StartSaga(ctx.get(), order_start("grpc-order-1"), &resp);
  INFO(st.error_message());
  REQUIRE(st.ok());
  CHECK(resp.created());
  CHECK(resp.saga().saga_type() == "order_processing");
  CHECK(resp.saga().idempotency_key() == "grpc-order-1");
  CHECK_FALSE(resp.saga().id().empty());
  CHECK(metadata_value(ctx->GetServerInitialMetadata(), "x-request-id") ==
        "grpc-test-start-1");

  auto w = api.watch(resp.saga().id());
  INFO(w.status.error_message());
  CHECK(w.status.ok());
  REQUIRE_FALSE(w.changes.empty());
  CHECK(w.last() == v1::SAGA_STATE_COMPLETED);
  // In order: versions never go back, and only the last change is an end state.
  for (size_t i = 1; i < w.changes.size(); ++i)
    CHECK(w.changes[i].version() >= w.changes[i - 1].version());
  for (size_t i = 0; i + 1 < w.changes.size(); ++i)
    CHECK_FALSE(is_end_state(w.changes[i].state()));

  v1::Saga saga;
  REQUIRE(api.get(resp.saga().id(), saga).ok());
  CHECK(saga.state() == v1::SAGA_STATE_COMPLETED);
  CHECK(saga.steps_size() == 4);
  for (const auto& step : saga.steps())
    CHECK(step.state() == v1::STEP_STATE_SUCCEEDED);
  REQUIRE(saga.input().fields().count("orderId") == 1);
  CHECK(saga.input().fields().at("orderId").string_value() == "grpc-order-1");
}

TEST_CASE("a saga's input may arrive as its protobuf message packed in an Any",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  // troupe.samples.orders.v1.Order by field number: the test needs no stubs of
  // the sample's messages.
  google::protobuf::UnknownFieldSet order;
  order.AddLengthDelimited(1, "packed-1");
  order.AddLengthDelimited(2, "ada");
  order.AddLengthDelimited(3, "gizmo");
  order.AddVarint(4, 2);
  v1::StartSagaRequest req;
  req.set_saga_type("order_processing");
  req.mutable_packed()->set_type_url(
      "type.googleapis.com/troupe.samples.orders.v1.Order");
  REQUIRE(order.SerializeToString(req.mutable_packed()->mutable_value()));
  v1::StartSagaResponse resp;
  auto st = api.start(req, resp);
  INFO(st.error_message());
  REQUIRE(st.ok());
  CHECK(api.watch(resp.saga().id()).last() == v1::SAGA_STATE_COMPLETED);

  // An Any of another type is bad input.
  req.mutable_packed()->set_type_url("type.googleapis.com/troupe.api.v1.Saga");
  CHECK_CODE(api.start(req, resp), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("starting again with the same idempotency key returns the first instance, "
          "not a new one",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  v1::StartSagaResponse first;
  REQUIRE(api.start(order_start("same-key"), first).ok());
  CHECK(first.created());
  v1::StartSagaResponse again;
  auto st = api.start(order_start("same-key"), again);
  INFO(st.error_message());
  REQUIRE(st.ok());
  CHECK_FALSE(again.created());
  CHECK(again.saga().id() == first.saga().id());
}

TEST_CASE("orders that cannot be fulfilled compensate: an item out of stock, a card "
          "declined",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  // "discontinued" is never in stock; 100 widgets cost more than a card may be charged.
  auto out_of_stock = api.start_order("no-stock", "discontinued", 1);
  auto declined = api.start_order("declined", "widget", 100);
  for (const auto& id : {out_of_stock.id(), declined.id()}) {
    auto w = api.watch(id);
    INFO(id << ": " << w.status.error_message());
    CHECK(w.status.ok());
    CHECK(w.last() == v1::SAGA_STATE_COMPENSATED);
    REQUIRE_FALSE(w.changes.empty());
    CHECK_FALSE(w.changes.back().reason().empty());
  }
}

// --- cancel --------------------------------------------------------------------------

TEST_CASE("a running saga cancelled over gRPC compensates and ends CANCELLED",
          "[gateway][grpc]") {
  // The card network answers too late for every attempt: the saga runs
  // until it is cancelled.
  auto g = start_gateway_node("a", {"--payment.latency", "10m"});
  api_client api{g.grpc_port};
  auto saga = api.start_order("to-cancel");
  v1::Saga cancelled;
  auto st = api.cancel(saga.id(), cancelled);
  INFO(st.error_message());
  REQUIRE(st.ok());
  CHECK(cancelled.id() == saga.id());
  CHECK(cancelled.cancel_requested());
  auto w = api.watch(saga.id());
  CHECK(w.status.ok());
  CHECK(w.last() == v1::SAGA_STATE_CANCELLED);
}

// --- list ----------------------------------------------------------------------------

TEST_CASE("ListSagas pages through every instance, two at a time", "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  std::set<std::string> started;
  for (int i = 0; i < 5; ++i)
    started.insert(api.start_order("listed-" + std::to_string(i)).id());

  std::set<std::string> seen;
  v1::ListSagasRequest req;
  req.set_page_size(2);
  int pages = 0;
  for (;;) {
    v1::ListSagasResponse page;
    auto st = api.list(req, page);
    INFO(st.error_message());
    REQUIRE(st.ok());
    CHECK(page.sagas_size() <= 2);
    for (const auto& s : page.sagas()) {
      CHECK(s.saga_type() == "order_processing");
      CHECK(seen.insert(s.id()).second); // no instance twice
    }
    REQUIRE(++pages <= 10);
    if (page.next_page_token().empty())
      break;
    req.set_page_token(page.next_page_token());
  }
  CHECK(pages >= 3);
  CHECK(seen == started);

  // A filter by a type nobody started finds nothing.
  v1::ListSagasRequest other;
  other.set_saga_type("greeting");
  v1::ListSagasResponse none;
  REQUIRE(api.list(other, none).ok());
  CHECK(none.sagas_size() == 0);
}

// --- the error table -----------------------------------------------------------------

TEST_CASE("an unknown saga id is NOT_FOUND for GetSaga, CancelSaga and WatchSaga",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  v1::Saga saga;
  CHECK_CODE(api.get("no-such-saga.a", saga), grpc::StatusCode::NOT_FOUND);
  CHECK_CODE(api.cancel("no-such-saga.a", saga), grpc::StatusCode::NOT_FOUND);
  CHECK_CODE(api.watch("no-such-saga.a").status, grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("an unknown or missing saga type is NOT_FOUND", "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  auto req = order_start("typeless");
  v1::StartSagaResponse resp;
  req.set_saga_type("no_such_type");
  CHECK_CODE(api.start(req, resp), grpc::StatusCode::NOT_FOUND);
  req.set_saga_type("");
  CHECK_CODE(api.start(req, resp), grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("input that does not fit is INVALID_ARGUMENT naming the problem",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  v1::StartSagaResponse resp;
  auto with_json = [](const std::string& json) {
    auto req = order_start("bad-input");
    *req.mutable_json() = json_struct(json);
    return req;
  };
  SECTION("an unknown field") {
    auto st = api.start(with_json(R"({"orderId":"x","customer":"c","sku":"widget",
                                     "quantity":1,"bogus":true})"),
                        resp);
    CHECK_CODE(st, grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message().find("bogus") != std::string::npos);
  }
  SECTION("a field of the wrong type") {
    auto st = api.start(with_json(R"({"orderId":"x","customer":"c","sku":"widget",
                                     "quantity":"many"})"),
                        resp);
    CHECK_CODE(st, grpc::StatusCode::INVALID_ARGUMENT);
  }
  SECTION("a value the saga's input refuses") {
    auto st = api.start(with_json(order_json("x", "widget", 0)), resp);
    CHECK_CODE(st, grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message().find("quantity") != std::string::npos);
  }
  SECTION("no input at all") {
    auto req = order_start("no-input");
    req.clear_json();
    CHECK_CODE(api.start(req, resp), grpc::StatusCode::INVALID_ARGUMENT);
  }
  SECTION("a negative saga deadline") {
    auto req = order_start("bad-deadline");
    req.mutable_deadline()->set_seconds(-5);
    CHECK_CODE(api.start(req, resp), grpc::StatusCode::INVALID_ARGUMENT);
  }
  SECTION("an empty saga id and a state that does not exist") {
    v1::Saga saga;
    CHECK_CODE(api.get("", saga), grpc::StatusCode::INVALID_ARGUMENT);
    v1::ListSagasRequest req;
    req.set_state(static_cast<v1::SagaState>(99));
    v1::ListSagasResponse page;
    CHECK_CODE(api.list(req, page), grpc::StatusCode::INVALID_ARGUMENT);
  }
  require_serving(api);
}

TEST_CASE("a start whose owner node is down is UNAVAILABLE with a retry hint",
          "[gateway][grpc][cluster]") {
  // b is a configured owner that never started.
  auto g = start_gateway_node("a", {"--sagas.owners", "[a, b]"});
  api_client api{g.grpc_port};
  std::string key;
  for (int i = 0; key.empty(); ++i)
    if (troupe::owner_of("owned-by-b-" + std::to_string(i), {"a", "b"}) == "b")
      key = "owned-by-b-" + std::to_string(i);
  auto ctx = api.context(30s);
  v1::StartSagaResponse resp;
  auto st = api.sagas->StartSaga(ctx.get(), order_start(key), &resp);
  CHECK_CODE(st, grpc::StatusCode::UNAVAILABLE);
  auto hint = metadata_value(ctx->GetServerTrailingMetadata(), "retry-after");
  REQUIRE(hint);
  CHECK(std::stoi(*hint) > 0);
  require_serving(api);
}

TEST_CASE("Invoke calls a method the node exposes, and refuses the others",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a", {"--gateways.invocable", "[greeter/*]"});
  api_client api{g.grpc_port};
  v1::InvokeResponse resp;
  auto st = api.invoke("greeter", "greet", R"({"name":"ada"})", resp);
  INFO(st.error_message());
  REQUIRE(st.ok());
  REQUIRE(resp.json().fields().count("text") == 1);
  CHECK(resp.json().fields().at("text").string_value().find("ada") != std::string::npos);

  // Listed as invocable, but no service exposes it.
  CHECK_CODE(api.invoke("greeter", "frobnicate", "{}", resp),
             grpc::StatusCode::NOT_FOUND);
  // Not listed in gateways.invocable.
  CHECK_CODE(api.invoke("payment", "charge", "{}", resp),
             grpc::StatusCode::PERMISSION_DENIED);
  CHECK_CODE(api.invoke("greeter", "greet", R"({"nickname":"ada"})", resp),
             grpc::StatusCode::INVALID_ARGUMENT);
}

// --- deadlines and cancellation ------------------------------------------------------

TEST_CASE("a client deadline that passes is DEADLINE_EXCEEDED and the node keeps "
          "serving",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a", {"--payment.latency", "2s"});
  api_client api{g.grpc_port};
  SECTION("1 ms for a start") {
    auto ctx = api.context(1ms);
    v1::StartSagaResponse resp;
    CHECK_CODE(api.sagas->StartSaga(ctx.get(), order_start("hurried"), &resp),
               grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  SECTION("a watch shorter than the saga it watches") {
    // Each charge takes 2 s: the saga outlives the watch's deadline.
    auto saga = api.start_order("slow-order");
    auto w = api.watch(saga.id(), 500ms);
    CHECK_CODE(w.status, grpc::StatusCode::DEADLINE_EXCEEDED);
    CHECK_FALSE(is_end_state(w.last()));
  }
  require_serving(api);
  auto later = api.start_order("after-the-deadline");
  CHECK(later.state() == v1::SAGA_STATE_RUNNING);
}

TEST_CASE("a client that cancels its watch ends the watch on the node, which keeps "
          "serving",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a", {"--payment.latency", "10m"});
  api_client api{g.grpc_port};
  auto saga = api.start_order("watched-then-dropped");
  {
    v1::WatchSagaRequest req;
    req.set_id(saga.id());
    auto ctx = api.context(patience);
    auto reader = api.sagas->WatchSaga(ctx.get(), req);
    v1::Saga first;
    REQUIRE(reader->Read(&first));
    CHECK(first.id() == saga.id());
    ctx->TryCancel();
    while (reader->Read(&first)) {
    }
    CHECK_CODE(reader->Finish(), grpc::StatusCode::CANCELLED);
  }
  // The node's watch saw the cancellation and ended.
  CHECK(eventually(within(patience), [&] {
    return metrics_count(g.node.status_port, "WatchSaga", "CANCELLED");
  }));
  require_serving(api);
  v1::Saga now;
  REQUIRE(api.get(saga.id(), now).ok());
  CHECK(now.state() == v1::SAGA_STATE_RUNNING);
}

TEST_CASE("watches dropped by their clients and calls in flight while the node stops "
          "leave it serving, then stopping cleanly",
          "[gateway][grpc][hardening]") {
  auto g = start_gateway_node("a", {"--payment.latency", "10m"});
  api_client api{g.grpc_port};
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(api.start_order("busy-" + std::to_string(i)).id());

  // Half the watchers drop their watch after its first change, half keep it.
  constexpr int watchers = 16;
  std::latch first_seen{watchers};
  std::vector<grpc::StatusCode> ends(watchers, grpc::StatusCode::OK);
  std::vector<std::thread> threads;
  for (int w = 0; w < watchers; ++w) {
    threads.emplace_back([&, w] {
      api_client own{g.grpc_port};
      v1::WatchSagaRequest req;
      req.set_id(ids[static_cast<size_t>(w) % ids.size()]);
      auto ctx = own.context(patience);
      auto reader = own.sagas->WatchSaga(ctx.get(), req);
      v1::Saga s;
      bool got = reader->Read(&s);
      // Cancel before telling the main thread, which then stops the node: a cancel
      // after the node's UNAVAILABLE arrived would not change the watch's end.
      if (got && w % 2 == 0)
        ctx->TryCancel();
      first_seen.count_down();
      while (reader->Read(&s)) {
      }
      ends[static_cast<size_t>(w)] = reader->Finish().error_code();
    });
  }
  std::atomic<bool> calling{true};
  std::thread caller{[&] {
    api_client own{g.grpc_port};
    v1::Saga s;
    for (size_t i = 0; calling.load(); ++i)
      own.get(ids[i % ids.size()], s);
  }};
  first_seen.wait();
  for (int i = 0; i < 3; ++i)
    require_serving(api);
  g->kill(SIGTERM);
  auto code = g->wait_exit(within(patience));
  calling = false;
  caller.join();
  for (auto& t : threads)
    t.join();
  INFO(g->output());
  REQUIRE(code);
  CHECK(*code == 0);
  for (int w = 0; w < watchers; ++w) {
    INFO("watcher " << w);
    if (w % 2 == 0)
      CHECK(ends[static_cast<size_t>(w)] == grpc::StatusCode::CANCELLED);
    else
      CHECK(ends[static_cast<size_t>(w)] == grpc::StatusCode::UNAVAILABLE);
  }
}

TEST_CASE("a node that stops ends its open watches as UNAVAILABLE and exits",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a", {"--payment.latency", "10m"});
  api_client api{g.grpc_port};
  auto saga = api.start_order("watched-at-stop");
  v1::WatchSagaRequest req;
  req.set_id(saga.id());
  auto ctx = api.context(patience);
  auto reader = api.sagas->WatchSaga(ctx.get(), req);
  v1::Saga first;
  REQUIRE(reader->Read(&first));
  g->kill(SIGTERM);
  while (reader->Read(&first)) {
  }
  auto st = reader->Finish();
  CHECK_CODE(st, grpc::StatusCode::UNAVAILABLE);
  auto code = g->wait_exit(within(patience));
  INFO(g->output());
  REQUIRE(code);
  CHECK(*code == 0);
}

// --- correlation ---------------------------------------------------------------------

TEST_CASE("a traceparent's trace id becomes the saga's correlation id and is echoed",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  api_client api{g.grpc_port};
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto ctx = api.context(20s, {{"traceparent", "00-" + trace + "-00f067aa0ba902b7-01"}});
  v1::StartSagaResponse resp;
  auto st = api.sagas->StartSaga(ctx.get(), order_start("traced"), &resp);
  INFO(st.error_message());
  REQUIRE(st.ok());
  CHECK(metadata_value(ctx->GetServerInitialMetadata(), "x-request-id") == trace);
  CHECK(resp.saga().correlation_id() == trace);

  // Without either, a fresh id is made and still echoed, on errors too.
  auto plain = api.context();
  v1::Saga saga;
  v1::GetSagaRequest req;
  req.set_id("nope.a");
  CHECK_CODE(api.sagas->GetSaga(plain.get(), req, &saga), grpc::StatusCode::NOT_FOUND);
  auto echoed = metadata_value(plain->GetServerInitialMetadata(), "x-request-id");
  REQUIRE(echoed);
  CHECK_FALSE(echoed->empty());
}

// --- across nodes --------------------------------------------------------------------

TEST_CASE("a start sent to a node that does not own the key runs on its owner",
          "[gateway][grpc][cluster]") {
  const strings owners{"--sagas.owners", "[a, b]"};
  auto a = start_gateway_node("a", owners);
  auto b_args = owners;
  b_args.insert(b_args.end(), {"--cluster.seeds", a.node.cluster_address()});
  auto b = start_gateway_node("b", b_args);
  std::string key;
  for (int i = 0; key.empty(); ++i)
    if (troupe::owner_of("remote-" + std::to_string(i), {"a", "b"}) == "b")
      key = "remote-" + std::to_string(i);

  api_client to_a{a.grpc_port};
  v1::StartSagaResponse resp;
  grpc::Status st;
  // Until a has learnt of b's saga manager, a start for b's key is refused
  // as unavailable; the key makes retrying safe.
  bool started = eventually(
      within(patience), [&] { return (st = to_a.start(order_start(key), resp)).ok(); },
      200ms);
  INFO(st.error_message() << "\nnode a:\n"
                          << a->output() << "\nnode b:\n"
                          << b->output());
  REQUIRE(started);
  const auto& id = resp.saga().id();
  CHECK(id.substr(id.rfind('.') + 1) == "b");
  // Watched through the node that does not own it, and read on the owner.
  auto w = to_a.watch(id);
  CHECK(w.status.ok());
  CHECK(w.last() == v1::SAGA_STATE_COMPLETED);
  api_client to_b{b.grpc_port};
  v1::Saga on_b;
  REQUIRE(to_b.get(id, on_b).ok());
  CHECK(on_b.state() == v1::SAGA_STATE_COMPLETED);
}

// --- health and reflection -----------------------------------------------------------

TEST_CASE("the health service reports SERVING once the node is ready",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a");
  auto channel = loopback_channel(g.grpc_port);
  for (std::string service : {"", "troupe.api.v1.Sagas"}) {
    INFO("service '" << service << "'");
    health_answer last;
    CHECK(eventually(
        within(patience),
        [&] {
          last = check_health(channel, service);
          return last.status.ok() && last.serving_status == 1;
        },
        50ms));
  }
  CHECK_CODE(check_health(channel, "no.such.Service").status,
             grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("server reflection lists the API's services, unless it is turned off",
          "[gateway][grpc]") {
  SECTION("on by default") {
    auto g = start_gateway_node("a");
    auto r = list_services_by_reflection(loopback_channel(g.grpc_port));
    INFO(r.status.error_message());
    REQUIRE(r.status.ok());
    auto has = [&](const std::string& s) {
      return std::find(r.services.begin(), r.services.end(), s) != r.services.end();
    };
    CHECK(has("troupe.api.v1.Sagas"));
    CHECK(has("troupe.api.v1.Services"));
    CHECK(has("grpc.health.v1.Health"));
  }
  SECTION("off") {
    auto g = start_gateway_node("a", {"--gateways.grpc.reflection", "false"});
    auto r = list_services_by_reflection(loopback_channel(g.grpc_port));
    CHECK_CODE(r.status, grpc::StatusCode::UNIMPLEMENTED);
  }
}

// --- TLS -----------------------------------------------------------------------------

TEST_CASE("the gRPC gateway serves over TLS", "[gateway][grpc][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto g =
      start_gateway_node("a", {"--gateways.tls.cert_file", certs.server_cert.string(),
                               "--gateways.tls.key_file", certs.server_key.string()});
  api_client tls{g.grpc_port, grpc_tls_files{certs.ca_cert, {}, {}}};
  require_serving(tls);
  api_client plain{g.grpc_port};
  v1::ListSagasResponse page;
  auto ctx = plain.context(5s);
  CHECK_CODE(plain.sagas->ListSagas(ctx.get(), {}, &page), grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("the gRPC gateway takes its certificate, key and client CA as secrets (PEM "
          "text)",
          "[gateway][grpc][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto secret = [](const std::filesystem::path& p) {
    return "${file:" + p.string() + "}";
  };
  auto g =
      start_gateway_node("a", {"--gateways.tls.cert_file", secret(certs.server_cert),
                               "--gateways.tls.key_file", secret(certs.server_key),
                               "--gateways.tls.client_ca_file", secret(certs.ca_cert)});
  api_client with_cert{
      g.grpc_port, grpc_tls_files{certs.ca_cert, certs.client_cert, certs.client_key}};
  require_serving(with_cert);
}

TEST_CASE("with a client CA, only clients with a certificate it signed are served",
          "[gateway][grpc][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  auto g =
      start_gateway_node("a", {"--gateways.tls.cert_file", certs.server_cert.string(),
                               "--gateways.tls.key_file", certs.server_key.string(),
                               "--gateways.tls.client_ca_file", certs.ca_cert.string()});
  api_client with_cert{
      g.grpc_port, grpc_tls_files{certs.ca_cert, certs.client_cert, certs.client_key}};
  require_serving(with_cert);
  v1::ListSagasResponse page;
  api_client without_cert{g.grpc_port, grpc_tls_files{certs.ca_cert, {}, {}}};
  auto ctx = without_cert.context(5s);
  CHECK_CODE(without_cert.sagas->ListSagas(ctx.get(), {}, &page),
             grpc::StatusCode::UNAVAILABLE);
  api_client rogue{g.grpc_port, grpc_tls_files{certs.ca_cert, certs.rogue_client_cert,
                                               certs.rogue_client_key}};
  auto rogue_ctx = rogue.context(5s);
  CHECK_CODE(rogue.sagas->ListSagas(rogue_ctx.get(), {}, &page),
             grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("TLS files that cannot serve stop the gateway with a message naming the key, "
          "and the node exits",
          "[gateway][grpc][tls]") {
  temp_dir dir;
  auto certs = make_test_certs(dir.path());
  std::string cert = certs.server_cert.string();
  std::string key = certs.server_key.string();
  std::string named; // the configuration key the message must name
  std::string file;  // and the file
  SECTION("a certificate file that does not exist") {
    cert = (dir.path() / "missing.pem").string();
    named = "gateways.tls.cert_file";
    file = cert;
  }
  SECTION("a certificate file that holds no certificate") {
    cert = dir.write("not-a-cert.pem", "hello\n").string();
    named = "gateways.tls.cert_file";
    file = cert;
  }
  SECTION("a key that is not the certificate's") {
    key = certs.client_key.string();
    named = "gateways.tls.key_file";
    file = key;
  }
  SECTION("a client CA file that does not exist") {
    named = "gateways.tls.client_ca_file";
    file = (dir.path() / "missing-ca.pem").string();
  }
  strings extra{"--node.name",
                "a",
                "--status.port",
                "0",
                "--cluster.port",
                "0",
                "--gateways.tls.cert_file",
                cert,
                "--gateways.tls.key_file",
                key};
  if (named == "gateways.tls.client_ca_file")
    extra.insert(extra.end(), {"--gateways.tls.client_ca_file", file});
  node_process node{troupe_node_binary(),
                    gateway_node_args((dir.path() / "store").string(), extra),
                    {},
                    "a"};
  auto line = node.wait_for_line(named + ": ", within(patience));
  INFO(node.output());
  REQUIRE(line);
  CHECK(line->find("'" + file + "'") != std::string::npos);
  CHECK(node.count_lines("grpc gateway listening") == 0);
  auto code = node.wait_exit(within(patience));
  REQUIRE(code);
  CHECK(*code != 0);
}

// --- authentication, access, rate limit ----------------------------------------------

TEST_CASE(
    "with authentication on, calls need a valid token and cancelling needs its role",
    "[gateway][grpc][auth]") {
  const std::string secret = "grpc-test-secret-0123456789abcdef";
  auto claims = [] {
    return token_claims{}.subject("tester").issuer("tests").audience("troupe");
  };
  auto g = start_gateway_node(
      "a", {"--gateways.auth.enabled", "true", "--gateways.auth.hs256_secret", secret,
            "--gateways.auth.issuer", "tests", "--gateways.auth.audience", "troupe",
            "--gateways.access.cancel", "[admin]"});
  v1::ListSagasResponse page;

  api_client anonymous{g.grpc_port};
  CHECK_CODE(anonymous.list({}, page), grpc::StatusCode::UNAUTHENTICATED);

  auto forged = hs256_token("not-the-secret", claims());
  api_client forger{g.grpc_port, {}, {{"authorization", "Bearer " + forged}}};
  auto st = forger.list({}, page);
  CHECK_CODE(st, grpc::StatusCode::UNAUTHENTICATED);
  CHECK(st.error_message().find(secret) == std::string::npos);

  auto expired = hs256_token(secret, claims().expires_in(-1h));
  api_client late{g.grpc_port, {}, {{"authorization", "Bearer " + expired}}};
  CHECK_CODE(late.list({}, page), grpc::StatusCode::UNAUTHENTICATED);

  auto reader = hs256_token(secret, claims().roles({"reader"}));
  api_client user{g.grpc_port, {}, {{"authorization", "Bearer " + reader}}};
  require_serving(user);
  auto saga = user.start_order("authorized");
  v1::Saga cancelled;
  CHECK_CODE(user.cancel(saga.id(), cancelled), grpc::StatusCode::PERMISSION_DENIED);

  auto admin = hs256_token(secret, claims().roles({"admin"}));
  api_client operator_client{g.grpc_port, {}, {{"authorization", "Bearer " + admin}}};
  CHECK(operator_client.cancel(saga.id(), cancelled).ok());
}

TEST_CASE("a client over its rate limit is RESOURCE_EXHAUSTED with a retry hint",
          "[gateway][grpc]") {
  auto g = start_gateway_node("a", {"--gateways.rate_limit.per_client", "0.01",
                                    "--gateways.rate_limit.burst", "1"});
  api_client api{g.grpc_port};
  v1::ListSagasResponse page;
  auto first = api.context();
  auto st = api.sagas->ListSagas(first.get(), {}, &page);
  INFO(st.error_message());
  REQUIRE(st.ok());
  auto second = api.context();
  CHECK_CODE(api.sagas->ListSagas(second.get(), {}, &page),
             grpc::StatusCode::RESOURCE_EXHAUSTED);
  auto hint = metadata_value(second->GetServerTrailingMetadata(), "retry-after");
  REQUIRE(hint);
  CHECK(std::stoi(*hint) >= 1);
}

// --- input gRPC refuses itself -------------------------------------------------------

TEST_CASE("a request that is not valid protobuf is refused and the node keeps serving",
          "[gateway][grpc][hardening]") {
  auto g = start_gateway_node("a");
  auto channel = loopback_channel(g.grpc_port);
  // An unterminated varint where a field's tag should be.
  const std::string garbage(64, '\xff');
  for (const auto* method :
       {"/troupe.api.v1.Sagas/StartSaga", "/troupe.api.v1.Sagas/GetSaga",
        "/troupe.api.v1.Sagas/WatchSaga", "/troupe.api.v1.Services/Invoke"}) {
    INFO(method);
    auto r = raw_unary_call(channel, method, garbage);
    INFO(r.status.error_message());
    CHECK((r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
           r.status.error_code() == grpc::StatusCode::INTERNAL));
  }
  // Valid bytes after the garbage: the node still answers, on the same channel.
  v1::GetSagaRequest req;
  req.set_id("nope.a");
  auto r =
      raw_unary_call(channel, "/troupe.api.v1.Sagas/GetSaga", req.SerializeAsString());
  CHECK_CODE(r.status, grpc::StatusCode::NOT_FOUND);
  CHECK_CODE(raw_unary_call(channel, "/troupe.api.v1.Sagas/Frobnicate", "").status,
             grpc::StatusCode::UNIMPLEMENTED);
  require_serving(api_client{g.grpc_port});
}

TEST_CASE(
    "a message over max_message_bytes and metadata over max_header_bytes are refused "
    "and the node keeps serving",
    "[gateway][grpc][hardening]") {
  auto g = start_gateway_node("a", {"--gateways.limits.max_message_bytes", "4096",
                                    "--gateways.limits.max_header_bytes", "8192"});
  api_client api{g.grpc_port};
  v1::StartSagaResponse resp;
  auto big = order_start("big", std::string(8192, 'x'));
  CHECK_CODE(api.start(big, resp), grpc::StatusCode::RESOURCE_EXHAUSTED);

  auto ctx = api.context(10s, {{"x-padding", std::string(32 * 1024, 'p')}});
  v1::ListSagasResponse page;
  auto st = api.sagas->ListSagas(ctx.get(), {}, &page);
  INFO(st.error_message());
  CHECK_FALSE(st.ok());
  // gRPC may close the connection that sent it; a new one is served.
  require_serving(api_client{g.grpc_port});
}

TEST_CASE("connections that send nothing, half a preface or bytes that are not HTTP/2 "
          "are closed and the node keeps serving",
          "[gateway][grpc][hardening]") {
  auto g = start_gateway_node(
      "a", {"--gateways.limits.read_timeout", "1s", "--gateways.http.enabled", "false"});
  for (const std::string& bytes :
       {std::string{}, std::string{"PRI * HTTP/2.0\r\n"},
        std::string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, std::string(4096, '\0')}) {
    INFO("sent " << bytes.size() << " bytes");
    auto conn = raw_tcp::connect(g.grpc_port);
    REQUIRE(conn);
    if (!bytes.empty())
      conn->send(bytes);
    auto reply = conn->receive_until_closed(patience);
    CHECK(reply.closed);
  }
  // A client that connects and vanishes mid-handshake.
  for (int i = 0; i < 8; ++i) {
    auto conn = raw_tcp::connect(g.grpc_port);
    REQUIRE(conn);
    conn->send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    conn->reset();
  }
  require_serving(api_client{g.grpc_port});
}
