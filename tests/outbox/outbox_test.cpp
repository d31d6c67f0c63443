#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/outbox/relay.hpp>
#include <troupe/runtime/call_context.hpp>

#include "outbox/events_fixture.hpp"
#include "outbox/test_events.hpp"

using namespace std::chrono_literals;
using troupe::store_column;
using troupe::test::order_shipped;

namespace {

troupe::relay_settings fast_relay(uint32_t max_attempts = 10) {
  troupe::relay_settings s;
  s.batch_size = 64;
  s.poll_interval = 20ms;
  s.max_attempts = max_attempts;
  s.backoff.initial = 20ms;
  s.backoff.max = 50ms;
  s.publish_timeout = 5s;
  return s;
}

/// An embedded broker whose group "audit" of orders.shipped records what it
/// is handed (the consumer lives as long as the subscription keeps it).
std::pair<troupe::embedded_broker_actor, std::shared_ptr<troupe::test::received_events>>
audited_broker(troupe::test::events_fixture& f) {
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  auto seen = std::make_shared<troupe::test::received_events>();
  auto consumer = f.sys->spawn(troupe::test::recording_consumer, seen);
  caf::scoped_actor self{*f.sys};
  self->request(broker, 5s, troupe::subscribe_atom::value, std::string{"orders.shipped"},
                std::string{"audit"}, troupe::event_subscriber{consumer})
      .receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("subscribe failed"); });
  return {broker, seen};
}

void emit_shipments(troupe::test::events_fixture& f,
                    const std::vector<std::pair<std::string, int32_t>>& rows) {
  for (auto& [key, qty] : rows) {
    troupe::outbox_transaction tx{f.sequence};
    tx.put("order/" + key + "/" + std::to_string(qty), "shipped");
    tx.emit("orders.shipped", key, order_shipped{key, qty});
    f.commit(std::move(tx).take());
  }
}

/// A publisher that holds every call until the test answers it, so a test
/// decides the order in which publish calls finish. `calls` answers how many
/// it holds with the events of call `i`; `answer` replies to call `i`.
using held_calls_atom = caf::atom_constant<caf::atom("heldcalls")>;
using answer_call_atom = caf::atom_constant<caf::atom("answercall")>;

struct held_publisher_state {
  held_publisher_state() = default;
  std::vector<std::vector<troupe::outbound_event>> calls;
  std::vector<caf::response_promise> promises;
};

caf::behavior held_publisher(caf::stateful_actor<held_publisher_state>* self) {
  return {
      [=](troupe::publish_atom, std::vector<troupe::outbound_event>& events) {
        self->state.calls.push_back(std::move(events));
        self->state.promises.push_back(self->make_response_promise());
        return self->state.promises.back();
      },
      [=](held_calls_atom) { return self->state.calls; },
      [=](answer_call_atom, size_t i, std::vector<std::string>& results) {
        self->state.promises.at(i).deliver(std::move(results));
        return caf::ok_atom::value;
      },
  };
}

std::vector<std::vector<troupe::outbound_event>> held_calls(caf::actor_system& sys,
                                                            const caf::actor& publisher) {
  caf::scoped_actor self{sys};
  std::vector<std::vector<troupe::outbound_event>> out;
  self->request(publisher, 5s, held_calls_atom::value)
      .receive(
          [&](std::vector<std::vector<troupe::outbound_event>>& calls) {
            out = std::move(calls);
          },
          [](caf::error&) { FAIL("the held publisher did not answer"); });
  return out;
}

void answer_call(caf::actor_system& sys, const caf::actor& publisher, size_t i,
                 std::vector<std::string> results) {
  caf::scoped_actor self{sys};
  self->request(publisher, 5s, answer_call_atom::value, i, std::move(results))
      .receive([](caf::ok_atom) {}, [](caf::error&) { FAIL("answering a call failed"); });
}

std::vector<std::string> keys_of(const std::vector<troupe::outbound_event>& events) {
  std::vector<std::string> out;
  for (auto& ev : events)
    out.push_back(ev.key);
  return out;
}

} // namespace

