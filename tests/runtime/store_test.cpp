#include <troupe/runtime/store.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <troupe/runtime/metrics.hpp>

using namespace std::chrono_literals;
using troupe::store_column;

namespace {

/// A fresh directory under the system's temp dir, removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path =
        std::filesystem::temp_directory_path() /
        ("troupe-store-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

troupe::store_settings settings_for(const temp_dir& dir) {
  troupe::store_settings s;
  s.path = dir.str() + "/db";
  return s;
}

/// Commits and waits (at most 10 s) for the callback; returns its error text,
/// or "timed out" when it never came.
std::string commit_and_wait(troupe::store& db, troupe::write_batch batch) {
  auto done = std::make_shared<std::promise<std::string>>();
  auto result = done->get_future();
  db.commit(std::move(batch), [done](const std::string& err) { done->set_value(err); });
  if (result.wait_for(10s) != std::future_status::ready)
    return "timed out";
  return result.get();
}

std::vector<std::pair<std::string, std::string>>
scan_all(const troupe::store& db, store_column column, std::string_view prefix,
         std::string_view start_after = {}, size_t limit = 100) {
  std::vector<std::pair<std::string, std::string>> out;
  db.scan(column, prefix, start_after, [&](std::string_view k, std::string_view v) {
    out.emplace_back(std::string{k}, std::string{v});
    return out.size() < limit;
  });
  return out;
}

} // namespace

TEST_CASE("a committed batch is readable after reopening the store") {
  temp_dir dir;
  {
    auto db = troupe::store::open(settings_for(dir));
    troupe::write_batch batch;
    batch.put(store_column::state, "account/1", "100");
    batch.put(store_column::sagas, "saga/7", "started");
    REQUIRE(commit_and_wait(*db, std::move(batch)).empty());
  }
  auto db = troupe::store::open(settings_for(dir));
  CHECK(db->get(store_column::state, "account/1") == "100");
  CHECK(db->get(store_column::sagas, "saga/7") == "started");
  // Column families are separate key spaces.
  CHECK_FALSE(db->get(store_column::sagas, "account/1"));
  CHECK_FALSE(db->get(store_column::state, "missing"));
}

TEST_CASE("a batch is applied atomically across column families") {
  temp_dir dir;
  auto db = troupe::store::open(settings_for(dir));
  troupe::write_batch seed;
  for (int i = 0; i < 200; ++i)
    seed.put(store_column::inbox, "msg/" + std::to_string(i), "pending");
  REQUIRE(commit_and_wait(*db, std::move(seed)).empty());

  // Each batch consumes an inbox entry, changes state and adds an outbox
  // event. A reader that sees the outbox event must see the other two.
  std::atomic<bool> writing{true};
  std::atomic<int> torn{0};
  std::atomic<int> seen{0};
  std::thread reader{[&] {
    while (writing) {
      for (int i = 0; i < 200; ++i) {
        auto id = std::to_string(i);
        if (!db->get(store_column::outbox, "event/" + id))
          continue;
        ++seen;
        if (db->get(store_column::state, "order/" + id) != "paid" ||
            db->get(store_column::inbox, "msg/" + id))
          ++torn;
      }
    }
  }};
  std::vector<std::future<std::string>> results;
  for (int i = 0; i < 200; ++i) {
    auto id = std::to_string(i);
    troupe::write_batch batch;
    batch.erase(store_column::inbox, "msg/" + id);
    batch.put(store_column::state, "order/" + id, "paid");
    batch.put(store_column::outbox, "event/" + id, "order_paid");
    auto done = std::make_shared<std::promise<std::string>>();
    results.push_back(done->get_future());
    db->commit(std::move(batch),
               [done](const std::string& err) { done->set_value(err); });
  }
  for (auto& r : results) {
    REQUIRE(r.wait_for(10s) == std::future_status::ready);
    CHECK(r.get().empty());
  }
  writing = false;
  reader.join();
  CHECK(torn == 0);
  CHECK(scan_all(*db, store_column::inbox, "msg/").empty());
  CHECK(scan_all(*db, store_column::outbox, "event/", {}, 1000).size() == 200);
}

TEST_CASE("scan visits the keys of a prefix in order and resumes after start_after") {
  temp_dir dir;
  auto db = troupe::store::open(settings_for(dir));
  troupe::write_batch batch;
  for (auto key : {"o/3", "o/1", "n/9", "o/2", "p/1", "o/10"})
    batch.put(store_column::outbox, key, std::string{"v"} + key);
  REQUIRE(commit_and_wait(*db, std::move(batch)).empty());

  using entries = std::vector<std::pair<std::string, std::string>>;
  CHECK(scan_all(*db, store_column::outbox, "o/") ==
        entries{{"o/1", "vo/1"}, {"o/10", "vo/10"}, {"o/2", "vo/2"}, {"o/3", "vo/3"}});
  SECTION("a visitor that returns false stops the scan") {
    CHECK(scan_all(*db, store_column::outbox, "o/", {}, 2) ==
          entries{{"o/1", "vo/1"}, {"o/10", "vo/10"}});
  }
  SECTION("start_after resumes after that key, whether it exists or not") {
    CHECK(scan_all(*db, store_column::outbox, "o/", "o/10") ==
          entries{{"o/2", "vo/2"}, {"o/3", "vo/3"}});
    CHECK(scan_all(*db, store_column::outbox, "o/", "o/25") == entries{{"o/3", "vo/3"}});
    CHECK(scan_all(*db, store_column::outbox, "o/", "o/3").empty());
  }
  SECTION("a start_after before the prefix starts at the prefix") {
    CHECK(scan_all(*db, store_column::outbox, "o/", "a").size() == 4);
  }
  SECTION("an empty prefix visits the whole column family") {
    CHECK(scan_all(*db, store_column::outbox, "").size() == 6);
    CHECK(scan_all(*db, store_column::inbox, "").empty());
  }
}

TEST_CASE("concurrent writers share fsyncs through group commit") {
  temp_dir dir;
  auto db = troupe::store::open(settings_for(dir));
  constexpr int writers = 64;
  constexpr int per_writer = 50;
  std::atomic<int> failures{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      ++ready;
      while (!go)
        std::this_thread::yield();
      // Each writer waits for its commit to be durable before the next, as
      // an actor answering a request would.
      for (int i = 0; i < per_writer; ++i) {
        troupe::write_batch batch;
        auto key = "w" + std::to_string(w) + "/" + std::to_string(i);
        bytes += key.size() + 100;
        batch.put(store_column::state, std::move(key), std::string(100, 'x'));
        if (!commit_and_wait(*db, std::move(batch)).empty())
          ++failures;
      }
    });
  }
  while (ready < writers)
    std::this_thread::yield();
  go = true;
  for (auto& t : threads)
    t.join();
  auto stats = db->stats();
  if (std::getenv("TROUPE_TEST_VERBOSE"))
    std::printf("group commit: %llu commits in %llu batches, %llu syncs\n",
                static_cast<unsigned long long>(stats.commits),
                static_cast<unsigned long long>(stats.batches),
                static_cast<unsigned long long>(stats.syncs));
  CHECK(failures == 0);
  CHECK(stats.commits == writers * per_writer);
  CHECK(stats.syncs == stats.batches);
  CHECK(stats.syncs < writers * per_writer / 2);
  CHECK(stats.bytes_written == bytes);
  CHECK(db->get(store_column::state, "w63/49"));
  auto text = troupe::metrics::instance().serialize();
  CHECK(text.find("troupe_store_commits_total") != std::string::npos);
  CHECK(text.find("troupe_store_batch_commits_bucket") != std::string::npos);
  CHECK(text.find("troupe_store_fsync_seconds_count") != std::string::npos);
}

