#include <troupe/outbox/inbox.hpp>

#include <deque>
#include <set>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/call_context.hpp>

#include "outbox_metrics.hpp"

namespace troupe {

namespace {

constexpr auto store_timeout = std::chrono::seconds(30);

std::string big_endian(int64_t x) {
  std::string out;
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((static_cast<uint64_t>(x) >> (8 * i)) & 0xff));
  return out;
}

int64_t from_big_endian(std::string_view s) {
  uint64_t x = 0;
  for (unsigned char c : s)
    x = (x << 8) | c;
  return static_cast<int64_t>(x);
}

constexpr const char* consumer_name = "inbox_consumer";

struct inbox_state {
  static inline const char* name = consumer_name;
  // Declared, so C++20 does not take the state for an aggregate CAF could
  // construct from the actor pointer.
  inbox_state() = default;
  store_actor store;
  std::shared_ptr<outbox_sequence> sequence;
  inbox_settings settings;
  inbox_apply apply;
  std::set<std::string> in_flight;
  bool sweeping = false;

  std::string prefix() const { return settings.consumer + "/"; }
};

using inbox_pointer = inbox_consumer_actor::stateful_pointer<inbox_state>;

// The handler's logs and the events it emits continue the event's
// correlation (and so its trace).
call_context context_of(const outbound_event& event) {
  call_context ctx;
  ctx.correlation_id = correlation_of(event);
  if (ctx.correlation_id.empty())
    ctx.correlation_id = new_correlation_id();
  return ctx;
}

// Poison moves on to the dead-letter destination with its error.
void dead_letter(const inbox_state& st, const delivered_event& d,
                 const std::string& error, outbox_transaction& tx) {
  outbox_metrics::instance().inbox_poison->Increment();
  spdlog::warn("inbox {}: message {} from {} is poison: {}", st.settings.consumer,
               d.event.id, d.topic, error);
  tx.emit_encoded(st.settings.dead_letter_destination, d.event.key,
                  d.event.header(event_headers::event_type), d.event.payload,
                  {{event_headers::error, error},
                   {"original-id", d.event.id},
                   {"original-topic", d.topic}});
}

// Forgets ids older than `cutoff`, a page at a time (single and batch inboxes).
template <class Self>
void sweep_page(Self* self, std::string start_after, int64_t cutoff) {
  self->request(self->state.store, store_timeout, store_scan_atom::value,
                store_column::inbox, self->state.prefix(), std::move(start_after),
                uint32_t{1024})
      .then(
          [=](scan_page& page) {
            write_batch batch;
            for (auto& [key, value] : page.entries)
              if (from_big_endian(value) < cutoff)
                batch.erase(store_column::inbox, key);
            auto next = page.more && !page.entries.empty() ? page.entries.back().first
                                                           : std::string{};
            auto go_on = [=] {
              if (next.empty())
                self->state.sweeping = false;
              else
                sweep_page(self, next, cutoff);
            };
            if (batch.empty()) {
              go_on();
              return;
            }
            self->request(self->state.store, store_timeout, store_commit_atom::value,
                          std::move(batch))
                .then([=](caf::ok_atom) { go_on(); },
                      [=](caf::error&) { self->state.sweeping = false; });
          },
          [=](caf::error&) { self->state.sweeping = false; });
}

// What single and batch inboxes set up alike; the first sweep starts the timer.
template <class Self>
void start_inbox(Self* self, store_actor store, std::shared_ptr<outbox_sequence> sequence,
                 inbox_settings settings) {
  auto& st = self->state;
  st.store = std::move(store);
  st.sequence = std::move(sequence);
  st.settings = std::move(settings);
  if (st.settings.dead_letter_destination.empty())
    st.settings.dead_letter_destination = st.settings.consumer + ".dead-letters";
  self->send(self, inbox_sweep_atom::value);
}

template <class Self>
void sweep(Self* self) {
  auto& st = self->state;
  if (!st.sweeping) {
    st.sweeping = true;
    sweep_page(self, "", unix_millis() - st.settings.retention.count());
  }
  self->delayed_send(self, st.settings.sweep_interval, inbox_sweep_atom::value);
}

inbox_consumer_actor::behavior_type
inbox_consumer(inbox_pointer self, store_actor store,
               std::shared_ptr<outbox_sequence> sequence, inbox_settings settings,
               inbox_apply apply) {
  start_inbox(self, std::move(store), std::move(sequence), std::move(settings));
  self->state.apply = std::move(apply);
  return {
      [=](deliver_atom, delivered_event& d) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        const auto& id = d.event.id;
        // A redelivery racing its own first delivery: let the broker retry it
        // once the first is recorded.
        if (!st.in_flight.insert(id).second)
          return caf::make_error(caf::sec::request_timeout);
        auto rp = self->make_response_promise<caf::ok_atom>();
        auto key = st.prefix() + id;
        self->request(st.store, store_timeout, store_get_atom::value, store_column::inbox,
                      key)
            .then(
                [=](const caf::optional<std::string>& seen) mutable {
                  auto& st = self->state;
                  if (seen) {
                    outbox_metrics::instance().inbox_duplicates->Increment();
                    st.in_flight.erase(d.event.id);
                    rp.deliver(caf::ok_atom::value);
                    return;
                  }
                  auto ctx = context_of(d.event);
                  context_scope scope{ctx, consumer_name};
                  outbox_transaction tx{st.sequence};
                  auto error = st.apply(d, tx);
                  if (!error.empty()) {
                    // Poison: whatever the handler wrote is dropped.
                    tx = outbox_transaction{st.sequence};
                    dead_letter(st, d, error, tx);
                  }
                  tx.batch().put(store_column::inbox, key, big_endian(unix_millis()));
                  self->request(st.store, store_timeout, store_commit_atom::value,
                                std::move(tx).take())
                      .then(
                          [=](caf::ok_atom) mutable {
                            self->state.in_flight.erase(d.event.id);
                            rp.deliver(caf::ok_atom::value);
                          },
                          [=](caf::error& err) mutable {
                            self->state.in_flight.erase(d.event.id);
                            rp.deliver(std::move(err));
                          });
                },
                [=](caf::error& err) mutable {
                  self->state.in_flight.erase(d.event.id);
                  rp.deliver(std::move(err));
                });
        return rp;
      },
      [=](inbox_sweep_atom) { sweep(self); },
  };
}

