#include <troupe/runtime/store.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <mutex>
#include <thread>
#include <utility>

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <troupe/runtime/metrics.hpp>

namespace troupe {

// -- write_batch ------------------------------------------------------------

void write_batch::put(store_column column, std::string key, std::string value) {
  ops.push_back(op{column, false, std::move(key), std::move(value)});
}

void write_batch::erase(store_column column, std::string key) {
  ops.push_back(op{column, true, std::move(key), {}});
}

void write_batch::append(write_batch other) {
  // An empty batch asks for nothing yet: it takes the other's wish.
  sync = ops.empty() ? other.sync : sync || other.sync;
  if (ops.empty()) {
    ops = std::move(other.ops);
    return;
  }
  ops.reserve(ops.size() + other.ops.size());
  std::move(other.ops.begin(), other.ops.end(), std::back_inserter(ops));
}

size_t write_batch::bytes() const noexcept {
  size_t n = 0;
  for (auto& x : ops)
    n += x.key.size() + x.value.size();
  return n;
}

const char* to_string(store_column column) {
  switch (column) {
  case store_column::sagas:
    return "sagas";
  case store_column::idempotency:
    return "idempotency";
  case store_column::state:
    return "state";
  case store_column::outbox:
    return "outbox";
  case store_column::inbox:
    return "inbox";
  case store_column::dead_letters:
    return "dead_letters";
  }
  return "unknown";
}

namespace {

constexpr std::array all_columns{store_column::sagas, store_column::idempotency,
                                 store_column::state, store_column::outbox,
                                 store_column::inbox, store_column::dead_letters};

// One set of families per process, shared by every store (tests open many).
struct store_metrics {
  prometheus::Counter* commits;
  prometheus::Counter* batches;
  prometheus::Histogram* batch_commits;
  prometheus::Histogram* fsync_seconds;
  prometheus::Counter* bytes_written;

  static const store_metrics& instance() {
    static const store_metrics m = [] {
      auto& reg = metrics::instance().registry();
      store_metrics x;
      x.commits = &prometheus::BuildCounter()
                       .Name("troupe_store_commits_total")
                       .Help("Batches committed to the store (answered commit calls).")
                       .Register(reg)
                       .Add({});
      x.batches = &prometheus::BuildCounter()
                       .Name("troupe_store_batches_total")
                       .Help("RocksDB writes: group commits of one or more batches.")
                       .Register(reg)
                       .Add({});
      x.batch_commits = &prometheus::BuildHistogram()
                             .Name("troupe_store_batch_commits")
                             .Help("Commits merged into one group commit.")
                             .Register(reg)
                             .Add({}, prometheus::Histogram::BucketBoundaries{
                                          1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
      x.fsync_seconds =
          &prometheus::BuildHistogram()
               .Name("troupe_store_fsync_seconds")
               .Help("Time of one group commit's RocksDB write, including the fsync "
                     "when the store syncs.")
               .Register(reg)
               .Add({}, prometheus::Histogram::BucketBoundaries{
                            1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                            5e-2, 0.1, 0.25, 0.5, 1.0});
      x.bytes_written = &prometheus::BuildCounter()
                             .Name("troupe_store_bytes_written_total")
                             .Help("Key and value bytes written to the store.")
                             .Register(reg)
                             .Add({});
      return x;
    }();
    return m;
  }
};

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// RocksDB reports a held LOCK file as an IOError: "While lock file: ...:
// Resource temporarily unavailable" when another process holds it, "lock hold
// by current process" when this process (or the process it was forked from)
// already opened the path.
[[noreturn]] void throw_open_error(const std::string& path, const rocksdb::Status& st) {
  auto text = st.ToString();
  if (st.IsIOError() && contains(text, "While lock file"))
    throw store_error("store at " + path +
                      " is in use by another process (RocksDB lock held): " + text +
                      "; stop that process or give this one another store.path");
  if (st.IsIOError() && contains(text, "lock hold by current process"))
    throw store_error("store at " + path +
                      " is already open in this process (RocksDB lock held): " + text);
  throw store_error("cannot open store at " + path + ": " + text);
}

} // namespace

// -- impl -------------------------------------------------------------------

struct store::impl {
  struct pending {
    write_batch batch;
    commit_callback done;
  };

