#include "saga_instance.hpp"

#include <random>
#include <set>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>

#include "saga_log.hpp"

namespace troupe::sagas_detail {

caf::actor service_directory::find(const std::string& name) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = handles_.find(name);
  return i == handles_.end() ? caf::actor{} : i->second;
}

void service_directory::put(const std::string& name, caf::actor handle) {
  std::lock_guard<std::mutex> guard{mtx_};
  handles_[name] = std::move(handle);
}

void service_directory::forget(const std::string& name, const caf::actor& handle) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = handles_.find(name);
  if (i != handles_.end() && i->second == handle)
    handles_.erase(i);
}

int64_t wall_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

saga_snapshot initial_state(const saga_definition& def, std::string id,
                            const start_saga& cmd, std::string correlation_id,
                            int64_t now_ns, int64_t deadline_ns) {
  saga_snapshot s;
  s.id = std::move(id);
  s.type = def.type;
  s.version = def.version;
  s.idempotency_key = cmd.idempotency_key;
  s.correlation_id = std::move(correlation_id);
  s.input = cmd.input;
  s.created_ns = now_ns;
  s.updated_ns = now_ns;
  s.deadline_ns = deadline_ns;
  for (auto* step : def.steps()) {
    step_record r;
    r.name = step->name;
    s.steps.push_back(std::move(r));
  }
  return s;
}

saga_snapshot decorated(caf::actor_system& sys, const saga_definition& def,
                        saga_snapshot s) {
  s.input_text = def.describe_input(sys, s.input);
  auto steps = def.steps();
  for (size_t i = 0; i < steps.size() && i < s.steps.size(); ++i) {
    auto& rec = s.steps[i];
    if (!rec.reply.empty())
      rec.reply_text = steps[i]->describe_reply(sys, rec.reply);
    if (rec.status != step_status::pending) {
      try {
        rec.request_text = caf::to_string(steps[i]->action.build(sys, s));
      } catch (const std::exception&) {
        // Built from data the log no longer decodes: leave it out.
      }
    }
  }
  return s;
}

namespace {

using step_key = std::pair<size_t, bool>; // step index, compensation?

struct instance_state {
  static inline const char* name = "saga_instance";