TEST_CASE("an outbox transaction commits the state change and its event in one batch") {
  troupe::test::events_fixture f;
  troupe::outbox_transaction tx{f.sequence};
  tx.put("order/7", "shipped");
  tx.emit("orders.shipped", "7", order_shipped{"7", 3});
  auto batch = std::move(tx).take();
  REQUIRE(batch.ops.size() == 2);
  CHECK(batch.ops[0].column == store_column::state);
  CHECK(batch.ops[1].column == store_column::outbox);
  f.commit(std::move(batch));

  CHECK(f.db->get(store_column::state, "order/7") ==
        std::optional<std::string>{"shipped"});
  auto rows = f.rows(store_column::outbox);
  REQUIRE(rows.size() == 1);
  auto& ev = rows[0].event;
  CHECK(ev.destination == "orders.shipped");
  CHECK(ev.key == "7");
  CHECK(ev.header(troupe::event_headers::content_type) == "application/x-troupe-caf");
  CHECK(ev.header(troupe::event_headers::event_type) == "order_shipped");
  auto decoded = troupe::decode_event<order_shipped>(ev.payload);
  REQUIRE(decoded);
  CHECK(decoded->order_id == "7");
  CHECK(decoded->quantity == 3);
  CHECK(rows[0].attempts == 0);
}

TEST_CASE("events emitted under one correlation id carry W3C traceparents of one trace, "
          "each with its own span") {
  troupe::test::events_fixture f;
  auto emit_under = [&](const std::string& correlation) {
    troupe::call_context ctx;
    ctx.correlation_id = correlation;
    troupe::context_scope scope{ctx, "test"};
    troupe::outbox_transaction tx{f.sequence};
    tx.emit("orders.shipped", "7", order_shipped{"7", 1});
    tx.emit("orders.shipped", "7", order_shipped{"7", 2});
    f.commit(std::move(tx).take());
  };
  emit_under("4bf92f3577b34da6a3ce929d0e0e4736");
  emit_under("req-17");
  auto rows = f.rows(store_column::outbox);
  REQUIRE(rows.size() == 4);
  auto trace_of = [](const troupe::outbox_row& r) {
    return r.event.header(troupe::event_headers::traceparent).substr(3, 32);
  };
  auto span_of = [](const troupe::outbox_row& r) {
    return r.event.header(troupe::event_headers::traceparent).substr(36, 16);
  };
  for (auto& r : rows) {
    auto tp = r.event.header(troupe::event_headers::traceparent);
    REQUIRE(tp.size() == 55);
    CHECK(tp.substr(0, 3) == "00-");
    CHECK(tp.substr(52) == "-01");
  }
  // A trace id is the trace itself; another correlation id maps to one trace.
  CHECK(trace_of(rows[0]) == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(trace_of(rows[1]) == trace_of(rows[0]));
  CHECK(trace_of(rows[2]) == trace_of(rows[3]));
  CHECK(trace_of(rows[2]) != trace_of(rows[0]));
  CHECK(span_of(rows[0]) != span_of(rows[1]));
  CHECK(troupe::correlation_of(rows[2].event) == "req-17");
}

TEST_CASE("outbox row keys sort in emit order and message ids differ after a restart") {
  troupe::test::events_fixture f;
  auto first = f.sequence->next();
  auto second = f.sequence->next();
  CHECK(troupe::outbox_row_key(first) < troupe::outbox_row_key(second));
  auto before = f.sequence->message_id(second);
  auto reopened = troupe::outbox_sequence::open(*f.db, "node-a");
  auto after = reopened->next();
  CHECK(troupe::outbox_row_key(second) < troupe::outbox_row_key(after));
  CHECK(reopened->message_id(after) != before);
}

TEST_CASE("the relay publishes rows of one key in commit order while the publisher fails "
          "that key, and other keys pass") {
  troupe::test::events_fixture f;
  auto [broker, seen] = audited_broker(f);
  emit_shipments(f, {{"a", 1}, {"b", 1}, {"a", 2}, {"b", 2}, {"a", 3}});
  auto flaky = f.sys->spawn(troupe::test::failing_publisher,
                            troupe::publisher_actor{broker}, std::string{"a"}, 3);
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle, flaky, fast_relay());

  REQUIRE(seen->wait_for(5));
  std::map<std::string, std::vector<int32_t>> per_key;
  std::vector<std::string> keys;
  for (auto& d : seen->snapshot()) {
    auto ev = troupe::decode_event<order_shipped>(d.event.payload);
    REQUIRE(ev);
    per_key[d.event.key].push_back(ev->quantity);
    keys.push_back(d.event.key);
  }
  CHECK(per_key["a"] == std::vector<int32_t>{1, 2, 3});
  CHECK(per_key["b"] == std::vector<int32_t>{1, 2});
  // Key b was not held back by a's failures.
  CHECK(keys[0] == "b");
  CHECK(keys[1] == "b");
  CHECK(troupe::test::eventually([&] { return f.rows(store_column::outbox).empty(); }));
  f.stop(relay);
  f.stop(broker);
}

