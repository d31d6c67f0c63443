#include <troupe/runtime/store_actor.hpp>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include <troupe/runtime/errors.hpp>

namespace troupe {

namespace {

using store_atom = caf::atom_constant<caf::atom("store")>;
using committed_atom = caf::atom_constant<caf::atom("stcommitd")>;
using got_atom = caf::atom_constant<caf::atom("stgot")>;
using scanned_atom = caf::atom_constant<caf::atom("stscanned")>;
using notify_watchers_atom = caf::atom_constant<caf::atom("stnotify")>;

// The public interface plus what the store's threads send back: the ticket of
// the request, its result, and an error text (empty on success).
using store_impl_actor = store_actor::extend<
    caf::reacts_to<committed_atom, uint64_t, std::string>,
    caf::reacts_to<got_atom, uint64_t, caf::optional<std::string>, std::string>,
    caf::reacts_to<scanned_atom, uint64_t, scan_page, std::string>,
    caf::reacts_to<notify_watchers_atom>>;

// One thread that runs blocking reads in order. Shared between the actor and
// the thread, so stopping from the thread itself (when the actor's last
// reference is dropped there) can detach instead of joining itself.
class reader {
public:
  static std::shared_ptr<reader> start() {
    auto r = std::make_shared<reader>();
    r->thread_ = std::thread{[r] { r->loop(); }};
    return r;
  }

  ~reader() {
    // Only reached after stop() (the thread holds a reference until then).
    if (thread_.joinable() && thread_.get_id() == std::this_thread::get_id())
      thread_.detach();
    else if (thread_.joinable())
      thread_.join();
  }

  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

  /// Runs what is queued, then ends the thread.
  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (stopping_)
        return;
      stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach();
    else if (thread_.joinable())
      thread_.join();
  }

private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> guard{mtx_};
        cv_.wait(guard, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty())
          return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

struct store_state {
  static inline const char* name = "store";
  std::shared_ptr<store> db;
  std::shared_ptr<reader> reads; // none with inline_io
  uint64_t next_ticket = 0;
  std::unordered_map<uint64_t, caf::typed_response_promise<caf::ok_atom>> commits;
  std::unordered_map<uint64_t, caf::typed_response_promise<caf::optional<std::string>>>
      gets;
  std::unordered_map<uint64_t, caf::typed_response_promise<scan_page>> scans;
  std::vector<std::pair<store_column, caf::actor>> watchers;
  // Columns written by commits that became durable since watchers were told,
  // and the columns of commits in flight, as bit masks.
  uint32_t changed = 0;
  std::unordered_map<uint64_t, uint32_t> commit_columns;
  // Set by an exit message: the actor answers what is in flight, then quits.
  bool stopping = false;
  caf::error stop_reason;

