#pragma once

// A real actor system over a RocksDB store in a fresh temporary directory,
// for the event bus's tests, plus a consumer that records what it is handed
// and lets a test wait (with a deadline) until it has seen enough.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <unistd.h>

#include <troupe/outbox/outbound_event.hpp>
#include <troupe/outbox/outbox_row.hpp>
#include <troupe/outbox/outbox_sequence.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe::test {

struct temp_store_dir {
  std::filesystem::path path;
  temp_store_dir() {
    std::random_device rd;
    path =
        std::filesystem::temp_directory_path() /
        ("troupe-events-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_store_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// Waits until `done()` holds or `deadline` passes; true when it holds.
/// Polls the condition (state in the store has no change notification).
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (done())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

/// The value of metric `name` whose labels include all of `labels`; -1 when
/// there is none.
inline double metric_value(const std::string& name,
                           const std::map<std::string, std::string>& labels) {
  for (auto& family : metrics::instance().registry().Collect()) {
    if (family.name != name)
      continue;
    for (auto& m : family.metric) {
      size_t matched = 0;
      for (auto& l : m.label)
        if (auto it = labels.find(l.name); it != labels.end() && it->second == l.value)
          ++matched;
      if (matched == labels.size())
        return family.type == prometheus::MetricType::Counter ? m.counter.value
                                                              : m.gauge.value;
    }
  }
  return -1;
}

/// What a recording consumer saw, shared with the test's thread.
struct received_events {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<delivered_event> events;

  bool wait_for(size_t n, std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, deadline, [&] { return events.size() >= n; });
  }
  std::vector<delivered_event> snapshot() {
    std::lock_guard<std::mutex> guard{mtx};
    return events;
  }
};

inline event_consumer_actor::behavior_type
recording_consumer(event_consumer_actor::pointer, std::shared_ptr<received_events> out) {
  return {
      [out](deliver_atom, delivered_event& d) {
        {
          std::lock_guard<std::mutex> guard{out->mtx};
          out->events.push_back(std::move(d));
        }
        out->cv.notify_all();
        return caf::ok_atom::value;
      },
  };
}

/// What a recording batch consumer was handed: each batch as it came, and
/// the events it handled in order. Its first `short_answers` batches it
/// handles only `short_count` of, so the broker must deliver the rest again.
struct received_batches {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::vector<delivered_event>> batches;
  std::vector<delivered_event> handled;
  uint32_t short_answers = 0;
  uint32_t short_count = 0;

  bool wait_for(size_t n, std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, deadline, [&] { return handled.size() >= n; });
  }
  std::vector<std::vector<delivered_event>> batches_seen() {
    std::lock_guard<std::mutex> guard{mtx};
    return batches;
  }
  std::vector<delivered_event> handled_events() {
    std::lock_guard<std::mutex> guard{mtx};
    return handled;
  }
};

inline event_batch_consumer_actor::behavior_type
recording_batch_consumer(event_batch_consumer_actor::pointer,
                         std::shared_ptr<received_batches> out) {
  return {
      [out](deliver_batch_atom, std::vector<delivered_event>& batch) {
        uint32_t n = static_cast<uint32_t>(batch.size());
        {
          std::lock_guard<std::mutex> guard{out->mtx};
          if (out->short_answers > 0) {
            --out->short_answers;
            n = std::min(n, out->short_count);
          }
          out->handled.insert(out->handled.end(), batch.begin(), batch.begin() + n);
          out->batches.push_back(std::move(batch));
        }
        out->cv.notify_all();
        return n;
      },
  };
}

/// The largest batch in `batches`.
inline size_t largest(const std::vector<std::vector<delivered_event>>& batches) {
  size_t most = 0;
  for (auto& b : batches)
    most = std::max(most, b.size());
  return most;
}

/// A node's store and actor system. Tests restart the actors over it (relay,
/// broker, consumers), which is what a node restart re-creates from disk.
struct events_fixture {
  temp_store_dir dir;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<store> db;
  store_actor store_handle;
  std::shared_ptr<outbox_sequence> sequence;

