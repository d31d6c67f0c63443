#pragma once

// Resilience guards: a handle with the target's own typed interface whose
// calls go through the dependency's policy chain (rate limiter, circuit
// breaker, bulkhead, timeout, retry, fallback, fault injection), applied
// inline by one actor per dependency: one extra hop per call, not one per
// policy.
//
//   auto payment = resilience::guard(sys, raw_payment, policy);      // a handle
//   auto payment = resilience::guard_service<payment_actor>(sys, "payment",
//                                                           policy); // by name
//   troupe::call(self, payment, 2s, charge{...}).then(...);  // as before
//
// Callers cannot tell a guarded handle from a plain one; the chain answers
// with troupe's errors (circuit_open, overloaded, rate_limited, timeout) or
// with the target's own reply or error.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <algorithm>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <spdlog/spdlog.h>

#include <troupe/actors/guard_admin.hpp>
#include <troupe/actors/guard_engine.hpp>
#include <troupe/actors/resilience_policy.hpp>
#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/runtime/service_ref.hpp>

namespace troupe::resilience {

using guard_timer_atom = caf::atom_constant<caf::atom("grdtimer")>;

namespace detail {

/// The signature through which the target's replies to a guarded request
/// type come back to the guard; void for signatures that are not guarded.
template <class Signature>
struct reply_signature {
  using type = void;
};

template <class Req, class... Out>
struct reply_signature<caf::typed_mpi<caf::detail::type_list<call_context, Req>,
                                      caf::output_tuple<Out...>>> {
  using type = typename caf::replies_to<Out...>::template with<Out...>;
};

template <class Req>
struct reply_signature<
    caf::typed_mpi<caf::detail::type_list<call_context, Req>, caf::output_tuple<void>>> {
  using type = void;
};

/// The distinct reply signatures of `Sigs...`, in a type_list.
template <class Acc, class... Sigs>
struct reply_signatures;

template <class... Acc>
struct reply_signatures<caf::detail::type_list<Acc...>> {
  using type = caf::detail::type_list<Acc...>;
};

template <class... Acc, class Sig, class... Rest>
struct reply_signatures<caf::detail::type_list<Acc...>, Sig, Rest...> {
  using r = typename reply_signature<Sig>::type;
  using next = std::conditional_t<std::is_void_v<r> || (std::is_same_v<r, Acc> || ...),
                                  caf::detail::type_list<Acc...>,
                                  caf::detail::type_list<Acc..., r>>;
  using type = typename reply_signatures<next, Rest...>::type;
};

template <class Handle, class Signatures>
struct guard_actor_of;

template <class Handle, class... Sigs>
struct guard_actor_of<Handle, caf::detail::type_list<Sigs...>> {
  template <class Replies>
  struct with_replies;
  template <class... Replies>
  struct with_replies<caf::detail::type_list<Replies...>> {
    using type =
        typename Handle::template extend_with<guard_admin_actor>::template extend<
            caf::reacts_to<guard_timer_atom, uint64_t, uint32_t>, Replies...>;
  };
  using replies = typename reply_signatures<caf::detail::type_list<>, Sigs...>::type;
  using type = typename with_replies<replies>::type;
};

} // namespace detail

/// The full interface of a guard for `Handle`: the target's signatures, the
/// admin interface, the guard's own timer message, and one signature per
/// reply type through which the target's replies come back. guard() returns
/// it converted to `Handle`.
template <class Handle>
using guard_actor =
    typename detail::guard_actor_of<Handle, typename Handle::signatures>::type;

/// State of a guard actor (the same for every interface).
struct guard_state {
  static inline const char* name = "resilience_guard";
  std::unique_ptr<guard_host> host;
  std::unique_ptr<guard_engine> engine;
  std::vector<caf::actor> subscribers;
  /// Answers calls still open with errc::shutting_down.
  ~guard_state();
};

namespace detail {

using ns = std::chrono::nanoseconds;

template <class Handle, class Self>
class actor_host final : public guard_host {
public:
  explicit actor_host(Self* self)
      : self_(self) {}

  void schedule(time_point at, uint64_t id, uint32_t attempt) override {
    self_->scheduled_send(caf::actor_cast<guard_actor<Handle>>(self_), at,
                          guard_timer_atom::value, id, attempt);
  }

