#include <troupe/outbox/relay.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <utility>

#include <caf/all.hpp>

#include "outbox_metrics.hpp"
#include <spdlog/spdlog.h>

namespace troupe {

namespace {

using keyed_row = std::pair<std::string, outbox_row>;
using keyed_rows = std::vector<keyed_row>;

constexpr auto store_timeout = std::chrono::seconds(30);

struct relay_state {
  static inline const char* name = "outbox_relay";
  // Declared, so C++20 does not take the state for an aggregate CAF could
  // construct from the actor pointer.
  relay_state() = default;
  store_actor store;
  publisher_actor publisher;
  relay_settings settings;
  bool busy = false;
  bool again = false;
  // The cycle in progress: rows picked for one publish call, and the event
  // keys held back because an earlier row of theirs is waiting for a retry.
  keyed_rows picked;
  std::set<std::string> held_keys;
  uint32_t scanned = 0;
  int64_t oldest_ms = 0;
};

using relay_pointer = relay_actor::stateful_pointer<relay_state>;

void start_cycle(relay_pointer self);

void finish_cycle(relay_pointer self, bool more) {
  auto& st = self->state;
  st.busy = false;
  st.picked.clear();
  st.held_keys.clear();
  if (st.again || more) {
    st.again = false;
    self->send(self, relay_wake_atom::value);
  }
}

void record_outcome(relay_pointer self, const std::vector<std::string>& results) {
  auto& st = self->state;
  auto& m = outbox_metrics::instance();
  auto now = unix_millis();
  write_batch batch;
  std::set<std::string> failed_keys;
  for (size_t i = 0; i < st.picked.size(); ++i) {
    auto& [row_key, row] = st.picked[i];
    // Rows after a failed row of their key stay as they are: publishing them
    // now would overtake it.
    if (failed_keys.count(row.event.key) > 0)
      continue;
    const std::string& error = i < results.size() ? results[i] : "no acknowledgement";
    if (error.empty()) {
      batch.erase(store_column::outbox, row_key);
      m.published->Increment();
      // The gauge is set by full scans; between them it counts down what left.
      if (m.backlog_rows->Value() >= 1)
        m.backlog_rows->Decrement();
      continue;
    }
    failed_keys.insert(row.event.key);
    m.publish_failures->Increment();
    row.attempts += 1;
    row.last_error = error;
    if (row.attempts >= st.settings.max_attempts) {
      batch.erase(store_column::outbox, row_key);
      batch.put(store_column::dead_letters, row_key, encode_outbox_row(row));
      m.dead_lettered->Increment();
      spdlog::warn("outbox: {} to {} dead-lettered after {} attempts: {}", row.event.id,
                   row.event.destination, row.attempts, error);
    } else {
      row.next_attempt_ms = now + st.settings.backoff.after(row.attempts).count();
      batch.put(store_column::outbox, row_key, encode_outbox_row(row));
    }
  }
  bool full = st.picked.size() >= st.settings.batch_size;
  if (batch.empty()) {
    finish_cycle(self, false);
    return;
  }
  self->request(st.store, store_timeout, store_commit_atom::value, std::move(batch))
      .then([=](caf::ok_atom) { finish_cycle(self, full); },
            [=](caf::error& err) {
              spdlog::warn("outbox: cannot record publish outcomes: {}",
                           self->system().render(err));
              finish_cycle(self, false);
            });
}

void publish_picked(relay_pointer self) {
  auto& st = self->state;
  if (st.picked.empty()) {
    finish_cycle(self, false);
    return;
  }
  std::vector<outbound_event> events;
  events.reserve(st.picked.size());
  for (auto& kv : st.picked)
    events.push_back(kv.second.event);
  self->request(st.publisher, st.settings.publish_timeout, publish_atom::value,
                std::move(events))
      .then(
          [=](const std::vector<std::string>& results) { record_outcome(self, results); },
          [=](caf::error& err) {
            std::vector<std::string> all(self->state.picked.size(),
                                         self->system().render(err));
            record_outcome(self, all);
          });
}

void scan_outbox(relay_pointer self, std::string start_after) {
  auto& st = self->state;
  self->request(st.store, store_timeout, store_scan_atom::value, store_column::outbox,
                std::string{outbox_key_prefix}, std::move(start_after),
                st.settings.batch_size)
      .then(
          [=](scan_page& page) {
            auto& st = self->state;
            auto now = unix_millis();
            for (auto& [key, value] : page.entries) {
              ++st.scanned;
              auto row = decode_outbox_row(value);
              if (!row) {
                spdlog::error("outbox: row {} is unreadable and stays in place", key);
                continue;
              }
              if (st.oldest_ms == 0 || row->committed_ms < st.oldest_ms)
                st.oldest_ms = row->committed_ms;
              if (st.held_keys.count(row->event.key) > 0)
                continue;
              if (row->next_attempt_ms > now) {
                st.held_keys.insert(row->event.key);
                continue;
              }
              st.picked.emplace_back(key, std::move(*row));
              if (st.picked.size() >= st.settings.batch_size)
                break;
            }
            bool room = st.picked.size() < st.settings.batch_size;
            if (room && page.more && !page.entries.empty()) {
              scan_outbox(self, page.entries.back().first);
              return;
            }
            if (room) {
              // The scan reached the end: the backlog is exactly what it saw.
              auto& m = outbox_metrics::instance();
              m.backlog_rows->Set(static_cast<double>(st.scanned));
              m.oldest_row_age->Set(st.oldest_ms == 0
                                        ? 0.0
                                        : static_cast<double>(now - st.oldest_ms) / 1e3);
            }
            publish_picked(self);
          },
          [=](caf::error& err) {
            spdlog::warn("outbox: cannot read rows: {}", self->system().render(err));
            finish_cycle(self, false);
          });
}

void start_cycle(relay_pointer self) {
  auto& st = self->state;
  if (st.busy) {
    st.again = true;
    return;
  }
  st.busy = true;
  st.scanned = 0;
  st.oldest_ms = 0;
  scan_outbox(self, "");
}

/// Reads every dead letter, page by page, then calls `done` with them.
void read_dead_letters(relay_pointer self, std::string start_after, uint32_t limit,
                       std::shared_ptr<keyed_rows> acc,
                       std::function<void(caf::error)> done) {
  auto page_size = std::min<uint32_t>(limit - static_cast<uint32_t>(acc->size()), 1024);
  self->request(self->state.store, store_timeout, store_scan_atom::value,
                store_column::dead_letters, std::string{outbox_key_prefix},
                std::move(start_after), page_size)
      .then(
          [=](scan_page& page) {
            for (auto& [key, value] : page.entries)
              if (auto row = decode_outbox_row(value))
                acc->emplace_back(key, std::move(*row));
            if (page.more && !page.entries.empty() && acc->size() < limit)
              read_dead_letters(self, page.entries.back().first, limit, acc, done);
            else
              done(caf::error{});
          },
          [=](caf::error& err) { done(std::move(err)); });
}

caf::result<uint32_t> redrive(relay_pointer self, std::string id) {
  auto rp = self->make_response_promise<uint32_t>();
  auto rows = std::make_shared<keyed_rows>();
  read_dead_letters(self, "", std::numeric_limits<uint32_t>::max(), rows,
                    [=](caf::error err) mutable {
                      if (err) {
                        rp.deliver(std::move(err));
                        return;
                      }
                      write_batch batch;
                      uint32_t moved = 0;
                      for (auto& [key, row] : *rows) {
                        if (!id.empty() && row.event.id != id)
                          continue;
                        row.attempts = 0;
                        row.next_attempt_ms = 0;
                        batch.erase(store_column::dead_letters, key);
                        batch.put(store_column::outbox, key, encode_outbox_row(row));
                        ++moved;
                      }
                      if (moved == 0) {
                        rp.deliver(uint32_t{0});
                        return;
                      }
                      self->request(self->state.store, store_timeout,
                                    store_commit_atom::value, std::move(batch))
                          .then(
                              [=](caf::ok_atom) mutable {
                                rp.deliver(moved);
                                start_cycle(self);
                              },
                              [=](caf::error& e) mutable { rp.deliver(std::move(e)); });
                    });
  return rp;
}

relay_actor::behavior_type relay(relay_pointer self, store_actor store,
                                 publisher_actor publisher, relay_settings settings) {
  self->state.store = std::move(store);
  self->state.publisher = std::move(publisher);
  self->state.settings = settings;
  if (self->state.settings.batch_size == 0)
    self->state.settings.batch_size = 1;
  self->send(self, relay_poll_atom::value);
  return {
      [=](relay_wake_atom) { start_cycle(self); },
      [=](relay_poll_atom) {
        start_cycle(self);
        self->delayed_send(self, self->state.settings.poll_interval,
                           relay_poll_atom::value);
      },
      [=](list_dead_letters_atom,
          uint32_t limit) -> caf::result<std::vector<outbox_row>> {
        auto rp = self->make_response_promise<std::vector<outbox_row>>();
        auto rows = std::make_shared<keyed_rows>();
        read_dead_letters(self, "", std::max<uint32_t>(limit, 1), rows,
                          [=](caf::error err) mutable {
                            if (err) {
                              rp.deliver(std::move(err));
                              return;
                            }
                            std::vector<outbox_row> out;
                            for (auto& kv : *rows)
                              out.push_back(std::move(kv.second));
                            rp.deliver(std::move(out));
                          });
        return rp;
      },
      [=](redrive_atom, std::string& id) -> caf::result<uint32_t> {
        if (id.empty())
          return caf::make_error(caf::sec::invalid_argument);
        return redrive(self, std::move(id));
      },
      [=](redrive_all_atom) -> caf::result<uint32_t> { return redrive(self, ""); },
  };
}

} // namespace

relay_actor spawn_relay(caf::actor_system& sys, store_actor store,
                        publisher_actor publisher, relay_settings settings) {
  return sys.spawn(relay, std::move(store), std::move(publisher), settings);
}

} // namespace troupe