TEST_CASE("a restarted relay keeps a failing row's persisted attempts and next attempt "
          "time") {
  troupe::test::events_fixture f;
  emit_shipments(f, {{"a", 1}});
  auto always_failing = f.sys->spawn(troupe::test::failing_publisher,
                                     troupe::publisher_actor{}, std::string{}, -1);
  auto relay =
      troupe::spawn_relay(*f.sys, f.store_handle, always_failing, fast_relay(100));
  REQUIRE(troupe::test::eventually([&] {
    auto rows = f.rows(store_column::outbox);
    return rows.size() == 1 && rows[0].attempts >= 2;
  }));
  f.stop(relay);
  auto rows = f.rows(store_column::outbox);
  REQUIRE(rows.size() == 1);
  auto attempts = rows[0].attempts;
  CHECK(rows[0].next_attempt_ms > rows[0].committed_ms);
  CHECK(rows[0].last_error == "injected failure");

  relay = troupe::spawn_relay(*f.sys, f.store_handle, always_failing, fast_relay(100));
  REQUIRE(troupe::test::eventually([&] {
    auto rows = f.rows(store_column::outbox);
    return rows.size() == 1 && rows[0].attempts > attempts;
  }));
  // It counts on from the persisted attempts, it does not start over.
  CHECK(f.rows(store_column::outbox)[0].attempts >= attempts + 1);
  f.stop(relay);
  f.stop(always_failing);
}

TEST_CASE("a row past max_attempts moves to dead letters with its last error and is "
          "re-driven by the admin message") {
  troupe::test::events_fixture f;
  emit_shipments(f, {{"a", 1}, {"b", 1}});
  auto fail_a = f.sys->spawn(troupe::test::failing_publisher, troupe::publisher_actor{},
                             std::string{"a"}, -1);
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle, fail_a, fast_relay(3));
  REQUIRE(troupe::test::eventually(
      [&] { return f.rows(store_column::dead_letters).size() == 1; }));
  caf::scoped_actor self{*f.sys};
  std::vector<troupe::outbox_row> listed;
  self->request(relay, 5s, troupe::list_dead_letters_atom::value, uint32_t{10})
      .receive([&](std::vector<troupe::outbox_row>& rows) { listed = std::move(rows); },
               [](caf::error&) { FAIL("listing dead letters failed"); });
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].event.key == "a");
  CHECK(listed[0].attempts == 3);
  CHECK(listed[0].last_error == "injected failure");
  f.stop(relay);
  f.stop(fail_a);

  // Re-driven through a working broker, the row is published.
  auto [broker, seen] = audited_broker(f);
  relay = troupe::spawn_relay(*f.sys, f.store_handle, broker, fast_relay(3));
  uint32_t moved = 0;
  self->request(relay, 5s, troupe::redrive_atom::value, listed[0].event.id)
      .receive([&](uint32_t n) { moved = n; },
               [](caf::error&) { FAIL("redrive failed"); });
  CHECK(moved == 1);
  REQUIRE(seen->wait_for(1));
  auto got = seen->snapshot();
  REQUIRE(got.size() == 1);
  CHECK(got[0].event.id == listed[0].event.id);
  CHECK(f.rows(store_column::dead_letters).empty());
  self->request(relay, 5s, troupe::redrive_all_atom::value)
      .receive([&](uint32_t n) { moved = n; },
               [](caf::error&) { FAIL("redrive failed"); });
  CHECK(moved == 0);
  f.stop(relay);
  f.stop(broker);
}