  // Through a service_ref: it caches the live instances, drops those that go
  // down and rotates over the rest, so a re-resolution after a timeout moves
  // the guard to another instance without a registry round trip.
  void resolve(const std::string& name, ns timeout) override {
    auto self = self_;
    if (!ref_ || ref_.name() != name)
      ref_ = service_ref<Handle>{self->system(), name};
    troupe::resolve(self, ref_, std::max(timeout, ns{std::chrono::milliseconds{1}}))
        .then(
            [self](const Handle& h) {
              self->state.engine->resolved(caf::actor_cast<caf::actor>(h),
                                           self->clock().now());
            },
            [self](caf::error& err) {
              // troupe::classify is the one table of what CAF's codes mean
              // (a request to an invalid handle, i.e. no cluster actor on
              // this node, is service_unavailable); keep CAF's text as detail.
              if (err.category() != troupe_category::value)
                err = make_error(classify(err), describe(err));
              self->state.engine->resolve_failed(err, self->clock().now());
            });
  }

  void watch(const caf::actor& target) override { self_->monitor(target); }

  void publish(const breaker_state_changed& event) override {
    for (auto& s : self_->state.subscribers)
      caf::anon_send(s, event);
  }

private:
  Self* self_;
  service_ref<Handle> ref_;
};

/// The message id of attempt `attempt` of call `id` as the guard sends it:
/// the target answers the guard as a forwarding stage under this id, which
/// names the call. Cheaper than request().then() (no response handler, no
/// CAF timer), and a reply that comes after the guard gave up leaves nothing
/// behind.
inline caf::message_id attempt_id(uint64_t id, uint32_t attempt) {
  return caf::message_id{
      (caf::message_id::normal_message_category << caf::message_id::category_offset) |
      ((id & ((uint64_t{1} << 52) - 1)) << 8) | (attempt & 0xFFu)};
}

/// The call and attempt named by a reply's message id; false if it is none
/// of the guard's.
inline bool decode_attempt_id(caf::message_id mid, uint64_t& id, uint32_t& attempt) {
  if (!mid.is_request() || !mid.is_normal_message())
    return false;
  auto v = mid.integer_value() & caf::message_id::request_id_mask;
  id = v >> 8;
  attempt = static_cast<uint32_t>(v & 0xFFu);
  return id != 0;
}

/// A call answered with `Out...`, whatever its request type.
template <class... Out>
class reply_sink : public call_op {
public:
  virtual void deliver(Out&... xs) = 0;
  const std::type_info& reply_type() const noexcept override {
    return typeid(caf::detail::type_list<Out...>);
  }
};

/// One call of request type `Req` answered with `Out...`.
template <class Self, class Req, class... Out>
class typed_call final : public reply_sink<Out...> {
public:
  typed_call(Self* self, const Req& req, caf::typed_response_promise<Out...> rp)
      : self_(self)
      , req_(req)
      , rp_(std::move(rp)) {}

  void send(const caf::actor& target, const call_context& ctx, uint64_t id,
            uint32_t attempt) override {
    // No CAF timeout: the engine times attempts out itself (see guard_engine).
    auto me = caf::actor_cast<caf::strong_actor_ptr>(self_);
    caf::mailbox_element::forwarding_stack stages{me};
    target->enqueue(caf::make_mailbox_element(std::move(me), attempt_id(id, attempt),
                                              std::move(stages), ctx, req_),
                    self_->context());
  }

  void deliver(Out&... xs) override { rp_.deliver(std::move(xs)...); }

  void fail(const caf::error& err) override { rp_.deliver(err); }

