#include "orders.hpp"

#include <set>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/idempotent.hpp>
#include <troupe/sagas/saga_manager.hpp>

namespace orders {

using namespace std::chrono_literals;
using troupe::call_context;
using troupe::errc;
using troupe::store_column;
using troupe::write_batch;

void add_messages(troupe::message_catalog& c) {
  c.add<order>("orders.order")
      .add<validate_order>("orders.validate_order")
      .add<order_validated>("orders.order_validated")
      .add<reserve_stock>("orders.reserve_stock")
      .add<stock_reserved>("orders.stock_reserved")
      .add<release_stock>("orders.release_stock")
      .add<stock_released>("orders.stock_released")
      .add<charge_card>("orders.charge_card")
      .add<card_charged>("orders.card_charged")
      .add<refund_payment>("orders.refund_payment")
      .add<payment_refunded>("orders.payment_refunded")
      .add<schedule_shipment>("orders.schedule_shipment")
      .add<shipment_scheduled>("orders.shipment_scheduled")
      .add<audit_applications>("orders.audit_applications")
      .add<applications>("orders.applications")
      .add<order_completed>("orders.order_completed")
      .add<order_compensated>("orders.order_compensated")
      .add<sales_query>("orders.sales_query")
      .add<sales_figure>("orders.sales_figure");
}

void declare_config(troupe::config_schema& s) {
  using troupe::value_kind;
  s.declare("inventory.initial_stock", value_kind::integer)
      .default_value("1000000")
      .min(0)
      .describe("Units of every catalog item in stock when the store has no count yet.");
  s.declare("inventory.out_of_stock", value_kind::string_list)
      .default_value("[\"discontinued\"]")
      .describe("Items that are never in stock (orders for them compensate).");
  s.declare("payment.decline_over_cents", value_kind::integer)
      .default_value("100000")
      .min(0)
      .describe("Charges above this amount are declined.");
  s.declare("payment.latency", value_kind::duration)
      .default_value("0ms")
      .min(std::chrono::nanoseconds{0})
      .max(std::chrono::minutes(10))
      .describe("Time the card network takes to answer a charge.");
  s.declare("order_sales.max_batch", value_kind::integer)
      .default_value("64")
      .min(1)
      .max(10000)
      .describe("Completed orders the sales totals take from the broker at once.");
  s.declare("sales_report.sku", value_kind::string)
      .default_value("widget")
      .describe("The item whose units sold the sales report asks for.");
  s.declare("sales_report.deadline", value_kind::duration)
      .default_value("2s")
      .min(std::chrono::milliseconds(1))
      .max(std::chrono::minutes(10))
      .describe("How long the sales report waits for the answer.");
  s.declare("orders_client.count", value_kind::integer)
      .default_value("10")
      .min(0)
      .describe("Orders the client starts (keys <prefix>-1 .. <prefix>-count).");
  s.declare("orders_client.key_prefix", value_kind::string)
      .default_value("order")
      .describe("Prefix of the orders' ids, which are also their idempotency keys.");
  s.declare("orders_client.concurrency", value_kind::integer)
      .default_value("16")
      .min(1)
      .max(100000)
      .describe("Orders the client keeps in flight.");
  s.declare("orders_client.fail_every", value_kind::integer)
      .default_value("5")
      .min(0)
      .describe("Every n-th order fails on purpose (alternately out of stock and card "
                "declined); 0 = none.");
}

namespace {

// Catalog prices in cents.
const std::map<std::string, int64_t> prices = {
    {"widget", 1299}, {"gadget", 2499}, {"gizmo", 999}, {"discontinued", 500}};

// Counts the applications of each idempotency key, in memory and in the
// store (in the same batch as the change it counts).
struct application_counter {
  std::map<std::string, int32_t> by_key;
  void count(write_batch& tx, const std::string& service, const call_context& ctx) {
    auto n = ++by_key[ctx.idempotency_key];
    tx.put(store_column::state, service + "/applied/" + ctx.idempotency_key,
           std::to_string(n));
  }
};

// What a service knows of the steps it served, for their compensations: a
// compensation names its step by the step's idempotency key, and may come
// without the step's reply (the saga never got it) or before the step itself
// (a retry still on its way). A compensation of a key that was never applied
// changes nothing and voids the key, so the step cannot apply after it.
struct step_book {
  std::set<std::string> voided;

  bool is_voided(const call_context& ctx) const {
    return voided.count(ctx.idempotency_key) > 0;
  }