TEST_CASE(
    "the relay keeps max_in_flight publish calls waiting, records their outcomes in "
    "issue order, and keeps a later call's row behind a failed earlier row of its "
    "key") {
  troupe::test::events_fixture f;
  emit_shipments(f,
                 {{"a", 1}, {"b", 1}, {"a", 2}, {"c", 1}, {"a", 3}, {"d", 1}, {"e", 1}});
  auto publisher = f.sys->spawn(held_publisher);
  auto rs = fast_relay();
  rs.batch_size = 2;
  rs.max_in_flight = 3;
  auto relay = troupe::spawn_relay(
      *f.sys, f.store_handle, caf::actor_cast<troupe::publisher_actor>(publisher), rs);
  REQUIRE(troupe::test::eventually(
      [&] { return held_calls(*f.sys, publisher).size() == 3; }));
  auto calls = held_calls(*f.sys, publisher);
  CHECK(keys_of(calls[0]) == std::vector<std::string>{"a", "b"});
  CHECK(keys_of(calls[1]) == std::vector<std::string>{"a", "c"});
  CHECK(keys_of(calls[2]) == std::vector<std::string>{"a", "d"});

  // The last call finishes first and the middle one fails a=2: nothing is
  // recorded while the first call waits.
  answer_call(*f.sys, publisher, 2, {"", ""});
  answer_call(*f.sys, publisher, 1, {"broker down", ""});
  {
    caf::scoped_actor self{*f.sys};
    self->request(relay, 5s, troupe::list_dead_letters_atom::value, uint32_t{1})
        .receive([](std::vector<troupe::outbox_row>&) {},
                 [](caf::error&) { FAIL("the relay did not answer"); });
  }
  CHECK(f.rows(store_column::outbox).size() == 7);

  answer_call(*f.sys, publisher, 0, {"", ""});
  // a=1, b, c, d are published; a=2 waits for its retry and a=3, though its
  // broker acknowledged it, stays behind it, unattempted; e goes out in a
  // fourth call.
  REQUIRE(troupe::test::eventually([&] {
    auto rows = f.rows(store_column::outbox);
    return rows.size() <= 3 && held_calls(*f.sys, publisher).size() >= 4;
  }));
  calls = held_calls(*f.sys, publisher);
  // Every later call that carries key a carries a=2 before a=3.
  for (size_t i = 3; i < calls.size(); ++i) {
    std::vector<int32_t> a_quantities;
    for (auto& ev : calls[i])
      if (ev.key == "a")
        a_quantities.push_back(troupe::decode_event<order_shipped>(ev.payload)->quantity);
    if (!a_quantities.empty())
      CHECK(a_quantities.front() == 2);
  }
  for (size_t i = 3; i < calls.size(); ++i)
    answer_call(*f.sys, publisher, i, std::vector<std::string>(calls[i].size()));
  // Whatever came after is acknowledged as it arrives, until all has left.
  REQUIRE(troupe::test::eventually([&] {
    auto now = held_calls(*f.sys, publisher);
    for (size_t i = calls.size(); i < now.size(); ++i)
      answer_call(*f.sys, publisher, i, std::vector<std::string>(now[i].size()));
    calls = now;
    return f.rows(store_column::outbox).empty();
  }));
  std::vector<int32_t> published_a;
  for (size_t i = 0; i < calls.size(); ++i)
    for (auto& ev : calls[i])
      if (ev.key == "a")
        published_a.push_back(troupe::decode_event<order_shipped>(ev.payload)->quantity);
  // Call by call, key a was offered as 1 | 2 | 3 (pipelined), then 2, 3 again.
  REQUIRE(published_a.size() >= 5);
  CHECK(std::vector<int32_t>(published_a.end() - 2, published_a.end()) ==
        std::vector<int32_t>{2, 3});
  f.stop(relay);
  f.stop(publisher);
}

TEST_CASE("a row committed by anyone is published without a wake-up or a poll: the relay "
          "watches the store's outbox column") {
  troupe::test::events_fixture f;
  auto [broker, seen] = audited_broker(f);
  emit_shipments(f, {{"a", 1}});
  auto rs = fast_relay();
  rs.poll_interval = 1h;
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle, broker, rs);
  // The first row goes out with the relay's start-up look.
  REQUIRE(seen->wait_for(1));
  emit_shipments(f, {{"b", 1}, {"c", 1}});
  REQUIRE(seen->wait_for(3));
  CHECK(troupe::test::eventually([&] { return f.rows(store_column::outbox).empty(); }));
  f.stop(relay);
  f.stop(broker);
}

