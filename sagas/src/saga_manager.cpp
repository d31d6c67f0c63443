#include <troupe/sagas/saga_manager.hpp>

#include <deque>
#include <random>
#include <unordered_map>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/node.hpp>
#include <troupe/runtime/store_actor.hpp>

#include "saga_instance.hpp"
#include "saga_log.hpp"

namespace troupe {

using namespace sagas_detail;

namespace {

using saga_tick_atom = caf::atom_constant<caf::atom("sgtick")>;
using resume_more_atom = caf::atom_constant<caf::atom("sgmore")>;

// The manager's own interface: the public API plus its timers.
using manager_actor = saga_manager_actor::extend<caf::reacts_to<saga_tick_atom>,
                                                 caf::reacts_to<resume_more_atom>>;

struct entry {
  std::string type;
  std::string idempotency_key;
  saga_status status = saga_status::running;
  std::string current_step;
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  uint64_t first_seq = 0;
  uint64_t next_seq = 0;
  caf::actor live;
  uint32_t crashes = 0;
  bool stall_reported = false;
  std::shared_ptr<const saga_snapshot>
      parked;                                 ///< kept for queries: no definition runs it
  std::shared_ptr<const saga_snapshot> ended; ///< read from the log lately
};

struct recovered {
  std::string id;
  std::optional<saga_snapshot> snapshot;
  uint64_t first_seq = 0;
  uint64_t next_seq = 0;
  std::string corrupt; ///< why the log cannot be read
};

struct recovery_metrics {
  prometheus::Gauge* pending;
  prometheus::Counter* resumed;
  prometheus::Counter* corrupt;
  prometheus::Gauge* parked;
  prometheus::Gauge* stalled;
};

struct waiting_start {
  caf::response_promise rp;
  call_context ctx;
  start_saga cmd;
};

struct manager_state {
  static inline const char* name = "saga_manager";
  std::shared_ptr<instance_context> ctx;
  std::map<std::string, std::map<uint32_t, std::shared_ptr<const saga_definition>>> defs;
  std::map<std::string, entry> entries; // by id, which sorts by creation time
  std::unordered_map<std::string, std::string> by_key;
  std::unordered_map<caf::actor_addr, std::string> live_ids;
  bool recovering = true;
  uint32_t resuming = 0; ///< instances resumed that have not yet answered
  recovered current;
  std::deque<recovered> to_resume;
  std::vector<waiting_start> waiting;
  std::vector<std::function<void()>> waiting_queries;
  // Ended instances whose log was read lately, oldest first: an ended saga
  // no longer changes, and a client polling one should not cost a log scan
  // per poll.
  std::deque<std::string> ended_cached;
  recovery_metrics rm;
  std::mt19937_64 rng{std::random_device{}()};
};

using self_ptr = manager_actor::stateful_pointer<manager_state>;

std::string key_of(const std::string& type, const std::string& key) {
  return type + '\n' + key;
}

std::string new_saga_id(std::mt19937_64& rng, const std::string& owner) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012llx%08x", static_cast<unsigned long long>(ms),
                static_cast<unsigned>(rng() & 0xffffffffu));
  return std::string{buf} + "." + owner;
}

std::string new_key(std::mt19937_64& rng) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

/// The node that owns a saga id ("<time><random>.<owner>").
std::string owner_from_id(const std::string& id) {
  auto dot = id.find('.');
  return dot == std::string::npos ? std::string{} : id.substr(dot + 1);
}

const std::string& me(self_ptr self) {
  return self->state.ctx->settings.node_name;
}

std::shared_ptr<const saga_definition> find_def(self_ptr self, const std::string& type,
                                                uint32_t version) {
  auto i = self->state.defs.find(type);
  if (i == self->state.defs.end())
    return nullptr;
  auto j = i->second.find(version);
  return j == i->second.end() ? nullptr : j->second;
}

std::string known_types(self_ptr self) {
  std::string out;
  for (auto& [type, versions] : self->state.defs)
    out += (out.empty() ? "" : ", ") + type;
  return out;
}

