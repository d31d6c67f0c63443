#pragma once

// Service interfaces and calls. Include this where a service actor is
// implemented or called; it pulls in CAF's typed-actor headers.

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/delegated.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/make_message.hpp>
#include <caf/replies_to.hpp>
#include <caf/response_handle.hpp>
#include <caf/result.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_behavior.hpp>
#include <caf/typed_response_promise.hpp>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/readiness.hpp>

namespace troupe {

template <class... Ts>
class promise;

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

// The reply a handler result stands for, as the `caf::result` the wrapped
// handler returns: a plain value `T`, `caf::result<T...>`, a response
// promise, `caf::expected<T>`, or a pending call whose reply it delegates.
template <class R, class = void>
struct handler_reply {
  using type = caf::result<R>;
  static constexpr bool delegates = false;
};

template <>
struct handler_reply<void> {
  using type = void;
  static constexpr bool delegates = false;
};

template <class... Ts>
struct handler_reply<caf::result<Ts...>> {
  using type = caf::result<Ts...>;
  static constexpr bool delegates = false;
};

template <class... Ts>
struct handler_reply<caf::typed_response_promise<Ts...>> {
  using type = caf::result<Ts...>;
  static constexpr bool delegates = false;
};

template <class... Ts>
struct handler_reply<caf::delegated<Ts...>> {
  using type = caf::result<Ts...>;
  static constexpr bool delegates = false;
};

template <class... Ts>
struct handler_reply<promise<Ts...>> {
  using type = caf::result<Ts...>;
  static constexpr bool delegates = false;
};

template <class T>
struct handler_reply<caf::expected<T>> {
  using type = caf::result<T>;
  static constexpr bool delegates = false;
};

// A pending call (troupe::call's result) names its reply type: returning it
// from a handler answers the request with that call's reply or error.
template <class R>
struct handler_reply<R, std::void_t<typename R::reply_type>> {
  using type = caf::result<typename R::reply_type>;
  static constexpr bool delegates = true;
};

/// What one service's handlers share: the replies its handlers delegated
/// or promised and has not delivered yet, and the drain barriers waiting
/// for them.
struct serve_state : std::enable_shared_from_this<serve_state> {
  uint64_t promised = 0;
  std::vector<caf::typed_response_promise<drained_atom>> drains;

  void delivered() {
    if (--promised == 0) {
      for (auto& rp : drains)
        rp.deliver(drained_atom::value);
      drains.clear();
    }
  }
};

// The serve_state of the handler running on this thread, so a promise made
// inside it counts as an open reply that drain waits for.
inline thread_local serve_state* running_serve_state = nullptr;

struct running_handler {
  explicit running_handler(serve_state* st) noexcept
      : previous(running_serve_state) {
    running_serve_state = st;
  }
  ~running_handler() { running_serve_state = previous; }
  running_handler(const running_handler&) = delete;
  running_handler& operator=(const running_handler&) = delete;
  serve_state* previous;
};

// One open reply of a service: settled when the promise is delivered or its
// last copy is gone (an abandoned promise must not hold drain forever).
class promise_token {
public:
  explicit promise_token(std::shared_ptr<serve_state> st) noexcept
      : state_(std::move(st)) {
    ++state_->promised;
  }
  ~promise_token() { settle(); }
  promise_token(const promise_token&) = delete;
  promise_token& operator=(const promise_token&) = delete;