  std::shared_ptr<const instance_context> ctx;
  std::shared_ptr<const saga_definition> def;
  std::vector<const step_definition*> steps;
  std::vector<size_t> group_of;
  std::shared_ptr<type_metrics> metrics;
  saga_snapshot s;
  uint64_t first_seq = 0;
  uint64_t next_seq = 0;
  uint32_t since_snapshot = 0;
  bool needs_initial_record = false;
  bool committing = false;
  bool ended_reported = false;
  std::vector<saga_log::event> pending;
  std::set<step_key> in_flight;
  std::set<step_key> waiting_retry;
  /// Forward steps whose request may have been applied: sent by this
  /// incarnation, or unanswered in the log it resumed from.
  std::set<size_t> maybe_applied;
  std::map<step_key, resilience::backoff> backoffs;
  std::map<step_key, std::chrono::steady_clock::time_point> sent_at;
  int64_t last_progress_ns = 0;
  saga_status last_progress_status = saga_status::running;
  std::vector<caf::actor> watchers;
  std::vector<caf::response_promise> answer_begin;
  std::vector<caf::response_promise> answer_cancel;
};

using self_ptr = caf::stateful_actor<instance_state>*;

// Retry jitter only: one generator per worker thread, not 2.5 KB per saga.
std::mt19937_64& retry_rng() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

void advance(self_ptr self);
void flush(self_ptr self);

type_metrics::step_metrics* step_metrics_of(self_ptr self, size_t i) {
  auto& m = self->state.metrics;
  if (!m)
    return nullptr;
  auto it = m->steps.find(self->state.steps[i]->name);
  return it == m->steps.end() ? nullptr : &it->second;
}

saga_log::event make_event(saga_log::event_kind kind, std::string step = {},
                           uint32_t attempt = 0) {
  saga_log::event ev;
  ev.kind = kind;
  ev.step = std::move(step);
  ev.attempt = attempt;
  return ev;
}

void push(self_ptr self, saga_log::event ev) {
  ev.at_ns = wall_now_ns();
  self->state.pending.push_back(std::move(ev));
}

const resilience::retry_settings& retry_of(self_ptr self, size_t i, bool compensation) {
  auto& st = self->state;
  if (compensation)
    return st.ctx->settings.compensation_retry;
  return st.steps[i]->retry ? *st.steps[i]->retry : st.ctx->settings.step_retry;
}

void notify(self_ptr self) {
  auto& st = self->state;
  // The manager hears of status changes at once and of other progress at
  // most once a second: it keeps listings and the stall watchdog, and would
  // otherwise see every commit of every instance.
  auto now = wall_now_ns();
  if (st.s.status != st.last_progress_status || is_end_state(st.s.status) ||
      now - st.last_progress_ns >= 1'000'000'000) {
    st.last_progress_ns = now;
    st.last_progress_status = st.s.status;
    saga_progress p{st.s.id,         st.s.status,  current_step(st.s),
                    st.s.updated_ns, st.first_seq, st.next_seq};
    self->send(caf::actor_cast<saga_manager_actor>(st.ctx->manager), call_context{},
               std::move(p));
  }
  for (auto& w : st.watchers)
    self->send(w, st.s);
  if (is_end_state(st.s.status))
    st.watchers.clear();
}

void report_end(self_ptr self) {
  auto& st = self->state;
  if (st.ended_reported)
    return;
  st.ended_reported = true;
  if (auto& m = st.metrics) {
    if (auto i = m->ended.find(st.s.status); i != m->ended.end())
      i->second->Increment();
    if (auto i = m->duration.find(st.s.status); i != m->duration.end())
      i->second->Observe(static_cast<double>(st.s.ended_ns - st.s.created_ns) / 1e9);
    m->in_flight->Decrement();
  }
  auto log = st.s.status == saga_status::completed             ? spdlog::level::debug
             : st.s.status == saga_status::failed_compensation ? spdlog::level::err
                                                               : spdlog::level::info;
  spdlog::log(log, "saga {} ({}) ended {}{}{}", st.s.id, st.s.type,
              to_string(st.s.status), st.s.reason.empty() ? "" : ": ", st.s.reason);
}

// Everything in `pending` becomes durable in one commit; only then is it
// applied and acted on, so nothing is sent that the log does not yet imply.
void flush(self_ptr self) {
  auto& st = self->state;
  if (st.committing || (st.pending.empty() && !st.needs_initial_record))
    return;
  auto& sys = self->system();
  write_batch batch;
  auto events = std::move(st.pending);
  st.pending.clear();
  if (st.needs_initial_record) {
    batch.put(store_column::sagas, saga_log::record_key(st.s.id, st.next_seq++),
              saga_log::encode_snapshot(sys, st.s));
  }
  for (auto& ev : events) {
    batch.put(store_column::sagas, saga_log::record_key(st.s.id, st.next_seq++),
              saga_log::encode_event(sys, ev));
    ++st.since_snapshot;
  }
  bool compacting = st.since_snapshot >= st.ctx->settings.snapshot_every;
  saga_snapshot after = st.s;
  if (compacting || st.def->on_end) {
    std::string ignored;
    for (auto& ev : events)
      saga_log::apply(after, ev, ignored);
  }
  if (st.def->on_end && !is_end_state(st.s.status) && is_end_state(after.status)) {
    try {
      st.def->on_end(sys, after, batch);
    } catch (const std::exception& e) {
      // The end is recorded regardless: a saga never stays open because
      // what its end emits could not be written.
      spdlog::error("saga {} ({}): its end hook failed: {}", st.s.id, st.s.type,
                    e.what());
    }
  }
  if (compacting) {
    // A snapshot of the state after these events replaces every older record,
    // so retries never make an instance's log grow without bound.
    auto seq = st.next_seq++;
    batch.put(store_column::sagas, saga_log::record_key(st.s.id, seq),
              saga_log::encode_snapshot(sys, after));
    for (auto old = st.first_seq; old < seq; ++old)
      batch.erase(store_column::sagas, saga_log::record_key(st.s.id, old));
    st.first_seq = seq;
    st.since_snapshot = 0;
  }
  st.committing = true;
  self->request(st.ctx->store, caf::infinite, store_commit_atom::value, std::move(batch))
      .then(
          [self, events](caf::ok_atom) {
            auto& st = self->state;
            st.committing = false;
            bool was_initial = st.needs_initial_record;
            st.needs_initial_record = false;
            for (auto& ev : events) {
              std::string error;
              saga_log::apply(st.s, ev, error);
            }
            for (auto& rp : st.answer_begin)
              rp.deliver(saga_started{decorated(self->system(), *st.def, st.s), true});
            st.answer_begin.clear();
            if (!st.pending.empty()) {
              // More changes arrived meanwhile; cancel answers wait for theirs.
            } else {
              for (auto& rp : st.answer_cancel)
                rp.deliver(decorated(self->system(), *st.def, st.s));
              st.answer_cancel.clear();
            }
            (void)was_initial;
            notify(self);
            if (is_end_state(st.s.status)) {
              report_end(self);
              for (auto& rp : st.answer_cancel)
                rp.deliver(decorated(self->system(), *st.def, st.s));
              st.answer_cancel.clear();
              self->quit();
              return;
            }
            // Changes that arrived during the commit (answers of parallel
            // steps) go out in the next one; advance() waits for them.
            if (!st.pending.empty()) {
              flush(self);
              return;
            }
            advance(self);
          },
          [self](caf::error& err) {
            // The log is the truth: stop, and let the manager restart this
            // instance from what is durable.
            spdlog::error("saga {}: log append failed: {}", self->state.s.id,
                          describe(err));
            self->quit(err);
          });
}

// An answer that says the service did not apply the request (it refused it,
// or could not read it). Any other failure (a timeout above all) leaves the
// outcome open; with idempotent services a refusal after an earlier timed-out
// attempt still means no attempt was applied: an applied key answers its
// first reply.
bool proves_not_applied(errc code) {
  switch (code) {
  case errc::rejected:
  case errc::bad_input:
  case errc::not_found:
  case errc::interface_mismatch:
    return true;
  default:
    return false;
  }
}

void on_step_answer(self_ptr self, size_t i, bool compensation, uint32_t attempt,
                    caf::actor target, std::string reply, caf::error err) {
  auto& st = self->state;
  step_key key{i, compensation};
  st.in_flight.erase(key);
  auto* m = step_metrics_of(self, i);
  if (m && !compensation) {
    if (auto it = st.sent_at.find(key); it != st.sent_at.end())
      m->latency->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - it->second)
              .count());
  }
  const auto& name = st.steps[i]->name;
  if (!err) {
    if (compensation) {
      if (m)
        m->compensated->Increment();
      push(self, make_event(saga_log::event_kind::compensation_succeeded, name, attempt));
    } else {
      if (m)
        m->succeeded->Increment();
      auto ev = make_event(saga_log::event_kind::step_succeeded, name, attempt);
      ev.data = std::move(reply);
      push(self, std::move(ev));
      // The last step's success and the saga's end share one commit.
      bool last = st.s.status == saga_status::running;
      for (size_t j = 0; j < st.steps.size() && last; ++j)
        last = j == i || st.s.steps[j].status == step_status::succeeded;
      if (last && st.pending.size() == 1) {
        auto end = make_event(saga_log::event_kind::ended);
        end.status = saga_status::completed;
        push(self, std::move(end));
      }
    }
    st.backoffs.erase(key);
    flush(self);
    return;
  }
  auto code = classify(err);
  if (code == errc::service_unavailable || code == errc::timeout) {
    auto& call = compensation ? *st.steps[i]->compensation : st.steps[i]->action;
    st.ctx->directory->forget(call.service, target);
  }
  auto text = describe(err);
  const auto& retry = retry_of(self, i, compensation);
  bool may_retry =
      attempt < retry.max_attempts &&
      (compensation || (st.s.status == saga_status::running && is_retryable(code)));
  if (may_retry) {
    auto [it, fresh] = st.backoffs.try_emplace(key, retry.backoff);
    auto delay = it->second.next(retry_rng());
    if (m)
      m->retried->Increment();
    auto ev = make_event(compensation ? saga_log::event_kind::compensation_attempt_failed
                                      : saga_log::event_kind::step_attempt_failed,
                         name, attempt);
    ev.data = text;
    push(self, std::move(ev));
    st.waiting_retry.insert(key);
    self->delayed_send(self, delay, retry_atom::value, static_cast<uint64_t>(i),
                       compensation);
  } else {
    if (m)
      (compensation ? m->compensation_failed : m->failed)->Increment();
    // A step that may have been applied is compensated like a succeeded one.
    bool unknown =
        !compensation && st.maybe_applied.count(i) > 0 && !proves_not_applied(code);
    auto ev = make_event(compensation ? saga_log::event_kind::compensation_gave_up
                         : unknown    ? saga_log::event_kind::step_outcome_unknown
                                      : saga_log::event_kind::step_failed,
                         name, attempt);
    ev.data = text;
    push(self, std::move(ev));
    if (unknown)
      spdlog::info("saga {}: step {} may have been applied ({}); it is compensated by "
                   "its key",
                   st.s.id, name, text);
  }
  flush(self);
}

