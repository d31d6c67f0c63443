#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

namespace troupe {

/// What travels with every call between services, on one node or across
/// nodes: the correlation id of the originating request, the caller's
/// deadline, and the idempotency key of the operation.
struct call_context {
  std::string correlation_id;
  /// Deadline on this node's clock, in nanoseconds since the Unix epoch; 0
  /// means none. It crosses nodes as the time left, not as an instant, and
  /// the receiver anchors it on its own clock when the message arrives, so
  /// clock skew between nodes does not move it (transit time does).
  int64_t deadline_ns = 0;
  /// Identifies one logical operation (e.g. "saga-42/charge") so that a
  /// request re-sent by a retry or after a crash is applied once.
  std::string idempotency_key;

  using clock = std::chrono::system_clock;

  bool has_deadline() const noexcept { return deadline_ns != 0; }
  clock::time_point deadline() const noexcept;
  /// Time left until the deadline; `fallback` when there is none.
  std::chrono::nanoseconds remaining(std::chrono::nanoseconds fallback) const noexcept;
  std::chrono::nanoseconds remaining(std::chrono::nanoseconds fallback,
                                     clock::time_point now) const noexcept;
  /// A copy whose deadline is the earlier of its own and now + `timeout`.
  call_context narrowed(std::chrono::nanoseconds timeout) const;
  call_context narrowed(std::chrono::nanoseconds timeout, clock::time_point now) const;

  /// The context of the message being handled on this thread, or an empty one.
  static const call_context& current() noexcept;
  /// A fresh context: the current correlation id if there is one, else a new id.
  static call_context derive();
};

/// A new random correlation id (short enough for std::string's SSO).
std::string new_correlation_id();

namespace detail {

/// Now on the clock call_context deadlines are read on, in nanoseconds.
int64_t wall_now_ns() noexcept;

/// The deadline as it travels: nanoseconds left (at least 1), -1 when it
/// has passed, 0 for none.
int64_t deadline_to_wire(int64_t deadline_ns) noexcept;
/// The local deadline of a received time left.
int64_t deadline_from_wire(int64_t left_ns) noexcept;

} // namespace detail

/// Makes `ctx` (and the actor name) the current context for the thread while
/// in scope, so logs and outgoing calls carry them.
class context_scope {
public:
  context_scope(const call_context& ctx, const char* actor_name) noexcept;
  // The scope refers to `ctx`: a temporary would be gone at once.
  context_scope(call_context&&, const char*) = delete;
  ~context_scope();
  context_scope(const context_scope&) = delete;
  context_scope& operator=(const context_scope&) = delete;

  /// Name of the actor handling a message on this thread, or nullptr.
  static const char* current_actor() noexcept;

private:
  const call_context* prev_ctx_;
  const char* prev_actor_;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, call_context& x) {
  if constexpr (Inspector::writes_state) {
    int64_t left = 0;
    auto anchor = caf::meta::load_callback([&]() -> caf::error {
      x.deadline_ns = detail::deadline_from_wire(left);
      return caf::none;
    });
    return f(caf::meta::type_name("call_context"), x.correlation_id, left, anchor,
             x.idempotency_key);
  } else {
    int64_t left = detail::deadline_to_wire(x.deadline_ns);
    return f(caf::meta::type_name("call_context"), x.correlation_id, left,
             x.idempotency_key);
  }
}

} // namespace troupe
