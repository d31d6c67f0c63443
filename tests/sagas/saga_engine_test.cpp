// The saga engine (sagas/src/saga_manager.cpp, saga_instance.cpp) on CAF's
// deterministic coordinator: real typed services that record every request
// they get, the real store (inline I/O), virtual time. Tests assert who was
// asked what, in which order, with which idempotency key and payload.

#include <troupe/sagas/saga_manager.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>
#include <prometheus/registry.h>

#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/sagas/saga_definition.hpp>

#include "saga_log.hpp"
#include "sagas/order_services.hpp"
#include "sagas/saga_requests.hpp"
#include "support/deterministic.hpp"

using namespace std::chrono_literals;
using namespace sagatest;
using troupe::errc;
using troupe::saga_snapshot;
using troupe::saga_started;
using troupe::saga_status;
using troupe::step_status;

namespace {

// -- what the services do and what they saw -----------------------------------

enum class act { reply, fail, hang, hold };

struct outcome {
  act what = act::reply;
  errc code = errc::internal;
};

outcome reply() {
  return {act::reply};
}
outcome fail(errc code) {
  return {act::fail, code};
}
/// Never answers: the caller's timeout ends the call.
outcome hang() {
  return {act::hang};
}
/// Answers when the test calls `world::release`.
outcome hold() {
  return {act::hold};
}

/// One request a service received.
struct received {
  std::string service;
  std::string type;
  std::string idempotency_key;
  caf::message request;

  template <class T>
  const T& as() const {
    REQUIRE(request.match_element<T>(0));
    return request.get_as<T>(0);
  }
};

/// Shared by every test service: the log of requests and the script of how
/// to answer them, per request type (answers not scripted are replies).
struct world {
  std::vector<received> log;
  std::map<std::string, std::deque<outcome>> scripts;
  std::map<std::string, outcome> always;
  std::map<std::string, std::vector<std::function<void()>>> held; ///< by service
  int ids = 0;

  void script(const std::string& type, std::vector<outcome> xs) {
    for (auto& x : xs)
      scripts[type].push_back(x);
  }

  outcome next(const std::string& type) {
    auto& q = scripts[type];
    if (!q.empty()) {
      auto x = q.front();
      q.pop_front();
      return x;
    }
    if (auto i = always.find(type); i != always.end())
      return i->second;
    return reply();
  }

  std::string fresh(const std::string& prefix) {
    return prefix + "-" + std::to_string(++ids);
  }

  /// The request types in the order they arrived.
  std::vector<std::string> types() const {
    std::vector<std::string> out;
    for (auto& r : log)
      out.push_back(r.type);
    return out;
  }

  std::vector<received> of(const std::string& type) const {
    std::vector<received> out;
    for (auto& r : log)
      if (r.type == type)
        out.push_back(r);
    return out;
  }

  size_t count(const std::string& type) const { return of(type).size(); }

