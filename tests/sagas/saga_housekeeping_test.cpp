// The saga manager's housekeeping (sagas/src/saga_manager.cpp) on CAF's
// deterministic coordinator: the sweep that removes finished sagas past
// sagas.retention, the watchdog that reports stalled ones, and list_sagas
// paging. The sweep runs on the manager's own timer (every sweep_interval of
// virtual time); retention and stall_after compare wall-clock timestamps.

#include <troupe/sagas/saga_manager.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
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
using troupe::saga_page;
using troupe::saga_snapshot;
using troupe::saga_started;
using troupe::saga_status;

namespace {

// -- services: reply at once, except an order whose sku is "hang" ---------------

constexpr const char* hang_sku = "hang";

struct counters {
  int ids = 0;
  int reserves = 0;
  int charges = 0;
};

inventory_actor::behavior_type inventory(inventory_actor::pointer self,
                                         std::shared_ptr<counters> c) {
  return troupe::serve(
      self,
      [c](const reserve_stock& r) -> caf::result<stock_reserved> {
        ++c->reserves;
        if (r.sku == hang_sku)
          return caf::delegated<stock_reserved>{}; // never answered
        return stock_reserved{"res-" + std::to_string(++c->ids)};
      },
      [](const release_stock& r) -> caf::result<stock_released> {
        return stock_released{r.reservation_id};
      });
}

payment_actor::behavior_type payment(payment_actor::pointer self,
                                     std::shared_ptr<counters> c) {
  return troupe::serve(
      self,
      [c](const charge_card&) -> caf::result<card_charged> {
        ++c->charges;
        return card_charged{"chg-" + std::to_string(++c->ids)};
      },
      [](const refund_card& r) -> caf::result<card_refunded> {
        return card_refunded{r.charge_id};
      });
}

/// "alpha": reserve stock. "beta": charge the card.
std::shared_ptr<const troupe::saga_definition> alpha_saga() {
  return troupe::saga<order>("alpha", 1)
      .step(
          "reserve", troupe::via<inventory_actor>("inventory"),
          [](const order& o) {
            return reserve_stock{o.order_id, o.sku, o.quantity};
          },
          troupe::compensate([](const order& o, const stock_reserved& r) {
            return release_stock{o.order_id, r.reservation_id};
          }))
      .build();
}

std::shared_ptr<const troupe::saga_definition> beta_saga() {
  return troupe::saga<order>("beta", 1)
      .step(
          "charge", troupe::via<payment_actor>("payment"),
          [](const order& o) {
            return charge_card{o.order_id, o.amount, {}};
          },
          troupe::compensate(
              [](const card_charged& c) { return refund_card{c.charge_id}; }))
      .build();
}

order an_order(std::string id, std::string sku = "sku-42") {
  return order{std::move(id), std::move(sku), 2, 1500};
}

order a_hanging_order(std::string id) {
  return an_order(std::move(id), hang_sku);
}

// -- the fixture ------------------------------------------------------------------

struct housekeeping : saga_requests {
  std::shared_ptr<counters> c = std::make_shared<counters>();
  troupe::saga_settings settings;

  housekeeping() {
    settings.node_name = "n1";
    settings.step_timeout = 1s;
    settings.deadline = 24h;
    settings.step_retry.max_attempts = 1;
    settings.compensation_retry.max_attempts = 1;
    // Far apart from every other timer (step timeouts are 1 s, deadlines 24 h),
    // so advancing by sweep_interval fires the sweep and nothing else.
    settings.sweep_interval = 10ms;
    settings.retention = 24h;
    settings.stall_after = 48h;
    register_service("inventory", keep(sys->spawn(inventory, c)));
    register_service("payment", keep(sys->spawn(payment, c)));
    run();
  }

  ~housekeeping() {
    if (mgr)
      stop(mgr);
  }

  void start_manager() {
    mgr = troupe::spawn_saga_manager(*sys, settings, {alpha_saga(), beta_saga()});
    run();
  }

