// Units sold per SKU: a stream processor over the order saga's completed
// orders. It takes the events in batches, so one write_batch carries a whole
// batch's totals and processed ids, and keeps the totals in memory, loaded
// from the store at start.

#include "orders.hpp"

#include <charconv>
#include <map>
#include <memory>

#include <spdlog/spdlog.h>

#include <troupe/gateways/event_bus.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace orders {

namespace {

constexpr const char* sales_group = "order-sales";
constexpr std::string_view sales_prefix = "sales/";

struct sales_state {
  static inline const char* name = "order_sales";
  sales_state() = default;
  troupe::inbox_batch_consumer_actor consumer;
};

void start_consuming(caf::stateful_actor<sales_state>* self,
                     std::shared_ptr<std::map<std::string, int64_t>> totals,
                     uint32_t max_batch) {
  auto& sys = self->system();
  self->state.consumer = troupe::gateways::subscribe_event_batches_of<order_completed>(
      sys, "orders.completed", sales_group, max_batch,
      [totals](std::vector<order_completed>& batch,
               const std::vector<const troupe::delivered_event*>&,
               troupe::outbox_transaction& tx) {
        std::map<std::string, int64_t> touched;
        for (auto& e : batch)
          touched[e.sku] = (*totals)[e.sku] += e.quantity;
        for (auto& [sku, total] : touched) {
          tx.put(std::string{sales_prefix} + sku, std::to_string(total));
          spdlog::info("sales: {} units of {} sold ({} orders in this batch)", total, sku,
                       batch.size());
        }
      });
  // Linked: the consumer ends with this component, and one failing restarts
  // the component, which reloads the totals and subscribes again.
  self->link_to(self->state.consumer);
}

} // namespace

caf::actor spawn_order_sales(caf::actor_system& sys, const troupe::config& cfg) {
  auto max_batch = static_cast<uint32_t>(cfg.get_int("order_sales.max_batch"));
  return sys.spawn([max_batch](caf::stateful_actor<sales_state>* self) -> caf::behavior {
    auto totals = std::make_shared<std::map<std::string, int64_t>>();
    self->request(troupe::local_store(self->system()), std::chrono::seconds(30),
                  troupe::store_scan_atom::value, troupe::store_column::state,
                  std::string{sales_prefix}, std::string{}, uint32_t{100000})
        .then(
            [=](troupe::scan_page& page) {
              for (auto& [key, value] : page.entries) {
                int64_t total = 0;
                auto [end, ec] =
                    std::from_chars(value.data(), value.data() + value.size(), total);
                if (ec == std::errc{} && end == value.data() + value.size())
                  (*totals)[key.substr(sales_prefix.size())] = total;
                else
                  spdlog::warn("sales: ignoring the unreadable total at {}", key);
              }
              start_consuming(self, totals, max_batch);
            },
            [=](caf::error& err) { self->quit(std::move(err)); });
    return {[](caf::ok_atom) {}};
  });
}

} // namespace orders