  /// Answers the requests `service` holds; runs inside that service, whose
  /// response promises need its execution context.
  void release(const std::string& service) {
    auto xs = std::move(held[service]);
    held[service].clear();
    for (auto& f : xs)
      f();
  }
};

using release_atom = caf::atom_constant<caf::atom("release")>;

// Lets the test make a service answer its held requests: a message outside
// the typed interface, taken by the default handler.
template <class Self>
void accept_release(Self* self, std::shared_ptr<world> w, const char* service) {
  self->set_default_handler(
      [w, service](caf::scheduled_actor*,
                   caf::message_view& x) -> caf::result<caf::message> {
        if (x.content().template match_elements<release_atom>()) {
          w->release(service);
          return caf::message{};
        }
        return caf::sec::unexpected_message;
      });
}

template <class T>
std::string type_name_of(const T& x) {
  auto text = caf::deep_to_string(x);
  return text.substr(0, text.find('('));
}

// A handler that records the request, then answers as the script says.
template <class Reply, class Request, class Self, class Make>
auto recorded(Self* self, std::shared_ptr<world> w, const char* service, Make make) {
  return [self, w, service, make](const troupe::call_context& ctx,
                                  const Request& req) -> caf::result<Reply> {
    auto type = type_name_of(req);
    w->log.push_back(
        received{service, type, ctx.idempotency_key, caf::make_message(req)});
    auto o = w->next(type);
    switch (o.what) {
    case act::reply:
      return make(req);
    case act::fail:
      return troupe::make_error(o.code, "scripted failure of " + type);
    case act::hang:
      return caf::delegated<Reply>{};
    case act::hold: {
      auto rp = self->template make_response_promise<Reply>();
      Reply answer = make(req);
      w->held[service].push_back([rp, answer]() mutable { rp.deliver(answer); });
      return rp;
    }
    }
    return troupe::make_error(errc::internal, "unreachable");
  };
}

inventory_actor::behavior_type inventory(inventory_actor::pointer self,
                                         std::shared_ptr<world> w) {
  accept_release(self, w, "inventory");
  return troupe::serve(
      self,
      recorded<stock_reserved, reserve_stock>(
          self, w, "inventory",
          [w](const reserve_stock&) { return stock_reserved{w->fresh("res")}; }),
      recorded<stock_released, release_stock>(
          self, w, "inventory",
          [](const release_stock& r) { return stock_released{r.reservation_id}; }));
}

payment_actor::behavior_type payment(payment_actor::pointer self,
                                     std::shared_ptr<world> w) {
  accept_release(self, w, "payment");
  return troupe::serve(
      self,
      recorded<card_charged, charge_card>(
          self, w, "payment",
          [w](const charge_card&) { return card_charged{w->fresh("chg")}; }),
      recorded<card_refunded, refund_card>(self, w, "payment", [](const refund_card& r) {
        return card_refunded{r.charge_id};
      }));
}

shipping_actor::behavior_type shipping(shipping_actor::pointer self,
                                       std::shared_ptr<world> w) {
  accept_release(self, w, "shipping");
  return troupe::serve(
      self,
      recorded<shipment_scheduled, schedule_shipment>(
          self, w, "shipping",
          [w](const schedule_shipment&) { return shipment_scheduled{w->fresh("shp")}; }),
      recorded<shipment_cancelled, cancel_shipment>(
          self, w, "shipping",
          [](const cancel_shipment& r) { return shipment_cancelled{r.shipment_id}; }));
}

receipts_actor::behavior_type receipts(receipts_actor::pointer self,
                                       std::shared_ptr<world> w) {
  accept_release(self, w, "receipts");
  return troupe::serve(
      self,
      recorded<receipt_sent, send_receipt>(
          self, w, "receipts",
          [w](const send_receipt&) { return receipt_sent{w->fresh("rcp")}; }),
      recorded<receipt_voided, void_receipt>(
          self, w, "receipts",
          [](const void_receipt& r) { return receipt_voided{r.receipt_id}; }));
}

loyalty_actor::behavior_type loyalty(loyalty_actor::pointer self,
                                     std::shared_ptr<world> w) {
  accept_release(self, w, "loyalty");
  return troupe::serve(
      self,
      recorded<points_awarded, award_points>(
          self, w, "loyalty",
          [w](const award_points&) { return points_awarded{w->fresh("pts")}; }),
      recorded<points_revoked, revoke_points>(
          self, w, "loyalty",
          [](const revoke_points& r) { return points_revoked{r.award_id}; }));
}

fraud_actor::behavior_type fraud(fraud_actor::pointer self, std::shared_ptr<world> w) {
  accept_release(self, w, "fraud");
  return troupe::serve(
      self,
      recorded<order_screened, screen_order>(
          self, w, "fraud",
          [w](const screen_order&) { return order_screened{w->fresh("scr")}; }),
      recorded<screening_cleared, clear_screening>(
          self, w, "fraud",
          [](const clear_screening& r) { return screening_cleared{r.screening_id}; }));
}

// -- saga definitions -----------------------------------------------------------

struct charge_options {
  std::chrono::nanoseconds timeout = 1s;
  uint32_t attempts = 1;
};

/// Reserve, charge, ship, send a receipt; each step beside its compensation.
std::shared_ptr<const troupe::saga_definition>
order_saga(std::string type = "order", charge_options charge = {},
           std::chrono::nanoseconds deadline = 0ns) {
  auto builder =
      troupe::saga<order>(std::move(type), 1)
          .step(
              "reserve", troupe::via<inventory_actor>("inventory"),
              [](const order& o) {
                return reserve_stock{o.order_id, o.sku, o.quantity};
              },
              troupe::compensate([](const order& o, const stock_reserved& r) {
                return release_stock{o.order_id, r.reservation_id};
              }))
          .step(
              "charge", troupe::via<payment_actor>("payment"),
              [](const order& o, const stock_reserved& r) {
                return charge_card{o.order_id, o.amount, r.reservation_id};
              },
              troupe::compensate(
                  [](const card_charged& c) { return refund_card{c.charge_id}; }),
              troupe::step_timeout{charge.timeout},
              troupe::step_retry{charge.attempts, 100ms})
          .step(
              "ship", troupe::via<shipping_actor>("shipping"),
              [](const order& o, const stock_reserved& r, const card_charged& c) {
                return schedule_shipment{o.order_id, r.reservation_id, c.charge_id};
              },
              troupe::compensate([](const shipment_scheduled& s) {
                return cancel_shipment{s.shipment_id};
              }))
          .step(
              "receipt", troupe::via<receipts_actor>("receipts"),
              [](const order& o, const card_charged& c, const shipment_scheduled& s) {
                return send_receipt{o.order_id, c.charge_id, s.shipment_id};
              },
              troupe::compensate(
                  [](const receipt_sent& r) { return void_receipt{r.receipt_id}; }));
  if (deadline.count() > 0)
    return std::move(builder).deadline(deadline).build();
  return std::move(builder).build();
}

/// Reserve, then charge, award points and screen the order at once, then ship.
std::shared_ptr<const troupe::saga_definition> parallel_order_saga() {
  return troupe::saga<order>("parallel_order", 1)
      .step(
          "reserve", troupe::via<inventory_actor>("inventory"),
          [](const order& o) {
            return reserve_stock{o.order_id, o.sku, o.quantity};
          },
          troupe::compensate([](const order& o, const stock_reserved& r) {
            return release_stock{o.order_id, r.reservation_id};
          }))
      .parallel(troupe::step(
                    "charge", troupe::via<payment_actor>("payment"),
                    [](const order& o, const stock_reserved& r) {
                      return charge_card{o.order_id, o.amount, r.reservation_id};
                    },
                    troupe::compensate(
                        [](const card_charged& c) { return refund_card{c.charge_id}; })),
                troupe::step(
                    "points", troupe::via<loyalty_actor>("loyalty"),
                    [](const order& o) {
                      return award_points{o.order_id, o.amount / 10};
                    },
                    troupe::compensate([](const points_awarded& p) {
                      return revoke_points{p.award_id};
                    })),
                troupe::step(
                    "screen", troupe::via<fraud_actor>("fraud"),
                    [](const order& o) { return screen_order{o.order_id}; },
                    troupe::compensate([](const order_screened& s) {
                      return clear_screening{s.screening_id};
                    })))
      .step(
          "ship", troupe::via<shipping_actor>("shipping"),
          [](const order& o, const stock_reserved& r, const card_charged& c) {
            return schedule_shipment{o.order_id, r.reservation_id, c.charge_id};
          },
          troupe::compensate(
              [](const shipment_scheduled& s) { return cancel_shipment{s.shipment_id}; }))
      .build();
}

order sample_order(std::string id = "o-1") {
  return order{std::move(id), "sku-42", 2, 1500};
}

using strings = std::vector<std::string>;

// -- the fixture ------------------------------------------------------------------

/// The deterministic system with the six test services registered and a saga
/// manager on the store.
struct saga_fixture : saga_requests {
  std::shared_ptr<world> w = std::make_shared<world>();
  troupe::saga_settings settings;