// Finds the saga manager on node `owner` and hands it `msg`; the owner
// answers the original requester directly.
template <class... Ts>
void forward_to(self_ptr self, caf::response_promise rp, const std::string& owner,
                Ts... msg) {
  auto cluster = local_cluster(self->system());
  if (!cluster) {
    rp.deliver(make_error(errc::service_unavailable, "no cluster on this node"));
    return;
  }
  self->request(cluster, std::chrono::seconds(2), members_atom::value)
      .then(
          [=](const std::vector<member_info>& members) mutable {
            for (auto& m : members) {
              if (m.name != owner)
                continue;
              for (auto& svc : m.services)
                if (svc.name == saga_manager_name) {
                  rp.delegate(svc.handle, msg...);
                  return;
                }
            }
            rp.deliver(make_error(errc::service_unavailable,
                                  "saga owner node '" + owner +
                                      "' is unreachable; retry later"));
          },
          [=](caf::error&) mutable {
            rp.deliver(make_error(errc::service_unavailable,
                                  "saga owner node '" + owner +
                                      "' is unreachable; retry later"));
          });
}

// Reads one instance's records and folds them into its state.
std::optional<saga_snapshot> fold(caf::actor_system& sys, const scan_page& page,
                                  std::string& error) {
  std::optional<saga_snapshot> s;
  for (auto& [key, value] : page.entries) {
    auto rec = saga_log::decode(sys, value, error);
    if (!rec)
      return std::nullopt;
    if (rec->snapshot) {
      s = std::move(rec->snapshot);
    } else if (!s) {
      error = "an event precedes the first snapshot";
      return std::nullopt;
    } else if (!saga_log::apply(*s, *rec->change, error)) {
      return std::nullopt;
    }
  }
  if (!s)
    error = "no records";
  return s;
}

void remember_ended(self_ptr self, const saga_snapshot& s) {
  auto& st = self->state;
  auto i = st.entries.find(s.id);
  if (i == st.entries.end() || !is_end_state(s.status) || i->second.ended)
    return;
  i->second.ended = std::make_shared<const saga_snapshot>(s);
  st.ended_cached.push_back(s.id);
  if (st.ended_cached.size() > st.ctx->settings.ended_cache) {
    if (auto old = st.entries.find(st.ended_cached.front()); old != st.entries.end())
      old->second.ended = nullptr;
    st.ended_cached.pop_front();
  }
}

// Answers with an instance that is not running here (ended or parked).
void load_stored(self_ptr self, const std::string& id,
                 std::function<void(caf::expected<saga_snapshot>)> then) {
  auto found = self->state.entries.find(id);
  if (found == self->state.entries.end()) {
    then(make_error(errc::not_found, "no saga with id '" + id + "'"));
    return;
  }
  auto& e = found->second;
  if (e.parked) {
    then(saga_snapshot{*e.parked});
    return;
  }
  if (e.ended && is_end_state(e.status)) {
    then(saga_snapshot{*e.ended});
    return;
  }
  self->request(self->state.ctx->store, std::chrono::seconds(30), store_scan_atom::value,
                store_column::sagas, saga_log::instance_prefix(id), std::string{},
                uint32_t{1u << 20})
      .then(
          [self, id, then](const scan_page& page) {
            std::string error;
            auto s = fold(self->system(), page, error);
            if (!s) {
              then(make_error(errc::internal,
                              "saga log of " + id + " is unreadable: " + error));
              return;
            }
            if (auto def = find_def(self, s->type, s->version))
              *s = decorated(self->system(), *def, std::move(*s));
            remember_ended(self, *s);
            then(std::move(*s));
          },
          [then](caf::error& err) { then(std::move(err)); });
}

caf::actor spawn_live(self_ptr self, std::shared_ptr<const saga_definition> def,
                      saga_snapshot s, uint64_t first_seq, uint64_t next_seq,
                      bool fresh) {
  auto& st = self->state;
  auto id = s.id;
  auto inst = spawn_instance(self, st.ctx, std::move(def), std::move(s), first_seq,
                             next_seq, fresh);
  st.entries[id].live = inst;
  st.live_ids[inst.address()] = id;
  return inst;
}

