#pragma once

// A handle to a service by its registry name, for calls that read in one
// level:
//
//   auto inventory = troupe::service_ref<inventory_actor>(self, "inventory");
//   troupe::call(self, inventory, 2s, reserve_stock{sku, qty})
//       .then([=](const stock_reserved& r) {...}, [=](caf::error& err) {...});
//
// The error handler sees both "no live node provides the service"
// (errc::service_unavailable) and the call's own failure.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/actor_clock.hpp>
#include <caf/actor_system.hpp>
#include <caf/error.hpp>
#include <caf/response_type.hpp>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/service.hpp>

namespace troupe {

namespace detail {

/// A call (or a background refresh) waiting for a resolution: resumed with
/// nullptr once instances are known, or with the resolution's error.
class ref_waiter {
public:
  virtual ~ref_waiter();
  virtual void resume(const caf::error* err) = 0;
};

/// What a service_ref and its copies share: the name, the interface, the
/// cached live instances and the calls waiting for a resolution. One actor
/// uses it at a time; only the liveness flags are written from elsewhere
/// (by CAF when an instance or its node goes down).
class service_ref_state {
public:
  using time_point = caf::actor_clock::time_point;

  service_ref_state(std::string name, std::vector<std::string> interface,
                    caf::actor registry);
  virtual ~service_ref_state();

  const std::string& name() const noexcept { return name_; }
  const std::vector<std::string>& interface() const noexcept { return interface_; }

  static constexpr size_t none = static_cast<size_t>(-1);

  /// The position of the next live instance, round robin; `none` when no
  /// instance is known alive.
  size_t pick_index() noexcept {
    auto n = instances_.size();
    for (size_t i = 0; i < n; ++i) {
      auto k = next_ < n ? next_ : 0;
      next_ = k + 1;
      if (instances_[k].alive->load(std::memory_order_acquire))
        return k;
    }
    return none;
  }

  /// Whether the cached instances are old enough to be looked up again in
  /// the background (so instances that appeared since join the rotation).
  bool refresh_due(time_point now) const noexcept {
    // Adding, not subtracting: min() (never resolved) minus now overflows.
    return !resolving_ && resolved_at_ + refresh_interval_ <= now;
  }
  /// The same on the coarse monotonic clock (a few ms behind, but a
  /// fraction of a precise read): every call asks it.
  bool refresh_due() const noexcept { return !resolving_ && refresh_due(coarse_now()); }

  /// The registry to ask: the one given at construction, else the node's
  /// cluster actor; invalid when there is none.
  caf::actor registry(caf::actor_system& sys) const;

  /// Queues `w` (may be null) until the resolution in flight ends; true
  /// when none is in flight and the caller must start it.
  bool wait(std::unique_ptr<ref_waiter> w);
  /// The registry answered: cache `instances`, resume the waiting calls.
  void resolved(std::vector<caf::actor> instances, time_point now);
  /// The lookup failed: forget the instances if the registry knows none,
  /// and fail the waiting calls with `err`.
  void resolve_failed(caf::error err, time_point now);

  /// How long a resolution may take at most.
  static constexpr std::chrono::seconds max_resolve_time{2};

  void set_refresh_interval(std::chrono::nanoseconds d) noexcept {
    refresh_interval_ = d;
  }
  /// Instances known, alive or not.
  size_t known() const noexcept { return instances_.size(); }
  /// Instances known and not seen going down (safe from any thread only
  /// while no lookup completes: for tests).
  size_t live() const noexcept {
    size_t n = 0;
    for (auto& x : instances_)
      n += x.alive->load(std::memory_order_acquire) ? 1 : 0;
    return n;
  }

protected:
  /// Called after the cached instances changed.
  virtual void instances_changed() = 0;
  const caf::actor& instance_at(size_t i) const noexcept { return instances_[i].handle; }

private:
  struct instance {
    caf::actor handle;
    std::shared_ptr<std::atomic<bool>> alive;
  };

  // The monotonic clock CAF's steady clock reads, at the kernel's tick.
  static time_point coarse_now() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return time_point{std::chrono::duration_cast<time_point::duration>(
        std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec))};
  }

