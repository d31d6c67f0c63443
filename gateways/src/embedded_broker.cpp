#include <troupe/gateways/embedded_broker.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_set>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "consumer_lag.hpp"
#include "event_delivery.hpp"

#include <troupe/outbox/event_codec.hpp>
#include <troupe/outbox/outbox_row.hpp>
#include <troupe/runtime/message_origin.hpp>
#include <troupe/runtime/store.hpp>

namespace troupe {

namespace {

constexpr auto store_timeout = std::chrono::seconds(30);

// The broker keeps its data in the state column under this prefix, so the
// store needs no column family of its own for it.
constexpr std::string_view log_prefix = "broker/log/";
constexpr std::string_view head_prefix = "broker/head/";
constexpr std::string_view offset_prefix = "broker/off/";
constexpr std::string_view id_prefix = "broker/id/";

struct broker_record {
  int64_t appended_ms = 0;
  outbound_event event;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, broker_record& x) {
  return f(caf::meta::type_name("broker_record"), x.appended_ms, x.event);
}

std::string big_endian(uint64_t x) {
  std::string out;
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
  return out;
}

uint64_t from_big_endian(std::string_view s) {
  uint64_t x = 0;
  for (unsigned char c : s)
    x = (x << 8) | c;
  return x;
}

// Topic names end with a NUL in keys, so "a" never scans into "ab".
std::string topic_log_prefix(const std::string& topic) {
  std::string k{log_prefix};
  k += topic;
  k.push_back('\0');
  return k;
}

std::string log_key(const std::string& topic, uint64_t seq) {
  return topic_log_prefix(topic) + big_endian(seq);
}

std::string offset_key(const std::string& topic, const std::string& group) {
  std::string k{offset_prefix};
  k += topic;
  k.push_back('\0');
  return k + group;
}

std::string id_key(const std::string& topic, const std::string& id) {
  std::string k{id_prefix};
  k += topic;
  k.push_back('\0');
  return k + id;
}

std::pair<std::string, std::string> split_at_nul(std::string_view rest) {
  auto nul = rest.find('\0');
  if (nul == std::string_view::npos)
    return {std::string{rest}, {}};
  return {std::string{rest.substr(0, nul)}, std::string{rest.substr(nul + 1)}};
}

struct consumer_group {
  uint64_t next = 0; ///< the offset to deliver next
  std::vector<event_subscriber> members;
  size_t turn = 0;
  bool busy = false;
  // Appends announced while a fetch was reading: the fetch may have read
  // the store before they were durable, so it must look again.
  bool appended_while_fetching = false;
  // The delivery in flight, if any: its number and its member. A member
  // whose node goes away never answers (CAF drops messages to a dead
  // proxy), so its down message ends the delivery instead.
  uint64_t delivery = 0;
  const caf::actor_control_block* delivering_to = nullptr;
  std::deque<delivered_event> fetched;
  prometheus::Gauge* lag = nullptr; ///< looked up once, set at every change
};

struct broker_state {
  static inline const char* name = "embedded_broker";
  // Declared, so C++20 does not take the state for an aggregate CAF could
  // construct from the actor pointer.
  broker_state() = default;
  store_actor store;
  embedded_broker_settings settings;
  std::map<std::string, uint64_t> heads; ///< per topic: the next offset to append
  std::map<std::pair<std::string, std::string>, uint64_t> committed;
  std::map<std::string, std::unordered_set<std::string>> ids;
  std::map<std::pair<std::string, std::string>, consumer_group> groups;
  bool sweeping = false;
};

using broker_pointer = embedded_broker_actor::stateful_pointer<broker_state>;

void deliver_next(broker_pointer self, const std::string& topic, const std::string& name);

/// Sets the group's lag: what was appended to the topic after its offset.
void report_lag(broker_pointer self, const std::string& topic, const std::string& name) {
  auto& g = self->state.groups[{topic, name}];
  auto head = self->state.heads[topic];
  if (g.lag == nullptr)
    g.lag = &consumer_lag("embedded", topic, name, "0");
  g.lag->Set(static_cast<double>(head > g.next ? head - g.next : 0));
}

void fetch(broker_pointer self, const std::string& topic, const std::string& name) {
  auto& g = self->state.groups[{topic, name}];
  g.busy = true;
  g.appended_while_fetching = false;
  auto start_after = g.next == 0 ? std::string{} : log_key(topic, g.next - 1);
  self->request(self->state.store, store_timeout, store_scan_atom::value,
                store_column::state, topic_log_prefix(topic), std::move(start_after),
                self->state.settings.fetch_size)
      .then(
          [=](scan_page& page) {
            auto& g = self->state.groups[{topic, name}];
            g.busy = false;
            auto prefix_size = topic_log_prefix(topic).size();
            for (auto& [key, value] : page.entries) {
              auto rec = decode_event<broker_record>(value);
              if (!rec)
                continue;
              delivered_event d;
              d.topic = topic;
              d.offset = from_big_endian(std::string_view{key}.substr(prefix_size));
              d.event = std::move(rec->event);
              if (d.offset >= g.next)
                g.fetched.push_back(std::move(d));
            }
            if (!g.fetched.empty() || g.appended_while_fetching)
              deliver_next(self, topic, name);
          },
          [=](caf::error& err) {
            spdlog::warn("embedded broker: cannot read topic {}: {}", topic,
                         self->system().render(err));
            self->state.groups[{topic, name}].busy = false;
            self->delayed_send(self, self->state.settings.redeliver_delay,
                               broker_retry_atom::value, topic, name);
          });
}

// Members are told apart by control block: the proxy of a node that
// subscribed again is a new member, not the one whose connection went.
const caf::actor_control_block* control_block_of(const event_subscriber& member) {
  return caf::actor_cast<caf::strong_actor_ptr>(member.handle()).get();
}

void deliver_next(broker_pointer self, const std::string& topic,
                  const std::string& name) {
  auto& g = self->state.groups[{topic, name}];
  if (g.busy) {
    g.appended_while_fetching = true;
    return;
  }
  if (g.members.empty())
    return;
  if (g.fetched.empty()) {
    if (g.next < self->state.heads[topic])
      fetch(self, topic, name);
    return;
  }
  g.busy = true;
  auto member = g.members[g.turn++ % g.members.size()];
  auto n = std::min(member.batch_size(), g.fetched.size());
  std::vector<delivered_event> batch{g.fetched.begin(),
                                     g.fetched.begin() + static_cast<long>(n)};
  auto offsets = std::vector<uint64_t>(n);
  for (size_t i = 0; i < n; ++i)
    offsets[i] = batch[i].offset;
  auto id = ++g.delivery;
  g.delivering_to = control_block_of(member);
  gateways::deliver_events(
      self, member, self->state.settings.deliver_timeout, std::move(batch),
      [=](size_t handled, const caf::error& why) {
        auto& g = self->state.groups[{topic, name}];
        if (g.delivery != id)
          return; // given up when its member went away; redelivered since
        g.busy = false;
        g.delivering_to = nullptr;
        if (handled > 0) {
          auto last = offsets[handled - 1];
          while (!g.fetched.empty() && g.fetched.front().offset <= last)
            g.fetched.pop_front();
          g.next = std::max(g.next, last + 1);
          self->state.committed[{topic, name}] = g.next;
          report_lag(self, topic, name);
          write_batch offset;
          offset.put(store_column::state, offset_key(topic, name), big_endian(g.next));
          // Not waited for: a lost offset commit only redelivers, which the
          // consumer's inbox absorbs; the store applies commits in order.
          self->request(self->state.store, store_timeout, store_commit_atom::value,
                        std::move(offset))
              .then([](caf::ok_atom) {},
                    [=](caf::error& err) {
                      spdlog::warn("embedded broker: cannot commit an offset of {}: {}",
                                   name, self->system().render(err));
                    });
        }
        if (handled == n) {
          deliver_next(self, topic, name);
          return;
        }
        // A member that went away leaves through the down handler, which
        // tells a fresh proxy of the same actor from the one that is gone.
        spdlog::debug("embedded broker: {} of group {} at {}: {}", topic, name,
                      offsets[handled], describe(why));
        self->delayed_send(self, self->state.settings.redeliver_delay,
                           broker_retry_atom::value, topic, name);
      });
}

void sweep_topic(broker_pointer self, std::string topic, int64_t cutoff) {
  self->request(self->state.store, store_timeout, store_scan_atom::value,
                store_column::state, topic_log_prefix(topic), std::string{},
                uint32_t{1024})
      .then(
          [=](scan_page& page) {
            write_batch batch;
            std::vector<std::string> gone;
            for (auto& [key, value] : page.entries) {
              auto rec = decode_event<broker_record>(value);
              if (rec && rec->appended_ms >= cutoff)
                break;
              batch.erase(store_column::state, key);
              if (rec) {
                batch.erase(store_column::state, id_key(topic, rec->event.id));
                gone.push_back(rec->event.id);
              }
            }
            if (batch.empty()) {
              self->state.sweeping = false;
              return;
            }
            self->request(self->state.store, store_timeout, store_commit_atom::value,
                          std::move(batch))
                .then(
                    [=](caf::ok_atom) {
                      auto& ids = self->state.ids[topic];
                      for (auto& id : gone)
                        ids.erase(id);
                      self->state.sweeping = false;
                    },
                    [=](caf::error&) { self->state.sweeping = false; });
          },
          [=](caf::error&) { self->state.sweeping = false; });
}

// Which part of the broker's persisted state a load step reads.
enum class load_phase { heads, offsets, ids, done };

// Reads the topics, committed offsets and known ids page by page through
// the store actor. `await` holds every other message until the last page
// is in, so no publish or subscription sees a half-loaded broker.
void load_step(broker_pointer self, load_phase phase, std::string start_after) {
  if (phase == load_phase::done) {
    self->delayed_send(self, self->state.settings.sweep_interval,
                       broker_sweep_atom::value);
    return;
  }
  std::string_view prefix = phase == load_phase::heads     ? head_prefix
                            : phase == load_phase::offsets ? offset_prefix
                                                           : id_prefix;
  self->request(self->state.store, store_timeout, store_scan_atom::value,
                store_column::state, std::string{prefix}, std::move(start_after),
                uint32_t{1024})
      .await(
          [=](scan_page& page) {
            auto& st = self->state;
            for (auto& [k, v] : page.entries) {
              auto rest = std::string_view{k}.substr(prefix.size());
              if (phase == load_phase::heads)
                st.heads[std::string{rest}] = from_big_endian(v);
              else if (phase == load_phase::offsets)
                st.committed[split_at_nul(rest)] = from_big_endian(v);
              else {
                auto [topic, id] = split_at_nul(rest);
                st.ids[topic].insert(id);
              }
            }
            if (page.more && !page.entries.empty())
              load_step(self, phase, page.entries.back().first);
            else
              load_step(self, static_cast<load_phase>(static_cast<int>(phase) + 1), {});
          },
          [=](caf::error& err) {
            spdlog::error("embedded broker: cannot load its topics: {}",
                          self->system().render(err));
            self->quit(err);
          });
}

embedded_broker_actor::behavior_type embedded_broker(broker_pointer self,
                                                     store_actor store,
                                                     embedded_broker_settings settings) {
  self->state.settings = settings;
  self->state.store = std::move(store);
  load_step(self, load_phase::heads, {});
  // A member that ends (or whose node goes away) leaves its groups at once,
  // rather than when a delivery to it times out. By control block: a
  // member replaced by a fresh proxy of the same actor stays.
  self->set_down_handler([self](caf::down_msg& down) {
    for (auto& [key, g] : self->state.groups) {
      auto& ms = g.members;
      ms.erase(std::remove_if(ms.begin(), ms.end(),
                              [&](const event_subscriber& m) {
                                return control_block_of(m) == down.source.get();
                              }),
               ms.end());
      if (g.busy && g.delivering_to != nullptr && g.delivering_to == down.source.get()) {
        ++g.delivery;
        g.busy = false;
        g.delivering_to = nullptr;
        self->send(self, broker_retry_atom::value, key.first, key.second);
      }
    }
  });
  return {
      [=](publish_atom,
          std::vector<outbound_event>& events) -> caf::result<std::vector<std::string>> {
        // Topics hold what this node's relay publishes; other nodes only
        // subscribe (a peer that learned this actor's id gets no further).
        if (!sent_from_this_node(self))
          return make_error(errc::rejected,
                            "embedded broker: only its own node publishes into it");
        auto& st = self->state;
        auto now = unix_millis();
        write_batch batch;
        std::set<std::string> topics;
        std::vector<std::pair<std::string, std::string>> added_ids;
        for (auto& ev : events) {
          auto& topic = ev.destination;
          if (!st.ids[topic].insert(ev.id).second)
            continue; // published before: acknowledged, not appended again
          added_ids.emplace_back(topic, ev.id);
          auto seq = st.heads[topic]++;
          batch.put(store_column::state, id_key(topic, ev.id), big_endian(seq));
          batch.put(store_column::state, log_key(topic, seq),
                    encode_event(broker_record{now, ev}));
          topics.insert(topic);
        }
        auto n = events.size();
        if (batch.empty())
          return std::vector<std::string>(n);
        for (auto& t : topics)
          batch.put(store_column::state, std::string{head_prefix} + t,
                    big_endian(st.heads[t]));
        auto rp = self->make_response_promise<std::vector<std::string>>();
        self->request(st.store, store_timeout, store_commit_atom::value, std::move(batch))
            .then(
                [=](caf::ok_atom) mutable {
                  rp.deliver(std::vector<std::string>(n));
                  for (auto& [key, g] : self->state.groups)
                    if (topics.count(key.first) > 0) {
                      report_lag(self, key.first, key.second);
                      deliver_next(self, key.first, key.second);
                    }
                },
                [=](caf::error& err) mutable {
                  // Offsets taken stay unused (readers skip gaps); the ids
                  // must go, or the retry would be taken for a duplicate.
                  for (auto& [topic, id] : added_ids)
                    self->state.ids[topic].erase(id);
                  rp.deliver(std::vector<std::string>(n, "embedded broker: " +
                                                             self->system().render(err)));
                });
        return rp;
      },
      [=](subscribe_atom, const std::string& topic, const std::string& name,
          event_subscriber consumer) -> caf::result<caf::ok_atom> {
        // Subscriptions may come from other nodes: one consumer, of the
        // node that subscribes it, taking at least one event at a time.
        if (static_cast<bool>(consumer.consumer) ==
            static_cast<bool>(consumer.batch_consumer))
          return make_error(errc::bad_input, "a subscription names exactly one consumer");
        if (auto sender = self->current_sender();
            sender == nullptr || sender->node() != consumer.handle().node())
          return make_error(errc::bad_input,
                            "a node may subscribe only consumers of its own");
        consumer.max_batch = std::max<uint32_t>(consumer.max_batch, 1);
        auto& st = self->state;
        auto [it, fresh] = st.groups.try_emplace({topic, name});
        if (fresh) {
          auto c = st.committed.find({topic, name});
          it->second.next = c == st.committed.end() ? 0 : c->second;
        }
        // A node subscribing again (its view of this broker came back)
        // replaces the member: the handle kept may be a proxy of a
        // connection that is gone.
        self->monitor(consumer.handle());
        auto& ms = it->second.members;
        if (auto known = std::find(ms.begin(), ms.end(), consumer); known != ms.end())
          *known = std::move(consumer);
        else
          ms.push_back(std::move(consumer));
        deliver_next(self, topic, name);
        return caf::ok_atom::value;
      },
      [=](broker_retry_atom, const std::string& topic, const std::string& name) {
        deliver_next(self, topic, name);
      },
      [=](broker_sweep_atom) {
        auto& st = self->state;
        if (!st.sweeping && !st.heads.empty()) {
          st.sweeping = true;
          // One topic per sweep, in turn, keeps each sweep small.
          auto cutoff = unix_millis() - st.settings.retention.count();
          auto it = st.heads.begin();
          std::advance(it, static_cast<long>(unix_millis() / 1000 %
                                             static_cast<int64_t>(st.heads.size())));
          sweep_topic(self, it->first, cutoff);
        }
        self->delayed_send(self, st.settings.sweep_interval, broker_sweep_atom::value);
      },
  };
}

} // namespace

embedded_broker_actor spawn_embedded_broker(caf::actor_system& sys, store_actor store,
                                            embedded_broker_settings settings) {
  if (settings.fetch_size == 0)
    settings.fetch_size = 1;
  return sys.spawn(embedded_broker, std::move(store), settings);
}

} // namespace troupe