// Answers through `rp`, which may belong to a request queued during recovery.
void start_here(self_ptr self, const call_context& ctx, start_saga cmd,
                caf::response_promise rp) {
  auto& st = self->state;
  auto versions = st.defs.find(cmd.type);
  if (versions == st.defs.end()) {
    rp.deliver(
        make_error(errc::not_found, "unknown saga type '" + cmd.type +
                                        "'; this node runs: " + known_types(self)));
    return;
  }
  auto def = versions->second.rbegin()->second;
  if (auto i = st.by_key.find(key_of(cmd.type, cmd.idempotency_key));
      i != st.by_key.end()) {
    auto id = i->second;
    auto& e = st.entries.at(id);
    if (e.live) {
      self->request(e.live, std::chrono::seconds(10), inspect_atom::value)
          .then(
              [=](saga_snapshot& s) mutable {
                rp.deliver(saga_started{std::move(s), false});
              },
              [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
    } else {
      load_stored(self, id, [=](caf::expected<saga_snapshot> s) mutable {
        if (s)
          rp.deliver(saga_started{std::move(*s), false});
        else
          rp.deliver(std::move(s.error()));
      });
    }
    return;
  }
  if (!def->input_is_valid(self->system(), cmd.input)) {
    rp.deliver(make_error(errc::bad_input, "the input does not decode as the input type "
                                           "of saga '" +
                                               cmd.type + "'"));
    return;
  }
  auto now = wall_now_ns();
  auto span = def->deadline.count() > 0 ? def->deadline : st.ctx->settings.deadline;
  auto deadline = cmd.deadline_ns != 0 ? cmd.deadline_ns : now + span.count();
  auto id = new_saga_id(st.rng, me(self));
  auto corr = ctx.correlation_id.empty() ? new_correlation_id() : ctx.correlation_id;
  auto s = initial_state(*def, id, cmd, corr, now, deadline);
  auto& e = st.entries[id];
  e.type = cmd.type;
  e.idempotency_key = cmd.idempotency_key;
  e.created_ns = now;
  e.updated_ns = now;
  e.current_step = current_step(s);
  st.by_key[key_of(cmd.type, cmd.idempotency_key)] = id;
  auto inst = spawn_live(self, def, std::move(s), 0, 0, true);
  rp.delegate(inst, begin_atom::value);
}

caf::result<saga_started> on_start(self_ptr self, const call_context& ctx,
                                   start_saga cmd) {
  auto& st = self->state;
  if (cmd.idempotency_key.empty())
    cmd.idempotency_key = new_key(st.rng);
  auto owner = owner_of(cmd.idempotency_key, st.ctx->settings.owners);
  if (owner.empty())
    owner = me(self);
  if (owner != me(self)) {
    if (cmd.forwarded)
      return make_error(errc::internal, "a forwarded saga start names owner '" + owner +
                                            "': sagas.owners differs between nodes");
    auto rp = self->make_response_promise();
    cmd.forwarded = true;
    forward_to(self, rp, owner, ctx, std::move(cmd));
    return rp;
  }
  if (st.recovering) {
    auto rp = self->make_response_promise();
    st.waiting.push_back(waiting_start{rp, ctx, std::move(cmd)});
    return rp;
  }
  auto rp = self->make_response_promise();
  start_here(self, ctx, std::move(cmd), rp);
  return rp;
}

// Asks a live instance; one that ended meanwhile is answered from its log.
template <class Reply, class... Ts>
void ask_live(self_ptr self, caf::response_promise rp, const caf::actor& live,
              const std::string& id, std::function<Reply(saga_snapshot)> from_stored,
              Ts... xs) {
  self->request(live, std::chrono::seconds(10), xs...)
      .then([rp](Reply& r) mutable { rp.deliver(std::move(r)); },
            [=](caf::error&) mutable {
              load_stored(self, id,
                          [rp, from_stored](caf::expected<saga_snapshot> s) mutable {
                            if (s)
                              rp.deliver(from_stored(std::move(*s)));
                            else
                              rp.deliver(std::move(s.error()));
                          });
            });
}

// Answers a query about `id` from the live instance, the store, or the owner.
template <class Reply, class Forward, class Ask>
void by_id(self_ptr self, const call_context& ctx, const std::string& id, bool forwarded,
           Forward forward_msg, Ask ask, std::function<Reply(saga_snapshot)> from_stored,
           caf::response_promise rp) {
  auto& st = self->state;
  auto owner = owner_from_id(id);
  if (owner.empty()) {
    rp.deliver(make_error(errc::bad_input, "'" + id + "' is not a saga id"));
    return;
  }
  if (owner != me(self)) {
    if (forwarded)
      rp.deliver(make_error(errc::not_found, "no saga with id '" + id + "'"));
    else
      forward_to(self, rp, owner, ctx, forward_msg);
    return;
  }
  auto i = st.entries.find(id);
  if (i == st.entries.end()) {
    if (st.recovering) {
      // The log is still being read: ask again once it is.
      st.waiting_queries.push_back([=] {
        by_id<Reply>(self, ctx, id, forwarded, forward_msg, ask, from_stored, rp);
      });
      return;
    }
    rp.deliver(make_error(errc::not_found, "no saga with id '" + id + "'"));
    return;
  }
  if (i->second.live) {
    ask(rp, i->second.live);
    return;
  }
  load_stored(self, id, [rp, from_stored](caf::expected<saga_snapshot> s) mutable {
    if (s)
      rp.deliver(from_stored(std::move(*s)));
    else
      rp.deliver(std::move(s.error()));
  });
}

saga_page list_here(self_ptr self, const list_sagas& q,
                    std::optional<saga_status> status) {
  saga_page page;
  auto& entries = self->state.entries;
  auto it = q.page_token.empty() ? entries.begin() : entries.upper_bound(q.page_token);
  for (; it != entries.end(); ++it) {
    auto& [id, e] = *it;
    if ((!q.type.empty() && e.type != q.type) || (status && e.status != *status))
      continue;
    if (page.sagas.size() == q.page_size) {
      page.next_page_token = page.sagas.back().id;
      break;
    }
    page.sagas.push_back(
        saga_summary{id, e.type, e.status, e.current_step, e.created_ns, e.updated_ns});
  }
  return page;
}

caf::result<saga_page> on_list(self_ptr self, const call_context& ctx, list_sagas q) {
  if (q.page_size == 0 || q.page_size > 1000)
    return make_error(errc::bad_input, "page_size must be between 1 and 1000");
  std::optional<saga_status> status;
  if (!q.status.empty()) {
    saga_status parsed;
    if (!parse_saga_status(q.status, parsed))
      return make_error(errc::bad_input, "unknown saga status '" + q.status + "'");
    status = parsed;
  }
  auto local = list_here(self, q, status);
  auto cluster = local_cluster(self->system());
  if (!q.cluster_wide || !cluster)
    return local;
  // Ids sort by creation time on every node, so one cursor pages them all.
  auto rp = self->make_response_promise();
  self->request(cluster, std::chrono::seconds(2), members_atom::value)
      .then(
          [=](const std::vector<member_info>& members) mutable {
            std::vector<caf::actor> peers;
            for (auto& m : members)
              if (m.name != me(self))
                for (auto& svc : m.services)
                  if (svc.name == saga_manager_name)
                    peers.push_back(svc.handle);
            struct gather {
              saga_page merged;
              bool more = false;
              size_t left = 0;
            };
            auto g = std::make_shared<gather>();
            g->merged = local;
            g->more = !local.next_page_token.empty();
            g->left = peers.size();
            auto finish = [=]() mutable {
              auto& v = g->merged.sagas;
              std::sort(v.begin(), v.end(),
                        [](const saga_summary& a, const saga_summary& b) {
                          return a.id < b.id;
                        });
              bool more = g->more || v.size() > q.page_size;
              if (v.size() > q.page_size)
                v.resize(q.page_size);
              g->merged.next_page_token =
                  more && !v.empty() ? v.back().id : std::string{};
              rp.deliver(std::move(g->merged));
            };
            if (peers.empty()) {
              finish();
              return;
            }
            auto node_q = q;
            node_q.cluster_wide = false;
            for (auto& peer : peers) {
              self->request(caf::actor_cast<saga_manager_actor>(peer),
                            std::chrono::seconds(5), ctx, node_q)
                  .then(
                      [=](saga_page& page) mutable {
                        for (auto& s : page.sagas)
                          g->merged.sagas.push_back(std::move(s));
                        g->more |= !page.next_page_token.empty();
                        if (--g->left == 0)
                          finish();
                      },
                      [=](caf::error& err) mutable {
                        spdlog::warn("listing sagas: a node did not answer: {}",
                                     describe(err));
                        if (--g->left == 0)
                          finish();
                      });
            }
          },
          [=](caf::error&) mutable { rp.deliver(local); });
  return rp;
}

void on_progress(self_ptr self, const saga_progress& p) {
  auto i = self->state.entries.find(p.id);
  if (i == self->state.entries.end())
    return;
  auto& e = i->second;
  if (e.status != p.status)
    e.ended = nullptr;
  e.status = p.status;
  e.current_step = p.current_step;
  e.updated_ns = p.updated_ns;
  e.first_seq = p.first_seq;
  e.next_seq = p.next_seq;
  if (e.stall_reported) {
    e.stall_reported = false;
    self->state.rm.stalled->Decrement();
  }
}

void resume_some(self_ptr self);

// An instance answers `resume` once it has sent its first requests; at most
// sagas.recovery_batch resume at once, so the scheduler's queue (and with it
// the latency of every other request on the node) stays short however many
// sagas a restart finds.
void resume(self_ptr self, recovered r, std::string force_reason) {
  auto& st = self->state;
  auto def = find_def(self, r.snapshot->type, r.snapshot->version);
  auto inst =
      spawn_live(self, def, std::move(*r.snapshot), r.first_seq, r.next_seq, false);
  ++st.resuming;
  self->request(inst, caf::infinite, resume_atom::value, std::move(force_reason))
      .then(
          [self](caf::ok_atom) {
            --self->state.resuming;
            resume_some(self);
          },
          [self](caf::error&) {
            --self->state.resuming;
            resume_some(self);
          });
  st.rm.resumed->Increment();
}

void finish_recovered(self_ptr self, recovered r) {
  auto& st = self->state;
  if (r.id.empty())
    return;
  if (!r.corrupt.empty() || !r.snapshot) {
    st.rm.corrupt->Increment();
    spdlog::error("saga log of {} is unreadable ({}); the instance is skipped and its "
                  "records are kept for an operator",
                  r.id, r.corrupt.empty() ? "no snapshot" : r.corrupt);
    return;
  }
  auto& s = *r.snapshot;
  auto& e = st.entries[r.id];
  e.type = s.type;
  e.idempotency_key = s.idempotency_key;
  e.status = s.status;
  e.current_step = current_step(s);
  e.created_ns = s.created_ns;
  e.updated_ns = s.updated_ns;
  e.first_seq = r.first_seq;
  e.next_seq = r.next_seq;
  st.by_key[key_of(s.type, s.idempotency_key)] = r.id;
  if (is_end_state(s.status))
    return;
  if (!find_def(self, s.type, s.version)) {
    spdlog::error("saga {} is of type '{}' version {}, which this node does not define; "
                  "it is parked for an operator",
                  r.id, s.type, s.version);
    s.reason = "definition '" + s.type + "' version " + std::to_string(s.version) +
               " is not registered";
    e.status = saga_status::parked;
    s.status = saga_status::parked;
    e.parked = std::make_shared<const saga_snapshot>(std::move(s));
    st.rm.parked->Increment();
    return;
  }
  st.to_resume.push_back(std::move(r));
  st.rm.pending->Increment();
}

void resume_some(self_ptr self) {
  auto& st = self->state;
  if (st.recovering)
    return;
  bool had_work = !st.to_resume.empty();
  while (st.resuming < st.ctx->settings.recovery_batch && !st.to_resume.empty()) {
    auto r = std::move(st.to_resume.front());
    st.to_resume.pop_front();
    st.rm.pending->Decrement();
    resume(self, std::move(r), {});
  }
  if (had_work && st.to_resume.empty())
    spdlog::info("saga recovery: every unfinished saga resumed ({} known)",
                 st.entries.size());
}

void recovery_done(self_ptr self) {
  auto& st = self->state;
  finish_recovered(self, std::move(st.current));
  st.current = recovered{};
  st.recovering = false;
  spdlog::info("saga log read: {} instances, {} to resume", st.entries.size(),
               st.to_resume.size());
  auto waiting = std::move(st.waiting);
  for (auto& w : waiting)
    start_here(self, w.ctx, std::move(w.cmd), w.rp);
  auto queries = std::move(st.waiting_queries);
  st.waiting_queries.clear();
  for (auto& q : queries)
    q();
  resume_some(self);
}

// Streams the log one page at a time; the manager answers other messages
// between pages.
void read_page(self_ptr self, std::string start_after) {
  self->request(self->state.ctx->store, caf::infinite, store_scan_atom::value,
                store_column::sagas, std::string{saga_log::all_instances_prefix},
                std::move(start_after), uint32_t{2048})
      .then(
          [self](const scan_page& page) {
            auto& st = self->state;
            for (auto& [key, value] : page.entries) {
              std::string id;
              uint64_t seq = 0;
              if (!saga_log::parse_record_key(key, id, seq))
                continue;
              if (id != st.current.id) {
                finish_recovered(self, std::move(st.current));
                st.current = recovered{};
                st.current.id = id;
                st.current.first_seq = seq;
              }
              auto& cur = st.current;
              cur.next_seq = seq + 1;
              if (!cur.corrupt.empty())
                continue;
              std::string error;
              auto rec = saga_log::decode(self->system(), value, error);
              if (!rec) {
                cur.corrupt = "record " + std::to_string(seq) + ": " + error;
              } else if (rec->snapshot) {
                cur.snapshot = std::move(rec->snapshot);
                cur.first_seq = seq;
              } else if (!cur.snapshot) {
                cur.corrupt = "record " + std::to_string(seq) + " precedes any snapshot";
              } else if (!saga_log::apply(*cur.snapshot, *rec->change, error)) {
                cur.corrupt = "record " + std::to_string(seq) + ": " + error;
              }
            }
            if (page.more && !page.entries.empty())
              read_page(self, page.entries.back().first);
            else
              recovery_done(self);
          },
          [self](caf::error& err) {
            spdlog::critical("cannot read the saga log: {}", describe(err));
            self->quit(err);
          });
}

void sweep(self_ptr self) {
  auto& st = self->state;
  auto now = wall_now_ns();
  auto retention = st.ctx->settings.retention.count();
  write_batch batch;
  size_t removed = 0;
  for (auto it = st.entries.begin(); it != st.entries.end();) {
    auto& [id, e] = *it;
    if (is_end_state(e.status) && !e.live && now - e.updated_ns > retention) {
      for (auto seq = e.first_seq; seq < e.next_seq; ++seq)
        batch.erase(store_column::sagas, saga_log::record_key(id, seq));
      st.by_key.erase(key_of(e.type, e.idempotency_key));
      it = st.entries.erase(it);
      ++removed;
      if (batch.ops.size() > 10000)
        break;
    } else {
      ++it;
    }
  }
  if (!batch.empty()) {
    self->request(st.ctx->store, caf::infinite, store_commit_atom::value,
                  std::move(batch))
        .then(
            [removed](caf::ok_atom) {
              spdlog::info("removed {} finished sagas past "
                           "their retention",
                           removed);
            },
            [](caf::error& err) {
              spdlog::warn("removing expired sagas failed: {}", describe(err));
            });
  }
  auto stall = st.ctx->settings.stall_after.count();
  for (auto& [id, e] : st.entries) {
    if (!e.live || is_end_state(e.status) || e.stall_reported ||
        now - e.updated_ns < stall)
      continue;
    e.stall_reported = true;
    st.rm.stalled->Increment();
    spdlog::warn("saga {} ({}) has made no progress for {}s: {} at step '{}'", id, e.type,
                 (now - e.updated_ns) / 1000000000, to_string(e.status), e.current_step);
  }
}

recovery_metrics make_recovery_metrics() {
  auto& reg = metrics::instance().registry();
  static auto& pending = prometheus::BuildGauge()
                             .Name("troupe_saga_recovery_pending")
                             .Help("Unfinished sagas read from the log, not yet resumed.")
                             .Register(reg);
  static auto& resumed = prometheus::BuildCounter()
                             .Name("troupe_saga_recovered_total")
                             .Help("Unfinished sagas resumed after a restart.")
                             .Register(reg);
  static auto& corrupt = prometheus::BuildCounter()
                             .Name("troupe_saga_log_unreadable_total")
                             .Help("Saga instances skipped because their log is corrupt.")
                             .Register(reg);
  static auto& parked = prometheus::BuildGauge()
                            .Name("troupe_saga_parked")
                            .Help("Sagas whose definition version is not registered.")
                            .Register(reg);
  static auto& stalled =
      prometheus::BuildGauge()
          .Name("troupe_saga_stalled")
          .Help("Running sagas without progress for sagas.stall_after.")
          .Register(reg);
  return {&pending.Add({}), &resumed.Add({}), &corrupt.Add({}), &parked.Add({}),
          &stalled.Add({})};
}

std::shared_ptr<type_metrics> make_type_metrics(const saga_definition& def) {
  auto& reg = metrics::instance().registry();
  static auto& started = prometheus::BuildCounter()
                             .Name("troupe_saga_started_total")
                             .Help("Sagas started, per type.")
                             .Register(reg);
  static auto& ended = prometheus::BuildCounter()
                           .Name("troupe_saga_ended_total")
                           .Help("Sagas that reached an end state, per type and state.")
                           .Register(reg);
  static auto& duration = prometheus::BuildHistogram()
                              .Name("troupe_saga_duration_seconds")
                              .Help("Time from start to end state, per type and state.")
                              .Register(reg);
  static auto& in_flight = prometheus::BuildGauge()
                               .Name("troupe_saga_in_flight")
                               .Help("Saga instances running or compensating, per type.")
                               .Register(reg);
  static auto& step_latency = prometheus::BuildHistogram()
                                  .Name("troupe_saga_step_seconds")
                                  .Help("Latency of one step attempt, per type and step.")
                                  .Register(reg);
  static auto& steps = prometheus::BuildCounter()
                           .Name("troupe_saga_steps_total")
                           .Help("Step attempts by outcome, per type and step.")
                           .Register(reg);
  static const prometheus::Histogram::BucketBoundaries buckets{
      1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0};
  auto m = std::make_shared<type_metrics>();
  m->started = &started.Add({{"type", def.type}});
  for (auto s : {saga_status::completed, saga_status::compensated,
                 saga_status::failed_compensation, saga_status::cancelled}) {
    m->ended[s] = &ended.Add({{"type", def.type}, {"state", to_string(s)}});
    m->duration[s] =
        &duration.Add({{"type", def.type}, {"state", to_string(s)}}, buckets);
  }
  m->in_flight = &in_flight.Add({{"type", def.type}});
  for (auto* step : def.steps()) {
    auto labels = [&](const char* outcome) {
      return std::map<std::string, std::string>{
          {"type", def.type}, {"step", step->name}, {"outcome", outcome}};
    };
    m->steps[step->name] = type_metrics::step_metrics{
        &step_latency.Add({{"type", def.type}, {"step", step->name}}, buckets),
        &steps.Add(labels("succeeded")),
        &steps.Add(labels("retried")),
        &steps.Add(labels("failed")),
        &steps.Add(labels("compensated")),
        &steps.Add(labels("compensation_failed"))};
  }
  return m;
}

manager_actor::behavior_type
manager(self_ptr self, saga_settings settings,
        std::vector<std::shared_ptr<const saga_definition>> definitions) {
  auto& st = self->state;
  st.ctx = std::make_shared<instance_context>();
  st.ctx->settings = std::move(settings);
  st.ctx->store = local_store(self->system());
  st.ctx->manager = caf::actor_cast<caf::actor>(self);
  st.ctx->directory = std::make_shared<service_directory>();
  for (auto& def : definitions) {
    st.defs[def->type][def->version] = def;
    if (!st.ctx->metrics.count(def->type))
      st.ctx->metrics[def->type] = make_type_metrics(*def);
  }
  st.rm = make_recovery_metrics();
  if (!st.ctx->store) {
    spdlog::critical("sagas need the node's store: set store.path");
    self->quit(make_error(errc::internal, "no store"));
  }
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto i = st.live_ids.find(msg.source);
    if (i == st.live_ids.end())
      return;
    auto id = i->second;
    st.live_ids.erase(i);
    auto e = st.entries.find(id);
    if (e == st.entries.end())
      return;
    e->second.live = nullptr;
    if (!msg.reason || is_end_state(e->second.status))
      return;
    // A crashed instance is restarted from its log; one that keeps crashing
    // compensates instead of running forever.
    auto crashes = ++e->second.crashes;
    spdlog::warn("saga {} instance crashed ({}); restarting it from its log", id,
                 describe(msg.reason));
    self->request(st.ctx->store, std::chrono::seconds(30), store_scan_atom::value,
                  store_column::sagas, saga_log::instance_prefix(id), std::string{},
                  uint32_t{1u << 20})
        .then(
            [self, id, crashes, reason = describe(msg.reason)](const scan_page& page) {
              std::string error;
              auto s = fold(self->system(), page, error);
              if (!s || page.entries.empty()) {
                spdlog::error("saga {} cannot restart: {}", id, error);
                return;
              }
              recovered r;
              r.id = id;
              r.snapshot = std::move(s);
              std::string ignored;
              saga_log::parse_record_key(page.entries.front().first, ignored,
                                         r.first_seq);
              saga_log::parse_record_key(page.entries.back().first, ignored, r.next_seq);
              ++r.next_seq;
              resume(self, std::move(r),
                     crashes >= 3 ? "instance crashed " + std::to_string(crashes) +
                                        " times: " + reason
                                  : std::string{});
            },
            [id](caf::error& err) {
              spdlog::error("saga {} cannot restart: {}", id, describe(err));
            });
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // Instances are linked so they stop with the manager; their own exits
    // arrive as down messages.
    if (self->state.live_ids.count(msg.source) > 0 || !msg.reason)
      return;
    self->quit(msg.reason);
  });
  if (st.ctx->store)
    read_page(self, {});
  self->delayed_send(self, st.ctx->settings.sweep_interval, saga_tick_atom::value);
  auto actor_name = std::string{self->name()};
  auto m = metrics::instance().for_actor_type(actor_name);
  using detail::wrap_handler;
  return {
      [](drain_atom) { return drained_atom::value; },
      wrap_handler(actor_name, m,
                   [self](const call_context& ctx, const start_saga& cmd) {
                     return on_start(self, ctx, cmd);
                   }),
      wrap_handler(
          actor_name, m,
          [self](const call_context& ctx,
                 const get_saga& q) -> caf::result<saga_snapshot> {
            auto rp = self->make_response_promise();
            auto id = q.id;
            std::function<saga_snapshot(saga_snapshot)> same = [](saga_snapshot s) {
              return s;
            };
            by_id<saga_snapshot>(
                self, ctx, id, q.forwarded, get_saga{id, true},
                [self, id, same](caf::response_promise& rp, const caf::actor& live) {
                  ask_live<saga_snapshot>(self, rp, live, id, same, inspect_atom::value);
                },
                same, rp);
            return rp;
          }),
      wrap_handler(
          actor_name, m,
          [self](const call_context& ctx,
                 const cancel_saga& q) -> caf::result<saga_snapshot> {
            auto rp = self->make_response_promise();
            auto id = q.id;
            std::function<saga_snapshot(saga_snapshot)> same = [](saga_snapshot s) {
              return s;
            };
            by_id<saga_snapshot>(
                self, ctx, id, q.forwarded, cancel_saga{id, true},
                [self, id, same](caf::response_promise& rp, const caf::actor& live) {
                  ask_live<saga_snapshot>(self, rp, live, id, same, cancel_atom::value);
                },
                same, rp);
            return rp;
          }),
      wrap_handler(actor_name, m,
                   [self](const call_context& ctx, const list_sagas& q) {
                     return on_list(self, ctx, q);
                   }),
      wrap_handler(actor_name, m,
                   [self](const call_context& ctx,
                          const watch_saga& q) -> caf::result<watch_started> {
                     auto rp = self->make_response_promise();
                     auto id = q.id;
                     auto subscriber = q.subscriber;
                     std::function<watch_started(saga_snapshot)> ended =
                         [](saga_snapshot s) { return watch_started{std::move(s)}; };
                     by_id<watch_started>(
                         self, ctx, id, q.forwarded, watch_saga{id, subscriber, true},
                         [self, id, subscriber, ended](caf::response_promise& rp,
                                                       const caf::actor& live) {
                           ask_live<watch_started>(self, rp, live, id, ended,
                                                   watch_atom::value, subscriber);
                         },
                         ended, rp);
                     return rp;
                   }),
      [self](const call_context&, const saga_progress& p) { on_progress(self, p); },
      [self](saga_tick_atom) {
        sweep(self);
        self->delayed_send(self, self->state.ctx->settings.sweep_interval,
                           saga_tick_atom::value);
      },
      [self](resume_more_atom) { resume_some(self); }, // kept for the interface
  };
}

} // namespace