TEST_CASE("a writer's callback runs only after its batch was synced") {
  temp_dir dir;
  auto db = troupe::store::open(settings_for(dir));
  auto* raw = db.get();
  for (int i = 0; i < 20; ++i) {
    auto key = "k" + std::to_string(i);
    auto syncs_before = db->stats().syncs;
    auto done = std::make_shared<std::promise<void>>();
    auto called = done->get_future();
    uint64_t syncs_seen = 0;
    std::optional<std::string> value_seen;
    std::string error;
    troupe::write_batch batch;
    batch.put(store_column::state, key, "v");
    db->commit(std::move(batch), [&, raw, key, done](const std::string& err) {
      error = err;
      syncs_seen = raw->stats().syncs;
      value_seen = raw->get(store_column::state, key);
      done->set_value();
    });
    REQUIRE(called.wait_for(10s) == std::future_status::ready);
    CHECK(error.empty());
    CHECK(syncs_seen > syncs_before);
    CHECK(value_seen == "v");
  }
}

TEST_CASE("a store that does not sync counts no fsyncs") {
  temp_dir dir;
  auto settings = settings_for(dir);
  settings.sync = false;
  auto db = troupe::store::open(settings);
  for (int i = 0; i < 10; ++i) {
    troupe::write_batch batch;
    batch.put(store_column::inbox, "m" + std::to_string(i), "");
    REQUIRE(commit_and_wait(*db, std::move(batch)).empty());
  }
  auto stats = db->stats();
  CHECK(stats.commits == 10);
  CHECK(stats.batches >= 1);
  CHECK(stats.syncs == 0);
  CHECK(db->get(store_column::inbox, "m9") == "");
}