  std::string name_;
  std::vector<std::string> interface_;
  caf::actor registry_;
  std::vector<instance> instances_;
  size_t next_ = 0;
  bool resolving_ = false;
  time_point resolved_at_ = time_point::min();
  std::chrono::nanoseconds refresh_interval_ = std::chrono::seconds(1);
  std::vector<std::unique_ptr<ref_waiter>> waiting_;
};

/// The state with the instances as typed handles, so a call sends to a
/// cached handle without casting (and counting references) each time.
template <class Handle>
class typed_ref_state final : public service_ref_state {
public:
  using service_ref_state::service_ref_state;

  /// The next live instance, round robin; nullptr when none is known alive.
  const Handle* pick() noexcept {
    auto i = pick_index();
    return i == none ? nullptr : &typed_[i];
  }

private:
  void instances_changed() override {
    typed_.clear();
    for (size_t i = 0; i < known(); ++i)
      typed_.push_back(caf::actor_cast<Handle>(instance_at(i)));
  }

  std::vector<Handle> typed_;
};

template <class Handle>
typed_ref_state<Handle>& typed(service_ref_state& st) noexcept {
  return static_cast<typed_ref_state<Handle>&>(st);
}

caf::error no_registry_error(const std::string& name);
caf::error resolve_timeout_error(const std::string& name);

/// Starts a lookup of `st` from `self` without blocking: the reply resumes
/// the waiting calls in `self`.
template <class Self>
void start_resolution(Self* self, const std::shared_ptr<service_ref_state>& st,
                      std::chrono::nanoseconds timeout) {
  auto registry = st->registry(self->system());
  if (!registry) {
    st->resolve_failed(no_registry_error(st->name()), self->clock().now());
    return;
  }
  timeout = std::min(std::max(timeout, std::chrono::nanoseconds{1000000}),
                     std::chrono::nanoseconds{service_ref_state::max_resolve_time});
  self->request(registry, caf::duration{timeout}, find_services_atom::value, st->name(),
                st->interface())
      .then(
          [self, st](std::vector<caf::actor>& found) {
            st->resolved(std::move(found), self->clock().now());
          },
          [self, st](caf::error& err) {
            st->resolve_failed(std::move(err), self->clock().now());
          });
}

/// The same, blocking: for `caf::scoped_actor` callers. Returns the
/// lookup's error, if any.
template <class Self>
caf::error resolve_blocking(Self* self, const std::shared_ptr<service_ref_state>& st,
                            std::chrono::nanoseconds timeout) {
  auto registry = st->registry(self->system());
  if (!registry) {
    auto err = no_registry_error(st->name());
    st->resolve_failed(err, self->clock().now());
    return err;
  }
  st->wait(nullptr);
  timeout = std::min(std::max(timeout, std::chrono::nanoseconds{1000000}),
                     std::chrono::nanoseconds{service_ref_state::max_resolve_time});
  caf::error result;
  self->request(registry, caf::duration{timeout}, find_services_atom::value, st->name(),
                st->interface())
      .receive(
          [&](std::vector<caf::actor>& found) {
            st->resolved(std::move(found), self->clock().now());
          },
          [&](caf::error& err) {
            result = err;
            st->resolve_failed(std::move(err), self->clock().now());
          });
  return result;
}

} // namespace detail

/// A handle to the service registered under a name in the cluster
/// registry. It resolves lazily on the first call, without blocking (calls
/// made meanwhile wait for the lookup), caches every live instance, spreads
/// calls over them round robin, drops an instance when it or its node goes
/// down and looks the service up again when none is left. Cached instances
/// are refreshed in the background once a second, so new providers join the
/// rotation. Copies share one cache; use a ref (and its copies) from one
/// actor, e.g. keep it in the actor's state.
template <class Handle>
class service_ref {
public:
  service_ref() = default;

  /// `registry` answers find_services_atom; by default the node's cluster actor.
  service_ref(caf::actor_system& sys, std::string name, caf::actor registry = {})
      : state_(std::make_shared<detail::typed_ref_state<Handle>>(
            std::move(name), interface_of(sys), std::move(registry))) {}

