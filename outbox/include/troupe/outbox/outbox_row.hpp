#pragma once

// One committed event waiting in the outbox (or parked in dead letters), and
// how rows are keyed and stored.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <troupe/outbox/outbound_event.hpp>

namespace troupe {

/// An outbox row: the event plus the relay's delivery bookkeeping, persisted
/// so a restarted relay keeps its attempt count and backoff.
struct outbox_row {
  outbound_event event;
  uint32_t attempts = 0;
  /// Unix time in milliseconds before which the relay does not retry.
  int64_t next_attempt_ms = 0;
  /// Unix time in milliseconds of the commit, for the backlog's age.
  int64_t committed_ms = 0;
  std::string last_error;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, outbox_row& x) {
  return f(caf::meta::type_name("outbox_row"), x.event, x.attempts, x.next_attempt_ms,
           x.committed_ms, x.last_error);
}

/// Row keys in `store_column::outbox` and (with this prefix) in
/// `store_column::dead_letters`: the prefix then the node's sequence number,
/// big-endian, so key order is emit order.
constexpr std::string_view outbox_key_prefix = "outbox/";
std::string outbox_row_key(uint64_t sequence);

std::string encode_outbox_row(const outbox_row& row);
/// Empty when `bytes` is not a row of this format.
std::optional<outbox_row> decode_outbox_row(std::string_view bytes);

/// Unix time in milliseconds. Persisted times must mean the same after a
/// restart, which the actor clock (steady) does not.
int64_t unix_millis();

} // namespace troupe
