#include <troupe/actors/guard_engine.hpp>

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include <caf/sec.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/config.hpp>

namespace troupe::resilience {

namespace {

using ns = std::chrono::nanoseconds;
using namespace std::chrono_literals;

/// Timers with id 0 are the engine's own: attempt deadlines, or the breaker's.
constexpr uint32_t deadline_timer = 0;
constexpr uint32_t breaker_timer = 1;

/// Time between background re-resolutions of a named target after timeouts.
constexpr ns re_resolve_interval = 1s;

double seconds(ns d) {
  return std::chrono::duration<double>(d).count();
}

/// A duration for people: whole milliseconds (rounded up) from 1ms on.
std::string pretty(ns d) {
  if (d >= 1ms)
    return format_duration(std::chrono::ceil<std::chrono::milliseconds>(d));
  return format_duration(d);
}

uint64_t random_64() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

uint64_t seed_of(uint64_t configured) {
  return configured != 0 ? configured : random_64();
}

/// 16 hex digits, never from the policy's seed: two engines seeded alike
/// (tests, or a guard restarted with its configured seed) still differ.
std::string new_incarnation() {
  static constexpr char digits[] = "0123456789abcdef";
  auto v = random_64();
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4)
    out[static_cast<size_t>(i)] = digits[v & 0xF];
  return out;
}

} // namespace

call_op::~call_op() = default;
guard_host::~guard_host() = default;

guard_engine::guard_engine(resilience_policy policy, fallback fb, guard_host& host,
                           deadline_clock clock, time_point now)
    : policy_(std::move(policy))
    , fallback_(std::move(fb))
    , host_(host)
    , clock_(clock)
    , metrics_(dependency_metrics::for_dependency(policy_.dependency))
    , breaker_(policy_.breaker)
    , bulkhead_(policy_.bulkhead)
    , faults_(policy_.faults)
    , rng_(seed_of(policy_.seed))
    , incarnation_(new_incarnation()) {
  // Configuration cannot get here with it (the key's bounds reject it, and
  // policy_from_config checks again): a policy built in code that forgot it.
  if (policy_.timeout <= ns{0})
    throw std::invalid_argument(
        policy_.dependency + ": the resilience policy's timeout must be positive, got " +
        format_duration(policy_.timeout));
  if (policy_.rate_limit.enabled &&
      policy_.rate_limit.scope == rate_limit_scope::dependency)
    bucket_.emplace(policy_.rate_limit.rate, policy_.rate_limit.burst, now);
  breaker_.on_transition([this](const breaker_transition& t) { on_transition(t, {}); });
  metrics_.breaker_changed(breaker_state::closed);
  update_gauges();
}

guard_engine::~guard_engine() = default;

void guard_engine::set_target(caf::actor target) {
  target_name_.clear();
  replace_target(std::move(target));
}

void guard_engine::replace_target(caf::actor target) {
  target_ = std::move(target);
  target_down_ = false;
  if (target_)
    host_.watch(target_);
}

void guard_engine::set_target_name(std::string name) {
  target_ = nullptr;
  target_name_ = std::move(name);
}

// --- calls ------------------------------------------------------------------

