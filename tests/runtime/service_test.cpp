#include <troupe/runtime/service.hpp>

#include <caf/all.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/logging.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/readiness.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct echo_context {
  std::string payload;
};

struct seen_context {
  std::string correlation_id;
  int64_t deadline_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, echo_context& x) {
  return f(caf::meta::type_name("echo_context"), x.payload);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, seen_context& x) {
  return f(caf::meta::type_name("seen_context"), x.correlation_id, x.deadline_ns);
}

using echo_actor = troupe::service<troupe::handles<echo_context, seen_context>>;

struct echo_state {
  static inline const char* name = "echo";
};

echo_actor::behavior_type echo(echo_actor::stateful_pointer<echo_state> self) {
  return troupe::serve(self, [](const troupe::call_context& ctx, const echo_context&) {
    spdlog::info("echoing");
    return seen_context{ctx.correlation_id, ctx.deadline_ns};
  });
}

struct relay_state {
  static inline const char* name = "relay";
  echo_actor next;
};

// Forwards to `next` from inside a handler: the outgoing call must inherit
// the incoming context, and its reply is the handler's own.
echo_actor::behavior_type relay(echo_actor::stateful_pointer<relay_state> self,
                                echo_actor next) {
  self->state.next = next;
  return troupe::serve(self, [=](const echo_context& msg) {
    return troupe::call(self, self->state.next, 5s, msg);
  });
}

struct system_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
};

} // namespace

