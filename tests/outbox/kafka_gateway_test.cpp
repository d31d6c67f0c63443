#include <troupe/gateways/kafka_gateway.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "outbox/events_fixture.hpp"

using namespace std::chrono_literals;

namespace {

// A three-broker mock cluster speaking the real protocol on loopback, owned
// by a bare client that does nothing else.
struct mock_cluster {
  rd_kafka_t* rk = nullptr;
  rd_kafka_mock_cluster_t* cluster = nullptr;
  std::string bootstraps;

  mock_cluster() {
    char err[512];
    auto* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    REQUIRE(rk != nullptr);
    cluster = rd_kafka_mock_cluster_new(rk, 3);
    REQUIRE(cluster != nullptr);
    bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
  }
  ~mock_cluster() {
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(rk);
  }

  void create_topic(const std::string& topic, int partitions) {
    REQUIRE(rd_kafka_mock_topic_create(cluster, topic.c_str(), partitions, 3) ==
            RD_KAFKA_RESP_ERR_NO_ERROR);
  }

  /// The group's committed offsets of `topic`'s partitions 0..n-1 (-1: none).
  std::vector<int64_t> committed(const std::string& group, const std::string& topic,
                                 int partitions) {
    char err[512];
    auto* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group.c_str(), err, sizeof(err));
    auto* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    REQUIRE(c != nullptr);
    auto* list = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p)
      rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
    auto rc = rd_kafka_committed(c, list, 5000);
    std::vector<int64_t> out;
    for (int p = 0; p < partitions; ++p)
      out.push_back(list->elems[p].offset);
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    REQUIRE(rc == RD_KAFKA_RESP_ERR_NO_ERROR);
    return out;
  }
};

// Short protocol timeouts keep rebalances and retries within a second or
// two on the mock cluster.
troupe::kafka_settings settings_for(const mock_cluster& mc) {
  troupe::kafka_settings s;
  s.bootstrap_servers = mc.bootstraps;
  s.delivery_timeout = 10s;
  s.consumer_timeout = 5s;
  s.redeliver_delay = 50ms;
  s.properties = {{"session.timeout.ms", "4000"},
                  {"heartbeat.interval.ms", "300"},
                  {"auto.commit.interval.ms", "100"},
                  {"retry.backoff.ms", "50"},
                  {"reconnect.backoff.ms", "20"},
                  {"reconnect.backoff.max.ms", "200"},
                  {"topic.metadata.refresh.interval.ms", "500"}};
  return s;
}

troupe::outbound_event event(const std::string& topic, std::string id, std::string key) {
  troupe::outbound_event ev;
  ev.id = std::move(id);
  ev.destination = topic;
  ev.key = std::move(key);
  ev.headers = {{troupe::event_headers::event_type, "order_shipped"},
                {troupe::event_headers::correlation_id, "corr-" + ev.id}};
  ev.payload = "payload of " + ev.id;
  return ev;
}

/// `per_key` events for each of `keys` keys, interleaved, ids "e<n>".
std::vector<troupe::outbound_event> events(const std::string& topic, int keys,
                                           int per_key, int first = 0) {
  std::vector<troupe::outbound_event> out;
  for (int i = 0; i < keys * per_key; ++i)
    out.push_back(
        event(topic, "e" + std::to_string(first + i), "k" + std::to_string(i % keys)));
  return out;
}

std::vector<std::string> publish(caf::actor_system& sys,
                                 const troupe::publisher_actor& publisher,
                                 std::vector<troupe::outbound_event> evs,
                                 std::chrono::milliseconds timeout = 20s) {
  caf::scoped_actor self{sys};
  std::vector<std::string> acks;
  self->request(publisher, timeout, troupe::publish_atom::value, std::move(evs))
      .receive([&](std::vector<std::string>& a) { acks = std::move(a); },
               [&](caf::error& e) { FAIL("publish failed: " << sys.render(e)); });
  return acks;
}

void stop(caf::actor_system& sys, troupe::publisher_actor& h) {
  caf::scoped_actor self{sys};
  self->send_exit(h, caf::exit_reason::user_shutdown);
  self->wait_for(h);
  h = nullptr;
}