std::string owner_of(const std::string& idempotency_key,
                     const std::vector<std::string>& owners) {
  // Rendezvous hashing: each owner scores the key; the highest wins. Adding or
  // removing one owner moves only the keys that owner wins.
  std::string best;
  uint64_t best_score = 0;
  for (auto& owner : owners) {
    uint64_t h = 1469598103934665603ull; // FNV-1a, stable across builds
    for (char c : owner)
      h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (char c : idempotency_key)
      h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    if (best.empty() || h > best_score) {
      best = owner;
      best_score = h;
    }
  }
  return best;
}

saga_manager_actor
spawn_saga_manager(caf::actor_system& sys, saga_settings settings,
                   std::vector<std::shared_ptr<const saga_definition>> definitions) {
  auto mgr = sys.spawn(manager, std::move(settings), std::move(definitions));
  return caf::actor_cast<saga_manager_actor>(mgr);
}

void add_saga_messages(message_catalog& catalog) {
  catalog.add<start_saga>("troupe.start_saga")
      .add<saga_started>("troupe.saga_started")
      .add<get_saga>("troupe.get_saga")
      .add<cancel_saga>("troupe.cancel_saga")
      .add<list_sagas>("troupe.list_sagas")
      .add<saga_page>("troupe.saga_page")
      .add<watch_saga>("troupe.watch_saga")
      .add<watch_started>("troupe.watch_started")
      .add<saga_snapshot>("troupe.saga_snapshot")
      .add<saga_progress>("troupe.saga_progress");
}

void add_sagas(node& n, std::vector<std::shared_ptr<const saga_definition>> definitions) {
  add_saga_messages(n.messages());
  declare_saga_config(n.schema());
  n.service<saga_manager_actor>(
      saga_manager_name, [definitions](caf::actor_system& sys, const config& cfg) {
        return spawn_saga_manager(sys, saga_settings_from(cfg), definitions);
      });
  n.needs_store(saga_manager_name);
  n.check_config(saga_manager_name, [](const config& cfg) { saga_settings_from(cfg); });
}

} // namespace troupe
