#include <troupe/runtime/service_ref.hpp>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include <troupe/runtime/errors.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct whoami {
  std::string from;
};

struct iam {
  std::string name;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, whoami& x) {
  return f(caf::meta::type_name("whoami"), x.from);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, iam& x) {
  return f(caf::meta::type_name("iam"), x.name);
}

using named_actor = troupe::service<troupe::handles<whoami, iam>>;

struct named_state {
  static inline const char* name = "named";
};

named_actor::behavior_type named(named_actor::stateful_pointer<named_state> self,
                                 std::string name) {
  return troupe::serve(self, [=](const whoami&) { return iam{name}; });
}

// A registry that answers find_services with whatever the test put there,
// and counts the lookups.
struct fake_registry {
  std::shared_ptr<std::vector<caf::actor>> instances =
      std::make_shared<std::vector<caf::actor>>();
  std::shared_ptr<std::atomic<int>> lookups = std::make_shared<std::atomic<int>>(0);
  caf::actor handle;

  explicit fake_registry(caf::actor_system& sys) {
    auto xs = instances;
    auto n = lookups;
    handle = sys.spawn([xs, n]() -> caf::behavior {
      return {
          [xs,
           n](troupe::find_services_atom, const std::string& name,
              const std::vector<std::string>&) -> caf::result<std::vector<caf::actor>> {
            ++*n;
            if (xs->empty())
              return troupe::make_error(troupe::errc::service_unavailable,
                                        "no live node provides service '" + name + "'");
            return *xs;
          },
      };
    });
  }
};

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  fake_registry registry{sys};
  std::vector<caf::actor> spawned;

  named_actor spawn_named(const std::string& name) {
    auto h = sys.spawn(named, name);
    spawned.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

  ~fixture() {
    caf::anon_send_exit(registry.handle, caf::exit_reason::user_shutdown);
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
};

std::string ask(caf::scoped_actor& self, const troupe::service_ref<named_actor>& ref,
                caf::error* failure = nullptr) {
  std::string who;
  troupe::call(self.ptr(), ref, 2s, whoami{"test"})
      .receive([&](iam& x) { who = x.name; },
               [&](caf::error& err) {
                 if (failure != nullptr)
                   *failure = err;
               });
  return who;
}

// CAF runs the functors attached to an actor that ends one after the other:
// wait_for may return just before the ref's own liveness flag flips.
bool wait_until_live(const troupe::service_ref<named_actor>& ref, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (ref.state()->live() != n)
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    else
      std::this_thread::yield();
  return true;
}

// Makes `n` calls on one ref from inside an actor, all in one handler, and
// reports the answers (or errors) to `report`.
using go_atom = caf::atom_constant<caf::atom("go")>;

caf::behavior caller(caf::event_based_actor* self, troupe::service_ref<named_actor> ref,
                     int n, caf::actor report) {
  return {
      [=](go_atom) {
        for (int i = 0; i < n; ++i)
          troupe::call(self, ref, 2s, whoami{"caller"})
              .then([=](const iam& x) { self->send(report, x.name); },
                    [=](caf::error& err) {
                      self->send(report, "error: " + troupe::describe(err));
                    });
      },
  };
}

} // namespace

TEST_CASE("a service_ref spreads calls over its live instances round robin") {
  fixture f;
  *f.registry.instances = {caf::actor_cast<caf::actor>(f.spawn_named("a")),
                           caf::actor_cast<caf::actor>(f.spawn_named("b"))};
  caf::scoped_actor self{f.sys};
  troupe::service_ref<named_actor> ref{f.sys, "named", f.registry.handle};
  std::map<std::string, int> answers;
  for (int i = 0; i < 10; ++i)
    ++answers[ask(self, ref)];
  CHECK(answers["a"] == 5);
  CHECK(answers["b"] == 5);
  CHECK(*f.registry.lookups == 1);
}

