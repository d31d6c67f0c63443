#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace troupe {

class store;

/// The node's monotonic event sequence: row keys and message ids. Each start
/// takes a new epoch, persisted before the first event, so numbers never
/// repeat across restarts (an inbox would otherwise skip a new event that
/// reuses an old id).
class outbox_sequence {
public:
  /// Opens the sequence of `db` at start-up (blocks on one durable commit);
  /// `node` names this node in message ids. Throws store_error.
  static std::shared_ptr<outbox_sequence> open(store& db, std::string node);

  /// The next number, from any thread.
  uint64_t next() noexcept { return (epoch_ << 32) | counter_.fetch_add(1); }
  /// The message id of sequence number `seq`.
  std::string message_id(uint64_t seq) const;

private:
  outbox_sequence(uint64_t epoch, std::string node)
      : epoch_(epoch)
      , node_(std::move(node)) {}
  uint64_t epoch_;
  std::string node_;
  std::atomic<uint64_t> counter_{0};
};

} // namespace troupe