  /// The manager's saga_tick: its timer, one sweep_interval of virtual time.
  void sweep() { advance(settings.sweep_interval); }

  /// Every record of one instance, read through the store actor.
  std::vector<std::pair<std::string, std::string>> records_of(const std::string& id) {
    auto page = ask<troupe::scan_page>(
        store_handle, troupe::store_scan_atom::value, troupe::store_column::sagas,
        troupe::saga_log::instance_prefix(id), std::string{}, uint32_t{10000});
    if (!page)
      FAIL("store scan failed: " << troupe::describe(page.error()));
    return page->entries;
  }
};

double gauge_value(const std::string& family) {
  for (auto& f : troupe::metrics::instance().registry().Collect())
    if (f.name == family) {
      double sum = 0;
      for (auto& m : f.metric)
        sum += m.gauge.value;
      return sum;
    }
  return 0;
}

/// The value of the sample `name` (no labels) in the Prometheus text that
/// metrics::serialize() renders; nothing when it has no such line.
std::optional<double> serialized_sample(const std::string& name) {
  std::istringstream text{troupe::metrics::instance().serialize()};
  std::string line;
  while (std::getline(text, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    auto space = line.rfind(' ');
    if (space == std::string::npos)
      continue;
    auto metric = line.substr(0, line.find_first_of("{ "));
    if (metric == name)
      return std::stod(line.substr(space + 1));
  }
  return std::nullopt;
}

/// Waits (no fixed sleep) until the wall clock is past `since_ns` + `d`: the
/// watchdog compares wall-clock timestamps, which virtual time does not move.
bool wall_clock_passes(int64_t since_ns, std::chrono::nanoseconds d) {
  auto target = std::chrono::system_clock::time_point{
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds{since_ns} + d)};
  auto give_up = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::system_clock::now() <= target) {
    if (std::chrono::steady_clock::now() > give_up)
      return false;
    std::this_thread::yield();
  }
  return true;
}

std::vector<std::string> ids_of(const saga_page& page) {
  std::vector<std::string> out;
  for (auto& s : page.sagas)
    out.push_back(s.id);
  return out;
}

} // namespace

// -- the sweep ------------------------------------------------------------------

TEST_CASE("the sweep removes finished sagas past retention and keeps running ones") {
  housekeeping f;
  f.settings.retention = 0ns;
  f.start_manager();
  auto done = f.started("alpha", an_order("o-1"), "k-done");
  REQUIRE(done.created);
  auto other = f.started("beta", an_order("o-2"), "k-other");
  auto running = f.started("alpha", a_hanging_order("o-3"), "k-running");
  REQUIRE(f.snapshot(done.saga.id).status == saga_status::completed);
  REQUIRE(f.snapshot(other.saga.id).status == saga_status::completed);
  REQUIRE(f.snapshot(running.saga.id).status == saga_status::running);
  REQUIRE_FALSE(f.records_of(done.saga.id).empty());
  REQUIRE_FALSE(f.records_of(other.saga.id).empty());

  f.sweep();

  // Gone from the manager and from the store.
  for (auto& id : {done.saga.id, other.saga.id}) {
    INFO("saga " << id);
    auto s = f.get(id);
    REQUIRE_FALSE(s);
    CHECK(troupe::test::has_code(s.error(), errc::not_found));
    CHECK(f.records_of(id).empty());
  }
  // The idempotency key is free again: a new instance.
  auto again = f.started("alpha", an_order("o-1"), "k-done");
  CHECK(again.created);
  CHECK(again.saga.id != done.saga.id);
  CHECK(f.c->reserves == 3);
  // A running saga is kept, however old.
  auto r = f.snapshot(running.saga.id);
  CHECK(r.status == saga_status::running);
  CHECK_FALSE(f.records_of(running.saga.id).empty());
  auto page = f.list({});
  REQUIRE(page);
  std::set<std::string> listed;
  for (auto& s : page->sagas)
    listed.insert(s.id);
  CHECK(listed == std::set<std::string>{running.saga.id, again.saga.id});
}