  saga_fixture() {
    settings.node_name = "n1";
    settings.step_timeout = 1s;
    settings.deadline = 24h;
    settings.step_retry.max_attempts = 1;
    settings.compensation_retry.max_attempts = 5;
    settings.compensation_retry.backoff.strategy =
        troupe::resilience::backoff_strategy::constant;
    settings.compensation_retry.backoff.initial = 200ms;
    settings.sweep_interval = 48h;
    settings.stall_after = 48h;
    register_service("inventory", keep(sys->spawn(inventory, w)));
    register_service("payment", keep(sys->spawn(payment, w)));
    register_service("shipping", keep(sys->spawn(shipping, w)));
    register_service("receipts", keep(sys->spawn(receipts, w)));
    register_service("loyalty", keep(sys->spawn(loyalty, w)));
    register_service("fraud", keep(sys->spawn(fraud, w)));
    run();
  }

  ~saga_fixture() {
    if (mgr)
      stop_manager();
    // Held promises point back at their services.
    w->held.clear();
  }

  void start_manager(std::vector<std::shared_ptr<const troupe::saga_definition>> defs) {
    mgr = troupe::spawn_saga_manager(*sys, settings, std::move(defs));
    run();
  }

  void stop_manager() {
    stop(mgr);
    mgr = nullptr;
  }

  bool ended(const std::string& id) {
    auto s = get(id);
    return s && troupe::is_end_state(s->status);
  }

  /// Fires timers until the saga reached an end state.
  saga_snapshot settle(const std::string& id) {
    if (!run_until([&] { return ended(id); })) {
      auto s = get(id);
      FAIL("saga " << id << " did not end: "
                   << (s ? caf::deep_to_string(*s) : troupe::describe(s.error())));
    }
    return snapshot(id);
  }

  /// Answers every held request (each service delivers its own promises).
  void release() {
    for (auto& [name, entry] : entries->services)
      if (!w->held[name].empty())
        caf::anon_send(entry.handle, release_atom::value);
    run();
  }
};

const troupe::step_record& step_of(const saga_snapshot& s, const std::string& name) {
  for (auto& st : s.steps)
    if (st.name == name)
      return st;
  FAIL("no step " << name);
  throw std::logic_error("unreachable");
}

template <class T>
T reply_of(caf::actor_system& sys, const saga_snapshot& s, const std::string& step) {
  auto value = troupe::decode<T>(sys, step_of(s, step).reply);
  REQUIRE(value);
  return *value;
}

double metric_value(const std::string& family) {
  for (auto& f : troupe::metrics::instance().registry().Collect())
    if (f.name == family) {
      double sum = 0;
      for (auto& m : f.metric)
        sum +=
            f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
      return sum;
    }
  return 0;
}

} // namespace