/// Ids per key, in the order they were received.
std::map<std::string, std::vector<std::string>>
by_key(const std::vector<troupe::delivered_event>& got) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& d : got)
    out[d.event.key].push_back(d.event.id);
  return out;
}

/// Ids per key in publication order.
std::map<std::string, std::vector<std::string>>
by_key(const std::vector<troupe::outbound_event>& sent) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& ev : sent)
    out[ev.key].push_back(ev.id);
  return out;
}

/// Reads `n` events of `topic` back through a fresh group.
std::vector<troupe::delivered_event> read_back(caf::actor_system& sys,
                                               const mock_cluster& mc,
                                               const std::string& topic, size_t n) {
  auto got = std::make_shared<troupe::test::received_events>();
  auto consumer = sys.spawn(troupe::test::recording_consumer, got);
  auto sub = troupe::subscribe_kafka(sys, settings_for(mc), topic, "reader", consumer);
  CHECK(got->wait_for(n, 20s));
  sub->stop();
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
  return got->snapshot();
}

// --- consumers that answer as a test needs -----------------------------------

/// Every delivery a consumer saw and whether it answered ok.
struct answers {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<std::pair<troupe::delivered_event, bool>> seen;

  void add(troupe::delivered_event d, bool ok) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      seen.emplace_back(std::move(d), ok);
    }
    cv.notify_all();
  }
  bool wait(const std::function<bool()>& done, std::chrono::milliseconds deadline = 20s) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, deadline, done);
  }
  std::set<std::string> acked_ids() {
    std::lock_guard<std::mutex> guard{mtx};
    std::set<std::string> out;
    for (auto& [d, ok] : seen)
      if (ok)
        out.insert(d.event.id);
    return out;
  }
};

/// Acknowledges the first `limit` deliveries and refuses every later one.
troupe::event_consumer_actor::behavior_type
limited_consumer(troupe::event_consumer_actor::pointer, std::shared_ptr<answers> out,
                 size_t limit) {
  auto count = std::make_shared<size_t>(0);
  return {
      [=](troupe::deliver_atom, troupe::delivered_event& d) -> caf::result<caf::ok_atom> {
        bool ok = (*count)++ < limit;
        out->add(d, ok);
        if (!ok)
          return caf::make_error(caf::sec::runtime_error);
        return caf::ok_atom::value;
      },
  };
}

using release_atom = caf::atom_constant<caf::atom("release")>;
using holding_consumer_actor =
    troupe::event_consumer_actor::extend<caf::reacts_to<release_atom>>;

struct holding_state {
  holding_state() = default;
  bool holding = true;
  std::vector<caf::typed_response_promise<caf::ok_atom>> held;
};

/// Holds every delivery unanswered until released; then refuses those it
/// held (so only a later delivery can acknowledge them) and acknowledges
/// everything after.
holding_consumer_actor::behavior_type
holding_consumer(holding_consumer_actor::stateful_pointer<holding_state> self,
                 std::shared_ptr<answers> out,
                 std::shared_ptr<std::atomic<size_t>> held) {
  return {
      [=](troupe::deliver_atom, troupe::delivered_event& d) -> caf::result<caf::ok_atom> {
        if (!self->state.holding) {
          out->add(d, true);
          return caf::ok_atom::value;
        }
        out->add(d, false);
        self->state.held.push_back(self->make_response_promise<caf::ok_atom>());
        ++*held;
        return self->state.held.back();
      },
      [=](release_atom) {
        self->state.holding = false;
        for (auto& rp : self->state.held)
          rp.deliver(caf::make_error(caf::sec::runtime_error));
        self->state.held.clear();
      },
  };
}

} // namespace

// --- configuration -------------------------------------------------------------

namespace {

troupe::config load_kafka(std::vector<std::pair<std::string, std::string>> overrides) {
  troupe::config_schema schema;
  troupe::declare_kafka_config(schema);
  troupe::config_sources src;
  src.overrides = std::move(overrides);
  return troupe::config::load(schema, src);
}

} // namespace