void guard_engine::admit(std::unique_ptr<call_op> op, const call_context& ctx,
                         const caf::actor_addr& caller, time_point now) {
  // 1. Rate limiter, once per call (retries are bounded by max_attempts).
  if (policy_.rate_limit.enabled) {
    token_bucket* bucket = nullptr;
    if (bucket_) {
      bucket = &*bucket_;
    } else {
      auto i = caller_buckets_.find(caller);
      if (i == caller_buckets_.end()) {
        if (caller_buckets_.size() >= 4096) {
          // Forget callers whose bucket refilled completely: they are idle.
          for (auto j = caller_buckets_.begin(); j != caller_buckets_.end();)
            j = j->second.available(now) >= policy_.rate_limit.burst
                    ? caller_buckets_.erase(j)
                    : std::next(j);
        }
        i = caller_buckets_
                .emplace(caller, token_bucket{policy_.rate_limit.rate,
                                              policy_.rate_limit.burst, now})
                .first;
      }
      bucket = &i->second;
    }
    if (!bucket->try_take(now)) {
      reject(op, ctx,
             make_error(errc::rate_limited, policy_.dependency +
                                                ": rate limit reached; retry after " +
                                                pretty(bucket->time_to_next(now))),
             call_outcome::rate_limited);
      return;
    }
  }
  // 2. The caller's deadline: a call that is already late is never sent.
  auto caller_deadline =
      ctx.has_deadline() ? clock_.to_actor_time(ctx.deadline_ns, now) : time_point::max();
  if (caller_deadline <= now) {
    reject(op, ctx, timeout_error("the caller's deadline passed before the call started"),
           call_outcome::timeout);
    return;
  }
  // 3. Breaker, checked before anything is allocated: rejecting is cheap.
  auto permit = breaker_.try_acquire(now);
  if (!permit.granted) {
    reject(op, ctx, circuit_open_error(permit.retry_after),
           call_outcome::rejected_breaker);
    return;
  }
  auto id = next_id_++;
  auto [it, inserted] = calls_.try_emplace(id, call{id,
                                                    std::move(op),
                                                    ctx,
                                                    {},
                                                    {},
                                                    {},
                                                    phase::starting,
                                                    1,
                                                    errc::none,
                                                    permit,
                                                    retry_schedule{policy_.retry}});
  auto& c = it->second;
  if (c.ctx.correlation_id.empty())
    c.ctx.correlation_id = new_correlation_id();
  if (c.ctx.idempotency_key.empty()) {
    // Every attempt of this call carries the same key:
    // <correlation id>/<dependency>/<incarnation>.<counter>.
    char n[24];
    n[0] = '.';
    auto end = std::to_chars(n + 1, n + sizeof n, ++key_counter_).ptr;
    auto& key = c.ctx.idempotency_key;
    key.reserve(c.ctx.correlation_id.size() + 2 + policy_.dependency.size() +
                incarnation_.size() + static_cast<size_t>(end - n));
    key.append(c.ctx.correlation_id)
        .append(1, '/')
        .append(policy_.dependency)
        .append(1, '/')
        .append(incarnation_)
        .append(n, end);
  }
  auto limit = policy_.retry.enabled()
                   ? (policy_.retry.budget > ns{0} ? now + policy_.retry.budget
                                                   : time_point::max())
                   : now + policy_.timeout;
  c.deadline = std::min(caller_deadline, limit);
  // 4. Bulkhead, then send.
  c.attempt_deadline = std::min(c.deadline, now + policy_.timeout);
  switch (bulkhead_.enter(id, c.attempt_deadline)) {
  case bulkhead::admission::run:
    dispatch(c, now);
    break;
  case bulkhead::admission::queue:
    c.state = phase::queued;
    host_.schedule(c.attempt_deadline, id, c.attempt);
    break;
  case bulkhead::admission::reject:
    breaker_.release(c.permit);
    finish(c,
           make_error(errc::overloaded,
                      policy_.dependency + ": bulkhead full (" +
                          std::to_string(bulkhead_.in_use()) + " in flight, " +
                          std::to_string(bulkhead_.queued()) + " queued)"),
           call_outcome::rejected_bulkhead, now);
    break;
  }
  pump_queue(now);
  update_gauges();
}