// -- forward and back -------------------------------------------------------------

TEST_CASE("a four-step saga completes, calling each service once in order") {
  saga_fixture f;
  f.start_manager({order_saga()});
  auto st = f.started("order", sample_order(), "k-happy");
  CHECK(st.created);
  auto id = st.saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::completed);
  CHECK(f.w->types() ==
        strings{"reserve_stock", "charge_card", "schedule_shipment", "send_receipt"});
  CHECK(f.w->of("reserve_stock")[0].service == "inventory");
  CHECK(f.w->of("send_receipt")[0].service == "receipts");
  strings keys;
  for (auto& r : f.w->log)
    keys.push_back(r.idempotency_key);
  CHECK(keys == strings{id + "/reserve", id + "/charge", id + "/ship", id + "/receipt"});
  REQUIRE(s.steps.size() == 4);
  for (auto& rec : s.steps) {
    CHECK(rec.status == step_status::succeeded);
    CHECK(rec.attempts == 1);
  }
  // The recorded replies are what the services answered.
  CHECK(reply_of<stock_reserved>(*f.sys, s, "reserve").reservation_id == "res-1");
  CHECK(reply_of<card_charged>(*f.sys, s, "charge").charge_id == "chg-2");
  CHECK(reply_of<shipment_scheduled>(*f.sys, s, "ship").shipment_id == "shp-3");
  CHECK(reply_of<receipt_sent>(*f.sys, s, "receipt").receipt_id == "rcp-4");
  CHECK(step_of(s, "charge").reply_text.find("chg-2") != std::string::npos);
}

TEST_CASE("a step that fails compensates exactly the completed steps, last first") {
  auto failing = GENERATE(1, 2, 3, 4);
  const strings forward{"reserve_stock", "charge_card", "schedule_shipment",
                        "send_receipt"};
  const strings undo{"release_stock", "refund_card", "cancel_shipment", "void_receipt"};
  const strings names{"reserve", "charge", "ship", "receipt"};
  CAPTURE(failing);
  saga_fixture f;
  f.w->script(forward[failing - 1], {fail(errc::bad_input)});
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  CHECK(s.reason.find("step " + names[failing - 1] + " failed") != std::string::npos);
  strings expected(forward.begin(), forward.begin() + failing);
  for (int k = failing - 1; k >= 1; --k)
    expected.push_back(undo[k - 1]);
  CHECK(f.w->types() == expected);
  for (int k = 1; k <= 4; ++k) {
    auto& rec = step_of(s, names[k - 1]);
    CAPTURE(k);
    if (k < failing)
      CHECK(rec.status == step_status::compensated);
    else if (k == failing)
      CHECK(rec.status == step_status::failed);
    else
      CHECK(rec.status == step_status::pending);
  }
  // Each compensation carries its step's key with "/compensate".
  for (int k = failing - 1; k >= 1; --k)
    CHECK(f.w->of(undo[k - 1])[0].idempotency_key ==
          id + "/" + names[k - 1] + "/compensate");
}

TEST_CASE("a failing branch of a parallel group compensates the completed branches, "
          "then the earlier steps") {
  saga_fixture f;
  f.w->script("screen_order", {fail(errc::bad_input)});
  f.start_manager({parallel_order_saga()});
  auto id = f.started("parallel_order", sample_order()).saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  auto types = f.w->types();
  REQUIRE(types.size() == 7);
  CHECK(types[0] == "reserve_stock");
  // The group runs at once, in any order.
  CHECK(std::set<std::string>(types.begin() + 1, types.begin() + 4) ==
        std::set<std::string>{"charge_card", "award_points", "screen_order"});
  // Its completed branches are undone (in any order) before the step before it.
  CHECK(std::set<std::string>(types.begin() + 4, types.begin() + 6) ==
        std::set<std::string>{"refund_card", "revoke_points"});
  CHECK(types[6] == "release_stock");
  CHECK(f.w->count("clear_screening") == 0);
  CHECK(f.w->count("schedule_shipment") == 0);
  CHECK(step_of(s, "reserve").status == step_status::compensated);
  CHECK(step_of(s, "charge").status == step_status::compensated);
  CHECK(step_of(s, "points").status == step_status::compensated);
  CHECK(step_of(s, "screen").status == step_status::failed);
  CHECK(step_of(s, "ship").status == step_status::pending);
}

// -- time ---------------------------------------------------------------------------

