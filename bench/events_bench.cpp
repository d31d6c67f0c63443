// Relay throughput: outbox rows committed → acknowledged by the embedded
// broker (200-byte payloads, fsync on), against raw store commits of the same
// rows in the same run. Usage: events_bench [--quick] [rows]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <random>
#include <string>
#include <thread>

#include <caf/all.hpp>
#include <unistd.h>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/outbox/relay.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

using namespace std::chrono;

namespace {

std::filesystem::path fresh_dir(const char* what) {
  std::random_device rd;
  auto p = std::filesystem::temp_directory_path() /
           ("troupe-events-bench-" + std::to_string(::getpid()) + "-" + what + "-" +
            std::to_string(rd()));
  std::filesystem::create_directories(p);
  return p;
}

/// Commits `rows` batches at once (the writer groups them) and waits for all.
void commit_all(troupe::store& db, std::vector<troupe::write_batch> batches) {
  std::atomic<size_t> left{batches.size()};
  std::promise<void> done;
  for (auto& b : batches)
    db.commit(std::move(b), [&](const std::string& err) {
      if (!err.empty())
        std::fprintf(stderr, "commit failed: %s\n", err.c_str());
      if (left.fetch_sub(1) == 1)
        done.set_value();
    });
  done.get_future().wait();
}

double raw_rate(size_t rows, const std::string& payload) {
  auto dir = fresh_dir("raw");
  troupe::store_settings s;
  s.path = (dir / "db").string();
  auto db = troupe::store::open(s);
  std::vector<troupe::write_batch> batches(rows);
  for (size_t i = 0; i < rows; ++i)
    batches[i].put(troupe::store_column::outbox, troupe::outbox_row_key(i), payload);
  auto start = steady_clock::now();
  commit_all(*db, std::move(batches));
  auto secs = duration<double>(steady_clock::now() - start).count();
  db.reset();
  std::filesystem::remove_all(dir);
  return static_cast<double>(rows) / secs;
}

bool outbox_empty(troupe::store& db) {
  bool empty = true;
  db.scan(troupe::store_column::outbox, troupe::outbox_key_prefix, {},
          [&](std::string_view, std::string_view) {
            empty = false;
            return false;
          });
  return empty;
}

double relay_rate(caf::actor_system& sys, size_t rows, const std::string& payload) {
  auto dir = fresh_dir("relay");
  troupe::store_settings s;
  s.path = (dir / "db").string();
  auto db = troupe::store::open(s);
  auto store = troupe::spawn_store_actor(sys, db);
  auto sequence = troupe::outbox_sequence::open(*db, "bench");
  auto broker = troupe::spawn_embedded_broker(sys, store);
  troupe::relay_settings rs;
  rs.poll_interval = milliseconds(1);
  auto relay = troupe::spawn_relay(sys, store, broker, rs);
  std::vector<troupe::write_batch> batches;
  batches.reserve(rows);
  for (size_t i = 0; i < rows; ++i) {
    troupe::outbox_transaction tx{sequence};
    tx.emit_encoded("bench.events", "key-" + std::to_string(i % 64), "bench_event",
                    payload);
    batches.push_back(std::move(tx).take());
  }
  auto start = steady_clock::now();
  commit_all(*db, std::move(batches));
  while (!outbox_empty(*db))
    std::this_thread::sleep_for(milliseconds(1));
  auto secs = duration<double>(steady_clock::now() - start).count();
  caf::scoped_actor self{sys};
  for (auto h : {caf::actor_cast<caf::actor>(relay), caf::actor_cast<caf::actor>(broker),
                 caf::actor_cast<caf::actor>(store)}) {
    self->send_exit(h, caf::exit_reason::user_shutdown);
    self->wait_for(h);
  }
  sys.registry().erase(caf::atom("store"));
  db.reset();
  std::filesystem::remove_all(dir);
  return static_cast<double>(rows) / secs;
}

} // namespace

int main(int argc, char** argv) {
  size_t rows = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      rows = 1000;
    else
      rows = std::stoul(argv[i]);
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::string payload(200, 'x');
  auto raw = raw_rate(rows, payload);
  auto relay = relay_rate(sys, rows, payload);
  std::printf("rows: %zu, payload: 200 bytes, fsync on\n", rows);
  std::printf("raw store commits:               %10.0f rows/s\n", raw);
  std::printf("outbox → relay → embedded broker: %10.0f rows/s (%.2f × raw)\n", relay,
              relay / raw);
  return 0;
}
