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
  // A random 40-bit prefix per thread and a 20-bit counter per thread: ten
  // thousand threads across a fleet share a prefix with a probability of
  // about 5e-5, with no shared state. When the counter wraps the thread
  // draws a new prefix. 15 characters, so std::string keeps it inline.
  static constexpr uint64_t counter_bits = 20;
  static constexpr uint64_t prefix_mask = (uint64_t{1} << 40) - 1;
  auto draw = [] {
    std::random_device rd;
    auto hi = static_cast<uint64_t>(rd());
    auto lo = static_cast<uint64_t>(rd());
    return ((hi << 32) | lo) & prefix_mask;
  };
  thread_local uint64_t prefix = draw();
  thread_local uint32_t counter = 0;
  if (counter == (uint32_t{1} << counter_bits)) {
    prefix = draw();
    counter = 0;
  }
  uint64_t v = (prefix << counter_bits) | counter++;
  static constexpr char hex[] = "0123456789abcdef";
  char buf[15];
  for (int i = 14; i >= 0; --i, v >>= 4)
    buf[i] = hex[v & 0xf];
  return std::string(buf, sizeof buf);
}

namespace detail {

int64_t wall_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             call_context::clock::now().time_since_epoch())
      .count();
}

int64_t deadline_to_wire(int64_t deadline_ns) noexcept {
  if (deadline_ns == 0)
    return 0;
  auto left = deadline_ns - wall_now_ns();
  return left > 0 ? left : -1;
}

int64_t deadline_from_wire(int64_t left_ns) noexcept {
  if (left_ns == 0)
    return 0;
  // A deadline that had passed stays in the past; 1 ns before now is never 0.
  if (left_ns < 0)
    return wall_now_ns() - 1;
  return wall_now_ns() + left_ns;
}

} // namespace detail

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
