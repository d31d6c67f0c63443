#include <troupe/runtime/call_context.hpp>

#include <random>

namespace troupe {

namespace {

thread_local const call_context* current_ctx = nullptr;
thread_local const char* current_actor_name = nullptr;

const call_context empty_context{};

} // namespace

call_context::clock::time_point call_context::deadline() const noexcept {
  return clock::time_point{
      std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds{deadline_ns})};
}

std::chrono::nanoseconds
call_context::remaining(std::chrono::nanoseconds fallback) const noexcept {
  return remaining(fallback, clock::now());
}

std::chrono::nanoseconds call_context::remaining(std::chrono::nanoseconds fallback,
                                                 clock::time_point now) const noexcept {
  if (!has_deadline())
    return fallback;
  auto left = deadline() - now;
  // A deadline already in the past still yields a positive timeout so the
  // request fails fast through CAF's own timeout path.
  return std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(left),
                  std::chrono::nanoseconds{1000});
}

call_context call_context::narrowed(std::chrono::nanoseconds timeout) const {
  return narrowed(timeout, clock::now());
}

call_context call_context::narrowed(std::chrono::nanoseconds timeout,
                                    clock::time_point now) const {
  call_context result = *this;
  auto candidate = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       (now + timeout).time_since_epoch())
                       .count();
  if (!has_deadline() || candidate < deadline_ns)
    result.deadline_ns = candidate;
  return result;
}

const call_context& call_context::current() noexcept {
  return current_ctx != nullptr ? *current_ctx : empty_context;
}

call_context call_context::derive() {
  call_context result = current();
  if (result.correlation_id.empty())
    result.correlation_id = new_correlation_id();
  return result;
}

std::string new_correlation_id() {
  // A random prefix per thread and a counter per thread: unique without any
  // shared state, and 15 characters, so std::string keeps it inline.
  thread_local const uint32_t prefix = [] {
    std::random_device rd;
    return static_cast<uint32_t>(rd()) & 0x0fffffffu;
  }();
  thread_local uint32_t counter = 0;
  static constexpr char hex[] = "0123456789abcdef";
  char buf[15];
  uint32_t p = prefix;
  for (int i = 6; i >= 0; --i, p >>= 4)
    buf[i] = hex[p & 0xf];
  uint32_t n = counter++;
  for (int i = 14; i >= 7; --i, n >>= 4)
    buf[i] = hex[n & 0xf];
  return std::string(buf, sizeof buf);
}

context_scope::context_scope(const call_context& ctx, const char* actor_name) noexcept
    : prev_ctx_(current_ctx)
    , prev_actor_(current_actor_name) {
  current_ctx = &ctx;
  current_actor_name = actor_name;
}

context_scope::~context_scope() {
  current_ctx = prev_ctx_;
  current_actor_name = prev_actor_;
}

const char* context_scope::current_actor() noexcept {
  return current_actor_name;
}

} // namespace troupe
