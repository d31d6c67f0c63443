#include <troupe/outbox/relay.hpp>

#include <algorithm>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <caf/all.hpp>

#include "outbox_metrics.hpp"
#include <spdlog/spdlog.h>
#include <troupe/runtime/token_bucket.hpp>

namespace troupe {

namespace {

using keyed_row = std::pair<std::string, outbox_row>;
using keyed_rows = std::vector<keyed_row>;

constexpr auto store_timeout = std::chrono::seconds(30);
constexpr int64_t never = std::numeric_limits<int64_t>::max();
constexpr auto late_commit_sweep = std::chrono::seconds(1);

/// One publish call the relay has issued and not yet recorded.
struct publish_call {
  uint64_t number = 0;
  keyed_rows rows;
  std::optional<std::vector<std::string>> results;
};

/// A row known not to be published: it failed, or it came after such a row
/// of its key. `round` is the full round in which it became one.
struct gap {
  int64_t due_ms = 0;
  uint64_t round = 0;
};

// The relay overlaps its three steps: while up to max_in_flight publish
// calls wait for their brokers, it scans on for the next rows and records
// the outcome of the oldest finished call. Outcomes are recorded strictly
// in issue order, one commit at a time, and never while a scan runs, so a
// scan sees every row either in flight or with its recorded bookkeeping.
struct relay_state {
  static inline const char* name = "outbox_relay";
  // Declared, so C++20 does not take the state for an aggregate CAF could
  // construct from the actor pointer.
  relay_state() = default;
  store_actor store;
  publisher_actor publisher;
  relay_settings settings;
  std::deque<publish_call> in_flight;
  uint64_t next_call = 0;
  std::unordered_set<std::string> in_flight_rows;
  // Keys held back in this round: an earlier row of theirs waits for a retry.
  std::unordered_set<std::string> held_keys;
  // Per event key, its rows known not to be published, by row key: while
  // one waits, no later row of the key counts as published, whichever call
  // carried it, or it would overtake. A row leaves when it is published or
  // dead-lettered; a full round forgets the ones it no longer finds.
  std::unordered_map<std::string, std::map<std::string, gap>> gaps;
  std::unordered_set<std::string> gap_rows_seen;
  uint64_t round = 0;
  keyed_rows picking;
  // Scans continue after the cursor instead of walking the tombstones of
  // published rows again; a round starts over from the first row only when
  // rows were passed over (held, failed) and are due, or rows may have been
  // committed behind the cursor (a poll once the round is late_commit_sweep
  // old: each such round walks those tombstones).
  std::string cursor;
  std::chrono::steady_clock::time_point round_started;
  bool scanning = false;
  bool committing = false;
  bool more = false;
  bool at_end = false;
  bool restart = true;
  // When the earliest row passed over in this round becomes due; none: max.
  int64_t behind_due_ms = never;
  bool full_round = false;
  // events.relay.max_rate; none: unlimited. A wake-up is pending while the
  // relay waits for a token.
  std::optional<token_bucket> pace;
  bool pace_wake_pending = false;
  uint32_t scanned = 0;
  int64_t oldest_ms = 0;
  // Per route: its gauges and this full round's rows and oldest commit
  // time; routes are looked up once per destination, not per row.
  struct route_metrics {
    prometheus::Gauge* rows = nullptr;
    prometheus::Gauge* oldest_age = nullptr;
    uint32_t round_rows = 0;
    int64_t round_oldest_ms = 0;
  };
  std::map<std::string, route_metrics> routes;
  std::unordered_map<std::string, route_metrics*> route_by_destination;

  route_metrics& route_of(const std::string& destination) {
    auto known = route_by_destination.find(destination);
    if (known != route_by_destination.end())
      return *known->second;
    auto name = settings.route_of ? settings.route_of(destination) : std::string{"*"};
    auto [r, added] = routes.try_emplace(name);
    if (added) {
      auto& m = outbox_metrics::instance();
      r->second.rows = &m.route_backlog_rows->Add({{"route", name}});
      r->second.oldest_age = &m.route_oldest_row_age->Add({{"route", name}});
    }
    route_by_destination.emplace(destination, &r->second);
    return r->second;
  }

  void count_in_round(const std::string& destination, int64_t committed_ms) {
    auto& r = route_of(destination);
    ++r.round_rows;
    if (r.round_oldest_ms == 0 || committed_ms < r.round_oldest_ms)
      r.round_oldest_ms = committed_ms;
  }