  store_settings settings;
  rocksdb::DB* db = nullptr;
  rocksdb::ColumnFamilyHandle* default_cf = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> extra_cfs; // unknown families kept open
  std::array<rocksdb::ColumnFamilyHandle*, all_columns.size()> cfs{};
  const store_metrics& m = store_metrics::instance();

  std::mutex mtx;
  std::condition_variable cv;
  std::deque<pending> queue;
  bool stopping = false;
  // Set when the last owner released the store from a commit callback, i.e.
  // on the writer thread itself: the thread then drains and deletes `this`.
  bool orphaned = false;
  std::thread writer;

  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> syncs{0};
  std::atomic<uint64_t> bytes_written{0};

  ~impl() { close(); }

  rocksdb::ColumnFamilyHandle* cf(store_column column) const {
    return cfs[static_cast<size_t>(column)];
  }

  void close() {
    if (db == nullptr)
      return;
    for (auto* h : cfs)
      if (h != nullptr)
        db->DestroyColumnFamilyHandle(h);
    for (auto* h : extra_cfs)
      db->DestroyColumnFamilyHandle(h);
    if (default_cf != nullptr)
      db->DestroyColumnFamilyHandle(default_cf);
    auto st = db->Close();
    if (!st.ok())
      spdlog::warn("closing store at {}: {}", settings.path, st.ToString());
    delete db;
    db = nullptr;
  }

  // Writes `group` as one RocksDB write and answers every writer. The counters
  // are updated before the callbacks run, so a callback sees its own sync.
  void write(std::vector<pending>& group) {
    rocksdb::WriteBatch wb;
    uint64_t bytes = 0;
    bool sync = false;
    for (auto& p : group) {
      sync = sync || p.batch.sync;
      for (auto& x : p.batch.ops) {
        if (x.erase)
          wb.Delete(cf(x.column), x.key);
        else
          wb.Put(cf(x.column), x.key, x.value);
        bytes += x.key.size() + x.value.size();
      }
    }
    rocksdb::WriteOptions opts;
    opts.sync = settings.sync && sync;
    auto start = std::chrono::steady_clock::now();
    auto st = db->Write(opts, &wb);
    auto elapsed = std::chrono::steady_clock::now() - start;
    std::string error;
    if (st.ok()) {
      batches.fetch_add(1);
      if (opts.sync)
        syncs.fetch_add(1);
      bytes_written.fetch_add(bytes);
      m.batches->Increment();
      m.bytes_written->Increment(static_cast<double>(bytes));
      m.fsync_seconds->Observe(std::chrono::duration<double>(elapsed).count());
      m.batch_commits->Observe(static_cast<double>(group.size()));
    } else {
      error = "writing to store at " + settings.path + ": " + st.ToString();
      spdlog::error("{}", error);
    }
    commits.fetch_add(group.size());
    m.commits->Increment(static_cast<double>(group.size()));
    for (auto& p : group)
      if (p.done)
        p.done(error);
  }

  void writer_loop() {
    std::vector<pending> group;
    for (;;) {
      {
        std::unique_lock<std::mutex> guard{mtx};
        cv.wait(guard, [this] { return stopping || !queue.empty(); });
        if (queue.empty())
          break; // stopping and drained
        size_t bytes = 0;
        do {
          bytes += queue.front().batch.bytes();
          group.push_back(std::move(queue.front()));
          queue.pop_front();
        } while (!queue.empty() &&
                 bytes + queue.front().batch.bytes() <= settings.max_batch_bytes);
      }
      write(group);
      group.clear();
    }
    if (orphaned)
      delete this;
  }