TEST_CASE("the sweep keeps a finished saga younger than retention") {
  housekeeping f;
  f.settings.retention = 1h;
  f.start_manager();
  auto done = f.started("alpha", an_order("o-1"), "k-young");
  REQUIRE(f.snapshot(done.saga.id).status == saga_status::completed);
  auto records = f.records_of(done.saga.id);
  REQUIRE_FALSE(records.empty());

  f.sweep();
  f.sweep();

  auto s = f.get(done.saga.id);
  REQUIRE(s);
  CHECK(s->status == saga_status::completed);
  CHECK(f.records_of(done.saga.id) == records);
  auto again = f.started("alpha", an_order("o-1"), "k-young");
  CHECK_FALSE(again.created);
  CHECK(again.saga.id == done.saga.id);
  CHECK(f.c->reserves == 1);
}

// -- the watchdog -----------------------------------------------------------------

TEST_CASE("a running saga whose step never answers is reported stalled until it "
          "moves again") {
  housekeeping f;
  f.settings.stall_after = 1ms;
  f.start_manager();
  auto before = gauge_value("troupe_saga_stalled");
  auto st = f.started("alpha", a_hanging_order("o-1"), "k-stall");
  auto s = f.snapshot(st.saga.id);
  REQUIRE(s.status == saga_status::running);
  REQUIRE(f.c->reserves == 1);
  // stall_after is measured on the wall clock from the saga's last progress.
  REQUIRE(wall_clock_passes(s.updated_ns, f.settings.stall_after));

  f.sweep();

  CHECK(gauge_value("troupe_saga_stalled") == before + 1);
  auto sample = serialized_sample("troupe_saga_stalled");
  REQUIRE(sample);
  CHECK(*sample >= 1);
  // Reported once, not on every sweep.
  f.sweep();
  CHECK(gauge_value("troupe_saga_stalled") == before + 1);

  // The step's timeout (virtual time) fails it; progress clears the report.
  f.advance(f.settings.step_timeout);
  REQUIRE(f.run_until([&] {
    auto x = f.get(st.saga.id);
    return x && troupe::is_end_state(x->status);
  }));
  CHECK(f.snapshot(st.saga.id).status == saga_status::compensated);
  CHECK(gauge_value("troupe_saga_stalled") == before);
}

TEST_CASE("a running saga younger than stall_after is not reported") {
  housekeeping f;
  f.settings.stall_after = 1h;
  f.start_manager();
  auto before = gauge_value("troupe_saga_stalled");
  auto st = f.started("alpha", a_hanging_order("o-1"), "k-busy");
  REQUIRE(f.snapshot(st.saga.id).status == saga_status::running);
  f.sweep();
  CHECK(gauge_value("troupe_saga_stalled") == before);
}

// -- listing ----------------------------------------------------------------------