namespace {

using forward_call_atom = caf::atom_constant<caf::atom("fwdcall")>;

struct slow_publisher_state {
  slow_publisher_state() = default;
  uint64_t next = 0;
  std::map<uint64_t, caf::response_promise> promises;
};

/// Answers each call `delay` after it came, with what `next` answered: calls
/// overlap, as they do at a remote broker.
caf::behavior slow_publisher(caf::stateful_actor<slow_publisher_state>* self,
                             troupe::publisher_actor next,
                             std::chrono::milliseconds delay) {
  return {
      [=](troupe::publish_atom, std::vector<troupe::outbound_event>& events) {
        auto id = self->state.next++;
        self->state.promises[id] = self->make_response_promise();
        self->delayed_send(self, delay, forward_call_atom::value, id, std::move(events));
        return self->state.promises[id];
      },
      [=](forward_call_atom, uint64_t id, std::vector<troupe::outbound_event>& events) {
        self->request(next, 5s, troupe::publish_atom::value, std::move(events))
            .then(
                [=](std::vector<std::string>& results) {
                  self->state.promises[id].deliver(std::move(results));
                  self->state.promises.erase(id);
                },
                [=](caf::error& err) {
                  self->state.promises[id].deliver(std::move(err));
                  self->state.promises.erase(id);
                });
      },
  };
}

} // namespace

TEST_CASE("a key whose row failed once gets all its rows published, and a key that never "
          "failed keeps its order, while commits keep the pipeline full") {
  troupe::test::events_fixture f;
  auto [broker, seen] = audited_broker(f);
  auto fail_a_once = f.sys->spawn(troupe::test::failing_publisher,
                                  troupe::publisher_actor{broker}, std::string{"a"}, 1);
  auto slow = f.sys->spawn(slow_publisher, fail_a_once, 20ms);
  auto rs = fast_relay();
  rs.batch_size = 3;
  rs.max_in_flight = 3;
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle,
                                   caf::actor_cast<troupe::publisher_actor>(slow), rs);
  // Rows keep coming for longer than the failed row's backoff, so calls are
  // in flight the whole time it waits for its retry.
  constexpr int32_t rounds = 40;
  for (int32_t q = 1; q <= rounds; ++q) {
    emit_shipments(f, {{"a", q}, {"b", q}});
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(seen->wait_for(2 * rounds));
  CHECK(troupe::test::eventually([&] { return f.rows(store_column::outbox).empty(); }));
  std::map<std::string, std::vector<int32_t>> per_key;
  for (auto& d : seen->snapshot())
    per_key[d.event.key].push_back(
        troupe::decode_event<order_shipped>(d.event.payload)->quantity);
  // Every row of both keys arrived exactly once (the broker keeps an id
  // once). Key b was never failed, so it reads back in order; key a's later
  // rows, taken by the broker while a=1 waited, came before its retry.
  std::vector<int32_t> expected(rounds);
  for (int32_t q = 1; q <= rounds; ++q)
    expected[q - 1] = q;
  CHECK(per_key["b"] == expected);
  auto a = per_key["a"];
  std::sort(a.begin(), a.end());
  CHECK(a == expected);
  f.stop(relay);
  f.stop(slow);
  f.stop(fail_a_once);
  f.stop(broker);
}

TEST_CASE("the backlog is reported per route, and counts down as rows leave") {
  troupe::test::events_fixture f;
  emit_shipments(f, {{"a", 1}, {"b", 1}});
  {
    troupe::outbox_transaction tx{f.sequence};
    tx.emit("audit.shipped", "c", order_shipped{"c", 1});
    f.commit(std::move(tx).take());
  }
  auto always_failing = f.sys->spawn(troupe::test::failing_publisher,
                                     troupe::publisher_actor{}, std::string{}, -1);
  auto rs = fast_relay(1000);
  rs.route_of = [](const std::string& destination) {
    return destination.rfind("orders.", 0) == 0 ? std::string{"orders.*"}
                                                : std::string{"*"};
  };
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle, always_failing, rs);
  auto backlog_of = [](const char* route) {
    return troupe::test::metric_value("troupe_outbox_route_backlog_rows",
                                      {{"route", route}});
  };
  CHECK(troupe::test::eventually(
      [&] { return backlog_of("orders.*") == 2 && backlog_of("*") == 1; }));
  CHECK(troupe::test::metric_value("troupe_outbox_route_oldest_row_age_seconds",
                                   {{"route", "orders.*"}}) >= 0);
  f.stop(relay);
  f.stop(always_failing);

  // Published through a working broker, each route's backlog empties.
  auto broker = troupe::spawn_embedded_broker(*f.sys, f.store_handle);
  rs.max_attempts = 10;
  relay = troupe::spawn_relay(*f.sys, f.store_handle, broker, rs);
  CHECK(troupe::test::eventually([&] { return f.rows(store_column::outbox).empty(); }));
  CHECK(troupe::test::eventually(
      [&] { return backlog_of("orders.*") == 0 && backlog_of("*") == 0; }));
  f.stop(relay);
  f.stop(broker);
}