TEST_CASE("a step whose every attempt timed out is retried per its policy, then "
          "compensated by its key when the saga compensates") {
  saga_fixture f;
  f.w->always["charge_card"] = hang();
  f.start_manager({order_saga("order", charge_options{2s, 3})});
  auto id = f.started("order", sample_order()).saga.id;
  CHECK(f.w->count("charge_card") == 1);
  // Nothing happens before the step's timeout (virtual time).
  f.advance(1900ms);
  CHECK(f.w->count("charge_card") == 1);
  CHECK_FALSE(f.ended(id));
  REQUIRE(f.run_until([&] { return f.w->count("charge_card") == 2; }));
  REQUIRE(f.run_until([&] { return f.w->count("charge_card") == 3; }));
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  // A charge that timed out may have been applied: it is undone too, last first.
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "charge_card",
                                "charge_card", "refund_card", "release_stock"});
  // Every attempt is the same operation.
  for (auto& r : f.w->of("charge_card"))
    CHECK(r.idempotency_key == id + "/charge");
  // There is no reply to build the refund from: the service finds the charge
  // by the step's key.
  auto refunds = f.w->of("refund_card");
  REQUIRE(refunds.size() == 1);
  CHECK(refunds[0].idempotency_key == id + "/charge/compensate");
  CHECK(refunds[0].as<refund_card>().charge_id.empty());
  auto& charge = step_of(s, "charge");
  CHECK(charge.status == step_status::compensated);
  CHECK(charge.attempts == 3);
  CHECK(charge.reply.empty());
  CHECK(charge.error.rfind(troupe::outcome_unknown_prefix, 0) == 0);
  CHECK(charge.error.find("timeout") != std::string::npos);
}

TEST_CASE("a step refused after an attempt that timed out is not compensated") {
  saga_fixture f;
  f.w->script("charge_card", {hang(), fail(errc::rejected)});
  f.start_manager({order_saga("order", charge_options{2s, 3})});
  auto id = f.started("order", sample_order()).saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  CHECK(f.w->types() ==
        strings{"reserve_stock", "charge_card", "charge_card", "release_stock"});
  auto& charge = step_of(s, "charge");
  CHECK(charge.status == step_status::failed);
  CHECK_FALSE(troupe::outcome_unknown(charge));
}

TEST_CASE("a saga that resumes compensating compensates the step its log ends with "
          "unanswered, without sending it again") {
  saga_fixture f;
  f.w->script("schedule_shipment", {hang()});
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment"});
  f.stop_manager();

  // The node went down right after it recorded that the saga compensates.
  uint64_t last = 0;
  f.db->scan(troupe::store_column::sagas, troupe::saga_log::instance_prefix(id), {},
             [&](std::string_view key, std::string_view) {
               std::string ignored;
               uint64_t seq = 0;
               REQUIRE(troupe::saga_log::parse_record_key(key, ignored, seq));
               last = std::max(last, seq);
               return true;
             });
  troupe::saga_log::event ev;
  ev.kind = troupe::saga_log::event_kind::compensation_requested;
  ev.data = "cancelled";
  ev.cancel = true;
  troupe::write_batch tx;
  tx.put(troupe::store_column::sagas, troupe::saga_log::record_key(id, last + 1),
         troupe::saga_log::encode_event(*f.sys, ev));
  REQUIRE(f.commit(std::move(tx)).empty());

  f.start_manager({order_saga()});
  auto s = f.settle(id);
  CHECK(s.status == saga_status::cancelled);
  // The shipment may have been scheduled before the node went down.
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment",
                                "cancel_shipment", "refund_card", "release_stock"});
  auto cancels = f.w->of("cancel_shipment");
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].idempotency_key == id + "/ship/compensate");
  CHECK(cancels[0].as<cancel_shipment>().shipment_id.empty());
  // Reply-based compensations still carry their replies.
  CHECK_FALSE(f.w->of("refund_card")[0].as<refund_card>().charge_id.empty());
  CHECK(step_of(s, "ship").status == step_status::compensated);
  CHECK(step_of(s, "receipt").status == step_status::pending);
  CHECK(f.w->count("void_receipt") == 0);
}

TEST_CASE("a saga whose deadline passes mid-flight compensates and says why") {
  saga_fixture f;
  f.settings.step_timeout = 1min; // longer than the deadline
  f.w->always["schedule_shipment"] = hang();
  f.start_manager({order_saga("order", charge_options{1min, 1}, 10s)});
  auto id = f.started("order", sample_order()).saga.id;
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment"});
  f.advance(9s);
  CHECK(f.snapshot(id).status == saga_status::running);
  f.advance(1s);
  auto mid = f.snapshot(id);
  CHECK(mid.status == saga_status::compensating);
  CHECK(mid.reason.find("deadline") != std::string::npos);
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  CHECK(s.reason.find("deadline") != std::string::npos);
  // The shipment never answered: it may have been scheduled, so it is
  // cancelled too (by its key), before the steps before it.
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment",
                                "cancel_shipment", "refund_card", "release_stock"});
  CHECK(f.w->of("cancel_shipment")[0].idempotency_key == id + "/ship/compensate");
  CHECK(step_of(s, "ship").status == step_status::compensated);
}

// -- cancel -------------------------------------------------------------------------