  bool answer_from(const fallback& fb, const call_context& ctx, ns timeout) override {
    if (auto* msg = fb.reply_for(typeid(Req))) {
      if (!msg->template match_elements<Out...>())
        return false;
      deliver_message(*msg, std::index_sequence_for<Out...>{});
      return true;
    }
    if (auto& alternative = fb.alternative()) {
      auto rp = rp_;
      self_->request(alternative, caf::duration{timeout}, ctx, req_)
          .then([rp](Out&... xs) mutable { rp.deliver(std::move(xs)...); },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      return true;
    }
    return false;
  }

private:
  template <size_t... Is>
  void deliver_message(const caf::message& msg, std::index_sequence<Is...>) {
    rp_.deliver(msg.get_as<Out>(Is)...);
  }

  Self* self_;
  Req req_;
  caf::typed_response_promise<Out...> rp_;
};

/// Makes the guard's handler for the target's replies of one type.
template <class Signature>
struct reply_handler;

template <class... Out>
struct reply_handler<
    caf::typed_mpi<caf::detail::type_list<Out...>, caf::output_tuple<Out...>>> {
  template <class Self>
  static auto make(Self* self) {
    return [self](Out&... xs) -> caf::delegated<Out...> {
      auto& engine = *self->state.engine;
      uint64_t id = 0;
      uint32_t attempt = 0;
      if (!decode_attempt_id(self->current_message_id(), id, attempt))
        return {};
      auto* op = engine.in_flight(id, attempt);
      if (op == nullptr) {
        // The attempt ended (timed out, or the guard stopped waiting): drop.
      } else if (op->reply_type() != typeid(caf::detail::type_list<Out...>)) {
        engine.failed(
            id, attempt,
            make_error(errc::interface_mismatch,
                       engine.policy().dependency + ": reply of an unexpected type"),
            self->clock().now());
      } else {
        static_cast<reply_sink<Out...>*>(op)->deliver(xs...);
        engine.succeeded(id, attempt, self->clock().now());
      }
      // Answered (or dropped) here: nothing goes back to the target.
      return {};
    };
  }
};

template <class Self, class Replies>
struct reply_handlers;

template <class Self, class... Replies>
struct reply_handlers<Self, caf::detail::type_list<Replies...>> {
  static auto make(Self* self) {
    return std::make_tuple(reply_handler<Replies>::make(self)...);
  }
};

/// Makes the guard's handler for one signature of the target's interface.
template <class Handle, class Signature>
struct forwarder;

/// A request with a call_context: through the chain.
template <class Handle, class Req, class... Out>
struct forwarder<Handle, caf::typed_mpi<caf::detail::type_list<call_context, Req>,
                                        caf::output_tuple<Out...>>> {
  template <class Self>
  static auto make(Self* self) {
    return [self](const call_context& ctx,
                  const Req& req) -> caf::typed_response_promise<Out...> {
      auto& engine = *self->state.engine;
      context_scope scope{ctx, guard_state::name};
      // Before make_response_promise, which takes the sender out of the message.
      caf::actor_addr caller;
      if (engine.policy().rate_limit.scope == rate_limit_scope::caller)
        caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto rp = self->template make_response_promise<Out...>();
      engine.admit(std::make_unique<typed_call<Self, Req, Out...>>(self, req, rp), ctx,
                   caller, self->clock().now());
      return rp;
    };
  }
};

/// An event with a call_context (no reply): passed on as it is.
template <class Handle, class Event>
struct forwarder<Handle, caf::typed_mpi<caf::detail::type_list<call_context, Event>,
                                        caf::output_tuple<void>>> {
  template <class Self>
  static auto make(Self* self) {
    return [self](const call_context& ctx, const Event& ev) {
      if (auto& target = self->state.engine->target())
        self->send(caf::actor_cast<Handle>(target), ctx, ev);
    };
  }
};

/// The drain barrier: answered once every call in the guard is answered.
template <class Handle>
struct forwarder<Handle, caf::typed_mpi<caf::detail::type_list<drain_atom>,
                                        caf::output_tuple<drained_atom>>> {
  template <class Self>
  static auto make(Self* self) {
    return [self](drain_atom) -> caf::typed_response_promise<drained_atom> {
      auto rp = self->template make_response_promise<drained_atom>();
      self->state.engine->when_idle([rp]() mutable { rp.deliver(drained_atom::value); });
      return rp;
    };
  }
};

/// Any other request (no call_context): delegated to the target unguarded.
template <class Handle, class... In, class... Out>
struct forwarder<
    Handle, caf::typed_mpi<caf::detail::type_list<In...>, caf::output_tuple<Out...>>> {
  template <class Self>
  static auto make(Self* self) {
    return [self](const In&... xs) -> caf::typed_response_promise<Out...> {
      auto rp = self->template make_response_promise<Out...>();
      if (auto& target = self->state.engine->target())
        rp.delegate(caf::actor_cast<Handle>(target), xs...);
      else
        rp.deliver(make_error(errc::service_unavailable,
                              self->state.engine->policy().dependency + ": no target"));
      return rp;
    };
  }
};

/// Any other one-way message: passed on unguarded.
template <class Handle, class... In>
struct forwarder<Handle,
                 caf::typed_mpi<caf::detail::type_list<In...>, caf::output_tuple<void>>> {
  template <class Self>
  static auto make(Self* self) {
    return [self](const In&... xs) {
      if (auto& target = self->state.engine->target())
        self->send(caf::actor_cast<Handle>(target), xs...);
    };
  }
};

template <class Handle, class Signatures>
struct guard_behavior_of;

template <class Handle, class... Sigs>
struct guard_behavior_of<Handle, caf::detail::type_list<Sigs...>> {
  using replies = typename reply_signatures<caf::detail::type_list<>, Sigs...>::type;