void resolve(self_ptr self, const detail::step_call& call,
             std::function<void(caf::actor, caf::error)> then) {
  auto& st = self->state;
  if (auto cached = st.ctx->directory->find(call.service)) {
    then(cached, {});
    return;
  }
  auto cluster = local_cluster(self->system());
  if (!cluster) {
    then({}, make_error(errc::service_unavailable, "no cluster actor on this node"));
    return;
  }
  auto dir = st.ctx->directory;
  auto service = call.service;
  self->request(cluster, std::chrono::seconds(2), find_service_atom::value, service,
                call.interface(self->system()))
      .then(
          [dir, service, then](const caf::actor& found) {
            dir->put(service, found);
            then(found, {});
          },
          [then](caf::error& err) { then({}, std::move(err)); });
}

void send_call(self_ptr self, size_t i, bool compensation) {
  auto& st = self->state;
  step_key key{i, compensation};
  const auto& step = *st.steps[i];
  const auto& call = compensation ? *step.compensation : step.action;
  auto& rec = st.s.steps[i];
  uint32_t attempt = (compensation ? rec.compensation_attempts : rec.attempts) + 1;
  if (!compensation && rec.status == step_status::pending) {
    rec.status = step_status::running;
    rec.started_ns = wall_now_ns();
  }
  caf::message request;
  try {
    request = call.build(self->system(), st.s);
  } catch (const std::exception& e) {
    // A builder that throws fails its step at once: retrying rebuilds the same.
    auto retry = retry_of(self, i, compensation);
    on_step_answer(
        self, i, compensation, compensation ? retry.max_attempts : attempt, {}, {},
        make_error(errc::bad_input, std::string{"request builder failed: "} + e.what()));
    return;
  }
  st.in_flight.insert(key);
  st.sent_at[key] = std::chrono::steady_clock::now();
  auto timeout = step.timeout.count() > 0 ? step.timeout : st.ctx->settings.step_timeout;
  call_context ctx;
  ctx.correlation_id = st.s.correlation_id;
  ctx.idempotency_key = st.s.id + "/" + step.name + (compensation ? "/compensate" : "");
  auto now = call_context::clock::now();
  ctx = ctx.narrowed(timeout, now);
  resolve(self, call,
          [self, i, compensation, attempt, ctx, timeout, request,
           &call](caf::actor target, caf::error err) mutable {
            if (err) {
              on_step_answer(self, i, compensation, attempt, {}, {}, std::move(err));
              return;
            }
            if (!compensation)
              self->state.maybe_applied.insert(i);
            call.send(self, target, std::move(ctx), caf::duration{timeout},
                      std::move(request),
                      [self, i, compensation, attempt, target](std::string reply,
                                                               caf::error e) {
                        on_step_answer(self, i, compensation, attempt, target,
                                       std::move(reply), std::move(e));
                      });
          });
}

