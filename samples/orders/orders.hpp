#pragma once

// The order-processing sample: order, inventory, payment and shipping
// services as typed actors, and the order_processing saga over them. It is
// the workload of the demo, the saga tests and the benchmarks.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <caf/meta/type_name.hpp>

#include <troupe/runtime/config.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/sagas/saga_definition.hpp>

namespace orders {

/// The saga's input: one order.
struct order {
  std::string order_id;
  std::string customer;
  std::string sku;
  int32_t quantity = 0;
};

struct validate_order {
  std::string order_id;
  std::string sku;
  int32_t quantity = 0;
};
struct order_validated {
  std::string order_id;
  int64_t total_cents = 0;
};

struct reserve_stock {
  std::string order_id;
  std::string sku;
  int32_t quantity = 0;
};
struct stock_reserved {
  std::string reservation_id;
  std::string sku;
  int32_t quantity = 0;
};
struct release_stock {
  std::string reservation_id;
};
struct stock_released {
  std::string reservation_id;
};

struct charge_card {
  std::string order_id;
  std::string customer;
  int64_t amount_cents = 0;
};
struct card_charged {
  std::string payment_id;
  int64_t amount_cents = 0;
};
struct refund_payment {
  std::string payment_id;
  int64_t amount_cents = 0;
};
struct payment_refunded {
  std::string payment_id;
};

struct schedule_shipment {
  std::string order_id;
  std::string reservation_id;
  std::string customer;
};
struct shipment_scheduled {
  std::string tracking_id;
};

/// Query: how often each idempotency key was applied (an application is a
/// handler run that changed state; a replayed key does not count).
struct audit_applications {};
struct applications {
  std::map<std::string, int32_t> by_key;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, order& x) {
  return f(caf::meta::type_name("order"), x.order_id, x.customer, x.sku, x.quantity);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, validate_order& x) {
  return f(caf::meta::type_name("validate_order"), x.order_id, x.sku, x.quantity);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, order_validated& x) {
  return f(caf::meta::type_name("order_validated"), x.order_id, x.total_cents);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reserve_stock& x) {
  return f(caf::meta::type_name("reserve_stock"), x.order_id, x.sku, x.quantity);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stock_reserved& x) {
  return f(caf::meta::type_name("stock_reserved"), x.reservation_id, x.sku, x.quantity);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, release_stock& x) {
  return f(caf::meta::type_name("release_stock"), x.reservation_id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stock_released& x) {
  return f(caf::meta::type_name("stock_released"), x.reservation_id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, charge_card& x) {
  return f(caf::meta::type_name("charge_card"), x.order_id, x.customer, x.amount_cents);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, card_charged& x) {
  return f(caf::meta::type_name("card_charged"), x.payment_id, x.amount_cents);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, refund_payment& x) {
  return f(caf::meta::type_name("refund_payment"), x.payment_id, x.amount_cents);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, payment_refunded& x) {
  return f(caf::meta::type_name("payment_refunded"), x.payment_id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, schedule_shipment& x) {
  return f(caf::meta::type_name("schedule_shipment"), x.order_id, x.reservation_id,
           x.customer);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shipment_scheduled& x) {
  return f(caf::meta::type_name("shipment_scheduled"), x.tracking_id);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, audit_applications&) {
  return f(caf::meta::type_name("audit_applications"));
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, applications& x) {
  return f(caf::meta::type_name("applications"), x.by_key);
}

/// Events the order saga emits with its end (through the outbox, to
/// `orders.completed` and `orders.compensated`, keyed by order id).
struct order_completed {
  std::string order_id;
  std::string customer;
  std::string sku;
  int32_t quantity = 0;
};
struct order_compensated {
  std::string order_id;
  std::string status; ///< compensated, cancelled or failed_compensation
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, order_completed& x) {
  return f(caf::meta::type_name("order_completed"), x.order_id, x.customer, x.sku,
           x.quantity);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, order_compensated& x) {
  return f(caf::meta::type_name("order_compensated"), x.order_id, x.status, x.reason);
}

/// Asks the sales totals, over the event bus (destination `orders.sales`),
/// how many units of `sku` have been sold.
struct sales_query {
  std::string sku;
};
/// Their answer: units of `sku` in the completed orders counted so far.
struct sales_figure {
  std::string sku;
  int64_t units = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sales_query& x) {
  return f(caf::meta::type_name("sales_query"), x.sku);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sales_figure& x) {
  return f(caf::meta::type_name("sales_figure"), x.sku, x.units);
}

/// Where order_sales answers sales queries.
inline constexpr const char* sales_destination = "orders.sales";

using audited = troupe::handles<audit_applications, applications>;

using orders_actor = troupe::service<troupe::handles<validate_order, order_validated>>;
using inventory_actor =
    troupe::service<troupe::handles<reserve_stock, stock_reserved>,
                    troupe::handles<release_stock, stock_released>, audited>;
using payment_actor =
    troupe::service<troupe::handles<charge_card, card_charged>,
                    troupe::handles<refund_payment, payment_refunded>, audited>;
using shipping_actor =
    troupe::service<troupe::handles<schedule_shipment, shipment_scheduled>, audited>;

/// The order_processing saga, version 1.
std::shared_ptr<const troupe::saga_definition> order_processing();

void add_messages(troupe::message_catalog& catalog);
/// Declares orders.*, inventory.*, payment.*, shipping.* and the client's keys.
void declare_config(troupe::config_schema& schema);

orders_actor spawn_orders(caf::actor_system& sys, const troupe::config& cfg);
inventory_actor spawn_inventory(caf::actor_system& sys, const troupe::config& cfg);
payment_actor spawn_payment(caf::actor_system& sys, const troupe::config& cfg);
shipping_actor spawn_shipping(caf::actor_system& sys, const troupe::config& cfg);
/// Starts `orders_client.count` orders through the saga manager and reports
/// how each ended (the demo's and the crash test's load).
caf::actor spawn_orders_client(caf::actor_system& sys, const troupe::config& cfg);
/// Subscribes to the saga's end events (orders.completed, orders.compensated)
/// and records one notice per order, each event applied once.
caf::actor spawn_order_notifications(caf::actor_system& sys, const troupe::config& cfg);
/// Keeps units sold per SKU from orders.completed, taking the events in
/// batches of up to `order_sales.max_batch`, each event counted once.
/// Also answers sales_query requests on orders.sales (a NATS queue group
/// when the destination is routed to NATS).
caf::actor spawn_order_sales(caf::actor_system& sys, const troupe::config& cfg);
/// Asks order_sales once for `sales_report.sku` over the event bus, logs
/// the figure or the error, then stops (what a reporting job would do).
caf::actor spawn_sales_report(caf::actor_system& sys, const troupe::config& cfg);
/// Prints every saga's end state and every service's applications per key
/// (what the crash-recovery test checks), then stops.
caf::actor spawn_auditor(caf::actor_system& sys, const troupe::config& cfg);

} // namespace orders