TEST_CASE("kafka settings come from events.kafka keys, the sasl password read from a "
          "secret file and never printed",
          "[kafka]") {
  troupe::test::temp_store_dir dir;
  auto secret_file = dir.path / "sasl-password";
  std::ofstream{secret_file} << "s3cr3t-pw";
  auto cfg = load_kafka(
      {{"events.kafka.bootstrap_servers", "k1:9092,k2:9092"},
       {"events.kafka.properties", "[security.protocol=SASL_SSL, sasl.mechanism=PLAIN]"},
       {"events.kafka.sasl_username", "svc"},
       {"events.kafka.sasl_password", "${file:" + secret_file.string() + "}"},
       {"events.kafka.delivery_timeout", "3s"}});
  auto s = troupe::kafka_settings_from(cfg);
  CHECK(s.bootstrap_servers == "k1:9092,k2:9092");
  CHECK(s.delivery_timeout == 3s);
  using prop = std::pair<std::string, std::string>;
  CHECK(std::find(s.properties.begin(), s.properties.end(),
                  prop{"security.protocol", "SASL_SSL"}) != s.properties.end());
  CHECK(std::find(s.properties.begin(), s.properties.end(),
                  prop{"sasl.password", "s3cr3t-pw"}) != s.properties.end());
  std::ostringstream printed;
  cfg.print(printed);
  CHECK(printed.str().find("s3cr3t-pw") == std::string::npos);
}

TEST_CASE("a librdkafka property it rejects is a config error naming "
          "events.kafka.properties",
          "[kafka]") {
  for (auto bad : {"[no.such.property=1]", "[acks=sometimes]", "[acks]"}) {
    auto cfg = load_kafka({{"events.kafka.bootstrap_servers", "k1:9092"},
                           {"events.kafka.properties", bad}});
    try {
      troupe::kafka_settings_from(cfg);
      FAIL("accepted " << bad);
    } catch (const troupe::config_error& e) {
      CHECK(e.key() == "events.kafka.properties");
    }
  }
}

TEST_CASE("an empty kafka bootstrap list is a config error naming "
          "events.kafka.bootstrap_servers",
          "[kafka]") {
  auto cfg = load_kafka({});
  try {
    troupe::kafka_settings_from(cfg);
    FAIL("accepted no bootstrap servers");
  } catch (const troupe::config_error& e) {
    CHECK(e.key() == "events.kafka.bootstrap_servers");
  }
}

// --- publisher ---------------------------------------------------------------

TEST_CASE("the kafka publisher acknowledges events that read back in per-key order with "
          "their ids and headers",
          "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  mock_cluster mc;
  mc.create_topic("orders", 3);
  auto publisher = troupe::spawn_kafka_publisher(sys, settings_for(mc));
  auto sent = events("orders", 5, 6);
  std::vector<troupe::outbound_event> first(sent.begin(), sent.begin() + 12);
  std::vector<troupe::outbound_event> second(sent.begin() + 12, sent.end());
  CHECK(publish(sys, publisher, first) == std::vector<std::string>(12));
  CHECK(publish(sys, publisher, second) == std::vector<std::string>(18));
  stop(sys, publisher);

  auto got = read_back(sys, mc, "orders", sent.size());
  REQUIRE(got.size() == sent.size());
  CHECK(by_key(got) == by_key(sent));
  auto& d = got.front();
  CHECK(d.topic == "orders");
  CHECK(d.event.destination == "orders");
  CHECK(d.event.payload == "payload of " + d.event.id);
  CHECK(d.event.header(troupe::event_headers::correlation_id) == "corr-" + d.event.id);
  CHECK(d.event.header(troupe::event_headers::event_type) == "order_shipped");
  CHECK(d.event.header(troupe::kafka_message_id_header).empty());
}

