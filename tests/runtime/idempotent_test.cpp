#include <troupe/runtime/idempotent.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <catch2/catch.hpp>
#include <unistd.h>

#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

using namespace std::chrono_literals;
using troupe::store_column;

namespace {

struct add_points {
  std::string account;
  int32_t amount = 0;
};

struct points_added {
  std::string account;
  int32_t total = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, add_points& x) {
  return f(caf::meta::type_name("add_points"), x.account, x.amount);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, points_added& x) {
  return f(caf::meta::type_name("points_added"), x.account, x.total);
}

using points_actor = troupe::service<troupe::handles<add_points, points_added>>;

struct points_state {
  static inline const char* name = "points";
  troupe::idempotency idem;
  std::map<std::string, int32_t> totals;
};

/// Adds points to an account, once per idempotency key; a negative amount
/// is refused. `applied` counts how often the change was applied.
points_actor::behavior_type points(points_actor::stateful_pointer<points_state> self,
                                   std::shared_ptr<std::atomic<int>> applied) {
  return troupe::serve(self, [=](const troupe::call_context& ctx, const add_points& cmd) {
    return self->state.idem.run<points_added>(
        self, ctx, [=](troupe::write_batch& tx) -> caf::expected<points_added> {
          ++*applied;
          if (cmd.amount < 0)
            return troupe::make_error(troupe::errc::bad_input, "negative amount");
          auto& total = self->state.totals[cmd.account];
          total += cmd.amount;
          tx.put(store_column::state, "points/" + cmd.account, std::to_string(total));
          return points_added{cmd.account, total};
        });
  });
}

using outcomes = std::vector<caf::expected<points_added>>;

/// Calls the service for every (context, command) it receives and records
/// the reply or the error, in the order they arrive.
caf::behavior client(caf::event_based_actor* self, points_actor svc,
                     std::shared_ptr<outcomes> out) {
  return {[=](const troupe::call_context& ctx, const add_points& cmd) {
    self->request(svc, 10s, ctx, cmd)
        .then([=](points_added& reply) { out->emplace_back(std::move(reply)); },
              [=](caf::error& err) { out->emplace_back(std::move(err)); });
  }};
}

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("troupe-idempotent-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

troupe::call_context with_key(std::string key) {
  troupe::call_context ctx;
  ctx.correlation_id = "test";
  ctx.idempotency_key = std::move(key);
  return ctx;
}

bool has_code(const caf::error& err, troupe::errc code) {
  return err.category() == troupe::troupe_category::value &&
         err.code() == static_cast<uint8_t>(code);
}

/// A deterministic actor system (CAF-0.17.md §9) with a store whose commits
/// and reads complete inline, in the store actor's handlers.
struct deterministic {
  temp_dir dir;
  std::shared_ptr<troupe::store> db;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;
  std::vector<caf::actor> spawned;
  std::shared_ptr<std::atomic<int>> applied = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<outcomes> out = std::make_shared<outcomes>();
  points_actor svc;
  caf::actor caller;

  explicit deterministic(bool with_store = true) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    if (with_store) {
      troupe::store_settings settings;
      settings.path = (dir.path / "db").string();
      settings.inline_io = true;
      db = troupe::store::open(settings);
      spawned.push_back(caf::actor_cast<caf::actor>(troupe::spawn_store_actor(*sys, db)));
    }
    svc = sys->spawn(points, applied);
    spawned.push_back(caf::actor_cast<caf::actor>(svc));
    caller = sys->spawn(client, svc, out);
    spawned.push_back(caller);
    sched->run();
  }

  ~deterministic() {
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    sched->run();
    spawned.clear();
    svc = nullptr;
    caller = nullptr;
    sys.reset();
  }

  /// Queues one call without running the system.
  void send(std::string key, std::string account, int32_t amount) {
    caf::anon_send(caller, with_key(std::move(key)),
                   add_points{std::move(account), amount});
  }

  /// Makes one call and runs the system until it is answered.
  caf::expected<points_added> call(std::string key, std::string account, int32_t amount) {
    auto before = out->size();
    send(std::move(key), std::move(account), amount);
    sched->run();
    REQUIRE(out->size() == before + 1);
    return out->back();
  }
};

} // namespace

TEST_CASE(
    "a repeated idempotency key is answered with the first reply and applied once") {
  deterministic f;
  auto first = f.call("order-1/points", "ann", 5);
  REQUIRE(first);
  CHECK(first->total == 5);
  // A retry, even one whose payload differs, gets the recorded reply.
  auto again = f.call("order-1/points", "ann", 7);
  REQUIRE(again);
  CHECK(again->account == "ann");
  CHECK(again->total == 5);
  CHECK(*f.applied == 1);
  CHECK(f.db->get(store_column::state, "points/ann") == "5");
}

TEST_CASE("requests with different idempotency keys are applied separately") {
  deterministic f;
  CHECK(f.call("k1", "ann", 5)->total == 5);
  CHECK(f.call("k2", "ann", 5)->total == 10);
  CHECK(f.call("k3", "bob", 1)->total == 1);
  CHECK(*f.applied == 3);
  CHECK(f.db->get(store_column::state, "points/ann") == "10");
}

TEST_CASE("two requests with the same key queued at once are applied once") {
  deterministic f;
  f.send("k1", "ann", 5);
  f.send("k1", "ann", 5);
  f.send("k1", "ann", 5);
  f.sched->run();
  REQUIRE(f.out->size() == 3);
  for (auto& reply : *f.out) {
    REQUIRE(reply);
    CHECK(reply->total == 5);
  }
  CHECK(*f.applied == 1);
  CHECK(f.db->get(store_column::state, "points/ann") == "5");
}