TEST_CASE(
    "a relay with max_rate publishes a backlog a second's worth at once and the rest "
    "no faster than the rate, in commit order") {
  troupe::test::events_fixture f;
  std::vector<std::pair<std::string, int32_t>> shipments;
  for (int i = 0; i < 12; ++i)
    shipments.emplace_back("k", i);
  emit_shipments(f, shipments);
  caf::actor publisher = f.sys->spawn(held_publisher);
  auto rs = fast_relay();
  rs.max_rate = 10;
  auto spawned = std::chrono::steady_clock::now();
  auto relay = troupe::spawn_relay(
      *f.sys, f.store_handle, caf::actor_cast<troupe::publisher_actor>(publisher), rs);
  // Stopped however the test ends: left running, they would outlive the store.
  struct stop_at_end {
    troupe::test::events_fixture& f;
    troupe::relay_actor& relay;
    caf::actor& publisher;
    ~stop_at_end() {
      if (relay)
        f.stop(relay);
      if (publisher)
        f.stop(publisher);
    }
  } guard{f, relay, publisher};

  // Answers every call as it comes; the first carried what the full bucket
  // allowed: ten, where a batch would hold all twelve.
  size_t answered = 0;
  size_t rows = 0;
  bool all = troupe::test::eventually([&] {
    auto calls = held_calls(*f.sys, publisher);
    for (; answered < calls.size(); ++answered) {
      rows += calls[answered].size();
      answer_call(*f.sys, publisher, answered,
                  std::vector<std::string>(calls[answered].size()));
    }
    return rows == 12;
  });
  auto took = std::chrono::steady_clock::now() - spawned;
  REQUIRE(all);
  auto calls = held_calls(*f.sys, publisher);
  CHECK(calls.at(0).size() == 10);
  // Rows 11 and 12 need a token each, at 100 and 200 ms after the bucket
  // was filled, which was after `spawned`.
  CHECK(took >= 190ms);
  std::vector<int32_t> order;
  for (auto& call : calls)
    for (auto& ev : call)
      order.push_back(troupe::decode_event<order_shipped>(ev.payload)->quantity);
  std::vector<int32_t> expected(12);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(order == expected);
  CHECK(troupe::test::eventually([&] { return f.rows(store_column::outbox).empty(); }));
}

TEST_CASE("a paced relay whose broker fails every publish still reports the whole "
          "backlog") {
  troupe::test::events_fixture f;
  std::vector<std::pair<std::string, int32_t>> shipments;
  for (int i = 0; i < 30; ++i)
    shipments.emplace_back("key-" + std::to_string(i), 1);
  emit_shipments(f, shipments);
  auto always_failing = f.sys->spawn(troupe::test::failing_publisher,
                                     troupe::publisher_actor{}, std::string{}, -1);
  auto rs = fast_relay(1000);
  // Rows come due again faster than the rate lets the relay try them: a
  // round reaches the end only if polls do not start it over.
  rs.max_rate = 20;
  rs.route_of = [](const std::string&) { return std::string{"paced"}; };
  auto relay = troupe::spawn_relay(*f.sys, f.store_handle, always_failing, rs);
  CHECK(troupe::test::eventually(
      [&] {
        return troupe::test::metric_value("troupe_outbox_route_backlog_rows",
                                          {{"route", "paced"}}) == 30;
      },
      10s));
  f.stop(relay);
  f.stop(always_failing);
}
