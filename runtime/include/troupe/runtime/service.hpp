#pragma once

// Service interfaces and calls. Include this where a service actor is
// implemented or called; it pulls in CAF's typed-actor headers.

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_behavior.hpp>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/metrics.hpp>

namespace troupe {

using drain_atom = caf::atom_constant<caf::atom("drain")>;
using drained_atom = caf::atom_constant<caf::atom("drained")>;

/// A request a service answers with a reply: `handles<reserve_stock, stock_reserved>`.
template <class Request, class Reply>
using handles = typename caf::replies_to<call_context, Request>::template with<Reply>;

/// A one-way message a service consumes: `on<order_shipped>`.
template <class Event>
using on = caf::reacts_to<call_context, Event>;

/// A service's statically typed interface: `using inventory_actor =
/// troupe::service<handles<reserve_stock, stock_reserved>, on<stock_counted>>;`
/// Every message carries a call_context; every service answers the drain
/// barrier that graceful shutdown uses to wait for queued work.
template <class... Signatures>
using service =
    caf::typed_actor<typename caf::replies_to<drain_atom>::template with<drained_atom>,
                     Signatures...>;

namespace detail {

template <class F>
struct handler_traits : handler_traits<decltype(&F::operator())> {};

template <class C, class R, class... Args>
struct handler_traits<R (C::*)(Args...) const> {
  using result = R;
  using args = std::tuple<std::decay_t<Args>...>;
  using exact_args = std::tuple<Args...>;
  static constexpr size_t arity = sizeof...(Args);
};

template <class C, class R, class... Args>
struct handler_traits<R (C::*)(Args...)> : handler_traits<R (C::*)(Args...) const> {};

// Counts every message; times one in `timing_sample` of them, because two
// clock reads and a histogram update cost more than a small handler.
constexpr uint32_t timing_sample = 16;

struct handling_probe {
  handling_probe(const call_context& ctx, const std::string& actor,
                 const metrics::actor_type_metrics& m, uint32_t& seen) noexcept
      : scope(ctx, actor.c_str())
      , m(m)
      , timed(seen++ % timing_sample == 0) {
    if (timed)
      start = std::chrono::steady_clock::now();
  }
  ~handling_probe() {
    m.handled->Increment();
    if (timed) {
      auto elapsed = std::chrono::steady_clock::now() - start;
      m.handling_seconds->Observe(std::chrono::duration<double>(elapsed).count());
    }
  }
  context_scope scope;
  const metrics::actor_type_metrics& m;
  bool timed;
  std::chrono::steady_clock::time_point start;
};

// Turns a domain handler `R(const Request&)` or `R(const call_context&,
// const Request&)` into the `R(const call_context&, const Request&)` the
// interface declares, setting the log context and counting the message.
template <class F>
auto wrap_handler(std::string actor, metrics::actor_type_metrics m, F f) {
  using traits = handler_traits<F>;
  using result = typename traits::result;
  using request = std::tuple_element_t<traits::arity - 1, typename traits::args>;
  return [actor = std::move(actor), m, f = std::move(f), seen = uint32_t{0}](
             const call_context& ctx, const request& req) mutable -> result {
    handling_probe probe{ctx, actor, m, seen};
    if constexpr (traits::arity == 2)
      return f(ctx, req);
    else
      return f(req);
  };
}

// Wraps a reply or error handler so it runs with the call's context current:
// logs written when a reply arrives carry the request's correlation id.
// CAF checks handler signatures, so the wrapper repeats the exact parameters.
template <class F, class... Args>
auto in_context(std::shared_ptr<const call_context> ctx, const char* actor, F f,
                std::tuple<Args...>*) {
  return [ctx = std::move(ctx), actor, f = std::move(f)](Args... xs) mutable {
    context_scope scope{*ctx, actor};
    return f(std::forward<Args>(xs)...);
  };
}

template <class F>
auto in_context(std::shared_ptr<const call_context> ctx, const char* actor, F f) {
  using exact = typename handler_traits<F>::exact_args;
  return in_context(std::move(ctx), actor, std::move(f), static_cast<exact*>(nullptr));
}

} // namespace detail

/// The pending reply of a `troupe::call`. Its handlers run with the call's
/// context current, and the error handler is not optional: in CAF 0.17 an
/// unhandled error reply kills the requesting actor.
template <class ResponseHandle>
class pending_reply {
public:
  pending_reply(ResponseHandle handle, std::shared_ptr<const call_context> ctx,
                const char* actor)
      : handle_(std::move(handle))
      , ctx_(std::move(ctx))
      , actor_(actor) {}

  template <class OnReply, class OnError>
  void then(OnReply on_reply, OnError on_error) {
    handle_.then(detail::in_context(ctx_, actor_, std::move(on_reply)),
                 detail::in_context(ctx_, actor_, std::move(on_error)));
  }

  template <class OnReply, class OnError>
  void await(OnReply on_reply, OnError on_error) {
    handle_.await(detail::in_context(ctx_, actor_, std::move(on_reply)),
                  detail::in_context(ctx_, actor_, std::move(on_error)));
  }

  /// For blocking callers (`caf::scoped_actor`).
  template <class OnReply, class OnError>
  void receive(OnReply on_reply, OnError on_error) {
    handle_.receive(detail::in_context(ctx_, actor_, std::move(on_reply)),
                    detail::in_context(ctx_, actor_, std::move(on_error)));
  }

  /// The context the request carries.
  const call_context& context() const noexcept { return *ctx_; }

private:
  ResponseHandle handle_;
  std::shared_ptr<const call_context> ctx_;
  const char* actor_;
};

/// Builds a service's behaviour from domain handlers, one per request type:
///
///   return troupe::serve(self, [=](const reserve_stock& cmd) -> stock_reserved {...});
///
/// Each handler runs with the request's call_context current (so logs carry its
/// correlation id and outgoing calls inherit its deadline) and is counted in
/// the per-actor-type metrics.
template <class Self, class... Handlers>
auto serve(Self* self, Handlers... handlers) {
  std::string actor = self->name();
  auto m = metrics::instance().for_actor_type(actor);
  return typename Self::behavior_type{
      [](drain_atom) { return drained_atom::value; },
      detail::wrap_handler(actor, m, std::move(handlers))...};
}

/// Sends `request` to a service and returns CAF's response handle, so the
/// caller continues with `.then(on_reply, on_error)`. The call inherits the
/// current correlation id and deadline; its timeout never outlives either.
template <class Self, class Handle, class Request>
auto call(Self* self, const Handle& service, std::chrono::nanoseconds timeout,
          Request request) {
  // The request carries the narrowed deadline; the reply handler runs in the
  // caller's own context (same correlation id, the caller's deadline), so a
  // call made from a reply is not bound by the finished call's deadline.
  auto caller = std::make_shared<const call_context>(call_context::derive());
  auto now = call_context::clock::now();
  auto sent = caller->narrowed(timeout, now);
  auto left = sent.remaining(timeout, now);
  auto handle =
      self->request(service, caf::duration{left}, std::move(sent), std::move(request));
  return pending_reply<decltype(handle)>{std::move(handle), std::move(caller),
                                         self->name()};
}

/// Sends a one-way message (an event or command without reply) to a service.
template <class Self, class Handle, class Event>
void tell(Self* self, const Handle& service, Event event) {
  self->send(service, call_context::derive(), std::move(event));
}

} // namespace troupe
