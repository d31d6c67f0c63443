#include <troupe/runtime/service.hpp>

#include <caf/all.hpp>
#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/logging.hpp>
#include <troupe/runtime/metrics.hpp>

#include <sstream>

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
// the incoming context.
echo_actor::behavior_type relay(echo_actor::stateful_pointer<relay_state> self,
                                echo_actor next) {
  self->state.next = next;
  return troupe::serve(self, [=](const echo_context& msg) -> caf::result<seen_context> {
    auto rp = self->make_response_promise<seen_context>();
    troupe::call(self, self->state.next, 5s, msg)
        .then([rp](seen_context& seen) mutable { rp.deliver(std::move(seen)); },
              [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
    return rp;
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