bool busy(self_ptr self, size_t i, bool compensation) {
  auto& st = self->state;
  step_key key{i, compensation};
  return st.in_flight.count(key) > 0 || st.waiting_retry.count(key) > 0;
}

void advance(self_ptr self) {
  auto& st = self->state;
  if (st.committing || !st.pending.empty() || is_end_state(st.s.status))
    return;
  auto n = st.steps.size();
  if (st.s.status == saga_status::running) {
    if (st.s.deadline_ns != 0 && wall_now_ns() >= st.s.deadline_ns) {
      auto ev = make_event(saga_log::event_kind::compensation_requested);
      ev.data = "saga deadline exceeded";
      push(self, std::move(ev));
      flush(self);
      return;
    }
    size_t group = SIZE_MAX;
    for (size_t i = 0; i < n; ++i)
      if (st.s.steps[i].status != step_status::succeeded) {
        group = st.group_of[i];
        break;
      }
    if (group == SIZE_MAX) {
      auto ev = make_event(saga_log::event_kind::ended);
      ev.status = saga_status::completed;
      push(self, std::move(ev));
      flush(self);
      return;
    }
    for (size_t i = 0; i < n; ++i) {
      if (st.group_of[i] != group)
        continue;
      auto status = st.s.steps[i].status;
      if ((status == step_status::pending || status == step_status::running) &&
          !busy(self, i, false))
        send_call(self, i, false);
    }
    return;
  }
  // Compensating: wait until no forward request is unanswered (a late success
  // must be undone too), then undo completed steps group by group, last first.
  for (size_t i = 0; i < n; ++i)
    if (st.in_flight.count({i, false}) > 0)
      return;
  // A step left unanswered (its last attempt timed out, or the log this
  // instance resumed from ends with it sent) may have been applied: record
  // that, durably, before any compensation goes out.
  bool marked = false;
  for (size_t i = 0; i < n; ++i) {
    auto& rec = st.s.steps[i];
    if ((rec.status == step_status::pending || rec.status == step_status::running) &&
        st.maybe_applied.count(i) > 0) {
      auto ev =
          make_event(saga_log::event_kind::step_outcome_unknown, rec.name, rec.attempts);
      ev.data =
          rec.error.empty() ? "no answer before the saga began compensating" : rec.error;
      spdlog::info("saga {}: step {} was unanswered when the saga began compensating; "
                   "it is compensated by its key",
                   st.s.id, rec.name);
      push(self, std::move(ev));
      marked = true;
    }
  }
  if (marked) {
    flush(self);
    return;
  }
  for (size_t i = n; i-- > 0;) {
    auto group = st.group_of[i];
    bool work = false;
    for (size_t j = 0; j < n; ++j) {
      if (st.group_of[j] != group)
        continue;
      auto& rec = st.s.steps[j];
      if (rec.status != step_status::succeeded && !outcome_unknown(rec))
        continue;
      if (!st.steps[j]->compensation)
        continue;
      work = true;
      if (!busy(self, j, true))
        send_call(self, j, true);
    }
    if (work)
      return;
  }
  bool failed = false;
  for (auto& rec : st.s.steps)
    failed |= rec.status == step_status::compensation_failed;
  auto ev = make_event(saga_log::event_kind::ended);
  ev.status = failed                  ? saga_status::failed_compensation
              : st.s.cancel_requested ? saga_status::cancelled
                                      : saga_status::compensated;
  push(self, std::move(ev));
  flush(self);
}