  /// The round reached the end: the backlog per route is what it saw, plus
  /// the rows in flight now (which it passed over unread).
  void report_round(int64_t now) {
    for (auto& call : in_flight)
      for (auto& [row_key, row] : call.rows)
        count_in_round(row.event.destination, row.committed_ms);
    for (auto& [name, r] : routes) {
      r.rows->Set(static_cast<double>(r.round_rows));
      r.oldest_age->Set(r.round_oldest_ms != 0
                            ? static_cast<double>(now - r.round_oldest_ms) / 1e3
                            : 0.0);
    }
  }

  /// A new full round counts from zero.
  void start_round_counts() {
    for (auto& [name, r] : routes) {
      r.round_rows = 0;
      r.round_oldest_ms = 0;
    }
  }
};

using relay_pointer = relay_actor::stateful_pointer<relay_state>;

void pump(relay_pointer self);
void record_next_outcome(relay_pointer self);

/// The earliest unpublished row of `key` before `row_key`, if any.
const gap* gap_before(const relay_state& st, const std::string& key,
                      const std::string& row_key) {
  auto g = st.gaps.find(key);
  if (g == st.gaps.end() || g->second.empty() || !(g->second.begin()->first < row_key))
    return nullptr;
  return &g->second.begin()->second;
}

void open_gap(relay_state& st, const std::string& key, const std::string& row_key,
              int64_t due_ms) {
  st.gaps[key][row_key] = gap{due_ms, st.round};
  st.behind_due_ms = std::min(st.behind_due_ms, due_ms);
}

void close_gap(relay_state& st, const std::string& key, const std::string& row_key) {
  auto g = st.gaps.find(key);
  if (g == st.gaps.end())
    return;
  g->second.erase(row_key);
  if (g->second.empty())
    st.gaps.erase(g);
}

/// After a full round: rows it did not find are gone (deleted by a commit
/// whose answer was lost, say) and no longer hold their key back.
void forget_vanished_gaps(relay_state& st) {
  for (auto g = st.gaps.begin(); g != st.gaps.end();) {
    auto& rows = g->second;
    for (auto r = rows.begin(); r != rows.end();) {
      bool vanished = r->second.round < st.round &&
                      st.gap_rows_seen.count(r->first) == 0 &&
                      st.in_flight_rows.count(r->first) == 0;
      r = vanished ? rows.erase(r) : std::next(r);
    }
    g = rows.empty() ? st.gaps.erase(g) : std::next(g);
  }
  st.gap_rows_seen.clear();
}

void release(relay_pointer self) {
  auto& st = self->state;
  for (auto& kv : st.in_flight.front().rows)
    st.in_flight_rows.erase(kv.first);
  st.in_flight.pop_front();
  st.committing = false;
}

void record_next_outcome(relay_pointer self) {
  auto& st = self->state;
  if (st.committing || st.scanning || st.in_flight.empty() ||
      !st.in_flight.front().results)
    return;
  auto& call = st.in_flight.front();
  auto& results = *call.results;
  auto& m = outbox_metrics::instance();
  auto now = unix_millis();
  write_batch batch;
  for (size_t i = 0; i < call.rows.size(); ++i) {
    auto& [row_key, row] = call.rows[i];
    auto& key = row.event.key;
    // Behind an unpublished row of its key the row stays as it is, even if
    // its broker took it: it goes again after that row.
    if (auto earlier = gap_before(st, key, row_key)) {
      auto due = earlier->due_ms;
      open_gap(st, key, row_key, due);
      continue;
    }
    const std::string& error = i < results.size() ? results[i] : "no acknowledgement";
    if (error.empty()) {
      batch.erase(store_column::outbox, row_key);
      close_gap(st, key, row_key);
      m.published->Increment();
      // The gauges are set by full scans; between them they count down what
      // left.
      if (m.backlog_rows->Value() >= 1)
        m.backlog_rows->Decrement();
      if (auto* route_rows = st.route_of(row.event.destination).rows;
          route_rows->Value() >= 1)
        route_rows->Decrement();
      continue;
    }
    m.publish_failures->Increment();
    row.attempts += 1;
    row.last_error = error;
    if (row.attempts >= st.settings.max_attempts) {
      // A dead letter does not hold its key back.
      close_gap(st, key, row_key);
      batch.erase(store_column::outbox, row_key);
      batch.put(store_column::dead_letters, row_key, encode_outbox_row(row));
      m.dead_lettered->Increment();
      spdlog::warn("outbox: {} to {} dead-lettered after {} attempts: {}", row.event.id,
                   row.event.destination, row.attempts, error);
    } else {
      row.next_attempt_ms = now + st.settings.backoff.after(row.attempts).count();
      open_gap(st, key, row_key, row.next_attempt_ms);
      batch.put(store_column::outbox, row_key, encode_outbox_row(row));
    }
  }
  if (batch.empty()) {
    release(self);
    record_next_outcome(self);
    pump(self);
    return;
  }
  // Losing this record to a power loss only publishes its rows again, which
  // brokers and inboxes dedupe on the event id: it needs no fsync of its own.
  batch.sync = false;
  st.committing = true;
  self->request(st.store, store_timeout, store_commit_atom::value, std::move(batch))
      .then(
          [=](caf::ok_atom) {
            release(self);
            record_next_outcome(self);
            pump(self);
          },
          [=](caf::error& err) {
            // Nothing of this outcome is recorded: its published rows are
            // published again later (brokers and inboxes dedupe on the id),
            // and until then they hold their keys back like failed ones.
            spdlog::warn("outbox: cannot record publish outcomes: {}",
                         self->system().render(err));
            auto& st = self->state;
            auto now = unix_millis();
            for (auto& [row_key, row] : st.in_flight.front().rows)
              open_gap(st, row.event.key, row_key, now);
            st.restart = true;
            release(self);
            record_next_outcome(self);
            pump(self);
          });
}

void on_results(relay_pointer self, uint64_t number, std::vector<std::string> results) {
  for (auto& call : self->state.in_flight)
    if (call.number == number) {
      call.results = std::move(results);
      break;
    }
  record_next_outcome(self);
  pump(self);
}

void publish_picked(relay_pointer self) {
  auto& st = self->state;
  publish_call call;
  call.number = st.next_call++;
  call.rows = std::move(st.picking);
  st.picking.clear();
  std::vector<outbound_event> events;
  events.reserve(call.rows.size());
  for (auto& kv : call.rows) {
    st.in_flight_rows.insert(kv.first);
    events.push_back(kv.second.event);
  }
  if (st.pace) {
    auto now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < call.rows.size(); ++i)
      st.pace->try_take(now);
  }
  auto number = call.number;
  auto count = call.rows.size();
  st.in_flight.push_back(std::move(call));
  self->request(st.publisher, st.settings.publish_timeout, publish_atom::value,
                std::move(events))
      .then(
          [=](std::vector<std::string>& results) {
            on_results(self, number, std::move(results));
          },
          [=](caf::error& err) {
            on_results(self, number,
                       std::vector<std::string>(count, self->system().render(err)));
          });
}

/// A batch, or what the rate limit allows now (at least one: pump waits
/// for a token before scanning).
size_t rows_wanted(relay_state& st) {
  size_t want = st.settings.batch_size;
  if (st.pace) {
    auto allowed = st.pace->available(std::chrono::steady_clock::now());
    want = std::clamp<size_t>(static_cast<size_t>(allowed), 1, want);
  }
  return want;
}

void scan_outbox(relay_pointer self) {
  auto& st = self->state;
  self->request(st.store, store_timeout, store_scan_atom::value, store_column::outbox,
                std::string{outbox_key_prefix}, st.cursor, st.settings.batch_size)
      .then(
          [=](scan_page& page) {
            auto& st = self->state;
            auto now = unix_millis();
            auto want = rows_wanted(st);
            size_t consumed = 0;
            for (auto& [key, value] : page.entries) {
              if (st.picking.size() >= want)
                break;
              ++consumed;
              st.cursor = key;
              if (st.full_round)
                ++st.scanned;
              if (st.in_flight_rows.count(key) > 0)
                continue;
              auto row = decode_outbox_row(value);
              if (!row) {
                spdlog::error("outbox: row {} is unreadable and stays in place", key);
                continue;
              }
              if (st.oldest_ms == 0 || row->committed_ms < st.oldest_ms)
                st.oldest_ms = row->committed_ms;
              auto& event_key = row->event.key;
              if (st.full_round) {
                st.count_in_round(row->event.destination, row->committed_ms);
                auto g = st.gaps.find(event_key);
                if (g != st.gaps.end() && g->second.count(key) > 0)
                  st.gap_rows_seen.insert(key);
              }
              if (auto earlier = gap_before(st, event_key, key)) {
                st.behind_due_ms = std::min(st.behind_due_ms, earlier->due_ms);
                continue;
              }
              // A held row is due when the row holding it back is.
              if (st.held_keys.count(event_key) > 0)
                continue;
              if (row->next_attempt_ms > now) {
                st.held_keys.insert(row->event.key);
                st.behind_due_ms = std::min(st.behind_due_ms, row->next_attempt_ms);
                continue;
              }
              st.picking.emplace_back(key, std::move(*row));
            }
            bool filled = st.picking.size() >= want;
            if (!filled && page.more && !page.entries.empty()) {
              scan_outbox(self);
              return;
            }
            st.scanning = false;
            st.at_end = !filled && consumed == page.entries.size();
            if (filled)
              st.more = true;
            if (st.at_end && st.full_round) {
              // The round reached the end: the backlog is exactly what it saw.
              st.full_round = false;
              forget_vanished_gaps(st);
              st.report_round(now);
              auto& m = outbox_metrics::instance();
              m.backlog_rows->Set(static_cast<double>(st.scanned));
              m.oldest_row_age->Set(st.oldest_ms == 0
                                        ? 0.0
                                        : static_cast<double>(now - st.oldest_ms) / 1e3);
            }
            if (!st.picking.empty())
              publish_picked(self);
            record_next_outcome(self);
            pump(self);
          },
          [=](caf::error& err) {
            spdlog::warn("outbox: cannot read rows: {}", self->system().render(err));
            auto& st = self->state;
            st.scanning = false;
            st.restart = true;
            st.picking.clear();
            record_next_outcome(self);
          });
}

/// Starts the next scan when there is room for another publish call and
/// rows may be waiting.
void pump(relay_pointer self) {
  auto& st = self->state;
  if (st.scanning || st.committing || !(st.more || st.restart) ||
      st.in_flight.size() >= st.settings.max_in_flight)
    return;
  if (st.pace) {
    auto wait = st.pace->time_to_next(std::chrono::steady_clock::now());
    if (wait > std::chrono::nanoseconds::zero()) {
      if (!st.pace_wake_pending) {
        st.pace_wake_pending = true;
        self->delayed_send(self,
                           std::chrono::duration_cast<std::chrono::microseconds>(wait) +
                               std::chrono::microseconds(1),
                           relay_pace_atom::value);
      }
      return;
    }
  }
  if (st.restart || (st.at_end && unix_millis() >= st.behind_due_ms)) {
    st.cursor.clear();
    st.held_keys.clear();
    st.behind_due_ms = never;
    st.restart = false;
    st.full_round = true;
    st.start_round_counts();
    ++st.round;
    st.gap_rows_seen.clear();
    st.round_started = std::chrono::steady_clock::now();
    st.scanned = 0;
    st.oldest_ms = 0;
  }
  st.more = false;
  st.at_end = false;
  st.scanning = true;
  scan_outbox(self);
}

/// Rows were committed (wake), or time passed (poll): look on from the
/// cursor; on a poll after a full round ended, start over from the first
/// row when rows passed over are due, or when the round is a while old,
/// since a transaction that took its sequence number earlier may have
/// committed behind the cursor since. A full round still scanning is never
/// cut short: under max_rate, or with many rows failing, it would start
/// over before reaching the end that sets the backlog gauges.
void look_for_rows(relay_pointer self, bool poll) {
  auto& st = self->state;
  st.more = true;
  auto sweep_after = std::max<std::chrono::steady_clock::duration>(
      st.settings.poll_interval, late_commit_sweep);
  if (poll && !st.full_round &&
      (unix_millis() >= st.behind_due_ms ||
       std::chrono::steady_clock::now() - st.round_started >= sweep_after))
    st.restart = true;
  pump(self);
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
                                // Re-driven rows keep their keys, behind the cursor.
                                self->state.restart = true;
                                look_for_rows(self, false);
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
  if (self->state.settings.max_in_flight == 0)
    self->state.settings.max_in_flight = 1;
  if (auto rate = self->state.settings.max_rate; rate > 0)
    self->state.pace.emplace(rate, std::max(1.0, rate), std::chrono::steady_clock::now());
  self->send(self->state.store, store_watch_atom::value, store_column::outbox,
             caf::actor_cast<caf::actor>(self));
  self->send(self, relay_poll_atom::value);
  return {
      [=](relay_wake_atom) { look_for_rows(self, false); },
      [=](relay_pace_atom) {
        self->state.pace_wake_pending = false;
        pump(self);
      },
      [=](store_changed_atom, store_column) { look_for_rows(self, false); },
      [=](relay_poll_atom) {
        look_for_rows(self, true);
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
