#pragma once

// The policy chain of one guarded dependency, independent of the target's
// interface. guard<Handle> (guard.hpp) runs one engine inside one actor and
// feeds it the calls; everything typed stays in the template, everything
// else is compiled once here. Callers never use this header directly.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/error.hpp>

#include <troupe/actors/bulkhead.hpp>
#include <troupe/actors/circuit_breaker.hpp>
#include <troupe/actors/deadline_clock.hpp>
#include <troupe/actors/dependency_metrics.hpp>
#include <troupe/actors/fallback.hpp>
#include <troupe/actors/fault_injector.hpp>
#include <troupe/actors/guard_admin.hpp>
#include <troupe/actors/resilience_policy.hpp>
#include <troupe/actors/retry_schedule.hpp>
#include <troupe/actors/token_bucket.hpp>
#include <troupe/runtime/call_context.hpp>

namespace troupe::resilience {

using time_point = caf::actor_clock::time_point;

/// The typed part of one call: its request, its response promise, and how to
/// send it. Implemented by guard<Handle> for each request type.
class call_op {
public:
  virtual ~call_op();
  /// Sends one attempt, without a CAF timeout (the engine keeps the time);
  /// the reply must reach guard_engine::succeeded (after delivering it, if
  /// guard_engine::in_flight still knows the attempt) or guard_engine::failed,
  /// both of which accept replies of attempts that already ended.
  virtual void send(const caf::actor& target, const call_context& ctx, uint64_t id,
                    uint32_t attempt) = 0;
  /// Answers the caller with an error.
  virtual void fail(const caf::error& err) = 0;
  /// The types the call is answered with (a caf::detail::type_list).
  virtual const std::type_info& reply_type() const noexcept = 0;
  /// Answers from the fallback; false when it has nothing for this request.
  virtual bool answer_from(const fallback& fb, const call_context& ctx,
                           std::chrono::nanoseconds timeout) = 0;
};

/// What the engine needs from its actor.
class guard_host {
public:
  virtual ~guard_host();
  /// Calls guard_engine::timer(id, attempt, ...) at actor-clock time `at`.
  virtual void schedule(time_point at, uint64_t id, uint32_t attempt) = 0;
  /// Looks `name` up in the cluster registry and reports to
  /// guard_engine::resolved or guard_engine::resolve_failed.
  virtual void resolve(const std::string& name, std::chrono::nanoseconds timeout) = 0;
  /// Monitors the target, so guard_engine::target_down learns of its end.
  virtual void watch(const caf::actor& target) = 0;
  /// Sends a breaker event to the subscribers.
  virtual void publish(const breaker_state_changed& event) = 0;
};

/// Applies a resilience_policy to the calls of one dependency: rate limiter
/// once per call; then per attempt breaker, bulkhead (run, queue or reject),
/// fault injection, the send with the attempt's time limit; retries with
/// backoff; fallback on final failure. Time comes in as a parameter (the
/// actor clock), so the whole chain runs on CAF's virtual clock in tests.
class guard_engine {
public:
  guard_engine(resilience_policy policy, fallback fb, guard_host& host,
               deadline_clock clock, time_point now);
  ~guard_engine();

  guard_engine(const guard_engine&) = delete;
  guard_engine& operator=(const guard_engine&) = delete;

  /// The dependency is this actor (fixed).
  void set_target(caf::actor target);
  /// The dependency is the service registered under `name`, resolved on the
  /// first call and again after failures that suggest it moved or died.
  void set_target_name(std::string name);

  /// A new call from `caller`; answered through `op` sooner or later.
  void admit(std::unique_ptr<call_op> op, const call_context& ctx,
             const caf::actor_addr& caller, time_point now);
  /// The call's op while attempt `attempt` is in flight, else nullptr.
  call_op* in_flight(uint64_t id, uint32_t attempt);
  /// The attempt's reply was delivered to the caller.
  void succeeded(uint64_t id, uint32_t attempt, time_point now);
  /// The attempt failed (error reply, timeout, dead receiver).
  void failed(uint64_t id, uint32_t attempt, const caf::error& err, time_point now);
  /// A timer set through guard_host::schedule fired.
  void timer(uint64_t id, uint32_t attempt, time_point now);
  void resolved(const caf::actor& target, time_point now);
  void resolve_failed(const caf::error& err, time_point now);
  void target_down(const caf::actor_addr& source, time_point now);