  void settle() {
    if (auto st = std::move(state_))
      st->delivered();
  }

private:
  std::shared_ptr<serve_state> state_;
};

/// Whether requests are checked against their deadline on arrival: not
/// under CAF's test coordinator, whose wall time is virtual.
bool checks_deadlines(caf::actor_system& sys);
caf::error expired_error(const std::string& actor);
caf::error no_quorum_error(const std::string& actor);

template <class T>
struct is_promise : std::false_type {};

template <class... Ts>
struct is_promise<promise<Ts...>> : std::true_type {};

// Turns a domain handler `R(const Request&)` or `R(const call_context&,
// const Request&)` into the `R(const call_context&, const Request&)` the
// interface declares, setting the log context and counting the message.
// A request whose deadline already passed, or that reaches a node without
// quorum, is answered with an error without running the handler; one-way
// events are always handled. With `self`, a handler may return a pending
// call, whose reply becomes its own.
template <class Self, class F>
auto wrap_handler(Self* self, std::shared_ptr<serve_state> state, bool check_deadlines,
                  std::string actor, metrics::actor_type_metrics m, F f) {
  using traits = handler_traits<F>;
  using raw_result = typename traits::result;
  using reply = handler_reply<std::decay_t<raw_result>>;
  using result = typename reply::type;
  using request = std::tuple_element_t<traits::arity - 1, typename traits::args>;
  return [self, state = std::move(state), check_deadlines, actor = std::move(actor), m,
          f = std::move(f), seen = uint32_t{0}](const call_context& ctx,
                                                const request& req) mutable -> result {
    if constexpr (!std::is_void_v<result>) {
      if (!node_has_quorum())
        return no_quorum_error(actor);
      if (check_deadlines && ctx.deadline_ns != 0 && ctx.deadline_ns <= wall_now_ns()) {
        m.expired->Increment();
        return expired_error(actor);
      }
    }
    handling_probe probe{ctx, actor, m, seen};
    auto run = [&]() -> decltype(auto) {
      running_handler running{state.get()};
      if constexpr (traits::arity == 2)
        return f(ctx, req);
      else
        return f(req);
    };
    if constexpr (reply::delegates) {
      static_assert(!std::is_same_v<Self, void>, "delegation needs troupe::serve");
      using value = typename std::decay_t<raw_result>::reply_type;
      auto rp = self->template make_response_promise<value>();
      ++state->promised;
      run().then(
          [rp, state](value& x) mutable {
            rp.deliver(std::move(x));
            state->delivered();
          },
          [rp, state](caf::error& err) mutable {
            rp.deliver(std::move(err));
            state->delivered();
          });
      return rp;
    } else if constexpr (is_promise<std::decay_t<raw_result>>::value) {
      return run().response_promise();
    } else {
      return run();
    }
  };
}

// Without the actor (handlers wrapped outside `serve`): no delegation, and
// no deadline check (the caller may run on a virtual clock).
template <class F>
auto wrap_handler(std::string actor, metrics::actor_type_metrics m, F f) {
  return wrap_handler(static_cast<void*>(nullptr), nullptr, false, std::move(actor),
                      std::move(m), std::move(f));
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

// The reply type of a response handle that expects exactly one value.
template <class ResponseHandle>
struct single_reply {};

template <class Self, class T, bool IsBlocking>
struct single_reply<caf::response_handle<Self, caf::detail::type_list<T>, IsBlocking>> {
  using reply_type = T;
};

} // namespace detail

/// A reply a service handler answers later, like CAF's response promise,
/// but counted as open work: `drain` (graceful shutdown) waits until it is
/// delivered or dropped. Make it with `troupe::make_promise` inside a
/// handler and return it; deliver it on the actor's own thread.
template <class... Ts>
class promise {
public:
  promise(caf::typed_response_promise<Ts...> rp,
          std::shared_ptr<detail::promise_token> token)
      : rp_(std::move(rp))
      , token_(std::move(token)) {}

  template <class... Us>
  void deliver(Us&&... xs) {
    rp_.deliver(std::forward<Us>(xs)...);
    if (token_)
      token_->settle();
  }

  bool pending() const { return rp_.pending(); }

  /// Returned from a handler declared `-> caf::result<Ts...>`.
  operator caf::result<Ts...>() const { return caf::result<Ts...>{rp_}; }

  /// CAF's promise, for code that takes one; delivering it directly leaves
  /// the reply open for drain until this promise's last copy is gone.
  const caf::typed_response_promise<Ts...>& response_promise() const noexcept {
    return rp_;
  }

private:
  caf::typed_response_promise<Ts...> rp_;
  std::shared_ptr<detail::promise_token> token_;
};

/// A promise for the reply of the request `self` is handling. Made inside a
/// handler of `troupe::serve`, drain waits for it; elsewhere it is a plain
/// response promise.
template <class... Ts, class Self>
promise<Ts...> make_promise(Self* self) {
  auto rp = self->template make_response_promise<Ts...>();
  auto* st = detail::running_serve_state;
  if (st == nullptr)
    return {std::move(rp), nullptr};
  return {std::move(rp), std::make_shared<detail::promise_token>(st->shared_from_this())};
}

/// The pending reply of a `troupe::call`. Its handlers run with the call's
/// context current, and the error handler is not optional: in CAF 0.17 an
/// unhandled error reply kills the requesting actor. A handler in `serve`
/// may return it: the call's reply (or error) becomes the handler's.
template <class ResponseHandle>
class pending_reply : public detail::single_reply<ResponseHandle> {
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
  auto state = std::make_shared<detail::serve_state>();
  bool check = detail::checks_deadlines(self->system());
  return typename Self::behavior_type{
      // Answers once every reply a handler delegated has been delivered; the
      // drain request's own timeout bounds the wait.
      [self, state](drain_atom) -> caf::result<drained_atom> {
        if (state->promised == 0)
          return drained_atom::value;
        auto rp = self->template make_response_promise<drained_atom>();
        state->drains.push_back(rp);
        return rp;
      },
      detail::wrap_handler(self, state, check, actor, m, std::move(handlers))...};
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