void arm_deadline(self_ptr self) {
  auto& st = self->state;
  if (st.s.deadline_ns == 0 || st.s.status != saga_status::running)
    return;
  auto left = std::chrono::nanoseconds{st.s.deadline_ns - wall_now_ns()};
  self->delayed_send(self, std::max(left, std::chrono::nanoseconds{0}),
                     deadline_atom::value);
}

// A resumed instance: the steps of the group the log ends in that have no
// answer recorded may have been sent before the node went down. Once a
// compensation is recorded, every such step was already marked.
void note_unanswered_steps(self_ptr self) {
  auto& st = self->state;
  if (st.s.status != saga_status::running && st.s.status != saga_status::compensating)
    return;
  for (auto& rec : st.s.steps)
    if (rec.compensation_attempts > 0 || rec.status == step_status::compensated ||
        rec.status == step_status::compensation_failed)
      return;
  size_t group = SIZE_MAX;
  for (size_t i = 0; i < st.steps.size(); ++i)
    if (st.s.steps[i].status != step_status::succeeded) {
      group = st.group_of[i];
      break;
    }
  for (size_t i = 0; i < st.steps.size(); ++i) {
    auto status = st.s.steps[i].status;
    if (st.group_of[i] == group &&
        (status == step_status::pending || status == step_status::running))
      st.maybe_applied.insert(i);
  }
}