void guard_engine::start_attempt(call& c, time_point now) {
  if (now >= c.deadline) {
    finish(c, timeout_error("the deadline passed before the next attempt"),
           call_outcome::timeout, now);
    return;
  }
  c.permit = breaker_.try_acquire(now);
  if (!c.permit.granted) {
    finish(c, circuit_open_error(c.permit.retry_after), call_outcome::rejected_breaker,
           now);
    return;
  }
  c.attempt_deadline = std::min(c.deadline, now + policy_.timeout);
  switch (bulkhead_.enter(c.id, c.attempt_deadline)) {
  case bulkhead::admission::run:
    dispatch(c, now);
    break;
  case bulkhead::admission::queue:
    c.state = phase::queued;
    host_.schedule(c.attempt_deadline, c.id, c.attempt);
    break;
  case bulkhead::admission::reject:
    breaker_.release(c.permit);
    finish(c, make_error(errc::overloaded, policy_.dependency + ": bulkhead full"),
           call_outcome::rejected_bulkhead, now);
    break;
  }
}

void guard_engine::dispatch(call& c, time_point now) {
  c.sent_at = now;
  if (faults_.active()) {
    auto d = faults_.decide(rng_);
    if (d.delay > ns{0}) {
      c.state = phase::delaying;
      c.injected = d.error;
      host_.schedule(std::min(now + d.delay, c.attempt_deadline), c.id, c.attempt);
      return;
    }
    if (d.error != errc::none) {
      attempt_done(c, now, make_error(d.error, policy_.dependency + ": injected fault"));
      return;
    }
  }
  send(c, now);
}

void guard_engine::send(call& c, time_point now) {
  if (!target_) {
    if (!target_name_.empty()) {
      c.state = phase::resolving;
      waiting_for_target_.push_back(c.id);
      host_.schedule(c.attempt_deadline, c.id, c.attempt);
      request_resolution(now);
      return;
    }
    attempt_done(
        c, now,
        make_error(errc::service_unavailable, policy_.dependency + ": no target"));
    return;
  }
  if (target_down_) {
    attempt_done(c, now,
                 make_error(errc::service_unavailable,
                            policy_.dependency + ": the target is down"));
    return;
  }
  c.state = phase::in_flight;
  // The attempt's deadline travels on; the call's own is kept in c.deadline.
  c.ctx.deadline_ns = clock_.to_wall_ns(c.attempt_deadline, now);
  c.op->send(target_, c.ctx, c.id, c.attempt);
  link_in_flight(c);
}

// --- attempt deadlines ------------------------------------------------------

void guard_engine::link_in_flight(call& c) {
  // Deadlines mostly come in order (now + timeout): usually appended at the end.
  auto* after = latest_;
  while (after != nullptr && after->attempt_deadline > c.attempt_deadline)
    after = after->earlier;
  c.earlier = after;
  c.later = after != nullptr ? after->later : earliest_;
  (c.earlier != nullptr ? c.earlier->later : earliest_) = &c;
  (c.later != nullptr ? c.later->earlier : latest_) = &c;
  c.linked = true;
  if (earliest_ == &c)
    arm(c.attempt_deadline);
}

void guard_engine::unlink_in_flight(call& c) {
  if (!c.linked)
    return;
  c.linked = false;
  (c.earlier != nullptr ? c.earlier->later : earliest_) = c.later;
  (c.later != nullptr ? c.later->earlier : latest_) = c.earlier;
  c.earlier = c.later = nullptr;
}

void guard_engine::arm(time_point due) {
  // A timer already set for this time or earlier fires soon enough: it
  // re-arms for whatever is due next.
  if (due >= armed_until_)
    return;
  armed_until_ = due;
  host_.schedule(due, 0, deadline_timer);
}

void guard_engine::expire_attempts(time_point now) {
  if (now >= armed_until_)
    armed_until_ = time_point::max();
  while (earliest_ != nullptr && earliest_->attempt_deadline <= now) {
    attempt_done(*earliest_, now, timeout_error("no reply in time"));
  }
  if (earliest_ != nullptr)
    arm(earliest_->attempt_deadline);
}

guard_engine::call* guard_engine::find(uint64_t id, uint32_t attempt) {
  auto i = calls_.find(id);
  if (i == calls_.end() || i->second.attempt != attempt)
    return nullptr;
  return &i->second;
}

