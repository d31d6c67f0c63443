#include <troupe/outbox/outbound_event.hpp>

#include <caf/actor_cast.hpp>

#include <cstdio>
#include <set>

namespace troupe {

namespace {

bool is_trace_id(std::string_view s) {
  if (s.size() != 32 || s == std::string_view{"00000000000000000000000000000000"})
    return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

uint64_t fnv1a(std::string_view s, uint64_t seed) {
  uint64_t h = 14695981039346656037ull ^ seed;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

} // namespace

std::string outbound_event::header(const std::string& name) const {
  for (auto& [k, v] : headers)
    if (k == name)
      return v;
  return {};
}

void hold_back_after_failures(std::vector<std::string>& results,
                              const std::function<const std::string&(size_t)>& key_of,
                              std::string_view who) {
  std::set<std::string> failed;
  for (size_t i = 0; i < results.size(); ++i) {
    auto& key = key_of(i);
    if (!results[i].empty())
      failed.insert(key);
    else if (failed.count(key) > 0)
      results[i] = std::string{who} +
                   ": held back behind an earlier failed event of key '" + key + "'";
  }
}

std::string event_traceparent(std::string_view correlation_id, uint64_t span) {
  char out[56];
  // W3C trace ids and span ids must not be all zeros.
  span = span == 0 ? 1 : span;
  if (is_trace_id(correlation_id)) {
    std::snprintf(out, sizeof out, "00-%.*s-%016llx-01", 32, correlation_id.data(),
                  static_cast<unsigned long long>(span));
  } else {
    // Not a trace id: one derived from it, the same for every event of the
    // correlation, so a tracer still groups them.
    auto hi = fnv1a(correlation_id, 0);
    auto lo = fnv1a(correlation_id, 0x9e3779b97f4a7c15ull) | 1;
    std::snprintf(out, sizeof out, "00-%016llx%016llx-%016llx-01",
                  static_cast<unsigned long long>(hi),
                  static_cast<unsigned long long>(lo),
                  static_cast<unsigned long long>(span));
  }
  return out;
}

std::string correlation_of(const outbound_event& event) {
  if (auto id = event.header(event_headers::correlation_id); !id.empty())
    return id;
  // version "-" trace-id(32) "-" parent-id(16) "-" flags
  auto tp = event.header(event_headers::traceparent);
  if (tp.size() >= 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' &&
      is_trace_id(std::string_view{tp}.substr(3, 32)))
    return tp.substr(3, 32);
  return {};
}

caf::actor event_subscriber::handle() const {
  return batch_consumer ? caf::actor_cast<caf::actor>(batch_consumer)
                        : caf::actor_cast<caf::actor>(consumer);
}

} // namespace troupe