TEST_CASE("produce errors injected by the cluster are retried without loss, duplicates "
          "or reordering per key",
          "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  mock_cluster mc;
  mc.create_topic("payments", 2);
  auto publisher = troupe::spawn_kafka_publisher(sys, settings_for(mc));
  // Warm up, so the errors hit Produce requests rather than start-up.
  CHECK(publish(sys, publisher, {event("payments", "w0", "k0")}) ==
        std::vector<std::string>(1));
  rd_kafka_mock_push_request_errors(
      mc.cluster, 0 /* Produce */, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
  auto sent = events("payments", 4, 10);
  CHECK(publish(sys, publisher, sent) == std::vector<std::string>(sent.size()));
  stop(sys, publisher);

  sent.insert(sent.begin(), event("payments", "w0", "k0"));
  auto got = read_back(sys, mc, "payments", sent.size());
  CHECK(got.size() == sent.size());
  CHECK(by_key(got) == by_key(sent));
}

TEST_CASE("a partition leader change mid-stream loses no event", "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  mock_cluster mc;
  mc.create_topic("stock", 2);
  auto publisher = troupe::spawn_kafka_publisher(sys, settings_for(mc));
  std::vector<troupe::outbound_event> sent;
  for (int round = 0; round < 4; ++round) {
    auto batch = events("stock", 3, 4, round * 12);
    CHECK(publish(sys, publisher, batch) == std::vector<std::string>(batch.size()));
    sent.insert(sent.end(), batch.begin(), batch.end());
    // Mock brokers are numbered from 1.
    for (int p = 0; p < 2; ++p)
      rd_kafka_mock_partition_set_leader(mc.cluster, "stock", p, 1 + (round + p + 1) % 3);
  }
  stop(sys, publisher);

  auto got = read_back(sys, mc, "stock", sent.size());
  CHECK(got.size() == sent.size());
  CHECK(by_key(got) == by_key(sent));
}

TEST_CASE("an unreachable kafka cluster fails a publish with an error after the delivery "
          "timeout",
          "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  troupe::kafka_settings s;
  s.bootstrap_servers = "127.0.0.1:1";
  s.delivery_timeout = 500ms;
  auto publisher = troupe::spawn_kafka_publisher(sys, s);
  auto started = std::chrono::steady_clock::now();
  auto acks = publish(sys, publisher,
                      {event("orders", "u1", "a"), event("orders", "u2", "a")}, 10s);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  REQUIRE(acks.size() == 2);
  CHECK_FALSE(acks[0].empty());
  CHECK_FALSE(acks[1].empty());
  stop(sys, publisher);
}

// --- subscriptions -------------------------------------------------------------

TEST_CASE("a kafka subscription commits only acknowledged records, so the group's next "
          "member resumes right after them",
          "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  mock_cluster mc;
  mc.create_topic("audit", 1);
  auto publisher = troupe::spawn_kafka_publisher(sys, settings_for(mc));
  auto sent = events("audit", 1, 10);
  CHECK(publish(sys, publisher, sent) == std::vector<std::string>(10));
  stop(sys, publisher);

  auto first = std::make_shared<answers>();
  auto refusing = sys.spawn(limited_consumer, first, size_t{5});
  auto sub = troupe::subscribe_kafka(sys, settings_for(mc), "audit", "billing", refusing);
  // Five acknowledged, then the sixth refused and handed over again.
  REQUIRE(first->wait([&] {
    return std::count_if(first->seen.begin(), first->seen.end(),
                         [](auto& s) { return s.first.offset == 5; }) >= 2;
  }));
  // Five of ten acknowledged: the group lags five behind the partition's end.
  CHECK(troupe::test::eventually([] {
    return troupe::test::metric_value("troupe_events_consumer_lag",
                                      {{"broker", "kafka"},
                                       {"topic", "audit"},
                                       {"group", "billing"},
                                       {"partition", "0"}}) == 5;
  }));
  sub->stop();
  CHECK(sub->acknowledged() == 5);
  caf::anon_send_exit(refusing, caf::exit_reason::user_shutdown);
  {
    std::lock_guard<std::mutex> guard{first->mtx};
    for (auto& [d, ok] : first->seen)
      CHECK(d.offset <= 5); // nothing overtakes the refused record
  }
  CHECK(mc.committed("billing", "audit", 1) == std::vector<int64_t>{5});

  auto second = std::make_shared<troupe::test::received_events>();
  auto consumer = sys.spawn(troupe::test::recording_consumer, second);
  sub = troupe::subscribe_kafka(sys, settings_for(mc), "audit", "billing", consumer);
  REQUIRE(second->wait_for(5, 20s));
  sub->stop();
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
  auto got = second->snapshot();
  REQUIRE(got.size() == 5);
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].offset == 5 + i);
    CHECK(got[i].event.id == sent[5 + i].id);
  }
  CHECK(mc.committed("billing", "audit", 1) == std::vector<int64_t>{10});
}