call_op* guard_engine::in_flight(uint64_t id, uint32_t attempt) {
  auto* c = find(id, attempt);
  return c != nullptr && c->state == phase::in_flight ? c->op.get() : nullptr;
}

void guard_engine::succeeded(uint64_t id, uint32_t attempt, time_point now) {
  auto* c = find(id, attempt);
  if (c == nullptr || c->state != phase::in_flight)
    return;
  attempt_done(*c, now, caf::error{});
}

void guard_engine::failed(uint64_t id, uint32_t attempt, const caf::error& err,
                          time_point now) {
  auto* c = find(id, attempt);
  if (c == nullptr || c->state != phase::in_flight)
    return; // an attempt that already ended
  attempt_done(*c, now, err);
}

void guard_engine::attempt_done(call& c, time_point now, const caf::error& err) {
  unlink_in_flight(c);
  auto latency = now - c.sent_at;
  metrics_.observe_latency(seconds(latency));
  if (auto next = bulkhead_.leave(now, expired_))
    ready_.push_back(*next);
  auto code = classify(err);
  breaker_.record(c.permit, now, latency,
                  err && breaker_.settings().counts_as_failure(code));
  if (!err) {
    count(call_outcome::success);
    calls_.erase(c.id);
    check_idle();
  } else {
    if (!target_name_.empty()) {
      if (code == errc::service_unavailable)
        replace_target(nullptr); // dead or gone: resolve again before the next send
      else if (code == errc::timeout && !resolving_ &&
               now - last_resolution_ >= re_resolve_interval)
        request_resolution(now); // a dead remote node shows only as timeouts
    }
    auto normalized = err;
    if (err.category() == caf::atom("system") &&
        err.code() == static_cast<uint8_t>(caf::sec::request_timeout))
      normalized = timeout_error("no reply in time");
    std::optional<ns> delay;
    if (policy_.retry.enabled())
      delay = c.retry.after_failure(code, now, c.deadline, rng_);
    if (delay) {
      count(call_outcome::retried);
      c.attempt = c.retry.attempts();
      c.state = phase::backing_off;
      host_.schedule(now + *delay, c.id, c.attempt);
    } else {
      finish(c, normalized,
             code == errc::timeout ? call_outcome::timeout : call_outcome::failure, now);
    }
  }
  pump_queue(now);
  update_gauges();
}

void guard_engine::timer(uint64_t id, uint32_t attempt, time_point now) {
  if (id == 0) {
    if (attempt == breaker_timer)
      breaker_.poll(now); // the open wait is over: half-open, on time
    else
      expire_attempts(now);
    update_gauges();
    return;
  }
  auto* c = find(id, attempt);
  if (c == nullptr)
    return;
  switch (c->state) {
  case phase::queued:
    if (bulkhead_.withdraw(id)) {
      // Waited too long: answered, never sent.
      breaker_.release(c->permit);
      finish(*c, timeout_error("waited in the bulkhead queue past its deadline"),
             call_outcome::timeout, now);
    }
    break;
  case phase::resolving: {
    auto& w = waiting_for_target_;
    w.erase(std::remove(w.begin(), w.end(), id), w.end());
    attempt_done(*c, now, timeout_error("the target could not be resolved in time"));
    break;
  }
  case phase::delaying:
    if (now >= c->attempt_deadline)
      attempt_done(*c, now, timeout_error("no reply in time (injected latency)"));
    else if (c->injected != errc::none)
      attempt_done(*c, now,
                   make_error(c->injected, policy_.dependency + ": injected fault"));
    else
      send(*c, now);
    break;
  case phase::backing_off:
    start_attempt(*c, now);
    break;
  case phase::in_flight: // the in-flight list's timer covers these
  case phase::starting:
    break;
  }
  pump_queue(now);
  update_gauges();
}