// What a batch delivery learned from the store: which ids it has seen.
struct batch_lookup {
  std::vector<delivered_event> deliveries;
  std::vector<bool> seen;
  size_t waiting = 0;
  caf::error failure;
  caf::typed_response_promise<uint32_t> rp;
};

struct inbox_batch_state : inbox_state {
  static inline const char* name = "inbox_batch_consumer";
  inbox_batch_state() = default;
  inbox_apply_batch apply_batch;
  // One batch at a time, the others queued: a batch applied while an
  // earlier one's commit is pending could build on state that commit loses.
  std::deque<std::shared_ptr<batch_lookup>> queued;
  bool busy = false;
};

using inbox_batch_pointer =
    inbox_batch_consumer_actor::stateful_pointer<inbox_batch_state>;

void start_next_batch(inbox_batch_pointer self);

// Answers a batch, frees its ids and goes on with the next queued one.
template <class Answer>
void finish_batch(inbox_batch_pointer self, const std::shared_ptr<batch_lookup>& lookup,
                  Answer answer) {
  for (auto& d : lookup->deliveries)
    self->state.in_flight.erase(d.event.id);
  lookup->rp.deliver(std::move(answer));
  self->state.busy = false;
  start_next_batch(self);
}

// Applies what the store has not seen of a delivery and commits it with
// their ids; answers the count of the delivery (all of it or nothing).
void apply_lookup(inbox_batch_pointer self, std::shared_ptr<batch_lookup> lookup) {
  auto& st = self->state;
  if (lookup->failure)
    return finish_batch(self, lookup, lookup->failure);
  std::vector<const delivered_event*> fresh;
  std::set<std::string_view> ids;
  for (size_t i = 0; i < lookup->deliveries.size(); ++i) {
    auto& d = lookup->deliveries[i];
    // Seen before, or twice in this delivery (a re-publication).
    if (lookup->seen[i] || !ids.insert(d.event.id).second)
      outbox_metrics::instance().inbox_duplicates->Increment();
    else
      fresh.push_back(&d);
  }
  auto n = static_cast<uint32_t>(lookup->deliveries.size());
  if (fresh.empty())
    return finish_batch(self, lookup, n);
  outbox_transaction tx{st.sequence};
  {
    // A batch continues its first new event's correlation.
    auto ctx = context_of(fresh.front()->event);
    context_scope scope{ctx, consumer_name};
    auto errors = st.apply_batch(fresh, tx);
    errors.resize(fresh.size());
    for (size_t i = 0; i < fresh.size(); ++i)
      if (!errors[i].empty())
        dead_letter(st, *fresh[i], errors[i], tx);
  }
  auto now = big_endian(unix_millis());
  for (auto* d : fresh)
    tx.batch().put(store_column::inbox, st.prefix() + d->event.id, now);
  self->request(st.store, store_timeout, store_commit_atom::value, std::move(tx).take())
      .then([=](caf::ok_atom) { finish_batch(self, lookup, n); },
            [=](caf::error& err) {
              // The handler may have built state in memory for a batch the
              // store lost: ending lets the supervisor rebuild it from disk.
              // Queued batches were not applied; their brokers deliver them
              // again.
              lookup->rp.deliver(err);
              self->quit(std::move(err));
            });
}