TEST_CASE("the state written in the batch and the key are in the store once answered") {
  deterministic f;
  REQUIRE(f.call("k1", "ann", 3));
  CHECK(f.db->get(store_column::state, "points/ann") == "3");
  // The key is namespaced by the service's actor name.
  auto recorded = f.db->get(store_column::idempotency, "points/k1");
  REQUIRE(recorded);
  CHECK_FALSE(recorded->empty());
  CHECK_FALSE(f.db->get(store_column::idempotency, "k1"));
}

TEST_CASE("a request without an idempotency key is applied every time") {
  deterministic f;
  CHECK(f.call("", "ann", 5)->total == 5);
  CHECK(f.call("", "ann", 5)->total == 10);
  CHECK(*f.applied == 2);
  CHECK(f.db->get(store_column::state, "points/ann") == "10");
  std::vector<std::string> keys;
  f.db->scan(store_column::idempotency, "", "",
             [&](std::string_view k, std::string_view) {
               keys.emplace_back(k);
               return true;
             });
  CHECK(keys.empty());
}

TEST_CASE("an error returned by apply is the reply and is not recorded") {
  deterministic f;
  auto refused = f.call("k1", "ann", -1);
  REQUIRE_FALSE(refused);
  CHECK(has_code(refused.error(), troupe::errc::bad_input));
  CHECK_FALSE(f.db->get(store_column::idempotency, "points/k1"));
  // The retry applies again, and this time succeeds.
  auto retried = f.call("k1", "ann", 2);
  REQUIRE(retried);
  CHECK(retried->total == 2);
  CHECK(*f.applied == 2);
}

TEST_CASE("a recorded reply that cannot be decoded is answered with an internal error") {
  deterministic f;
  troupe::write_batch garbage;
  garbage.put(store_column::idempotency, "points/k1", "\x01");
  std::string error = "not called";
  f.db->commit(std::move(garbage), [&](const std::string& e) { error = e; });
  REQUIRE(error.empty());
  auto reply = f.call("k1", "ann", 5);
  REQUIRE_FALSE(reply);
  CHECK(has_code(reply.error(), troupe::errc::internal));
  CHECK(*f.applied == 0);
}

TEST_CASE("without a store actor an idempotent request is answered with an internal "
          "error") {
  deterministic f{false};
  auto reply = f.call("k1", "ann", 5);
  REQUIRE_FALSE(reply);
  CHECK(has_code(reply.error(), troupe::errc::internal));
  CHECK(troupe::describe(reply.error()).find("no store configured") != std::string::npos);
  CHECK(*f.applied == 0);
}

TEST_CASE("the threaded store actor answers idempotent requests once durable") {
  temp_dir dir;
  troupe::store_settings settings;
  settings.path = (dir.path / "db").string();
  auto db = troupe::store::open(settings);
  auto applied = std::make_shared<std::atomic<int>>(0);
  {
    caf::actor_system_config cfg;
    caf::actor_system sys{cfg};
    auto store = troupe::spawn_store_actor(sys, db);
    CHECK(troupe::local_store(sys) == store);
    auto svc = sys.spawn(points, applied);
    caf::scoped_actor self{sys};
    std::vector<caf::expected<points_added>> replies;
    auto on_reply = [&](points_added& r) { replies.emplace_back(std::move(r)); };
    auto on_error = [&](caf::error& err) { replies.emplace_back(std::move(err)); };
    // Two with one key in flight together, then one with another key.
    auto a = self->request(svc, 10s, with_key("k1"), add_points{"ann", 5});
    auto b = self->request(svc, 10s, with_key("k1"), add_points{"ann", 5});
    auto c = self->request(svc, 10s, with_key("k2"), add_points{"ann", 1});
    a.receive(on_reply, on_error);
    b.receive(on_reply, on_error);
    c.receive(on_reply, on_error);
    REQUIRE(replies.size() == 3);
    for (auto& r : replies)
      REQUIRE(r);
    CHECK(replies[0]->total == 5);
    CHECK(replies[1]->total == 5);
    CHECK(replies[2]->total == 6);
    CHECK(*applied == 2);
    CHECK(db->get(store_column::state, "points/ann") == "6");
    CHECK(db->get(store_column::idempotency, "points/k2"));

    // Reads through the actor run on its reader thread.
    caf::optional<std::string> value;
    self->request(store, 10s, troupe::store_get_atom::value, store_column::state,
                  std::string{"points/ann"})
        .receive([&](caf::optional<std::string>& v) { value = std::move(v); },
                 [](caf::error& err) { FAIL(troupe::describe(err)); });
    CHECK(value == std::string{"6"});
    troupe::scan_page page;
    self->request(store, 10s, troupe::store_scan_atom::value, store_column::idempotency,
                  std::string{"points/"}, std::string{}, uint32_t{1})
        .receive([&](troupe::scan_page& p) { page = std::move(p); },
                 [](caf::error& err) { FAIL(troupe::describe(err)); });
    REQUIRE(page.entries.size() == 1);
    CHECK(page.entries[0].first == "points/k1");
    CHECK(page.more);

    self->send_exit(svc, caf::exit_reason::user_shutdown);
    self->send_exit(store, caf::exit_reason::user_shutdown);
  }
  // The actor system has joined the store actor's threads; the store is ours.
  CHECK(db.use_count() == 1);
  CHECK(db->stats().syncs >= 1);
}