void guard_engine::pump_queue(time_point now) {
  // Not re-entrant: a dispatch that fails at once (an injected error) frees
  // a slot again; the loop picks that up instead of recursing.
  if (pumping_)
    return;
  pumping_ = true;
  while (!expired_.empty() || !ready_.empty()) {
    if (!expired_.empty()) {
      auto id = expired_.back();
      expired_.pop_back();
      if (auto i = calls_.find(id); i != calls_.end()) {
        breaker_.release(i->second.permit);
        finish(i->second, timeout_error("waited in the bulkhead queue past its deadline"),
               call_outcome::timeout, now);
      }
      continue;
    }
    auto id = ready_.back();
    ready_.pop_back();
    if (auto i = calls_.find(id); i != calls_.end() && i->second.state == phase::queued)
      dispatch(i->second, now);
  }
  pumping_ = false;
}

void guard_engine::finish(call& c, const caf::error& err, call_outcome outcome,
                          time_point now) {
  auto left = c.deadline == time_point::max() ? policy_.timeout : c.deadline - now;
  auto ctx = c.ctx;
  auto op = std::move(c.op);
  calls_.erase(c.id); // `c` is gone from here on
  count(outcome);
  answer(*op, ctx, err, std::max(ns{left}, ns{1ms}), now);
  check_idle();
}

void guard_engine::reject(std::unique_ptr<call_op>& op, const call_context& ctx,
                          const caf::error& err, call_outcome outcome) {
  count(outcome);
  answer(*op, ctx, err, policy_.timeout, {});
}

void guard_engine::answer(call_op& op, const call_context& ctx, const caf::error& err,
                          ns left, time_point now) {
  auto& on = policy_.fallback_on;
  if (!fallback_.empty() && std::find(on.begin(), on.end(), classify(err)) != on.end()) {
    auto narrowed = ctx;
    if (now != time_point{})
      narrowed.deadline_ns = clock_.to_wall_ns(now + left, now);
    if (op.answer_from(fallback_, narrowed, left)) {
      count(call_outcome::fallback);
      return;
    }
  }
  op.fail(err);
}

// --- target resolution --------------------------------------------------------

void guard_engine::request_resolution(time_point now) {
  if (resolving_ || target_name_.empty())
    return;
  resolving_ = true;
  last_resolution_ = now;
  host_.resolve(target_name_, std::min(policy_.timeout, ns{2s}));
}

void guard_engine::resolved(const caf::actor& target, time_point now) {
  resolving_ = false;
  if (target && target != target_) {
    replace_target(target);
    spdlog::info("{}: resolved service '{}'", policy_.dependency, target_name_);
  }
  auto waiting = std::move(waiting_for_target_);
  waiting_for_target_.clear();
  for (auto id : waiting) {
    auto i = calls_.find(id);
    if (i == calls_.end() || i->second.state != phase::resolving)
      continue;
    if (target_)
      send(i->second, now);
    else
      attempt_done(
          i->second, now,
          make_error(errc::service_unavailable, policy_.dependency + ": no target"));
  }
  pump_queue(now);
  update_gauges();
}

void guard_engine::resolve_failed(const caf::error& err, time_point now) {
  resolving_ = false;
  spdlog::warn("{}: cannot resolve service '{}': {}", policy_.dependency, target_name_,
               describe(err));
  auto waiting = std::move(waiting_for_target_);
  waiting_for_target_.clear();
  for (auto id : waiting) {
    auto i = calls_.find(id);
    if (i == calls_.end() || i->second.state != phase::resolving)
      continue;
    auto code = classify(err);
    attempt_done(i->second, now,
                 code == errc::timeout
                     ? make_error(errc::service_unavailable,
                                  policy_.dependency + ": registry did not answer")
                     : err);
  }
  pump_queue(now);
  update_gauges();
}