TEST_CASE("a saga cancelled mid-flight ends cancelled with its completed steps undone") {
  saga_fixture f;
  f.w->script("schedule_shipment", {hold()});
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment"});
  auto answer = f.cancel(id);
  REQUIRE(answer);
  CHECK(answer->cancel_requested);
  CHECK(answer->status == saga_status::compensating);
  // The shipment scheduled while cancelling succeeds late: it is undone too.
  f.release();
  auto s = f.settle(id);
  CHECK(s.status == saga_status::cancelled);
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment",
                                "cancel_shipment", "refund_card", "release_stock"});
  CHECK(f.w->count("send_receipt") == 0);
  for (auto name : {"reserve", "charge", "ship"})
    CHECK(step_of(s, name).status == step_status::compensated);
}

TEST_CASE("cancelling a completed saga leaves it completed and compensates nothing") {
  saga_fixture f;
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  CHECK(f.settle(id).status == saga_status::completed);
  auto answer = f.cancel(id);
  REQUIRE(answer);
  CHECK(answer->status == saga_status::completed);
  f.run_until([] { return false; }, 20);
  CHECK(f.snapshot(id).status == saga_status::completed);
  CHECK(f.w->types() ==
        strings{"reserve_stock", "charge_card", "schedule_shipment", "send_receipt"});
}

// -- compensation retries -------------------------------------------------------------

TEST_CASE("a compensation that fails twice and then succeeds ends compensated after "
          "three calls") {
  saga_fixture f;
  f.w->script("charge_card", {fail(errc::bad_input)});
  f.w->script("release_stock", {fail(errc::internal), fail(errc::service_unavailable)});
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  auto calls = f.w->of("release_stock");
  REQUIRE(calls.size() == 3);
  for (auto& c : calls)
    CHECK(c.idempotency_key == id + "/reserve/compensate");
  auto& reserve = step_of(s, "reserve");
  CHECK(reserve.status == step_status::compensated);
  CHECK(reserve.compensation_attempts == 3);
}

TEST_CASE("a compensation that never succeeds ends failed_compensation after the "
          "configured attempts") {
  saga_fixture f;
  f.settings.compensation_retry.max_attempts = 4;
  f.w->script("send_receipt", {fail(errc::bad_input)});
  f.w->always["refund_card"] = fail(errc::internal);
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::failed_compensation);
  CHECK(f.w->count("refund_card") == 4);
  auto& charge = step_of(s, "charge");
  CHECK(charge.status == step_status::compensation_failed);
  CHECK(charge.compensation_attempts == 4);
  CHECK(charge.compensation_error.find("scripted failure") != std::string::npos);
  // The other completed steps are still undone.
  CHECK(f.w->count("cancel_shipment") == 1);
  CHECK(f.w->count("release_stock") == 1);
  CHECK(step_of(s, "reserve").status == step_status::compensated);
}

// -- starting -----------------------------------------------------------------------

TEST_CASE("starting twice with one idempotency key returns the first instance and runs "
          "the steps once") {
  saga_fixture f;
  f.start_manager({order_saga()});
  auto first = f.started("order", sample_order(), "same-key");
  CHECK(first.created);
  CHECK(f.settle(first.saga.id).status == saga_status::completed);
  auto second = f.started("order", sample_order(), "same-key");
  CHECK_FALSE(second.created);
  CHECK(second.saga.id == first.saga.id);
  CHECK(second.saga.status == saga_status::completed);
  f.run();
  CHECK(f.w->types() ==
        strings{"reserve_stock", "charge_card", "schedule_shipment", "send_receipt"});
  // Another key is another instance.
  auto third = f.started("order", sample_order(), "other-key");
  CHECK(third.created);
  CHECK(third.saga.id != first.saga.id);
}

TEST_CASE("starting twice with one key while the first still runs returns the running "
          "instance") {
  saga_fixture f;
  f.w->script("schedule_shipment", {hold()});
  f.start_manager({order_saga()});
  auto first = f.started("order", sample_order(), "k");
  auto second = f.started("order", sample_order(), "k");
  CHECK_FALSE(second.created);
  CHECK(second.saga.id == first.saga.id);
  CHECK(second.saga.status == saga_status::running);
  f.release();
  CHECK(f.settle(first.saga.id).status == saga_status::completed);
  CHECK(f.w->count("reserve_stock") == 1);
  CHECK(f.w->count("schedule_shipment") == 1);
}