TEST_CASE("a call gives the handler a correlation id and a deadline within its timeout") {
  system_fixture f;
  auto svc = f.sys.spawn(echo);
  caf::scoped_actor self{f.sys};
  auto before = std::chrono::system_clock::now();
  seen_context seen;
  troupe::call(self.ptr(), svc, 2s, echo_context{"x"})
      .receive([&](seen_context& s) { seen = s; },
               [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(seen.correlation_id.size() == 15);
  auto deadline = std::chrono::system_clock::time_point{
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds{seen.deadline_ns})};
  CHECK(deadline > before);
  CHECK(deadline <= std::chrono::system_clock::now() + 2s);
  self->send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE(
    "a call made while handling a message inherits its correlation id and deadline") {
  system_fixture f;
  auto last = f.sys.spawn(echo);
  auto first = f.sys.spawn(relay, last);
  caf::scoped_actor self{f.sys};
  troupe::call_context ctx;
  ctx.correlation_id = "order-42";
  ctx = ctx.narrowed(3s);
  troupe::context_scope scope{ctx, "test"};
  seen_context seen;
  troupe::call(self.ptr(), first, 10s, echo_context{"x"})
      .receive([&](seen_context& s) { seen = s; },
               [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(seen.correlation_id == "order-42");
  // The 10 s timeout of the outer call never extends the caller's 3 s deadline.
  CHECK(seen.deadline_ns == ctx.deadline_ns);
  self->send_exit(first, caf::exit_reason::user_shutdown);
  self->send_exit(last, caf::exit_reason::user_shutdown);
}

TEST_CASE("each handled message is counted for its actor type") {
  system_fixture f;
  auto m = troupe::metrics::instance().for_actor_type("echo");
  auto before = m.handled->Value();
  auto svc = f.sys.spawn(echo);
  caf::scoped_actor self{f.sys};
  for (int i = 0; i < 3; ++i)
    troupe::call(self.ptr(), svc, 2s, echo_context{"x"})
        .receive([](seen_context&) {},
                 [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(m.handled->Value() == before + 3);
  CHECK(troupe::metrics::instance().serialize().find(
            "troupe_message_handling_seconds_count{actor_type=\"echo\"}") !=
        std::string::npos);
  self->send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("a service answers the drain barrier") {
  system_fixture f;
  auto svc = f.sys.spawn(echo);
  caf::scoped_actor self{f.sys};
  bool drained = false;
  self->request(svc, 2s, troupe::drain_atom::value)
      .receive([&](troupe::drained_atom) { drained = true; }, [](caf::error&) {});
  CHECK(drained);
  self->send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("a JSON log record carries node, actor and correlation id") {
  std::ostringstream out;
  troupe::init_logging({troupe::log_format::json, "info", "node-a"},
                       std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  {
    troupe::call_context ctx;
    ctx.correlation_id = "cid-1";
    troupe::context_scope scope{ctx, "inventory"};
    spdlog::info("reserved \"3\" items");
  }
  spdlog::info("outside");
  REQUIRE(troupe::flush_logging()); // records are written by the log writer thread
  auto text = out.str();
  auto first = text.substr(0, text.find('\n'));
  CHECK(first.find("\"level\":\"info\"") != std::string::npos);
  CHECK(first.find("\"node\":\"node-a\"") != std::string::npos);
  CHECK(first.find("\"actor\":\"inventory\"") != std::string::npos);
  CHECK(first.find("\"correlation_id\":\"cid-1\"") != std::string::npos);
  CHECK(first.find("\"msg\":\"reserved \\\"3\\\" items\"") != std::string::npos);
  CHECK(first.rfind("{\"ts\":\"", 0) == 0);
  auto second = text.substr(text.find('\n') + 1);
  CHECK(second.find("correlation_id") == std::string::npos);
  spdlog::set_default_logger(spdlog::stdout_logger_mt("default-after-test"));
}

TEST_CASE("troupe errors classify CAF's own and know whether to retry") {
  CHECK(troupe::classify(caf::make_error(caf::sec::request_timeout)) ==
        troupe::errc::timeout);
  CHECK(troupe::classify(caf::make_error(caf::sec::request_receiver_down)) ==
        troupe::errc::service_unavailable);
  CHECK(troupe::is_retryable(troupe::make_error(troupe::errc::overloaded)));
  CHECK_FALSE(troupe::is_retryable(troupe::make_error(troupe::errc::bad_input)));
  CHECK(troupe::describe(troupe::make_error(troupe::errc::circuit_open, "payment")) ==
        "circuit_open: payment");
}

TEST_CASE("a reply handler runs with the call's correlation id and the caller's own "
          "deadline") {
  system_fixture f;
  auto svc = f.sys.spawn(echo);
  caf::scoped_actor self{f.sys};
  seen_context seen;
  std::string id_in_handler;
  int64_t deadline_in_handler = -1;
  troupe::call(self.ptr(), svc, 5s, echo_context{"x"})
      .receive(
          [&](seen_context& s) {
            seen = s;
            id_in_handler = troupe::call_context::current().correlation_id;
            deadline_in_handler = troupe::call_context::current().deadline_ns;
          },
          [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(id_in_handler == seen.correlation_id);
  // The request carried a 5 s deadline; the caller had none, so a call made
  // from this handler is not bound by the finished call's deadline.
  CHECK(seen.deadline_ns != 0);
  CHECK(deadline_in_handler == 0);
  self->send_exit(svc, caf::exit_reason::user_shutdown);
}

namespace {

struct release_holder {};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, release_holder&) {
  return f(caf::meta::type_name("release_holder"));
}

// Makes the holder forget its promises without answering them.
struct abandon_held {};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, abandon_held&) {
  return f(caf::meta::type_name("abandon_held"));
}

using holder_actor =
    troupe::service<troupe::handles<echo_context, seen_context>,
                    troupe::on<release_holder>, troupe::on<abandon_held>>;

struct holder_state {
  static inline const char* name = "holder";
  std::vector<troupe::promise<seen_context>> held;
  bool released = false;
};

// Answers requests only once released.
holder_actor::behavior_type holder(holder_actor::stateful_pointer<holder_state> self) {
  return troupe::serve(
      self,
      [=](const echo_context& msg) -> caf::result<seen_context> {
        if (self->state.released)
          return seen_context{msg.payload, 0};
        auto rp = troupe::make_promise<seen_context>(self);
        self->state.held.push_back(rp);
        return rp.response_promise();
      },
      [=](const release_holder&) {
        self->state.released = true;
        for (auto& rp : self->state.held)
          rp.deliver(seen_context{"released", 0});
        self->state.held.clear();
      },
      [=](const abandon_held&) { self->state.held.clear(); });
}

struct counting_state {
  static inline const char* name = "counting";
  std::shared_ptr<std::atomic<int>> handled;
};

using counting_actor = troupe::service<troupe::handles<echo_context, seen_context>,
                                       troupe::on<release_holder>>;

counting_actor::behavior_type
counting(counting_actor::stateful_pointer<counting_state> self,
         std::shared_ptr<std::atomic<int>> handled) {
  self->state.handled = handled;
  return troupe::serve(
      self,
      [=](const echo_context& msg) {
        ++*self->state.handled;
        return seen_context{msg.payload, 0};
      },
      [=](const release_holder&) { ++*self->state.handled; });
}

} // namespace

TEST_CASE("a request whose deadline has passed is answered timeout without running the "
          "handler") {
  system_fixture f;
  auto handled = std::make_shared<std::atomic<int>>(0);
  auto svc = f.sys.spawn(counting, handled);
  auto m = troupe::metrics::instance().for_actor_type("counting");
  auto expired_before = m.expired->Value();
  caf::scoped_actor self{f.sys};
  troupe::call_context ctx;
  ctx.correlation_id = "late-1";
  ctx.deadline_ns = troupe::detail::wall_now_ns() - 1;
  caf::error failure;
  self->request(svc, 2s, ctx, echo_context{"x"})
      .receive([](seen_context&) { FAIL("the handler ran"); },
               [&](caf::error& err) { failure = err; });
  CHECK(troupe::classify(failure) == troupe::errc::timeout);
  CHECK(*handled == 0);
  CHECK(m.expired->Value() == expired_before + 1);
  CHECK(troupe::metrics::instance().serialize().find(
            "troupe_expired_messages_total{actor_type=\"counting\"}") !=
        std::string::npos);
  self->send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("a node without quorum refuses requests with service_unavailable and still "
          "handles events") {
  system_fixture f;
  auto handled = std::make_shared<std::atomic<int>>(0);
  auto svc = f.sys.spawn(counting, handled);
  caf::scoped_actor self{f.sys};
  troupe::set_node_quorum(false);
  caf::error failure;
  troupe::call(self.ptr(), svc, 2s, echo_context{"x"})
      .receive([](seen_context&) { FAIL("the handler ran"); },
               [&](caf::error& err) { failure = err; });
  troupe::tell(self.ptr(), svc, release_holder{});
  // The request after the event is answered once the event was handled.
  troupe::set_node_quorum(true);
  bool answered = false;
  troupe::call(self.ptr(), svc, 2s, echo_context{"y"})
      .receive([&](seen_context&) { answered = true; },
               [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(troupe::classify(failure) == troupe::errc::service_unavailable);
  CHECK(troupe::is_retryable(failure));
  CHECK(answered);
  CHECK(*handled == 2); // the event and the request after quorum returned
  self->send_exit(svc, caf::exit_reason::user_shutdown);
}

TEST_CASE("the drain barrier waits for a reply a handler delegated") {
  system_fixture f;
  auto held = f.sys.spawn(holder);
  auto first = f.sys.spawn(relay, caf::actor_cast<echo_actor>(held));
  caf::scoped_actor caller{f.sys};
  caf::scoped_actor drainer{f.sys};
  auto pending = troupe::call(caller.ptr(), first, 5s, echo_context{"x"});
  caf::error early;
  drainer->request(first, 300ms, troupe::drain_atom::value)
      .receive([](troupe::drained_atom) { FAIL("drained with a reply outstanding"); },
               [&](caf::error& err) { early = err; });
  CHECK(early == caf::sec::request_timeout);
  caller->send(held, troupe::call_context{}, release_holder{});
  seen_context seen;
  pending.receive([&](seen_context& s) { seen = s; },
                  [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(seen.correlation_id == "released");
  bool drained = false;
  drainer->request(first, 2s, troupe::drain_atom::value)
      .receive([&](troupe::drained_atom) { drained = true; }, [](caf::error&) {});
  CHECK(drained);
  caller->send_exit(first, caf::exit_reason::user_shutdown);
  caller->send_exit(held, caf::exit_reason::user_shutdown);
}

namespace {

// Whether `svc` answers the drain barrier within `timeout`.
bool drains_within(caf::actor_system& sys, const holder_actor& svc,
                   std::chrono::milliseconds timeout) {
  caf::scoped_actor drainer{sys};
  bool drained = false;
  drainer->request(svc, timeout, troupe::drain_atom::value)
      .receive([&](troupe::drained_atom) { drained = true; }, [](caf::error&) {});
  return drained;
}

} // namespace

TEST_CASE("the drain barrier waits for a promise a handler holds") {
  system_fixture f;
  auto held = f.sys.spawn(holder);
  caf::scoped_actor caller{f.sys};
  auto pending = troupe::call(caller.ptr(), held, 5s, echo_context{"x"});
  CHECK_FALSE(drains_within(f.sys, held, 300ms));
  caller->send(held, troupe::call_context{}, release_holder{});
  seen_context seen;
  pending.receive([&](seen_context& s) { seen = s; },
                  [](caf::error& err) { FAIL(troupe::describe(err)); });
  CHECK(seen.correlation_id == "released");
  CHECK(drains_within(f.sys, held, 2s));
  caller->send_exit(held, caf::exit_reason::user_shutdown);
}

TEST_CASE("an abandoned promise no longer holds the drain barrier") {
  system_fixture f;
  auto held = f.sys.spawn(holder);
  caf::scoped_actor caller{f.sys};
  caller->request(held, 5s, troupe::call_context{}, echo_context{"x"});
  CHECK_FALSE(drains_within(f.sys, held, 300ms));
  caller->send(held, troupe::call_context{}, abandon_held{});
  CHECK(drains_within(f.sys, held, 2s));
  caller->send_exit(held, caf::exit_reason::user_shutdown);
}

TEST_CASE("a handler that returns a call answers with that call's error") {
  system_fixture f;
  auto last = f.sys.spawn(echo);
  auto first = f.sys.spawn(relay, last);
  caf::scoped_actor self{f.sys};
  self->send_exit(last, caf::exit_reason::user_shutdown);
  self->wait_for(last);
  caf::error failure;
  troupe::call(self.ptr(), first, 2s, echo_context{"x"})
      .receive([](seen_context&) { FAIL("answered by a dead service"); },
               [&](caf::error& err) { failure = err; });
  CHECK(troupe::classify(failure) == troupe::errc::service_unavailable);
  self->send_exit(first, caf::exit_reason::user_shutdown);
}

TEST_CASE("a deadline crosses nodes as the time left and is anchored on receipt") {
  troupe::call_context ctx;
  ctx.correlation_id = "wire-1";
  ctx.deadline_ns = troupe::detail::wall_now_ns() + 3'000'000'000;
  auto left = troupe::detail::deadline_to_wire(ctx.deadline_ns);
  CHECK(left > 2'000'000'000);
  CHECK(left <= 3'000'000'000);
  // The receiver anchors what is left on its own clock, not the sender's instant.
  auto anchored = troupe::detail::deadline_from_wire(left);
  CHECK(anchored - troupe::detail::wall_now_ns() > 2'000'000'000);
  CHECK(troupe::detail::deadline_to_wire(0) == 0);
  CHECK(troupe::detail::deadline_from_wire(0) == 0);
  CHECK(troupe::detail::deadline_to_wire(troupe::detail::wall_now_ns() - 5) == -1);
  auto passed = troupe::detail::deadline_from_wire(-1);
  CHECK(passed < troupe::detail::wall_now_ns());
  // Through CAF's binary serialization, as BASP sends it.
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  CHECK(!sink(ctx));
  troupe::call_context back;
  caf::binary_deserializer source{sys, buf};
  CHECK(!source(back));
  CHECK(back.correlation_id == "wire-1");
  CHECK(back.deadline_ns - troupe::detail::wall_now_ns() > 2'000'000'000);
  CHECK(back.deadline_ns <= ctx.deadline_ns + 1'000'000'000);
}

TEST_CASE("correlation ids are 15 characters and distinct across threads") {
  std::vector<std::string> ids;
  std::mutex mtx;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      std::vector<std::string> mine;
      for (int i = 0; i < 1000; ++i)
        mine.push_back(troupe::new_correlation_id());
      std::lock_guard<std::mutex> lock{mtx};
      ids.insert(ids.end(), mine.begin(), mine.end());
    });
  for (auto& t : threads)
    t.join();
  for (auto& id : ids)
    CHECK(id.size() == 15);
  std::sort(ids.begin(), ids.end());
  CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
}