void guard_engine::target_down(const caf::actor_addr& source, time_point now) {
  if (!target_ || target_.address() != source)
    return;
  if (!target_name_.empty()) {
    spdlog::info("{}: service '{}' went down; resolving again on the next call",
                 policy_.dependency, target_name_);
    replace_target(nullptr);
  } else {
    spdlog::warn("{}: the guarded actor is gone", policy_.dependency);
    target_down_ = true;
  }
  // Requests still out to it are never answered (CAF drops the bounced
  // replies of forwarded messages): fail them now.
  auto down =
      make_error(errc::service_unavailable, policy_.dependency + ": the target is down");
  std::vector<std::pair<uint64_t, uint32_t>> out;
  for (auto* c = earliest_; c != nullptr; c = c->later)
    out.emplace_back(c->id, c->attempt);
  for (auto& [id, attempt] : out)
    if (auto* c = find(id, attempt); c != nullptr && c->state == phase::in_flight)
      attempt_done(*c, now, down);
}

// --- breaker events, metrics, idleness -----------------------------------------

void guard_engine::on_transition(const breaker_transition& t, time_point) {
  metrics_.breaker_changed(t.to);
  breaker_state_changed ev{policy_.dependency, t.from,         t.to,
                           t.open_for,         t.window.calls, t.window.failures,
                           t.window.slow};
  switch (t.to) {
  case breaker_state::open:
    spdlog::warn("{}: circuit breaker {} -> open for {} ({} calls, {} failed, {} slow)",
                 policy_.dependency, to_string(t.from), pretty(t.open_for),
                 t.window.calls, t.window.failures, t.window.slow);
    if (policy_.breaker.automatic_half_open)
      host_.schedule(breaker_.open_until(), 0, breaker_timer);
    break;
  case breaker_state::half_open:
    spdlog::info("{}: circuit breaker half-open: letting {} probe calls through",
                 policy_.dependency, policy_.breaker.half_open_calls);
    break;
  case breaker_state::closed:
    spdlog::info("{}: circuit breaker closed ({} probes, {} failed, {} slow)",
                 policy_.dependency, t.window.calls, t.window.failures, t.window.slow);
    break;
  }
  host_.publish(ev);
}

void guard_engine::count(call_outcome o) {
  ++outcomes_[static_cast<size_t>(o)];
  metrics_.count(o);
}

void guard_engine::update_gauges() {
  metrics_.bulkhead(bulkhead_.in_use(), bulkhead_.queued());
}

const caf::error& guard_engine::circuit_open_error(ns retry_after) {
  // While open, every rejection within the same millisecond shares one error.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(std::max(retry_after, ns{0}));
  if (!open_error_ || ms != open_error_ms_) {
    open_error_ms_ = ms;
    open_error_ = make_error(errc::circuit_open, policy_.dependency +
                                                     ": circuit open; retry after " +
                                                     format_duration(ms));
  }
  return open_error_;
}

caf::error guard_engine::timeout_error(const char* what) const {
  return make_error(errc::timeout, policy_.dependency + ": " + what);
}

guard_stats guard_engine::stats(time_point now) {
  breaker_.poll(now);
  guard_stats s;
  s.dependency = policy_.dependency;
  s.breaker = breaker_.state();
  s.in_use = bulkhead_.in_use();
  s.queued = bulkhead_.queued();
  s.active = calls_.size();
  s.outcomes.assign(outcomes_.begin(), outcomes_.end());
  s.faults = faults_.settings();
  return s;
}

void guard_engine::when_idle(std::function<void()> f) {
  if (calls_.empty())
    f();
  else
    idle_waiters_.push_back(std::move(f));
}

void guard_engine::check_idle() {
  if (!calls_.empty() || idle_waiters_.empty())
    return;
  auto waiters = std::move(idle_waiters_);
  idle_waiters_.clear();
  for (auto& f : waiters)
    f();
}

void guard_engine::abandon(const caf::error& err) {
  earliest_ = latest_ = nullptr;
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& [id, c] : calls)
    if (c.op)
      c.op->fail(err);
}

} // namespace troupe::resilience