TEST_CASE("replies of earlier steps reach later requests and the compensations") {
  saga_fixture f;
  f.w->script("send_receipt", {fail(errc::bad_input)});
  f.start_manager({order_saga()});
  auto input = sample_order("o-77");
  auto id = f.started("order", input).saga.id;
  auto s = f.settle(id);
  CHECK(s.status == saga_status::compensated);
  auto reservation = reply_of<stock_reserved>(*f.sys, s, "reserve").reservation_id;
  auto charge = reply_of<card_charged>(*f.sys, s, "charge").charge_id;
  auto shipment = reply_of<shipment_scheduled>(*f.sys, s, "ship").shipment_id;
  auto& reserve_req = f.w->of("reserve_stock").at(0).as<reserve_stock>();
  CHECK(reserve_req.order_id == "o-77");
  CHECK(reserve_req.sku == "sku-42");
  CHECK(reserve_req.quantity == 2);
  auto& charge_req = f.w->of("charge_card").at(0).as<charge_card>();
  CHECK(charge_req.order_id == "o-77");
  CHECK(charge_req.amount == 1500);
  CHECK(charge_req.reservation_id == reservation);
  auto& ship_req = f.w->of("schedule_shipment").at(0).as<schedule_shipment>();
  CHECK(ship_req.reservation_id == reservation);
  CHECK(ship_req.charge_id == charge);
  auto& receipt_req = f.w->of("send_receipt").at(0).as<send_receipt>();
  CHECK(receipt_req.charge_id == charge);
  CHECK(receipt_req.shipment_id == shipment);
  // Compensations see the input and their own step's reply.
  CHECK(f.w->of("cancel_shipment").at(0).as<cancel_shipment>().shipment_id == shipment);
  CHECK(f.w->of("refund_card").at(0).as<refund_card>().charge_id == charge);
  auto& release = f.w->of("release_stock").at(0).as<release_stock>();
  CHECK(release.order_id == "o-77");
  CHECK(release.reservation_id == reservation);
}

TEST_CASE("an unknown saga type is refused with not_found") {
  saga_fixture f;
  f.start_manager({order_saga()});
  auto res = f.start("no_such_saga", sample_order());
  REQUIRE_FALSE(res);
  CHECK(troupe::test::has_code(res.error(), errc::not_found));
  CHECK(troupe::describe(res.error()).find("no_such_saga") != std::string::npos);
  CHECK(f.w->log.empty());
}

TEST_CASE("an input that does not decode as the saga's input type is refused with "
          "bad_input") {
  saga_fixture f;
  f.start_manager({order_saga()});
  troupe::start_saga cmd{"order", std::string{"\xff\xff\xff", 3}, "k-bad"};
  auto res = f.ask<saga_started>(f.mgr, troupe::call_context{}, cmd);
  REQUIRE_FALSE(res);
  INFO(troupe::describe(res.error()));
  CHECK(troupe::test::has_code(res.error(), errc::bad_input));
  f.run();
  CHECK(f.w->log.empty());
}

// -- recovery -------------------------------------------------------------------------

TEST_CASE("after a restart a saga resumes and re-sends its in-flight step with the same "
          "idempotency key") {
  auto snapshot_every = GENERATE(32u, 2u);
  CAPTURE(snapshot_every);
  saga_fixture f;
  f.settings.snapshot_every = snapshot_every;
  f.w->script("schedule_shipment", {hang()});
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment"});
  f.stop_manager();
  f.start_manager({order_saga()});
  auto s = f.settle(id);
  CHECK(s.status == saga_status::completed);
  CHECK(f.w->types() == strings{"reserve_stock", "charge_card", "schedule_shipment",
                                "schedule_shipment", "send_receipt"});
  auto ships = f.w->of("schedule_shipment");
  CHECK(ships[0].idempotency_key == id + "/ship");
  CHECK(ships[1].idempotency_key == id + "/ship");
  // The resent request is built from the recovered replies.
  CHECK(ships[1].as<schedule_shipment>().charge_id ==
        ships[0].as<schedule_shipment>().charge_id);
  CHECK(step_of(s, "reserve").attempts == 1);
}