  void inject(const fault_settings& faults) { faults_.update(faults); }
  guard_stats stats(time_point now);
  /// Calls admitted and not answered yet.
  size_t active() const noexcept { return calls_.size(); }
  /// Runs `f` once no call is active (at once if none is).
  void when_idle(std::function<void()> f);
  /// Answers every active call with `err` (the guard is stopping).
  void abandon(const caf::error& err);

  const resilience_policy& policy() const noexcept { return policy_; }
  const caf::actor& target() const noexcept { return target_; }

private:
  enum class phase : uint8_t {
    starting,
    queued,
    resolving,
    delaying,
    in_flight,
    backing_off
  };

  struct call {
    uint64_t id = 0;
    std::unique_ptr<call_op> op;
    call_context ctx;
    time_point deadline;         ///< of the whole call (caller, budget)
    time_point attempt_deadline; ///< of the current attempt
    time_point sent_at;
    phase state = phase::starting;
    uint32_t attempt = 1;
    errc injected = errc::none;
    circuit_breaker::permission permit;
    retry_schedule retry;
    /// Neighbours in the list of attempts in flight, ordered by deadline.
    call* earlier = nullptr;
    call* later = nullptr;
    bool linked = false;
  };

  call* find(uint64_t id, uint32_t attempt);
  // Attempts in flight sit in a list ordered by deadline (calls_ never moves
  // its elements), watched by one CAF timer re-armed for the earliest
  // deadline. That replaces a CAF request timeout per call, which costs two
  // events on CAF's clock thread (set, cancel) for every call.
  void link_in_flight(call& c);
  void unlink_in_flight(call& c);
  void arm(time_point due);
  void expire_attempts(time_point now);
  void replace_target(caf::actor target);
  void start_attempt(call& c, time_point now);
  void dispatch(call& c, time_point now);
  void send(call& c, time_point now);
  void attempt_done(call& c, time_point now, const caf::error& err);
  void finish(call& c, const caf::error& err, call_outcome outcome, time_point now);
  void reject(std::unique_ptr<call_op>& op, const call_context& ctx,
              const caf::error& err, call_outcome outcome);
  void answer(call_op& op, const call_context& ctx, const caf::error& err,
              std::chrono::nanoseconds left, time_point now);
  void pump_queue(time_point now);
  void request_resolution(time_point now);
  void on_transition(const breaker_transition& t, time_point now);
  void count(call_outcome o);
  void update_gauges();
  void check_idle();
  caf::error timeout_error(const char* what) const;
  const caf::error& circuit_open_error(std::chrono::nanoseconds retry_after);

  resilience_policy policy_;
  fallback fallback_;
  guard_host& host_;
  deadline_clock clock_;
  dependency_metrics metrics_;
  circuit_breaker breaker_;
  bulkhead bulkhead_;
  fault_injector faults_;
  std::optional<token_bucket> bucket_;
  std::map<caf::actor_addr, token_bucket> caller_buckets_;
  std::mt19937_64 rng_;
  std::unordered_map<uint64_t, call> calls_;
  uint64_t next_id_ = 1;
  uint64_t key_counter_ = 0;
  /// Random per engine, in every key it makes: a restarted guard (whose
  /// counter starts again) never repeats an earlier incarnation's key.
  std::string incarnation_;
  std::array<uint64_t, call_outcome_count> outcomes_{};
  std::vector<uint64_t> expired_; ///< scratch for bulkhead::leave
  std::vector<uint64_t> ready_;   ///< calls that got a slot, to dispatch
  std::vector<std::function<void()>> idle_waiters_;
  bool pumping_ = false;
  call* earliest_ = nullptr; ///< head of the in-flight list
  call* latest_ = nullptr;   ///< its tail
  time_point armed_until_ = time_point::max();
  caf::error open_error_;
  std::chrono::milliseconds open_error_ms_{-1};
  // target
  caf::actor target_;
  bool target_down_ = false; ///< a fixed target that ended
  std::string target_name_;
  bool resolving_ = false;
  time_point last_resolution_{};
  std::vector<uint64_t> waiting_for_target_;
};

} // namespace troupe::resilience