TEST_CASE("a service_ref reports a service no node provides as service_unavailable in "
          "the call's error handler") {
  fixture f;
  caf::scoped_actor self{f.sys};
  troupe::service_ref<named_actor> ref{f.sys, "named", f.registry.handle};
  caf::error failure;
  CHECK(ask(self, ref, &failure).empty());
  CHECK(troupe::classify(failure) == troupe::errc::service_unavailable);
}

TEST_CASE("a service_ref stops calling an instance that went down") {
  fixture f;
  auto a = f.spawn_named("a");
  *f.registry.instances = {caf::actor_cast<caf::actor>(a),
                           caf::actor_cast<caf::actor>(f.spawn_named("b"))};
  caf::scoped_actor self{f.sys};
  troupe::service_ref<named_actor> ref{f.sys, "named", f.registry.handle};
  ask(self, ref);
  self->send_exit(a, caf::exit_reason::user_shutdown);
  self->wait_for(a);
  REQUIRE(wait_until_live(ref, 1));
  for (int i = 0; i < 6; ++i)
    CHECK(ask(self, ref) == "b");
}

TEST_CASE("a service_ref looks the service up again once every known instance is down") {
  fixture f;
  auto a = f.spawn_named("a");
  *f.registry.instances = {caf::actor_cast<caf::actor>(a)};
  caf::scoped_actor self{f.sys};
  troupe::service_ref<named_actor> ref{f.sys, "named", f.registry.handle};
  CHECK(ask(self, ref) == "a");
  self->send_exit(a, caf::exit_reason::user_shutdown);
  self->wait_for(a);
  REQUIRE(wait_until_live(ref, 0));
  *f.registry.instances = {caf::actor_cast<caf::actor>(f.spawn_named("c"))};
  CHECK(ask(self, ref) == "c");
  CHECK(*f.registry.lookups == 2);
}

TEST_CASE("calls made on a service_ref while its lookup is in flight wait for it") {
  fixture f;
  *f.registry.instances = {caf::actor_cast<caf::actor>(f.spawn_named("a"))};
  caf::scoped_actor self{f.sys};
  troupe::service_ref<named_actor> ref{f.sys, "named", f.registry.handle};
  auto c = f.sys.spawn(caller, ref, 3, caf::actor{self});
  self->send(c, go_atom::value);
  std::vector<std::string> answers;
  for (int i = 0; i < 3; ++i)
    self->receive([&](const std::string& x) { answers.push_back(x); },
                  caf::after(5s) >> [] { FAIL("no answer within 5 s"); });
  CHECK(answers == std::vector<std::string>{"a", "a", "a"});
  CHECK(*f.registry.lookups == 1);
  self->send_exit(c, caf::exit_reason::user_shutdown);
}

TEST_CASE("calls waiting for a service_ref's lookup fail together with it") {
  fixture f;
  caf::scoped_actor self{f.sys};
  troupe::service_ref<named_actor> ref{f.sys, "named", f.registry.handle};
  auto c = f.sys.spawn(caller, ref, 2, caf::actor{self});
  self->send(c, go_atom::value);
  std::vector<std::string> answers;
  for (int i = 0; i < 2; ++i)
    self->receive([&](const std::string& x) { answers.push_back(x); },
                  caf::after(5s) >> [] { FAIL("no answer within 5 s"); });
  REQUIRE(answers.size() == 2);
  for (auto& x : answers)
    CHECK(x.rfind("error: service_unavailable", 0) == 0);
  CHECK(*f.registry.lookups == 1);
  self->send_exit(c, caf::exit_reason::user_shutdown);
}

TEST_CASE("a service_ref without a cluster registry on its node fails the call as "
          "service_unavailable") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  troupe::service_ref<named_actor> ref{sys, "named"};
  caf::error failure;
  CHECK(ask(self, ref, &failure).empty());
  CHECK(troupe::classify(failure) == troupe::errc::service_unavailable);
}