void start_next_batch(inbox_batch_pointer self) {
  auto& st = self->state;
  if (st.busy || st.queued.empty())
    return;
  st.busy = true;
  auto lookup = st.queued.front();
  st.queued.pop_front();
  for (size_t i = 0; i < lookup->deliveries.size(); ++i) {
    auto answered = [=] {
      if (--lookup->waiting == 0)
        apply_lookup(self, lookup);
    };
    self->request(st.store, store_timeout, store_get_atom::value, store_column::inbox,
                  st.prefix() + lookup->deliveries[i].event.id)
        .then(
            [=](const caf::optional<std::string>& seen) {
              lookup->seen[i] = static_cast<bool>(seen);
              answered();
            },
            [=](caf::error& err) {
              lookup->failure = std::move(err);
              answered();
            });
  }
}

inbox_batch_consumer_actor::behavior_type
inbox_batch_consumer(inbox_batch_pointer self, store_actor store,
                     std::shared_ptr<outbox_sequence> sequence, inbox_settings settings,
                     inbox_apply_batch apply) {
  start_inbox(self, std::move(store), std::move(sequence), std::move(settings));
  self->state.apply_batch = std::move(apply);
  return {
      [=](deliver_batch_atom,
          std::vector<delivered_event>& deliveries) -> caf::result<uint32_t> {
        auto& st = self->state;
        if (deliveries.empty())
          return uint32_t{0};
        // A redelivery racing its own first delivery: the broker retries it
        // once the first is recorded.
        for (auto& d : deliveries)
          if (st.in_flight.count(d.event.id) > 0)
            return caf::make_error(caf::sec::request_timeout);
        for (auto& d : deliveries)
          st.in_flight.insert(d.event.id);
        auto lookup = std::make_shared<batch_lookup>();
        lookup->rp = self->make_response_promise<uint32_t>();
        lookup->deliveries = std::move(deliveries);
        lookup->seen.assign(lookup->deliveries.size(), false);
        lookup->waiting = lookup->deliveries.size();
        st.queued.push_back(lookup);
        start_next_batch(self);
        return lookup->rp;
      },
      [=](inbox_sweep_atom) { sweep(self); },
  };
}

} // namespace

inbox_consumer_actor spawn_inbox_consumer(caf::actor_system& sys, store_actor store,
                                          std::shared_ptr<outbox_sequence> sequence,
                                          inbox_settings settings, inbox_apply apply) {
  return sys.spawn(inbox_consumer, std::move(store), std::move(sequence),
                   std::move(settings), std::move(apply));
}

inbox_batch_consumer_actor
spawn_inbox_batch_consumer(caf::actor_system& sys, store_actor store,
                           std::shared_ptr<outbox_sequence> sequence,
                           inbox_settings settings, inbox_apply_batch apply) {
  return sys.spawn(inbox_batch_consumer, std::move(store), std::move(sequence),
                   std::move(settings), std::move(apply));
}

} // namespace troupe