  // A compensation whose step never applied: recorded as a no-op.
  void void_key(write_batch& tx, const std::string& service, const call_context& ctx,
                const std::string& step_key) {
    voided.insert(step_key);
    tx.put(store_column::state, service + "/voided/" + step_key, ctx.idempotency_key);
    spdlog::info("{}: compensation {} is a no-op: {} was never applied", service,
                 ctx.idempotency_key, step_key);
  }
};

struct orders_state {
  static inline const char* name = "orders";
};

struct inventory_state {
  static inline const char* name = "inventory";
  troupe::idempotency idem;
  application_counter applied;
  step_book book;
  std::map<std::string, int64_t> stock;
  std::map<std::string, stock_reserved> reservations;
  std::map<std::string, std::string> reservation_of_key; ///< by idempotency key
  uint64_t next = 0;
};

struct payment_state {
  static inline const char* name = "payment";
  troupe::idempotency idem;
  application_counter applied;
  step_book book;
  std::map<std::string, card_charged> charges;
  std::map<std::string, card_charged> charge_of_key; ///< by idempotency key
  uint64_t next = 0;
};

struct shipping_state {
  static inline const char* name = "shipping";
  troupe::idempotency idem;
  application_counter applied;
  uint64_t next = 0;
};

std::string unique_id(const char* prefix, const std::string& node, uint64_t n) {
  return std::string{prefix} + "-" + node + "-" + std::to_string(n);
}

} // namespace

orders_actor spawn_orders(caf::actor_system& sys, const troupe::config&) {
  return sys.spawn([](orders_actor::stateful_pointer<orders_state> self) {
    return troupe::serve(
        self, [](const validate_order& cmd) -> caf::result<order_validated> {
          auto price = prices.find(cmd.sku);
          if (price == prices.end())
            return troupe::make_error(errc::rejected, "unknown item '" + cmd.sku + "'");
          if (cmd.quantity <= 0 || cmd.quantity > 1000)
            return troupe::make_error(errc::rejected, "quantity must be 1..1000");
          return order_validated{cmd.order_id, price->second * cmd.quantity};
        });
  });
}

inventory_actor spawn_inventory(caf::actor_system& sys, const troupe::config& cfg) {
  auto initial = cfg.get_int("inventory.initial_stock");
  auto unavailable = cfg.get_list("inventory.out_of_stock");
  auto node = cfg.get_string("node.name");
  return sys.spawn([=](inventory_actor::stateful_pointer<inventory_state> self) {
    for (auto& [sku, price] : prices) {
      bool never =
          std::find(unavailable.begin(), unavailable.end(), sku) != unavailable.end();
      self->state.stock[sku] = never ? 0 : initial;
    }
    return troupe::serve(
        self,
        [=](const call_context& ctx, const reserve_stock& cmd) {
          return self->state.idem.run<stock_reserved>(
              self, ctx, [=](write_batch& tx) -> caf::expected<stock_reserved> {
                auto& st = self->state;
                if (st.book.is_voided(ctx))
                  return troupe::make_error(
                      errc::rejected, "the reservation was compensated before it ran");
                auto& left = st.stock[cmd.sku];
                if (left < cmd.quantity)
                  return troupe::make_error(errc::rejected, cmd.sku + " is out of stock");
                left -= cmd.quantity;
                stock_reserved r{unique_id("res", node, ++st.next), cmd.sku,
                                 cmd.quantity};
                st.reservations[r.reservation_id] = r;
                if (!ctx.idempotency_key.empty()) {
                  st.reservation_of_key[ctx.idempotency_key] = r.reservation_id;
                  tx.put(store_column::state,
                         "inventory/reservation_of/" + ctx.idempotency_key,
                         r.reservation_id);
                }
                tx.put(store_column::state, "inventory/stock/" + cmd.sku,
                       std::to_string(left));
                st.applied.count(tx, "inventory", ctx);
                return r;
              });
        },
        [=](const call_context& ctx, const release_stock& cmd) {
          return self->state.idem.run<stock_released>(
              self, ctx, [=](write_batch& tx) -> caf::expected<stock_released> {
                auto& st = self->state;
                auto step_key = troupe::compensated_step_key(ctx);
                auto id = cmd.reservation_id;
                if (id.empty() && !step_key.empty()) {
                  // Sent without the step's reply: find it by the step's key.
                  auto known = st.reservation_of_key.find(step_key);
                  if (known == st.reservation_of_key.end()) {
                    st.book.void_key(tx, "inventory", ctx, step_key);
                    return stock_released{id};
                  }
                  id = known->second;
                }
                auto r = st.reservations.find(id);
                if (r != st.reservations.end()) {
                  auto& left = st.stock[r->second.sku];
                  left += r->second.quantity;
                  tx.put(store_column::state, "inventory/stock/" + r->second.sku,
                         std::to_string(left));
                  st.reservations.erase(r);
                }
                st.applied.count(tx, "inventory", ctx);
                return stock_released{id};
              });
        },
        [=](const audit_applications&) {
          return applications{self->state.applied.by_key};
        });
  });
}

namespace {

using settle_atom = caf::atom_constant<caf::atom("settle")>;
using settled_atom = caf::atom_constant<caf::atom("settled")>;

struct pending_charge {
  caf::response_promise rp;
  call_context ctx;
  charge_card cmd;
};

struct network_state {
  static inline const char* name = "card_network";
  std::map<uint64_t, pending_charge> pending;
  uint64_t next = 0;
};

// The card network's latency: a charge is handed here with its original
// sender (delegation) and handed back to the payment service after the
// delay, so the reply still goes to the saga that asked.
caf::behavior card_network(caf::stateful_actor<network_state>* self, caf::actor payment,
                           std::chrono::nanoseconds latency) {
  return {[=](settle_atom, call_context& ctx, charge_card& cmd) {
            auto rp = self->make_response_promise();
            auto id = ++self->state.next;
            self->state.pending.emplace(id, pending_charge{rp, ctx, cmd});
            self->delayed_send(self, latency, settled_atom::value, id);
            return rp;
          },
          [=](settled_atom, uint64_t id) {
            auto i = self->state.pending.find(id);
            if (i == self->state.pending.end())
              return;
            i->second.rp.delegate(payment, std::move(i->second.ctx),
                                  std::move(i->second.cmd));
            self->state.pending.erase(i);
          }};
}

} // namespace

payment_actor spawn_payment(caf::actor_system& sys, const troupe::config& cfg) {
  auto limit = cfg.get_int("payment.decline_over_cents");
  auto latency = cfg.get_duration("payment.latency");
  auto node = cfg.get_string("node.name");
  return sys.spawn([=](payment_actor::stateful_pointer<payment_state> self) {
    caf::actor network;
    if (latency.count() > 0)
      network = self->spawn<caf::linked>(card_network, caf::actor_cast<caf::actor>(self),
                                         latency);
    return troupe::serve(
        self,
        [=](const call_context& ctx,
            const charge_card& cmd) -> caf::result<card_charged> {
          // A charge first waits for the card network, then applies once per key.
          if (network && ctx.idempotency_key.rfind("settled:", 0) != 0) {
            auto settled = ctx;
            settled.idempotency_key = "settled:" + ctx.idempotency_key;
            auto rp = self->make_response_promise();
            rp.delegate(network, settle_atom::value, settled, cmd);
            return rp;
          }
          auto key_ctx = ctx;
          if (key_ctx.idempotency_key.rfind("settled:", 0) == 0)
            key_ctx.idempotency_key.erase(0, 8);
          return self->state.idem.run<card_charged>(
              self, key_ctx, [=](write_batch& tx) -> caf::expected<card_charged> {
                auto& st = self->state;
                if (st.book.is_voided(key_ctx))
                  return troupe::make_error(errc::rejected,
                                            "the charge was compensated before it ran");
                if (cmd.amount_cents > limit)
                  return troupe::make_error(
                      errc::rejected,
                      "card declined: " + std::to_string(cmd.amount_cents) +
                          " cents is over the limit");
                card_charged c{unique_id("pay", node, ++st.next), cmd.amount_cents};
                st.charges[c.payment_id] = c;
                if (!key_ctx.idempotency_key.empty()) {
                  st.charge_of_key[key_ctx.idempotency_key] = c;
                  tx.put(store_column::state,
                         "payment/charge_of/" + key_ctx.idempotency_key, c.payment_id);
                }
                tx.put(store_column::state, "payment/charge/" + c.payment_id,
                       std::to_string(c.amount_cents));
                st.applied.count(tx, "payment", key_ctx);
                return c;
              });
        },
        [=](const call_context& ctx, const refund_payment& cmd) {
          return self->state.idem.run<payment_refunded>(
              self, ctx, [=](write_batch& tx) -> caf::expected<payment_refunded> {
                auto& st = self->state;
                auto step_key = troupe::compensated_step_key(ctx);
                auto id = cmd.payment_id;
                if (id.empty() && !step_key.empty()) {
                  // Sent without the step's reply: find it by the step's key.
                  auto known = st.charge_of_key.find(step_key);
                  if (known == st.charge_of_key.end()) {
                    st.book.void_key(tx, "payment", ctx, step_key);
                    return payment_refunded{id};
                  }
                  id = known->second.payment_id;
                }
                st.charges.erase(id);
                tx.erase(store_column::state, "payment/charge/" + id);
                st.applied.count(tx, "payment", ctx);
                return payment_refunded{id};
              });
        },
        [=](const audit_applications&) {
          return applications{self->state.applied.by_key};
        });
  });
}

shipping_actor spawn_shipping(caf::actor_system& sys, const troupe::config& cfg) {
  auto node = cfg.get_string("node.name");
  return sys.spawn([=](shipping_actor::stateful_pointer<shipping_state> self) {
    return troupe::serve(
        self,
        [=](const call_context& ctx, const schedule_shipment& cmd) {
          return self->state.idem.run<shipment_scheduled>(
              self, ctx, [=](write_batch& tx) -> caf::expected<shipment_scheduled> {
                auto& st = self->state;
                shipment_scheduled s{unique_id("ship", node, ++st.next)};
                tx.put(store_column::state, "shipping/" + cmd.order_id, s.tracking_id);
                st.applied.count(tx, "shipping", ctx);
                return s;
              });
        },
        [=](const audit_applications&) {
          return applications{self->state.applied.by_key};
        });
  });
}

} // namespace orders