  events_fixture() {
    sys = std::make_unique<caf::actor_system>(cfg);
    open();
  }
  ~events_fixture() {
    close();
    sys.reset();
  }

  void open() {
    store_settings s;
    s.path = (dir.path / "db").string();
    db = store::open(s);
    store_handle = spawn_store_actor(*sys, db);
    sequence = outbox_sequence::open(*db, "node-a");
  }
  void close() {
    if (store_handle) {
      caf::scoped_actor self{*sys};
      self->send_exit(store_handle, caf::exit_reason::user_shutdown);
      self->wait_for(store_handle);
      store_handle = nullptr;
    }
    sys->registry().erase(caf::atom("store"));
    db.reset();
  }

  /// Stops `h` and waits until it is gone.
  template <class Handle>
  void stop(Handle& h) {
    caf::scoped_actor self{*sys};
    self->send_exit(h, caf::exit_reason::user_shutdown);
    self->wait_for(h);
    h = nullptr;
  }

  void commit(write_batch batch) {
    caf::scoped_actor self{*sys};
    std::string error;
    self->request(store_handle, std::chrono::seconds(10), store_commit_atom::value,
                  std::move(batch))
        .receive([](caf::ok_atom) {}, [&](caf::error& e) { error = sys->render(e); });
    if (!error.empty())
      throw std::runtime_error("commit failed: " + error);
  }

  std::vector<std::pair<std::string, std::string>> scan(store_column column,
                                                        std::string prefix) {
    std::vector<std::pair<std::string, std::string>> out;
    db->scan(column, prefix, {}, [&](std::string_view k, std::string_view v) {
      out.emplace_back(std::string{k}, std::string{v});
      return true;
    });
    return out;
  }

  std::vector<outbox_row> rows(store_column column) {
    std::vector<outbox_row> out;
    for (auto& kv : scan(column, std::string{outbox_key_prefix}))
      if (auto row = decode_outbox_row(kv.second))
        out.push_back(std::move(*row));
    return out;
  }
};

} // namespace troupe::test

namespace troupe::test {

/// A publisher in front of a real one that fails every event of `key` in
/// its first `failures` calls (all of that key in a call, as the publisher
/// contract asks), or every event when `failures` is negative. Without a
/// next publisher it acknowledges the others unpublished.
struct failing_publisher_state {
  failing_publisher_state() = default;
  publisher_actor next;
  std::string key;
  int failures = 0;
};

inline publisher_actor::behavior_type
failing_publisher(publisher_actor::stateful_pointer<failing_publisher_state> self,
                  publisher_actor next, std::string key, int failures) {
  self->state.next = std::move(next);
  self->state.key = std::move(key);
  self->state.failures = failures;
  return {
      [=](publish_atom,
          std::vector<outbound_event>& events) -> caf::result<std::vector<std::string>> {
        auto& st = self->state;
        bool fail_key = false;
        for (auto& ev : events)
          if (st.failures != 0 && (st.key.empty() || ev.key == st.key))
            fail_key = true;
        if (fail_key && st.failures > 0)
          --st.failures;
        std::vector<std::string> results(events.size());
        std::vector<outbound_event> forward;
        std::vector<size_t> positions;
        for (size_t i = 0; i < events.size(); ++i) {
          if (fail_key && (st.key.empty() || events[i].key == st.key)) {
            results[i] = "injected failure";
          } else {
            forward.push_back(events[i]);
            positions.push_back(i);
          }
        }
        if (forward.empty() || !st.next)
          return results;
        auto rp = self->make_response_promise<std::vector<std::string>>();
        self->request(st.next, std::chrono::seconds(10), publish_atom::value,
                      std::move(forward))
            .then(
                [=](const std::vector<std::string>& acks) mutable {
                  auto out = results;
                  for (size_t j = 0; j < positions.size() && j < acks.size(); ++j)
                    out[positions[j]] = acks[j];
                  rp.deliver(out);
                },
                [=](caf::error& err) mutable {
                  auto out = results;
                  for (auto p : positions)
                    out[p] = self->system().render(err);
                  rp.deliver(out);
                });
        return rp;
      },
  };
}

} // namespace troupe::test
