#pragma once

// A deterministic actor system for tests (CAF-0.17.md §9): every actor runs
// on the test's thread under CAF's test coordinator, time is virtual, and a
// RocksDB store in a fresh temporary directory completes its commits and
// reads inline (store_settings.inline_io), so a saga's log writes need no
// real threads either. Nothing here sleeps: timers fire when a test says so.
//
//   troupe::test::deterministic f;
//   auto svc = f.spawn(my_service);
//   f.run();                 // every ready actor, to quiescence
//   f.fire_next_timer();     // the earliest pending timer (a 10 s timeout at once)

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <unistd.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe::test {

/// A directory under the system's temp dir, removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& tag = "troupe-test") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

/// The test's stand-in for the cluster actor's service registry: it answers
/// `find_service_atom` from services the test registers (checking the
/// interface the way the real registry does) and `members_atom` with no peers.
/// The cluster actor publishes itself through the middleman, which the test
/// coordinator cannot run; the cluster's own tests cover the real registry.
struct registry_entries {
  struct entry {
    caf::actor handle;
    std::vector<std::string> interface;
  };
  std::map<std::string, entry> services;
};

inline caf::behavior registry_stand_in(caf::event_based_actor* self,
                                       std::shared_ptr<registry_entries> entries) {
  (void)self;
  return {
      [entries](find_service_atom, const std::string& name,
                const std::vector<std::string>& interface) -> caf::result<caf::actor> {
        auto i = entries->services.find(name);
        if (i == entries->services.end() || !i->second.handle)
          return make_error(errc::service_unavailable,
                            "no live node provides service '" + name + "'");
        if (!interface.empty() && interface != i->second.interface)
          return make_error(errc::interface_mismatch,
                            "service '" + name + "' speaks another interface");
        return i->second.handle;
      },
      [](members_atom) { return std::vector<member_info>{}; },
  };
}

/// The deterministic system with an optional store and registry stand-in.
struct deterministic {
  struct options {
    bool with_store = true;
    bool with_registry = true;
  };

  temp_dir dir{"troupe-deterministic"};
  std::shared_ptr<store> db;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  store_actor store_handle;
  caf::actor registry;
  std::shared_ptr<registry_entries> entries = std::make_shared<registry_entries>();
  std::vector<caf::actor> spawned; ///< stopped, last first, at the end

  deterministic()
      : deterministic(options{}) {}

  explicit deterministic(options opts) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    if (opts.with_store) {
      store_settings settings;
      settings.path = (dir.path / "store").string();
      settings.inline_io = true;
      settings.sync = false;
      db = store::open(settings);
      store_handle = spawn_store_actor(*sys, db);
    }
    if (opts.with_registry) {
      registry = sys->spawn(registry_stand_in, entries);
      sys->registry().put(caf::atom("cluster"),
                          caf::actor_cast<caf::strong_actor_ptr>(registry));
    }
    run();
  }

  ~deterministic() {
    for (auto i = spawned.rbegin(); i != spawned.rend(); ++i)
      caf::anon_send_exit(*i, caf::exit_reason::user_shutdown);
    run();
    spawned.clear();
    if (registry) {
      sys->registry().erase(caf::atom("cluster"));
      caf::anon_send_exit(registry, caf::exit_reason::user_shutdown);
      registry = nullptr;
    }
    if (store_handle) {
      // The store goes last: the services above may still commit on the way out.
      caf::anon_send_exit(store_handle, caf::exit_reason::user_shutdown);
      store_handle = nullptr;
    }
    run();
    // Timers nobody will fire keep messages (and so actors) alive: drop them.
    for (int i = 0; i < 100000 && sched->trigger_timeout(); ++i)
      run();
    sys.reset();
  }

  deterministic(const deterministic&) = delete;
  deterministic& operator=(const deterministic&) = delete;

  /// Spawns a function-based actor that the fixture stops at the end.
  template <class... Ts>
  auto spawn(Ts&&... xs) {
    auto handle = sys->spawn(std::forward<Ts>(xs)...);
    spawned.push_back(caf::actor_cast<caf::actor>(handle));
    return handle;
  }

  /// Keeps `handle` on the list of actors the fixture stops at the end.
  template <class Handle>
  Handle keep(Handle handle) {
    spawned.push_back(caf::actor_cast<caf::actor>(handle));
    return handle;
  }

  /// Makes `handle` findable as `name` through the registry stand-in.
  template <class Handle>
  void register_service(const std::string& name, const Handle& handle) {
    auto names = sys->message_types<Handle>();
    entries->services[name] =
        registry_entries::entry{caf::actor_cast<caf::actor>(handle),
                                std::vector<std::string>(names.begin(), names.end())};
  }

  /// Stops one actor now (user_shutdown) and runs until it is gone.
  template <class Handle>
  void stop(const Handle& handle) {
    caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
    run();
  }

  /// Runs every ready actor until none has work left; returns the jobs run.
  size_t run() { return sched->run(); }

  /// Fires the earliest pending timer, whatever its time, then runs to
  /// quiescence; false when no timer is pending.
  bool fire_next_timer() {
    if (!sched->trigger_timeout())
      return false;
    run();
    return true;
  }

  /// Moves virtual time forward by `d`, fires what is due, runs to quiescence.
  void advance(std::chrono::nanoseconds d) {
    sched->advance_time(std::chrono::duration_cast<caf::timespan>(d));
    run();
  }

  /// Runs, firing timers one by one, until `done()` holds or `max_timers`
  /// timers fired; returns whether `done()` holds.
  template <class Predicate>
  bool run_until(Predicate done, size_t max_timers = 1000) {
    run();
    for (size_t i = 0; !done(); ++i)
      if (i == max_timers || !fire_next_timer())
        return done();
    return true;
  }

  /// Sends `xs` to `dst` from a fresh scoped actor, runs to quiescence and
  /// returns the reply, the error reply, or sec::request_timeout when none came.
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& dst, Ts&&... xs) {
    caf::scoped_actor self{*sys};
    self->send(caf::actor_cast<caf::actor>(dst), std::forward<Ts>(xs)...);
    run();
    caf::expected<T> result{caf::make_error(caf::sec::request_timeout)};
    self->receive([&](T& x) { result = std::move(x); },
                  [&](caf::error& err) { result = std::move(err); },
                  caf::after(std::chrono::seconds(0)) >> [] {});
    return result;
  }

  /// Commits a batch straight to the store (inline, on the test's thread).
  std::string commit(write_batch batch) {
    std::string result = "not answered";
    db->commit(std::move(batch), [&](const std::string& error) { result = error; });
    return result;
  }
};

/// True when `err` carries troupe's code `code`.
inline bool has_code(const caf::error& err, errc code) {
  return err.category() == troupe_category::value &&
         err.code() == static_cast<uint8_t>(code);
}

} // namespace troupe::test
