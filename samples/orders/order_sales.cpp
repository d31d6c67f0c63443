// Units sold per SKU: a stream processor over the order saga's completed
// orders. It takes the events in batches, so one write_batch carries a whole
// batch's totals and processed ids, and keeps the totals in memory, loaded
// from the store at start. It answers sales queries over the event bus from
// the same totals.

#include "orders.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>

#include <spdlog/spdlog.h>

#include <troupe/gateways/event_bus.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace orders {

namespace {

constexpr const char* sales_group = "order-sales";
constexpr std::string_view sales_prefix = "sales/";

// The batch consumer and the query handler are actors of their own, so the
// totals they share are guarded.
struct sales_totals {
  std::mutex mtx;
  std::map<std::string, int64_t> units;

  int64_t of(const std::string& sku) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = units.find(sku);
    return i == units.end() ? 0 : i->second;
  }
};

struct sales_state {
  static inline const char* name = "order_sales";
  sales_state() = default;
  troupe::inbox_batch_consumer_actor consumer;
  troupe::request_handler_actor queries;
};

void start_consuming(caf::stateful_actor<sales_state>* self,
                     std::shared_ptr<sales_totals> totals, uint32_t max_batch) {
  auto& sys = self->system();
  self->state.consumer = troupe::gateways::subscribe_event_batches_of<order_completed>(
      sys, "orders.completed", sales_group, max_batch,
      [totals](std::vector<order_completed>& batch,
               const std::vector<const troupe::delivered_event*>&,
               troupe::outbox_transaction& tx) {
        std::map<std::string, int64_t> touched;
        {
          std::lock_guard<std::mutex> guard{totals->mtx};
          for (auto& e : batch)
            touched[e.sku] = totals->units[e.sku] += e.quantity;
        }
        for (auto& [sku, total] : touched) {
          tx.put(std::string{sales_prefix} + sku, std::to_string(total));
          spdlog::info("sales: {} units of {} sold ({} orders in this batch)", total, sku,
                       batch.size());
        }
      });
  // A query counts what the batches applied so far; a batch whose commit
  // then fails restarts the component (below), which reloads the totals.
  self->state.queries = troupe::gateways::serve_requests_of<sales_query>(
      sys, sales_destination, sales_group, [totals](const sales_query& q) {
        return sales_figure{q.sku, totals->of(q.sku)};
      });
  // Linked: both end with this component, and either failing restarts the
  // component, which reloads the totals and subscribes again.
  self->link_to(self->state.consumer);
  self->link_to(self->state.queries);
}

} // namespace

namespace {

using ask_sales_atom = caf::atom_constant<caf::atom("asksales")>;

/// Asks for the figure with what is left of the deadline; nobody serving
/// yet (a responder starting alongside) is asked again until it runs out.
void ask_sales(caf::event_based_actor* self, std::string sku,
               std::chrono::steady_clock::time_point until) {
  using namespace std::chrono;
  auto left = duration_cast<caf::timespan>(until - steady_clock::now());
  troupe::gateways::request_over_bus<sales_figure>(
      self, sales_destination, sales_query{sku}, std::max(left, caf::timespan{1}),
      [self](sales_figure& figure) {
        spdlog::info("sales report: {} units of {} sold", figure.units, figure.sku);
        self->quit();
      },
      [self, until](caf::error& err) {
        constexpr auto pause = milliseconds(100);
        // Asked again only with a pause's worth left after the pause: a last
        // ask with a few milliseconds could only time out, which would hide
        // that nobody serves.
        if (troupe::classify(err) == troupe::errc::service_unavailable &&
            steady_clock::now() + 2 * pause < until) {
          self->delayed_send(self, pause, ask_sales_atom::value);
          return;
        }
        spdlog::warn("sales report: no figure: {}", troupe::describe(err));
        self->quit();
      });
}

} // namespace

caf::actor spawn_sales_report(caf::actor_system& sys, const troupe::config& cfg) {
  auto sku = cfg.get_string("sales_report.sku");
  auto deadline = cfg.get_duration("sales_report.deadline");
  return sys.spawn([sku, deadline](caf::event_based_actor* self) -> caf::behavior {
    auto until =
        std::chrono::steady_clock::now() +
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(deadline);
    ask_sales(self, sku, until);
    return {[=](ask_sales_atom) { ask_sales(self, sku, until); }};
  });
}

caf::actor spawn_order_sales(caf::actor_system& sys, const troupe::config& cfg) {
  auto max_batch = static_cast<uint32_t>(cfg.get_int("order_sales.max_batch"));
  return sys.spawn([max_batch](caf::stateful_actor<sales_state>* self) -> caf::behavior {
    auto totals = std::make_shared<sales_totals>();
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
                  totals->units[key.substr(sales_prefix.size())] = total;
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