  template <class Self>
  service_ref(Self* self, std::string name)
      : service_ref(self->system(), std::move(name)) {}

  const std::string& name() const noexcept { return state_->name(); }
  explicit operator bool() const noexcept { return state_ != nullptr; }

  const std::shared_ptr<detail::service_ref_state>& state() const noexcept {
    return state_;
  }

private:
  static std::vector<std::string> interface_of(caf::actor_system& sys) {
    auto names = sys.message_types<Handle>();
    return {names.begin(), names.end()};
  }

  std::shared_ptr<detail::service_ref_state> state_;
};

/// The pending reply of a `troupe::call` on a service_ref: `.then` sends at
/// once when an instance is known, else after the lookup; `.receive` (for
/// blocking callers) looks up synchronously.
template <class Self, class Handle, class Request>
class pending_ref_call {
public:
  using reply_types =
      caf::response_type_t<typename Handle::signatures, call_context, Request>;
  static_assert(caf::detail::tl_size<reply_types>::value == 1,
                "service_ref calls expect one reply value");
  using reply_type = caf::detail::tl_head_t<reply_types>;

  pending_ref_call(Self* self, std::shared_ptr<detail::service_ref_state> st,
                   std::chrono::nanoseconds timeout, Request request)
      : self_(self)
      , st_(std::move(st))
      , timeout_(timeout)
      , request_(std::move(request)) {}

  template <class OnReply, class OnError>
  void then(OnReply on_reply, OnError on_error) {
    auto& st = detail::typed<Handle>(*st_);
    if (st.refresh_due() && st.wait(nullptr))
      detail::start_resolution(self_, st_, timeout_);
    if (auto* target = st.pick()) {
      call(self_, *target, timeout_, std::move(request_))
          .then(std::move(on_reply), std::move(on_error));
      return;
    }
    // Nothing live is known: wait for a lookup, within the call's deadline.
    auto caller = std::make_shared<const call_context>(call_context::derive());
    auto sent = caller->narrowed(timeout_);
    auto deadline = sent.deadline_ns;
    auto w = std::make_unique<waiter<OnReply, OnError>>(
        self_, &st, std::move(caller), deadline, std::move(request_), std::move(on_reply),
        std::move(on_error));
    if (st.wait(std::move(w)))
      detail::start_resolution(self_, st_, timeout_);
  }

  template <class OnReply, class OnError>
  void receive(OnReply on_reply, OnError on_error) {
    auto& st = detail::typed<Handle>(*st_);
    auto* target = st.pick();
    caf::error err;
    if (target == nullptr) {
      err = detail::resolve_blocking(self_, st_, timeout_);
      target = st.pick();
    }
    if (target == nullptr) {
      if (!err)
        err = make_error(errc::service_unavailable,
                         "no live node provides service '" + st.name() + "'");
      auto caller = std::make_shared<const call_context>(call_context::derive());
      detail::in_context(caller, self_->name(), std::move(on_error))(err);
      return;
    }
    call(self_, *target, timeout_, std::move(request_))
        .receive(std::move(on_reply), std::move(on_error));
  }

private:
  template <class OnReply, class OnError>
  class waiter final : public detail::ref_waiter {
  public:
    waiter(Self* self, detail::typed_ref_state<Handle>* st,
           std::shared_ptr<const call_context> caller, int64_t deadline_ns,
           Request request, OnReply on_reply, OnError on_error)
        : self_(self)
        , st_(st)
        , caller_(std::move(caller))
        , deadline_ns_(deadline_ns)
        , request_(std::move(request))
        , on_reply_(std::move(on_reply))
        , on_error_(std::move(on_error)) {}