TEST_CASE("a kafka batch subscription hands a partition's records over in order, in "
          "batches of at most its batch size, and a refused batch again from its first",
          "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  mock_cluster mc;
  mc.create_topic("clicks", 1);
  auto publisher = troupe::spawn_kafka_publisher(sys, settings_for(mc));
  auto sent = events("clicks", 1, 40);
  CHECK(publish(sys, publisher, sent) == std::vector<std::string>(40));
  stop(sys, publisher);

  auto seen = std::make_shared<troupe::test::received_batches>();
  seen->short_answers = 1; // the first batch is refused
  seen->short_count = 0;
  auto consumer = sys.spawn(troupe::test::recording_batch_consumer, seen);
  auto sub = troupe::subscribe_kafka(sys, settings_for(mc), "clicks", "stats",
                                     troupe::event_subscriber{consumer, 16});
  REQUIRE(seen->wait_for(40, 20s));
  sub->stop();
  caf::anon_send_exit(consumer, caf::exit_reason::user_shutdown);
  auto batches = seen->batches_seen();
  REQUIRE(batches.size() >= 2);
  CHECK(batches[1].front().offset == 0);
  CHECK(troupe::test::largest(batches) <= 16);
  // Records wait in the buffer while a batch is out: later batches carry several.
  CHECK(troupe::test::largest(batches) > 1);
  auto got = seen->handled_events();
  REQUIRE(got.size() == 40);
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].offset == i);
    CHECK(got[i].event.id == sent[i].id);
  }
  CHECK(sub->acknowledged() == 40);
  CHECK(mc.committed("stats", "clicks", 1) == std::vector<int64_t>{40});
}

TEST_CASE("a rebalance while records are in flight hands them to their new owner, so "
          "every record is acknowledged and none is lost",
          "[kafka]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  mock_cluster mc;
  constexpr int partitions = 4;
  mc.create_topic("shipments", partitions);
  auto publisher = troupe::spawn_kafka_publisher(sys, settings_for(mc));
  auto sent = events("shipments", 16, 3);
  CHECK(publish(sys, publisher, sent) == std::vector<std::string>(sent.size()));
  stop(sys, publisher);

  auto settings = settings_for(mc);
  settings.consumer_timeout = 20s; // held records stay in flight until released
  auto seen_a = std::make_shared<answers>();
  auto held = std::make_shared<std::atomic<size_t>>(0);
  auto a = sys.spawn(holding_consumer, seen_a, held);
  auto sub_a = troupe::subscribe_kafka(sys, settings, "shipments", "shipping", a);
  // One record in flight per partition: A holds one from each partition.
  REQUIRE(troupe::test::eventually([&] { return held->load() >= partitions; }, 20s));

  auto seen_b = std::make_shared<answers>();
  auto b = sys.spawn(limited_consumer, seen_b, sent.size() * 2);
  auto sub_b = troupe::subscribe_kafka(sys, settings, "shipments", "shipping", b);
  // B owning partitions means A's were revoked with its records still held.
  REQUIRE(seen_b->wait([&] { return !seen_b->seen.empty(); }));
  caf::anon_send(a, release_atom::value);

  auto all_acked = [&] {
    auto ids = seen_a->acked_ids();
    auto more = seen_b->acked_ids();
    ids.insert(more.begin(), more.end());
    return ids.size() == sent.size();
  };
  REQUIRE(troupe::test::eventually(all_acked, 20s));
  sub_a->stop();
  sub_b->stop();
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(b, caf::exit_reason::user_shutdown);
  // Every partition's committed offset is at its end: nothing left behind.
  auto committed = mc.committed("shipping", "shipments", partitions);
  int64_t total = 0;
  for (auto off : committed)
    total += std::max<int64_t>(off, 0);
  CHECK(total == static_cast<int64_t>(sent.size()));
}