  bool idle() const { return commits.empty() && gets.empty() && scans.empty(); }
};

using store_pointer = store_impl_actor::stateful_pointer<store_state>;

scan_page read_page(const store& db, store_column column, const std::string& prefix,
                    const std::string& start_after, uint32_t limit) {
  scan_page page;
  db.scan(column, prefix, start_after, [&](std::string_view key, std::string_view value) {
    if (page.entries.size() >= limit) {
      page.more = true;
      return false;
    }
    page.entries.emplace_back(std::string{key}, std::string{value});
    return true;
  });
  return page;
}

caf::optional<std::string> read_value(const store& db, store_column column,
                                      const std::string& key) {
  if (auto value = db.get(column, key))
    return std::move(*value);
  return caf::none;
}

caf::error commit_failed(const std::string& why) {
  return make_error(errc::internal, "store commit failed: " + why);
}

caf::error read_failed(const std::string& why) {
  return make_error(errc::internal, "store read failed: " + why);
}

caf::error stopping_error() {
  return make_error(errc::shutting_down, "the store is stopping");
}

uint32_t column_bit(store_column column) {
  return uint32_t{1} << static_cast<unsigned>(column);
}

/// The watched columns `batch` puts keys into.
uint32_t watched_puts(const store_state& st, const write_batch& batch) {
  uint32_t watched = 0;
  for (auto& [column, _] : st.watchers)
    watched |= column_bit(column);
  uint32_t out = 0;
  if (watched == 0)
    return 0;
  for (auto& op : batch.ops)
    if (!op.erase)
      out |= column_bit(op.column) & watched;
  return out;
}

// The commits of one group commit are answered back to back; the message to
// itself queues behind them, so watchers hear of the group once.
void columns_changed(store_pointer self, uint32_t columns) {
  if (columns == 0)
    return;
  if (self->state.changed == 0)
    self->send(self, notify_watchers_atom::value);
  self->state.changed |= columns;
}

void notify_watchers(store_pointer self) {
  auto& st = self->state;
  for (auto& [column, watcher] : st.watchers)
    if (st.changed & column_bit(column))
      caf::anon_send(watcher, store_changed_atom::value, column);
  st.changed = 0;
}

void watch(store_pointer self, store_column column, caf::actor watcher) {
  if (!watcher)
    return;
  self->monitor(watcher);
  self->state.watchers.emplace_back(column, std::move(watcher));
}

void forget_watcher(store_pointer self, const caf::down_msg& down) {
  auto& w = self->state.watchers;
  w.erase(
      std::remove_if(w.begin(), w.end(),
                     [&](auto& entry) { return entry.second.address() == down.source; }),
      w.end());
}

void quit_if_drained(store_pointer self) {
  if (self->state.stopping && self->state.idle())
    self->quit(self->state.stop_reason);
}

template <class Map, class... Ts>
void deliver(store_pointer self, Map& pending, uint64_t ticket, Ts&&... xs) {
  auto i = pending.find(ticket);
  if (i == pending.end())
    return;
  auto rp = std::move(i->second);
  pending.erase(i);
  rp.deliver(std::forward<Ts>(xs)...);
  quit_if_drained(self);
}

// With inline_io every call completes in its handler (CAF's deterministic
// test coordinator runs all actors on the test's thread).
store_impl_actor::behavior_type inline_store(store_pointer self) {
  return {
      [self](store_commit_atom, write_batch& batch) -> caf::result<caf::ok_atom> {
        std::string error;
        auto columns = watched_puts(self->state, batch);
        self->state.db->commit(std::move(batch),
                               [&](const std::string& e) { error = e; });
        if (!error.empty())
          return commit_failed(error);
        columns_changed(self, columns);
        return caf::ok_atom::value;
      },
      [self](store_get_atom, store_column column,
             const std::string& key) -> caf::result<caf::optional<std::string>> {
        try {
          return read_value(*self->state.db, column, key);
        } catch (const std::exception& e) {
          return read_failed(e.what());
        }
      },
      [self](store_scan_atom, store_column column, const std::string& prefix,
             const std::string& start_after, uint32_t limit) -> caf::result<scan_page> {
        try {
          return read_page(*self->state.db, column, prefix, start_after, limit);
        } catch (const std::exception& e) {
          return read_failed(e.what());
        }
      },
      [self](store_watch_atom, store_column column, caf::actor& watcher) {
        watch(self, column, std::move(watcher));
      },
      [](committed_atom, uint64_t, const std::string&) {},
      [](got_atom, uint64_t, const caf::optional<std::string>&, const std::string&) {},
      [](scanned_atom, uint64_t, const scan_page&, const std::string&) {},
      [self](notify_watchers_atom) { notify_watchers(self); },
  };
}

// Commits go to the store's writer thread, reads to this actor's reader
// thread; both answer with a message to the actor, which delivers the
// promise on its own execution unit (never from a foreign thread). Each
// queued job holds a handle to the actor until it has answered, so the actor
// outlives its pending work but nothing keeps it alive after that.
store_impl_actor::behavior_type threaded_store(store_pointer self) {
  self->state.reads = reader::start();
  self->attach_functor([reads = self->state.reads] { reads->stop(); });
  return {
      [self](store_commit_atom, write_batch& batch) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.stopping)
          return stopping_error();
        auto rp = self->make_response_promise<caf::ok_atom>();
        auto ticket = st.next_ticket++;
        st.commits.emplace(ticket, rp);
        if (auto columns = watched_puts(st, batch))
          st.commit_columns.emplace(ticket, columns);
        store_impl_actor hdl{self};
        st.db->commit(std::move(batch), [hdl, ticket](const std::string& error) {
          caf::anon_send(hdl, committed_atom::value, ticket, error);
        });
        return rp;
      },
      [self](store_get_atom, store_column column,
             std::string& key) -> caf::result<caf::optional<std::string>> {
        auto& st = self->state;
        if (st.stopping)
          return stopping_error();
        auto rp = self->make_response_promise<caf::optional<std::string>>();
        auto ticket = st.next_ticket++;
        st.gets.emplace(ticket, rp);
        st.reads->post([hdl = store_impl_actor{self}, db = st.db, ticket, column,
                        key = std::move(key)] {
          caf::optional<std::string> value;
          std::string error;
          try {
            value = read_value(*db, column, key);
          } catch (const std::exception& e) {
            error = e.what();
          }
          caf::anon_send(hdl, got_atom::value, ticket, std::move(value),
                         std::move(error));
        });
        return rp;
      },
      [self](store_scan_atom, store_column column, std::string& prefix,
             std::string& start_after, uint32_t limit) -> caf::result<scan_page> {
        auto& st = self->state;
        if (st.stopping)
          return stopping_error();
        auto rp = self->make_response_promise<scan_page>();
        auto ticket = st.next_ticket++;
        st.scans.emplace(ticket, rp);
        st.reads->post([hdl = store_impl_actor{self}, db = st.db, ticket, column,
                        prefix = std::move(prefix), start_after = std::move(start_after),
                        limit] {
          scan_page page;
          std::string error;
          try {
            page = read_page(*db, column, prefix, start_after, limit);
          } catch (const std::exception& e) {
            error = e.what();
          }
          caf::anon_send(hdl, scanned_atom::value, ticket, std::move(page),
                         std::move(error));
        });
        return rp;
      },
      [self](committed_atom, uint64_t ticket, const std::string& error) {
        auto& st = self->state;
        if (auto i = st.commit_columns.find(ticket); i != st.commit_columns.end()) {
          if (error.empty())
            columns_changed(self, i->second);
          st.commit_columns.erase(i);
        }
        if (error.empty())
          deliver(self, self->state.commits, ticket, caf::ok_atom::value);
        else
          deliver(self, self->state.commits, ticket, commit_failed(error));
      },
      [self](store_watch_atom, store_column column, caf::actor& watcher) {
        watch(self, column, std::move(watcher));
      },
      [self](notify_watchers_atom) { notify_watchers(self); },
      [self](got_atom, uint64_t ticket, caf::optional<std::string>& value,
             const std::string& error) {
        if (error.empty())
          deliver(self, self->state.gets, ticket, std::move(value));
        else
          deliver(self, self->state.gets, ticket, read_failed(error));
      },
      [self](scanned_atom, uint64_t ticket, scan_page& page, const std::string& error) {
        if (error.empty())
          deliver(self, self->state.scans, ticket, std::move(page));
        else
          deliver(self, self->state.scans, ticket, read_failed(error));
      },
  };
}

