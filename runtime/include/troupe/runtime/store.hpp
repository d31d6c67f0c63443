#pragma once

// The node's durable store: one RocksDB database per node, column families
// per concern, and one group-commit writer that many actors share. This
// header is light (no RocksDB, no CAF actor headers); the actor face is in
// store_actor.hpp.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <caf/meta/type_name.hpp>

namespace troupe {

/// The store's column families, one per concern.
enum class store_column : uint8_t {
  sagas,        ///< saga logs and snapshots
  idempotency,  ///< processed idempotency keys with their replies
  state,        ///< services' own durable state
  outbox,       ///< events committed with a state change, not yet published
  inbox,        ///< ids of consumed messages
  dead_letters, ///< rows and messages that could not be delivered
};

/// The column family's name in RocksDB ("sagas", "idempotency", ...).
const char* to_string(store_column column);

/// One atomic change: puts and deletes across column families, applied all
/// or nothing, durable when the commit is answered.
struct write_batch {
  struct op {
    store_column column = store_column::state;
    bool erase = false;
    std::string key;
    std::string value;
  };
  std::vector<op> ops;
  /// False: the batch alone needs no fsync, so a power loss may lose it (a
  /// process crash does not); for writes whose loss only repeats work, such
  /// as the relay's record of what it published. A group commit syncs when
  /// any of its batches asks to.
  bool sync = true;

  void put(store_column column, std::string key, std::string value);
  void erase(store_column column, std::string key);
  /// Appends every operation of `other` (in order) to this batch, which then
  /// syncs if either did.
  void append(write_batch other);
  bool empty() const noexcept { return ops.empty(); }
  /// Key and value bytes, what the batch adds to the write-ahead log.
  size_t bytes() const noexcept;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, write_batch::op& x) {
  return f(caf::meta::type_name("write_batch_op"), x.column, x.erase, x.key, x.value);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, write_batch& x) {
  return f(caf::meta::type_name("write_batch"), x.ops, x.sync);
}

struct store_settings {
  std::string path;
  /// fsync every group commit before answering its writers. Off, a commit is
  /// answered once RocksDB has it in the OS page cache: a process crash loses
  /// nothing, a power loss may lose the last commits.
  bool sync = true;
  /// Upper bound of one group commit; writers beyond it wait for the next.
  size_t max_batch_bytes = 4 << 20;
  /// Commits and reads run on the calling thread instead of the store's own
  /// threads. Only for CAF's deterministic test coordinator, which runs every
  /// actor on the test's thread.
  bool inline_io = false;
};

/// Counters since open; read from any thread.
struct store_stats {
  uint64_t commits = 0;       ///< commit() calls answered
  uint64_t batches = 0;       ///< RocksDB writes (group commits)
  uint64_t syncs = 0;         ///< of which with fsync
  uint64_t bytes_written = 0; ///< key and value bytes written
};

/// Failure to open the store (path unusable, locked by another process,
/// corrupt); the message names the path and says what to do.
class store_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// One RocksDB database with troupe's column families. `commit` never
/// blocks: it queues the batch for the writer thread, which merges every
/// queued batch into one WriteBatch and one fsync, then calls each writer's
/// callback. Reads may block on disk: call them from the store actor's reader
/// thread, at start-up, or in tests, never from a scheduler thread.
class store {
public:
  /// Opens (creating if missing) the database at `settings.path`. Throws
  /// store_error, e.g. when another process holds the path.
  static std::shared_ptr<store> open(const store_settings& settings);

  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  /// Called once the batch is durable (error empty) or failed (error says
  /// why), on the writer thread (or the caller's, with inline_io).
  using commit_callback = std::function<void(const std::string& error)>;
  void commit(write_batch batch, commit_callback done);

  std::optional<std::string> get(store_column column, const std::string& key) const;

  /// Visits the keys starting with `prefix` in key order, beginning after
  /// `start_after` when it is not empty, until `visit` returns false.
  void scan(store_column column, std::string_view prefix, std::string_view start_after,
            const std::function<bool(std::string_view key, std::string_view value)>&
                visit) const;

  store_stats stats() const;
  const store_settings& settings() const noexcept;

private:
  store();
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe
