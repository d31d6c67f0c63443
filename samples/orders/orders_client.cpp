// The load of the demo and the crash test: orders started through the saga
// manager (idempotent by order id, so a restarted client resumes, it never
// duplicates), and an auditor that prints what happened.

#include "orders.hpp"

#include <algorithm>
#include <deque>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/sagas/saga_manager.hpp>

namespace orders {

using namespace std::chrono_literals;
using troupe::saga_manager_actor;
using troupe::saga_snapshot;
using troupe::saga_status;

namespace {

using next_atom = caf::atom_constant<caf::atom("next")>;
using retry_start_atom = caf::atom_constant<caf::atom("retrystart")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using retry_audit_atom = caf::atom_constant<caf::atom("retryaudit")>;

struct client_state {
  static inline const char* name = "orders_client";
  saga_manager_actor sagas;
  std::deque<int64_t> to_start;
  std::map<std::string, std::chrono::steady_clock::time_point> started; // by saga id
  std::map<std::string, int64_t> ended;                                 // by status
  std::vector<double> latencies_ms;
  int64_t in_flight = 0;
  int64_t done = 0;
};

using client_ptr = caf::stateful_actor<client_state>*;

order make_order(const std::string& prefix, int64_t i, int64_t fail_every) {
  order o{prefix + "-" + std::to_string(i), "customer-" + std::to_string(i % 97),
          i % 3 == 0 ? "gadget" : "widget", static_cast<int32_t>(1 + i % 3)};
  if (fail_every > 0 && i % fail_every == 0) {
    if ((i / fail_every) % 2 == 1)
      o.sku = "discontinued"; // out of stock: reserve fails, nothing to undo before it
    else
      o.quantity = 100; // over the card limit: charge fails, the stock is released
  }
  return o;
}

void finish_one(client_ptr self, const saga_snapshot& s, int64_t count) {
  auto& st = self->state;
  auto i = st.started.find(s.id);
  if (i == st.started.end())
    return;
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                      i->second)
                .count();
  st.started.erase(i);
  st.latencies_ms.push_back(ms);
  ++st.ended[troupe::to_string(s.status)];
  --st.in_flight;
  ++st.done;
  spdlog::info("order {} {} in {:.1f} ms (saga {}){}{}", s.idempotency_key,
               troupe::to_string(s.status), ms, s.id, s.reason.empty() ? "" : ": ",
               s.reason);
  if (st.done == count) {
    auto& v = st.latencies_ms;
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) {
      return v.empty() ? 0.0 : v[static_cast<size_t>(p * (v.size() - 1))];
    };
    std::string summary;
    for (auto& [status, n] : st.ended)
      summary += (summary.empty() ? "" : ", ") + std::to_string(n) + " " + status;
    spdlog::info("orders client finished: {} orders: {}; latency p50 {:.1f} ms, p99 "
                 "{:.1f} ms",
                 count, summary, pct(0.5), pct(0.99));
    self->quit();
  } else {
    self->send(self, next_atom::value);
  }
}

void start_one(client_ptr self, int64_t i, const std::string& prefix, int64_t fail_every,
               int64_t count) {
  auto& st = self->state;
  ++st.in_flight;
  auto o = make_order(prefix, i, fail_every);
  auto cmd = troupe::make_start_saga(self->system(), "order_processing", o, o.order_id);
  auto at = std::chrono::steady_clock::now();
  self->request(st.sagas, 10s, troupe::call_context::derive(), cmd)
      .then(
          [=](troupe::saga_started& r) {
            self->state.started[r.saga.id] = at;
            if (r.created)
              spdlog::info("order {} started as saga {}", o.order_id, r.saga.id);
            if (troupe::is_end_state(r.saga.status)) {
              finish_one(self, r.saga, count);
              return;
            }
            auto id = r.saga.id;
            self->request(self->state.sagas, 10s, troupe::call_context::derive(),
                          troupe::watch_saga{id, caf::actor_cast<caf::actor>(self)})
                .then(
                    [=](troupe::watch_started& w) {
                      if (troupe::is_end_state(w.saga.status))
                        finish_one(self, w.saga, count);
                    },
                    [=](caf::error& err) {
                      spdlog::warn("watching order {} failed: {}; polling it instead",
                                   o.order_id, troupe::describe(err));
                      self->send(self, poll_atom::value, id);
                    });
          },
          [=](caf::error& err) {
            // The owner may be restarting: the same key makes a retry safe.
            spdlog::warn("starting order {} failed: {}; retrying", o.order_id,
                         troupe::describe(err));
            --self->state.in_flight;
            self->delayed_send(self, 500ms, retry_start_atom::value, i);
          });
}

} // namespace