  template <class Self>
  static typename guard_actor<Handle>::behavior_type make(Self* self) {
    return std::apply(
        [self](auto... on_reply) { return make_with(self, std::move(on_reply)...); },
        reply_handlers<Self, replies>::make(self));
  }

  template <class Self, class... OnReply>
  static typename guard_actor<Handle>::behavior_type make_with(Self* self,
                                                               OnReply... on_reply) {
    return {
        forwarder<Handle, Sigs>::make(self)...,
        std::move(on_reply)...,
        [self](inject_faults_atom, const fault_settings& faults) {
          self->state.engine->inject(faults);
          spdlog::warn("{}: fault injection {} (latency {}..{} p={}, error {} p={})",
                       self->state.engine->policy().dependency,
                       faults.enabled ? "on" : "off", format_duration(faults.latency),
                       format_duration(std::max(faults.latency, faults.latency_max)),
                       faults.latency_probability, to_string(faults.error),
                       faults.error_probability);
          return caf::ok_atom::value;
        },
        [self](breaker_events_atom, const caf::actor& subscriber) {
          if (subscriber) {
            self->state.subscribers.push_back(subscriber);
            self->monitor(subscriber);
          }
          return caf::ok_atom::value;
        },
        [self](guard_stats_atom) {
          return self->state.engine->stats(self->clock().now());
        },
        [self](guard_timer_atom, uint64_t id, uint32_t attempt) {
          self->state.engine->timer(id, attempt, self->clock().now());
        },
    };
  }
};

template <class Handle>
typename guard_actor<Handle>::behavior_type
guard_behavior(typename guard_actor<Handle>::template stateful_pointer<guard_state> self,
               caf::actor target, std::string name, resilience_policy policy,
               fallback fb) {
  using self_t = std::remove_pointer_t<decltype(self)>;
  auto& st = self->state;
  st.host = std::make_unique<actor_host<Handle, self_t>>(self);
  st.engine =
      std::make_unique<guard_engine>(std::move(policy), std::move(fb), *st.host,
                                     deadline_clock{self->system()}, self->clock().now());
  if (name.empty())
    st.engine->set_target(std::move(target));
  else
    st.engine->set_target_name(std::move(name));
  // An error reply of the target to a forwarded attempt arrives as an error
  // message under the attempt's id; any other error message is ignored.
  self->set_error_handler([self](caf::error& err) {
    uint64_t id = 0;
    uint32_t attempt = 0;
    if (decode_attempt_id(self->current_message_id(), id, attempt))
      self->state.engine->failed(id, attempt, err, self->clock().now());
  });
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& subs = self->state.subscribers;
    auto before = subs.size();
    subs.erase(
        std::remove_if(subs.begin(), subs.end(),
                       [&](const caf::actor& s) { return s.address() == msg.source; }),
        subs.end());
    if (subs.size() == before)
      self->state.engine->target_down(msg.source, self->clock().now());
  });
  return guard_behavior_of<Handle, typename Handle::signatures>::make(self);
}

} // namespace detail

/// Guards `target`: returns a handle with the same interface whose calls go
/// through `policy`. `fb` answers failed calls when the policy's
/// `fallback_on` lists their error. The guard holds `target`; it ends when
/// the last handle to it is gone.
template <class Handle>
Handle guard(caf::actor_system& sys, const Handle& target, resilience_policy policy,
             fallback fb = {}) {
  return sys.spawn(&detail::guard_behavior<Handle>, caf::actor_cast<caf::actor>(target),
                   std::string{}, std::move(policy), std::move(fb));
}

/// Guards the service registered under `name` in the cluster registry: a
/// service_ref behind a guard. The target is resolved through the ref on the
/// first call, again when it went down or answered `service_unavailable`, and
/// after timeouts (a dead remote node shows only as timeouts), which moves
/// the guard to the ref's next live instance; callers keep one handle while
/// the service moves between nodes or restarts.
template <class Handle>
Handle guard_service(caf::actor_system& sys, std::string name, resilience_policy policy,
                     fallback fb = {}) {
  return sys.spawn(&detail::guard_behavior<Handle>, caf::actor{}, std::move(name),
                   std::move(policy), std::move(fb));
}

} // namespace troupe::resilience