TEST_CASE("a second process opening the same store is refused with a clear message") {
  temp_dir dir;
  auto settings = settings_for(dir);
  int go[2];
  int result[2];
  REQUIRE(::pipe(go) == 0);
  REQUIRE(::pipe(result) == 0);
  // The child is forked before this process opens the store, so it shares
  // none of RocksDB's in-process lock bookkeeping: a second process.
  auto child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(go[1]);
    ::close(result[0]);
    char c;
    std::string text = "child: parent never opened the store";
    if (::read(go[0], &c, 1) == 1) {
      try {
        auto db = troupe::store::open(settings);
        text = "child: opened the store";
      } catch (const std::exception& e) {
        text = e.what();
      }
    }
    auto ignored = ::write(result[1], text.data(), text.size());
    (void)ignored;
    ::_exit(0);
  }
  ::close(go[0]);
  ::close(result[1]);
  auto db = troupe::store::open(settings);
  REQUIRE(::write(go[1], "x", 1) == 1);
  ::close(go[1]);
  std::string text;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{result[0], POLLIN, 0};
    if (left <= 0ms || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      ::kill(child, SIGKILL);
      text += " (child timed out)";
      break;
    }
    char buf[512];
    auto n = ::read(result[0], buf, sizeof(buf));
    if (n <= 0)
      break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(result[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  INFO(text);
  CHECK(text.find("in use by another process") != std::string::npos);
  CHECK(text.find(settings.path) != std::string::npos);
  // The holder is unaffected.
  troupe::write_batch batch;
  batch.put(store_column::state, "still", "mine");
  CHECK(commit_and_wait(*db, std::move(batch)).empty());
}

TEST_CASE("a store path that cannot be created is refused naming the path") {
  temp_dir dir;
  std::FILE* f = std::fopen((dir.path / "plain").c_str(), "w");
  REQUIRE(f != nullptr);
  std::fclose(f);
  troupe::store_settings settings;
  settings.path = (dir.path / "plain" / "db").string();
  try {
    troupe::store::open(settings);
    FAIL("opened a store below a plain file");
  } catch (const troupe::store_error& e) {
    CHECK(std::string{e.what()}.find(settings.path) != std::string::npos);
  }
}

TEST_CASE("with inline_io a commit calls back before it returns") {
  temp_dir dir;
  auto settings = settings_for(dir);
  settings.inline_io = true;
  auto db = troupe::store::open(settings);
  bool called = false;
  std::thread::id where;
  troupe::write_batch batch;
  batch.put(store_column::dead_letters, "d1", "bad row");
  db->commit(std::move(batch), [&](const std::string& err) {
    CHECK(err.empty());
    called = true;
    where = std::this_thread::get_id();
  });
  CHECK(called);
  CHECK(where == std::this_thread::get_id());
  CHECK(db->get(store_column::dead_letters, "d1") == "bad row");
  CHECK(db->stats().commits == 1);
  CHECK(db->stats().syncs == 1);
}

TEST_CASE("a write batch appends in order and counts its key and value bytes") {
  troupe::write_batch a;
  a.put(store_column::state, "k1", "abc");
  troupe::write_batch b;
  b.erase(store_column::state, "k1");
  b.put(store_column::outbox, "e", "");
  a.append(std::move(b));
  REQUIRE(a.ops.size() == 3);
  CHECK(a.ops[1].erase);
  CHECK(a.ops[2].column == store_column::outbox);
  CHECK(a.bytes() == 2 + 3 + 2 + 1);
  CHECK(std::string{troupe::to_string(store_column::dead_letters)} == "dead_letters");
}