caf::behavior instance(self_ptr self, std::shared_ptr<const instance_context> ctx,
                       std::shared_ptr<const saga_definition> def, saga_snapshot state,
                       uint64_t first_seq, uint64_t next_seq, bool fresh) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.def = std::move(def);
  st.steps = st.def->steps();
  for (size_t g = 0; g < st.def->groups.size(); ++g)
    for (size_t k = 0; k < st.def->groups[g].size(); ++k)
      st.group_of.push_back(g);
  if (auto i = st.ctx->metrics.find(st.def->type); i != st.ctx->metrics.end())
    st.metrics = i->second;
  st.s = std::move(state);
  st.first_seq = first_seq;
  st.next_seq = next_seq;
  st.needs_initial_record = fresh;
  if (!fresh)
    note_unanswered_steps(self);
  return {
      [self](begin_atom) {
        auto rp = self->make_response_promise();
        self->state.answer_begin.push_back(rp);
        if (auto& m = self->state.metrics) {
          m->started->Increment();
          m->in_flight->Increment();
        }
        arm_deadline(self);
        flush(self);
        return rp;
      },
      [self](resume_atom, const std::string& compensate_because) {
        if (auto& m = self->state.metrics)
          m->in_flight->Increment();
        auto& st = self->state;
        if (!compensate_because.empty() && st.s.status == saga_status::running) {
          auto ev = make_event(saga_log::event_kind::compensation_requested);
          ev.data = compensate_because;
          push(self, std::move(ev));
          flush(self);
          return caf::ok_atom::value;
        }
        arm_deadline(self);
        advance(self);
        return caf::ok_atom::value;
      },
      [self](inspect_atom) {
        return decorated(self->system(), *self->state.def, self->state.s);
      },
      [self](cancel_atom) -> caf::result<saga_snapshot> {
        auto& st = self->state;
        if (st.s.status != saga_status::running && st.pending.empty() && !st.committing)
          return decorated(self->system(), *st.def, st.s);
        auto rp = self->make_response_promise();
        st.answer_cancel.push_back(rp);
        if (st.s.status == saga_status::running) {
          auto ev = make_event(saga_log::event_kind::compensation_requested);
          ev.data = "cancelled";
          ev.cancel = true;
          push(self, std::move(ev));
          flush(self);
        }
        return rp;
      },
      [self](watch_atom, const caf::actor& subscriber) {
        self->state.watchers.push_back(subscriber);
        return watch_started{decorated(self->system(), *self->state.def, self->state.s)};
      },
      [self](retry_atom, uint64_t i, bool compensation) {
        self->state.waiting_retry.erase({static_cast<size_t>(i), compensation});
        advance(self);
      },
      [self](deadline_atom) {
        auto& st = self->state;
        if (st.s.status != saga_status::running)
          return;
        auto ev = make_event(saga_log::event_kind::compensation_requested);
        ev.data = "saga deadline exceeded";
        push(self, std::move(ev));
        flush(self);
      },
  };
}

} // namespace

caf::actor spawn_instance(caf::local_actor* self,
                          std::shared_ptr<const instance_context> ctx,
                          std::shared_ptr<const saga_definition> def, saga_snapshot state,
                          uint64_t first_seq, uint64_t next_seq, bool fresh) {
  return self->spawn<caf::linked + caf::monitored>(instance, std::move(ctx),
                                                   std::move(def), std::move(state),
                                                   first_seq, next_seq, fresh);
}

} // namespace troupe::sagas_detail