store_impl_actor::behavior_type store_server(store_pointer self,
                                             std::shared_ptr<store> db) {
  self->state.db = std::move(db);
  self->set_down_handler([self](caf::down_msg& down) { forget_watcher(self, down); });
  // An exit message (shutdown, or a linked actor's failure) lets the commits
  // in flight finish and be answered before the actor quits.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    if (msg.reason == caf::exit_reason::normal)
      return; // as CAF's default handler: a normal exit of a link is no failure
    self->state.stopping = true;
    self->state.stop_reason = std::move(msg.reason);
    quit_if_drained(self);
  });
  if (self->state.db->settings().inline_io)
    return inline_store(self);
  return threaded_store(self);
}

} // namespace

store_actor spawn_store_actor(caf::actor_system& sys, std::shared_ptr<store> db) {
  if (!db)
    throw store_error("spawn_store_actor: no store given (store::open it first)");
  store_actor handle = sys.spawn(store_server, std::move(db));
  // Registered here, not in the actor's init: services spawned right after
  // must find it before it first runs.
  sys.registry().put(store_atom::value, caf::actor_cast<caf::strong_actor_ptr>(handle));
  return handle;
}

store_actor local_store(caf::actor_system& sys) {
  return caf::actor_cast<store_actor>(sys.registry().get(store_atom::value));
}

} // namespace troupe