    void resume(const caf::error* err) override {
      if (err != nullptr)
        return fail(*err);
      auto* target = st_->pick();
      if (target == nullptr)
        return fail(make_error(errc::service_unavailable,
                               "no live node provides service '" + st_->name() + "'"));
      auto left = std::chrono::nanoseconds{deadline_ns_ - detail::wall_now_ns()};
      if (left.count() <= 0)
        return fail(detail::resolve_timeout_error(st_->name()));
      // The call runs in the caller's context, as if made when it was.
      context_scope scope{*caller_, self_->name()};
      call(self_, *target, left, std::move(request_))
          .then(std::move(on_reply_), std::move(on_error_));
    }

  private:
    void fail(caf::error err) {
      detail::in_context(caller_, self_->name(), std::move(on_error_))(err);
    }

    Self* self_;
    detail::typed_ref_state<Handle>* st_; // owns this waiter
    std::shared_ptr<const call_context> caller_;
    int64_t deadline_ns_;
    Request request_;
    OnReply on_reply_;
    OnError on_error_;
  };

  Self* self_;
  std::shared_ptr<detail::service_ref_state> st_;
  std::chrono::nanoseconds timeout_;
  Request request_;
};

namespace detail {

template <class Handle, class OnFound, class OnError>
class found_waiter final : public ref_waiter {
public:
  found_waiter(typed_ref_state<Handle>* st, OnFound on_found, OnError on_error)
      : st_(st)
      , on_found_(std::move(on_found))
      , on_error_(std::move(on_error)) {}

  void resume(const caf::error* err) override {
    if (err != nullptr) {
      auto copy = *err;
      on_error_(copy);
      return;
    }
    if (auto* target = st_->pick()) {
      on_found_(*target);
      return;
    }
    auto unavailable = make_error(errc::service_unavailable,
                                  "no live node provides service '" + st_->name() + "'");
    on_error_(unavailable);
  }

private:
  typed_ref_state<Handle>* st_; // owns this waiter
  OnFound on_found_;
  OnError on_error_;
};

} // namespace detail

/// One live instance of the service behind a ref, to come: see `resolve`.
template <class Self, class Handle>
class pending_resolution {
public:
  pending_resolution(Self* self, std::shared_ptr<detail::service_ref_state> st,
                     std::chrono::nanoseconds timeout)
      : self_(self)
      , st_(std::move(st))
      , timeout_(timeout) {}

  /// `on_found(const Handle&)` runs at once when an instance is cached, else
  /// after the lookup; `on_error(caf::error&)` when there is none.
  template <class OnFound, class OnError>
  void then(OnFound on_found, OnError on_error) {
    auto& st = detail::typed<Handle>(*st_);
    if (st.refresh_due(self_->clock().now()) && st.wait(nullptr))
      detail::start_resolution(self_, st_, timeout_);
    if (auto* target = st.pick()) {
      on_found(*target);
      return;
    }
    auto w = std::make_unique<detail::found_waiter<Handle, OnFound, OnError>>(
        &st, std::move(on_found), std::move(on_error));
    if (st.wait(std::move(w)))
      detail::start_resolution(self_, st_, timeout_);
  }

private:
  Self* self_;
  std::shared_ptr<detail::service_ref_state> st_;
  std::chrono::nanoseconds timeout_;
};

/// One live instance of the service behind `ref` (the next in its
/// rotation), looked up first when none is known, for callers that keep a
/// handle themselves, like a resilience guard:
/// `troupe::resolve(self, ref, 2s).then(on_found, on_error)`.
template <class Self, class Handle>
pending_resolution<Self, Handle> resolve(Self* self, const service_ref<Handle>& ref,
                                         std::chrono::nanoseconds timeout) {
  return {self, ref.state(), timeout};
}

/// Calls the service behind `ref`: one of its live instances, found through
/// the registry when none is known. Continue with `.then(on_reply,
/// on_error)`; the error handler also sees errc::service_unavailable when no
/// live node provides the service. A handler in `serve` may return it to
/// answer with its reply.
template <class Self, class Handle, class Request>
pending_ref_call<Self, Handle, Request> call(Self* self, const service_ref<Handle>& ref,
                                             std::chrono::nanoseconds timeout,
                                             Request request) {
  return {self, ref.state(), timeout, std::move(request)};
}

} // namespace troupe
