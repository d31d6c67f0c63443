#include <troupe/runtime/call_context.hpp>

#include <atomic>
#include <cstdio>
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
  if (!has_deadline())
    return fallback;
  auto left = deadline() - clock::now();
  // A deadline already in the past still yields a positive timeout so the
  // request fails fast through CAF's own timeout path.
  return std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(left),
                  std::chrono::nanoseconds{1000});
}

call_context call_context::narrowed(std::chrono::nanoseconds timeout) const {
  call_context result = *this;
  auto candidate = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       (clock::now() + timeout).time_since_epoch())
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
  // Random per thread, counted per call: unique without locking.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  thread_local uint64_t prefix = rng();
  static std::atomic<uint32_t> counter{0};
  auto n = counter.fetch_add(1, std::memory_order_relaxed);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06x%08x", static_cast<unsigned>(prefix & 0xffffff),
                static_cast<unsigned>(n));
  return buf;
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