TEST_CASE("a corrupt log record and an undefined saga type are set aside while other "
          "sagas resume") {
  saga_fixture f;
  auto def_a = order_saga("type_a");
  auto def_b = order_saga("type_b");
  f.w->script("schedule_shipment", {hang(), hang(), hang()});
  f.start_manager({def_a, def_b});
  auto of_a = f.started("type_a", sample_order("o-a")).saga.id;
  auto healthy = f.started("type_b", sample_order("o-b1")).saga.id;
  auto corrupt = f.started("type_b", sample_order("o-b2")).saga.id;
  CHECK(f.w->count("schedule_shipment") == 3);
  f.stop_manager();

  // Garbage after the corrupt saga's last record.
  uint64_t last = 0;
  f.db->scan(troupe::store_column::sagas, troupe::saga_log::instance_prefix(corrupt), {},
             [&](std::string_view key, std::string_view) {
               std::string id;
               uint64_t seq = 0;
               REQUIRE(troupe::saga_log::parse_record_key(key, id, seq));
               last = std::max(last, seq);
               return true;
             });
  std::string bytes = "E";
  bytes += static_cast<char>(troupe::saga_log::format_version);
  bytes += "\x12\x34\x56\x78";
  bytes += " not a record";
  troupe::write_batch garbage;
  garbage.put(troupe::store_column::sagas,
              troupe::saga_log::record_key(corrupt, last + 1), bytes);
  REQUIRE(f.commit(std::move(garbage)).empty());

  auto unreadable_before = metric_value("troupe_saga_log_unreadable_total");
  f.start_manager({def_b});
  CHECK(metric_value("troupe_saga_log_unreadable_total") == unreadable_before + 1);

  auto s = f.settle(healthy);
  CHECK(s.status == saga_status::completed);
  // Only the healthy saga's shipment was sent again.
  auto ships = f.w->of("schedule_shipment");
  REQUIRE(ships.size() == 4);
  CHECK(ships[3].idempotency_key == healthy + "/ship");
  CHECK(f.w->count("send_receipt") == 1);

  auto parked = f.get(of_a);
  REQUIRE(parked);
  CHECK(parked->status == saga_status::parked);
  CHECK(parked->reason.find("type_a") != std::string::npos);
  auto skipped = f.get(corrupt);
  REQUIRE_FALSE(skipped);
  CHECK(troupe::test::has_code(skipped.error(), errc::not_found));
  // The corrupt records are kept for an operator.
  bool kept = false;
  f.db->scan(troupe::store_column::sagas, troupe::saga_log::instance_prefix(corrupt), {},
             [&](std::string_view, std::string_view) { return !(kept = true); });
  CHECK(kept);
  // Listing shows the parked saga.
  auto page =
      f.ask<troupe::saga_page>(f.mgr, troupe::call_context{},
                               troupe::list_sagas{"type_a", "parked", 10, {}, false});
  REQUIRE(page);
  REQUIRE(page->sagas.size() == 1);
  CHECK(page->sagas[0].id == of_a);
}

// -- watch ----------------------------------------------------------------------------

TEST_CASE("a watcher gets a snapshot on every change until the saga ends") {
  saga_fixture f;
  f.w->script("schedule_shipment", {hold()});
  f.start_manager({order_saga()});
  auto id = f.started("order", sample_order()).saga.id;
  caf::scoped_actor subscriber{*f.sys};
  auto watching = f.ask<troupe::watch_started>(f.mgr, troupe::call_context{},
                                               troupe::watch_saga{id, subscriber, false});
  REQUIRE(watching);
  CHECK(watching->saga.status == saga_status::running);
  CHECK(step_of(watching->saga, "charge").status == step_status::succeeded);
  f.release();
  f.settle(id);
  std::vector<saga_snapshot> seen;
  bool more = true;
  while (more)
    subscriber->receive([&](saga_snapshot& s) { seen.push_back(std::move(s)); },
                        caf::after(std::chrono::seconds(0)) >> [&] { more = false; });
  // ship succeeded, receipt succeeded, completed.
  REQUIRE(seen.size() >= 2);
  for (size_t i = 0; i + 1 < seen.size(); ++i)
    CHECK_FALSE(troupe::is_end_state(seen[i].status));
  CHECK(seen.back().status == saga_status::completed);
  CHECK(seen.back().id == id);
  CHECK(step_of(seen.front(), "ship").status == step_status::succeeded);
}

// -- what an end writes ---------------------------------------------------------

namespace {

// Reserve and charge; its end writes "ended/<order id>" = the end state.
std::shared_ptr<const troupe::saga_definition> recorded_end_saga() {
  return troupe::saga<order>("recorded_order", 1)
      .step(
          "reserve", troupe::via<inventory_actor>("inventory"),
          [](const order& o) {
            return reserve_stock{o.order_id, o.sku, o.quantity};
          },
          troupe::compensate([](const order& o, const stock_reserved& r) {
            return release_stock{o.order_id, r.reservation_id};
          }))
      .step("charge", troupe::via<payment_actor>("payment"),
            [](const order& o, const stock_reserved& r) {
              return charge_card{o.order_id, o.amount, r.reservation_id};
            })
      .on_end([](caf::actor_system&, const order& o, const saga_snapshot& ended,
                 troupe::write_batch& batch) {
        batch.put(troupe::store_column::state, "ended/" + o.order_id,
                  troupe::to_string(ended.status));
      })
      .build();
}

} // namespace

TEST_CASE("a saga's end hook writes into the batch that records its end, with the "
          "typed input and the end state") {
  auto failing = GENERATE(false, true);
  CAPTURE(failing);
  saga_fixture f;
  if (failing)
    f.w->script("charge_card", {fail(errc::bad_input)});
  f.start_manager({recorded_end_saga()});
  auto input = sample_order();
  auto id = f.started("recorded_order", input).saga.id;
  auto s = f.settle(id);
  auto expected = failing ? saga_status::compensated : saga_status::completed;
  CHECK(s.status == expected);
  CHECK(f.db->get(troupe::store_column::state, "ended/" + input.order_id) ==
        std::optional<std::string>{troupe::to_string(expected)});
}