caf::actor spawn_orders_client(caf::actor_system& sys, const troupe::config& cfg) {
  auto count = cfg.get_int("orders_client.count");
  auto prefix = cfg.get_string("orders_client.key_prefix");
  auto concurrency = cfg.get_int("orders_client.concurrency");
  auto fail_every = cfg.get_int("orders_client.fail_every");
  return sys.spawn([=](client_ptr self) -> caf::behavior {
    for (int64_t i = 1; i <= count; ++i)
      self->state.to_start.push_back(i);
    auto find = [=] {
      troupe::find_service<saga_manager_actor>(self, troupe::saga_manager_name)
          .then(
              [=](const caf::actor& found) {
                self->state.sagas = caf::actor_cast<saga_manager_actor>(found);
                spdlog::info("orders client: starting {} orders, {} at a time", count,
                             concurrency);
                self->send(self, next_atom::value);
              },
              [=](caf::error&) {
                self->delayed_send(self, 200ms, retry_start_atom::value, int64_t{0});
              });
    };
    find();
    return {
        [=](next_atom) {
          auto& st = self->state;
          while (st.in_flight < concurrency && !st.to_start.empty()) {
            auto i = st.to_start.front();
            st.to_start.pop_front();
            start_one(self, i, prefix, fail_every, count);
          }
        },
        [=](retry_start_atom, int64_t i) {
          if (i == 0) {
            find();
            return;
          }
          self->state.to_start.push_front(i);
          self->send(self, next_atom::value);
        },
        [=](const saga_snapshot& s) {
          if (troupe::is_end_state(s.status))
            finish_one(self, s, count);
        },
        [=](poll_atom, const std::string& id) {
          self->request(self->state.sagas, 10s, troupe::call_context::derive(),
                        troupe::get_saga{id})
              .then(
                  [=](const saga_snapshot& s) {
                    if (troupe::is_end_state(s.status))
                      finish_one(self, s, count);
                    else
                      self->delayed_send(self, 200ms, poll_atom::value, id);
                  },
                  [=](caf::error&) {
                    self->delayed_send(self, 200ms, poll_atom::value, id);
                  });
        },
    };
  });
}

namespace {

struct auditor_state {
  static inline const char* name = "orders_auditor";
  saga_manager_actor sagas;
  size_t services_left = 3;
};

// A service of the other node may not be in this node's registry yet (the
// auditor joined through the saga node), and an audit may time out under
// load: both are retried, as the manager's lookup is, rather than leaving
// the audit unfinished.
void retry_audit(caf::stateful_actor<auditor_state>* self, const std::string& name) {
  self->delayed_send(self, 200ms, retry_audit_atom::value, name);
}

template <class Handle>
void audit_service(caf::stateful_actor<auditor_state>* self, const std::string& name) {
  troupe::find_service<Handle>(self, name)
      .then(
          [=](const caf::actor& found) {
            self->request(caf::actor_cast<Handle>(found), 10s, troupe::call_context{},
                          audit_applications{})
                .then(
                    [=](const applications& a) {
                      for (auto& [key, n] : a.by_key)
                        spdlog::info("audit applied {} {} {}", name, key, n);
                      if (--self->state.services_left == 0) {
                        spdlog::info("audit finished");
                        self->quit();
                      }
                    },
                    [=](caf::error& err) {
                      spdlog::warn("audit of {} failed, retrying: {}", name,
                                   troupe::describe(err));
                      retry_audit(self, name);
                    });
          },
          [=](caf::error& err) {
            spdlog::warn("audit: {} not found yet, retrying: {}", name,
                         troupe::describe(err));
            retry_audit(self, name);
          });
}

void audit_named_service(caf::stateful_actor<auditor_state>* self,
                         const std::string& name) {
  if (name == "inventory")
    audit_service<inventory_actor>(self, name);
  else if (name == "payment")
    audit_service<payment_actor>(self, name);
  else
    audit_service<shipping_actor>(self, name);
}

void audit_sagas(caf::stateful_actor<auditor_state>* self, std::string token) {
  troupe::list_sagas q;
  q.page_size = 500;
  q.page_token = token;
  self->request(self->state.sagas, 10s, troupe::call_context{}, q)
      .then(
          [=](const troupe::saga_page& page) {
            for (auto& s : page.sagas)
              spdlog::info("audit saga {} {}", s.id, troupe::to_string(s.status));
            if (!page.next_page_token.empty()) {
              audit_sagas(self, page.next_page_token);
              return;
            }
            for (auto name : {"inventory", "payment", "shipping"})
              audit_named_service(self, name);
          },
          [=](caf::error& err) {
            spdlog::warn("audit: listing sagas failed, starting over: {}",
                         troupe::describe(err));
            self->delayed_send(self, 200ms, retry_start_atom::value, int64_t{0});
          });
}

} // namespace

caf::actor spawn_auditor(caf::actor_system& sys, const troupe::config&) {
  return sys.spawn([](caf::stateful_actor<auditor_state>* self) -> caf::behavior {
    // The node may still be joining: look again until the manager is found.
    auto find = [self] {
      troupe::find_service<saga_manager_actor>(self, troupe::saga_manager_name)
          .then(
              [=](const caf::actor& found) {
                self->state.sagas = caf::actor_cast<saga_manager_actor>(found);
                audit_sagas(self, {});
              },
              [=](caf::error&) {
                self->delayed_send(self, 200ms, retry_start_atom::value, int64_t{0});
              });
    };
    find();
    return {
        [=](retry_start_atom, int64_t) { find(); },
        [=](retry_audit_atom, const std::string& name) {
          audit_named_service(self, name);
        },
    };
  });
}

} // namespace orders