  void stop_writer() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      stopping = true;
    }
    cv.notify_one();
  }
};

// -- store ------------------------------------------------------------------

store::store() = default;

store::~store() {
  if (!impl_ || !impl_->writer.joinable())
    return;
  if (impl_->writer.get_id() == std::this_thread::get_id()) {
    // Released from a commit callback: this thread is the writer, inside its
    // loop. It finishes the queue and frees the store on its way out.
    impl_->orphaned = true;
    impl_->writer.detach();
    impl_->stop_writer();
    impl_.release();
    return;
  }
  impl_->stop_writer();
  impl_->writer.join();
}

std::shared_ptr<store> store::open(const store_settings& settings) {
  if (settings.path.empty())
    throw store_error("store.path is empty: give the node a directory for its store");
  auto result = std::shared_ptr<store>(new store);
  result->impl_ = std::make_unique<impl>();
  auto& d = *result->impl_;
  d.settings = settings;

  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  // Keep families a newer version created open, or RocksDB refuses to open.
  std::vector<std::string> names;
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(options, settings.path, &existing).ok())
    names = existing;
  if (std::find(names.begin(), names.end(), rocksdb::kDefaultColumnFamilyName) ==
      names.end())
    names.insert(names.begin(), rocksdb::kDefaultColumnFamilyName);
  for (auto column : all_columns)
    if (std::find(names.begin(), names.end(), to_string(column)) == names.end())
      names.emplace_back(to_string(column));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (auto& name : names)
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions{options});

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto st = rocksdb::DB::Open(rocksdb::DBOptions{options}, settings.path, descriptors,
                              &handles, &d.db);
  if (!st.ok())
    throw_open_error(settings.path, st);
  for (size_t i = 0; i < names.size(); ++i) {
    auto column = std::find_if(all_columns.begin(), all_columns.end(),
                               [&](store_column c) { return names[i] == to_string(c); });
    if (column != all_columns.end())
      d.cfs[static_cast<size_t>(*column)] = handles[i];
    else if (names[i] == rocksdb::kDefaultColumnFamilyName)
      d.default_cf = handles[i];
    else
      d.extra_cfs.push_back(handles[i]);
  }
  if (!settings.inline_io)
    d.writer = std::thread{[&d] { d.writer_loop(); }};
  return result;
}

void store::commit(write_batch batch, commit_callback done) {
  if (impl_->settings.inline_io) {
    std::vector<impl::pending> group;
    group.push_back({std::move(batch), std::move(done)});
    impl_->write(group);
    return;
  }
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    impl_->queue.push_back({std::move(batch), std::move(done)});
  }
  impl_->cv.notify_one();
}

std::optional<std::string> store::get(store_column column, const std::string& key) const {
  std::string value;
  auto st = impl_->db->Get(rocksdb::ReadOptions{}, impl_->cf(column), key, &value);
  if (st.IsNotFound())
    return std::nullopt;
  if (!st.ok())
    throw store_error("reading " + std::string{to_string(column)} + " from store at " +
                      impl_->settings.path + ": " + st.ToString());
  return value;
}

void store::scan(store_column column, std::string_view prefix,
                 std::string_view start_after,
                 const std::function<bool(std::string_view key, std::string_view value)>&
                     visit) const {
  std::unique_ptr<rocksdb::Iterator> it{
      impl_->db->NewIterator(rocksdb::ReadOptions{}, impl_->cf(column))};
  bool resume = !start_after.empty() && start_after >= prefix;
  it->Seek(resume ? rocksdb::Slice{start_after.data(), start_after.size()}
                  : rocksdb::Slice{prefix.data(), prefix.size()});
  if (resume && it->Valid() && it->key().ToStringView() == start_after)
    it->Next();
  for (; it->Valid(); it->Next()) {
    auto key = it->key().ToStringView();
    if (!key.starts_with(prefix))
      break;
    if (!visit(key, it->value().ToStringView()))
      return;
  }
  if (!it->status().ok())
    throw store_error("scanning " + std::string{to_string(column)} + " in store at " +
                      impl_->settings.path + ": " + it->status().ToString());
}

store_stats store::stats() const {
  store_stats s;
  s.commits = impl_->commits.load();
  s.batches = impl_->batches.load();
  s.syncs = impl_->syncs.load();
  s.bytes_written = impl_->bytes_written.load();
  return s;
}

const store_settings& store::settings() const noexcept {
  return impl_->settings;
}

} // namespace troupe