TEST_CASE("list_sagas pages with a cursor and filters by status and type") {
  housekeeping f;
  f.start_manager();
  std::set<std::string> all, running, beta;
  // 15 alpha sagas (the first 5 hang: running), 10 beta sagas: 25 in all.
  for (int i = 0; i < 25; ++i) {
    auto id = "o-" + std::to_string(i);
    saga_started st;
    if (i < 5)
      st = f.started("alpha", a_hanging_order(id));
    else if (i < 15)
      st = f.started("alpha", an_order(id));
    else
      st = f.started("beta", an_order(id));
    all.insert(st.saga.id);
    if (i < 5)
      running.insert(st.saga.id);
    if (i >= 15)
      beta.insert(st.saga.id);
  }
  REQUIRE(all.size() == 25);

  auto cluster_wide = GENERATE(true, false);
  CAPTURE(cluster_wide);

  SECTION("pages of 10, 10 and 5, in id order, the last without a token") {
    troupe::list_sagas q;
    q.page_size = 10;
    q.cluster_wide = cluster_wide;
    std::vector<std::string> seen;
    std::vector<size_t> sizes;
    for (int n = 0; n < 5; ++n) {
      auto page = f.list(q);
      REQUIRE(page);
      sizes.push_back(page->sagas.size());
      for (auto& id : ids_of(*page))
        seen.push_back(id);
      if (page->next_page_token.empty())
        break;
      CHECK(page->next_page_token == page->sagas.back().id);
      q.page_token = page->next_page_token;
    }
    CHECK(sizes == std::vector<size_t>{10, 10, 5});
    CHECK(std::is_sorted(seen.begin(), seen.end()));
    CHECK(std::set<std::string>(seen.begin(), seen.end()) == all);
    CHECK(seen.size() == 25);
  }

  SECTION("filtered by status") {
    troupe::list_sagas q;
    q.status = "running";
    q.cluster_wide = cluster_wide;
    auto page = f.list(q);
    REQUIRE(page);
    auto ids = ids_of(*page);
    CHECK(std::set<std::string>(ids.begin(), ids.end()) == running);
    CHECK(page->next_page_token.empty());
    for (auto& s : page->sagas)
      CHECK(s.status == saga_status::running);

    q.status = "completed";
    q.page_size = 15;
    auto first = f.list(q);
    REQUIRE(first);
    CHECK(first->sagas.size() == 15);
    REQUIRE_FALSE(first->next_page_token.empty());
    q.page_token = first->next_page_token;
    auto second = f.list(q);
    REQUIRE(second);
    CHECK(second->sagas.size() == 5);
    CHECK(second->next_page_token.empty());
    for (auto* p : {&*first, &*second})
      for (auto& s : p->sagas) {
        CHECK(s.status == saga_status::completed);
        CHECK(running.count(s.id) == 0);
      }

    q.status = "cancelled";
    q.page_token.clear();
    auto none = f.list(q);
    REQUIRE(none);
    CHECK(none->sagas.empty());
    CHECK(none->next_page_token.empty());
  }

  SECTION("filtered by type, and by type and status") {
    troupe::list_sagas q;
    q.type = "beta";
    q.cluster_wide = cluster_wide;
    auto page = f.list(q);
    REQUIRE(page);
    auto ids = ids_of(*page);
    CHECK(std::set<std::string>(ids.begin(), ids.end()) == beta);
    for (auto& s : page->sagas)
      CHECK(s.type == "beta");

    q.type = "alpha";
    q.status = "running";
    q.page_size = 3;
    auto first = f.list(q);
    REQUIRE(first);
    CHECK(first->sagas.size() == 3);
    REQUIRE_FALSE(first->next_page_token.empty());
    q.page_token = first->next_page_token;
    auto second = f.list(q);
    REQUIRE(second);
    CHECK(second->sagas.size() == 2);
    CHECK(second->next_page_token.empty());
    std::set<std::string> both;
    for (auto* p : {&*first, &*second})
      for (auto& s : p->sagas)
        both.insert(s.id);
    CHECK(both == running);

    q.type = "no_such_type";
    q.status.clear();
    q.page_token.clear();
    auto none = f.list(q);
    REQUIRE(none);
    CHECK(none->sagas.empty());
  }

  SECTION("page_size 0 and an unknown status are bad input") {
    troupe::list_sagas q;
    q.cluster_wide = cluster_wide;
    q.page_size = 0;
    auto zero = f.list(q);
    REQUIRE_FALSE(zero);
    CHECK(troupe::test::has_code(zero.error(), errc::bad_input));

    q.page_size = 10;
    q.status = "sleeping";
    auto unknown = f.list(q);
    REQUIRE_FALSE(unknown);
    CHECK(troupe::test::has_code(unknown.error(), errc::bad_input));
  }
}
