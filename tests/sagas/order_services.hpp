#pragma once

// The services the saga tests call: an order's stock, payment, shipping and
// receipt, plus loyalty points and fraud screening for a parallel group.
// Messages only (no behaviour), so the compile-fail files can include it.

#include <cstdint>
#include <string>

#include <caf/meta/type_name.hpp>

#include <troupe/runtime/service.hpp>

namespace sagatest {

#define SAGATEST_MESSAGE(type, ...)                                                      \
  template <class Inspector>                                                             \
  typename Inspector::result_type inspect(Inspector& f, type& x) {                       \
    return f(caf::meta::type_name(#type), __VA_ARGS__);                                  \
  }

/// The saga input.
struct order {
  std::string order_id;
  std::string sku;
  int32_t quantity = 0;
  int32_t amount = 0;
};
SAGATEST_MESSAGE(order, x.order_id, x.sku, x.quantity, x.amount)

struct reserve_stock {
  std::string order_id;
  std::string sku;
  int32_t quantity = 0;
};
SAGATEST_MESSAGE(reserve_stock, x.order_id, x.sku, x.quantity)
struct stock_reserved {
  std::string reservation_id;
};
SAGATEST_MESSAGE(stock_reserved, x.reservation_id)
struct release_stock {
  std::string order_id;
  std::string reservation_id;
};
SAGATEST_MESSAGE(release_stock, x.order_id, x.reservation_id)
struct stock_released {
  std::string reservation_id;
};
SAGATEST_MESSAGE(stock_released, x.reservation_id)

struct charge_card {
  std::string order_id;
  int32_t amount = 0;
  std::string reservation_id;
};
SAGATEST_MESSAGE(charge_card, x.order_id, x.amount, x.reservation_id)
struct card_charged {
  std::string charge_id;
};
SAGATEST_MESSAGE(card_charged, x.charge_id)
struct refund_card {
  std::string charge_id;
};
SAGATEST_MESSAGE(refund_card, x.charge_id)
struct card_refunded {
  std::string charge_id;
};
SAGATEST_MESSAGE(card_refunded, x.charge_id)

struct schedule_shipment {
  std::string order_id;
  std::string reservation_id;
  std::string charge_id;
};
SAGATEST_MESSAGE(schedule_shipment, x.order_id, x.reservation_id, x.charge_id)
struct shipment_scheduled {
  std::string shipment_id;
};
SAGATEST_MESSAGE(shipment_scheduled, x.shipment_id)
struct cancel_shipment {
  std::string shipment_id;
};
SAGATEST_MESSAGE(cancel_shipment, x.shipment_id)
struct shipment_cancelled {
  std::string shipment_id;
};
SAGATEST_MESSAGE(shipment_cancelled, x.shipment_id)

struct send_receipt {
  std::string order_id;
  std::string charge_id;
  std::string shipment_id;
};
SAGATEST_MESSAGE(send_receipt, x.order_id, x.charge_id, x.shipment_id)
struct receipt_sent {
  std::string receipt_id;
};
SAGATEST_MESSAGE(receipt_sent, x.receipt_id)
struct void_receipt {
  std::string receipt_id;
};
SAGATEST_MESSAGE(void_receipt, x.receipt_id)
struct receipt_voided {
  std::string receipt_id;
};
SAGATEST_MESSAGE(receipt_voided, x.receipt_id)

struct award_points {
  std::string order_id;
  int32_t points = 0;
};
SAGATEST_MESSAGE(award_points, x.order_id, x.points)
struct points_awarded {
  std::string award_id;
};
SAGATEST_MESSAGE(points_awarded, x.award_id)
struct revoke_points {
  std::string award_id;
};
SAGATEST_MESSAGE(revoke_points, x.award_id)
struct points_revoked {
  std::string award_id;
};
SAGATEST_MESSAGE(points_revoked, x.award_id)

struct screen_order {
  std::string order_id;
};
SAGATEST_MESSAGE(screen_order, x.order_id)
struct order_screened {
  std::string screening_id;
};
SAGATEST_MESSAGE(order_screened, x.screening_id)
struct clear_screening {
  std::string screening_id;
};
SAGATEST_MESSAGE(clear_screening, x.screening_id)
struct screening_cleared {
  std::string screening_id;
};
SAGATEST_MESSAGE(screening_cleared, x.screening_id)

#undef SAGATEST_MESSAGE

using inventory_actor = troupe::service<troupe::handles<reserve_stock, stock_reserved>,
                                        troupe::handles<release_stock, stock_released>>;
using payment_actor = troupe::service<troupe::handles<charge_card, card_charged>,
                                      troupe::handles<refund_card, card_refunded>>;
using shipping_actor =
    troupe::service<troupe::handles<schedule_shipment, shipment_scheduled>,
                    troupe::handles<cancel_shipment, shipment_cancelled>>;
using receipts_actor = troupe::service<troupe::handles<send_receipt, receipt_sent>,
                                       troupe::handles<void_receipt, receipt_voided>>;
using loyalty_actor = troupe::service<troupe::handles<award_points, points_awarded>,
                                      troupe::handles<revoke_points, points_revoked>>;
using fraud_actor = troupe::service<troupe::handles<screen_order, order_screened>,
                                    troupe::handles<clear_screening, screening_cleared>>;

} // namespace sagatest
