// Relay throughput: outbox rows committed → acknowledged (200-byte payloads,
// fsync on), by the embedded broker against raw store commits of the same
// rows, and by a Kafka cluster (librdkafka's mock cluster, in process)
// against a raw idempotent librdkafka producer sending the same messages, in
// the same run; then commit → consumed latency through the relay to Kafka.
// Usage: events_bench [--quick] [--batch N (the relay's batch size)] [rows]

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <unistd.h>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/gateways/kafka_gateway.hpp>
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

using publisher_factory = std::function<troupe::publisher_actor(troupe::store_actor)>;

constexpr const char* bench_topic = "bench.events";
constexpr const char* latency_topic = "bench.latency";

uint32_t relay_batch = 0; // 0: the relay's default

std::string key_of(size_t i) {
  return "key-" + std::to_string(i % 64);
}

/// One event through `publisher` and back: a fresh idempotent producer first
/// acquires its producer id (about a second on the mock cluster), which is a
/// start-up cost, not throughput.
void warm_up(caf::actor_system& sys, const troupe::publisher_actor& publisher,
             const char* topic) {
  troupe::outbound_event ev;
  ev.id = "warm-up";
  ev.destination = topic;
  ev.key = "warm-up";
  ev.payload = "warm-up";
  caf::scoped_actor self{sys};
  self->request(publisher, seconds(30), troupe::publish_atom::value,
                std::vector<troupe::outbound_event>{ev})
      .receive([](const std::vector<std::string>&) {},
               [](caf::error&) { std::fprintf(stderr, "warm-up publish failed\n"); });
}

/// A relay over a fresh store publishing through `make`'s publisher (warmed
/// up on `topic`); the destructor stops its actors and removes the store.
struct relay_pipeline {
  caf::actor_system& sys;
  std::filesystem::path dir = fresh_dir("relay");
  std::shared_ptr<troupe::store> db;
  troupe::store_actor store;
  std::shared_ptr<troupe::outbox_sequence> sequence;
  troupe::publisher_actor publisher;
  troupe::relay_actor relay;

  relay_pipeline(caf::actor_system& sys, const publisher_factory& make, const char* topic)
      : sys(sys) {
    troupe::store_settings s;
    s.path = (dir / "db").string();
    db = troupe::store::open(s);
    store = troupe::spawn_store_actor(sys, db);
    sequence = troupe::outbox_sequence::open(*db, "bench");
    publisher = make(store);
    warm_up(sys, publisher, topic);
    troupe::relay_settings rs;
    rs.poll_interval = milliseconds(1);
    if (relay_batch > 0)
      rs.batch_size = relay_batch;
    relay = troupe::spawn_relay(sys, store, publisher, rs);
  }
  ~relay_pipeline() {
    caf::scoped_actor self{sys};
    for (auto h :
         {caf::actor_cast<caf::actor>(relay), caf::actor_cast<caf::actor>(publisher),
          caf::actor_cast<caf::actor>(store)}) {
      self->send_exit(h, caf::exit_reason::user_shutdown);
      self->wait_for(h);
    }
    sys.registry().erase(caf::atom("store"));
    db.reset();
    std::filesystem::remove_all(dir);
  }
};

/// Rows committed into the outbox → acknowledged by the publisher `make`
/// returns, until the outbox is empty.
double relay_rate(caf::actor_system& sys, size_t rows, const std::string& payload,
                  const publisher_factory& make) {
  relay_pipeline p{sys, make, bench_topic};
  std::vector<troupe::write_batch> batches;
  batches.reserve(rows);
  for (size_t i = 0; i < rows; ++i) {
    troupe::outbox_transaction tx{p.sequence};
    tx.emit_encoded(bench_topic, key_of(i), "bench_event", payload);
    batches.push_back(std::move(tx).take());
  }
  auto start = steady_clock::now();
  commit_all(*p.db, std::move(batches));
  while (!outbox_empty(*p.db))
    std::this_thread::sleep_for(milliseconds(1));
  auto secs = duration<double>(steady_clock::now() - start).count();
  return static_cast<double>(rows) / secs;
}

// -- Kafka ---------------------------------------------------------------------

/// librdkafka's mock cluster: three brokers speaking the Kafka protocol on
/// loopback, owned by a bare client.
struct mock_kafka {
  rd_kafka_t* owner = nullptr;
  rd_kafka_mock_cluster_t* cluster = nullptr;
  std::string bootstraps;

  mock_kafka() {
    char err[512];
    auto* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cluster = rd_kafka_mock_cluster_new(owner, 3);
    bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
    rd_kafka_mock_topic_create(cluster, bench_topic, 4, 3);
    rd_kafka_mock_topic_create(cluster, latency_topic, 4, 3);
  }
  ~mock_kafka() {
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(owner);
  }
};

rd_kafka_conf_t* client_conf(const std::string& bootstraps) {
  char err[512];
  auto* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
  return conf;
}

/// The raw baseline: an idempotent producer (acks=all) sending the same keyed
/// messages with the headers the gateway adds, until every delivery report
/// is in.
double raw_kafka_rate(const mock_kafka& mk, size_t rows, const std::string& payload) {
  char err[512];
  auto* conf = client_conf(mk.bootstraps);
  rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err));
  rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err));
  static std::atomic<size_t> delivered;
  static std::atomic<size_t> failed;
  delivered = 0;
  failed = 0;
  rd_kafka_conf_set_dr_msg_cb(conf, [](rd_kafka_t*, const rd_kafka_message_t* m, void*) {
    (m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? delivered : failed).fetch_add(1);
  });
  auto* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  // The same warm-up as the relay's publisher gets: one message acknowledged.
  rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(bench_topic), RD_KAFKA_V_VALUE(nullptr, 0),
                    RD_KAFKA_V_END);
  while (delivered + failed < 1)
    rd_kafka_poll(rk, 1);
  delivered = 0;
  failed = 0;
  auto start = steady_clock::now();
  for (size_t i = 0; i < rows; ++i) {
    auto key = key_of(i);
    auto id = "bench:" + std::to_string(i);
    auto* hdrs = rd_kafka_headers_new(3);
    rd_kafka_header_add(hdrs, "content-type", -1, "application/x-troupe-caf", -1);
    rd_kafka_header_add(hdrs, "event-type", -1, "bench_event", -1);
    rd_kafka_header_add(hdrs, "message-id", -1, id.data(),
                        static_cast<ssize_t>(id.size()));
    while (rd_kafka_producev(
               rk, RD_KAFKA_V_TOPIC(bench_topic), RD_KAFKA_V_KEY(key.data(), key.size()),
               RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
               RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(rk, 1);
    rd_kafka_poll(rk, 0);
  }
  while (delivered + failed < rows)
    rd_kafka_poll(rk, 1);
  auto secs = duration<double>(steady_clock::now() - start).count();
  rd_kafka_destroy(rk);
  if (failed > 0)
    std::fprintf(stderr, "raw kafka producer: %zu deliveries failed\n", failed.load());
  return static_cast<double>(rows) / secs;
}

troupe::kafka_settings kafka_for(const mock_kafka& mk) {
  troupe::kafka_settings ks;
  ks.bootstrap_servers = mk.bootstraps;
  ks.properties = {{"log_level", "3"}};
  return ks;
}

struct latency_figures {
  double p50_ms = 0;
  double p99_ms = 0;
  size_t seen = 0;
};

/// Commits `rows` outbox rows at `per_second`, each carrying its commit time,
/// and reads them back from the cluster with a raw consumer: commit (the
/// store's durable answer) → consumed, through relay and publisher.
latency_figures kafka_latency(caf::actor_system& sys, const mock_kafka& mk, size_t rows,
                              double per_second) {
  char err[512];
  auto* conf = client_conf(mk.bootstraps);
  rd_kafka_conf_set(conf, "group.id", "bench-latency", err, sizeof(err));
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
  rd_kafka_conf_set(conf, "fetch.wait.max.ms", "1", err, sizeof(err));
  auto* consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  rd_kafka_poll_set_consumer(consumer);
  auto* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, latency_topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(consumer, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  // Joined once the group assigned the partitions.
  for (auto until = steady_clock::now() + seconds(10); steady_clock::now() < until;) {
    rd_kafka_topic_partition_list_t* assigned = nullptr;
    rd_kafka_assignment(consumer, &assigned);
    bool joined = assigned != nullptr && assigned->cnt > 0;
    if (assigned != nullptr)
      rd_kafka_topic_partition_list_destroy(assigned);
    if (joined)
      break;
    if (auto* m = rd_kafka_consumer_poll(consumer, 10))
      rd_kafka_message_destroy(m);
  }

  std::mutex mtx;
  std::vector<steady_clock::time_point> committed(rows);
  std::vector<double> latencies;
  // After what its commit callbacks touch, so it stops before they go.
  relay_pipeline p{sys,
                   [&](troupe::store_actor) {
                     return troupe::spawn_kafka_publisher(sys, kafka_for(mk));
                   },
                   latency_topic};
  std::thread producer{[&] {
    auto gap = duration<double>(1.0 / per_second);
    auto start = steady_clock::now();
    for (size_t i = 0; i < rows; ++i) {
      std::this_thread::sleep_until(start + duration_cast<nanoseconds>(gap * i));
      troupe::outbox_transaction tx{p.sequence};
      auto payload = std::to_string(i);
      payload.resize(200, ' ');
      tx.emit_encoded(latency_topic, key_of(i), "bench_event", payload);
      p.db->commit(std::move(tx).take(), [&, i](const std::string&) {
        std::lock_guard<std::mutex> guard{mtx};
        committed[i] = steady_clock::now();
      });
    }
  }};
  auto until = steady_clock::now() + seconds(10) +
               duration_cast<seconds>(duration<double>(rows / per_second));
  while (latencies.size() < rows && steady_clock::now() < until) {
    auto* m = rd_kafka_consumer_poll(consumer, 10);
    if (m == nullptr)
      continue;
    auto now = steady_clock::now();
    // The warm-up event is not a row.
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->len > 0 &&
        std::isdigit(static_cast<const unsigned char*>(m->payload)[0])) {
      auto i = std::stoul(std::string(static_cast<const char*>(m->payload), m->len));
      std::lock_guard<std::mutex> guard{mtx};
      if (i < rows && committed[i] != steady_clock::time_point{})
        latencies.push_back(duration<double, std::milli>(now - committed[i]).count());
    }
    rd_kafka_message_destroy(m);
  }
  producer.join();
  rd_kafka_consumer_close(consumer);
  rd_kafka_destroy(consumer);
  latency_figures out;
  out.seen = latencies.size();
  if (!latencies.empty()) {
    std::sort(latencies.begin(), latencies.end());
    out.p50_ms = latencies[latencies.size() / 2];
    out.p99_ms = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
  }
  return out;
}

} // namespace

int main(int argc, char** argv) {
  size_t rows = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      rows = 1000;
    else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
      relay_batch = static_cast<uint32_t>(std::stoul(argv[++i]));
    else
      rows = std::stoul(argv[i]);
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::string payload(200, 'x');
  auto raw = raw_rate(rows, payload);
  auto relay = relay_rate(sys, rows, payload, [&](troupe::store_actor store) {
    return troupe::spawn_embedded_broker(sys, store);
  });
  std::printf("rows: %zu, payload: 200 bytes, fsync on\n", rows);
  std::printf("raw store commits:               %10.0f rows/s\n", raw);
  std::printf("outbox → relay → embedded broker: %10.0f rows/s (%.2f × raw)\n", relay,
              relay / raw);
  {
    mock_kafka mk;
    auto raw_kafka = raw_kafka_rate(mk, rows, payload);
    auto relay_kafka = relay_rate(sys, rows, payload, [&](troupe::store_actor) {
      return troupe::spawn_kafka_publisher(sys, kafka_for(mk));
    });
    std::printf(
        "raw idempotent producer → kafka:  %10.0f msgs/s (librdkafka mock cluster, "
        "3 brokers, 4 partitions)\n",
        raw_kafka);
    std::printf("outbox → relay → kafka:           %10.0f rows/s (%.2f × raw producer)\n",
                relay_kafka, relay_kafka / raw_kafka);
    size_t paced = rows >= 20000 ? 4000 : 400;
    double rate = 2000;
    auto lat = kafka_latency(sys, mk, paced, rate);
    std::printf(
        "commit → consumed via relay → kafka at %.0f rows/s: p50 %.1f ms, p99 %.1f "
        "ms (%zu of %zu rows seen; relay poll 1 ms, raw consumer "
        "fetch.wait.max.ms 1)\n",
        rate, lat.p50_ms, lat.p99_ms, lat.seen, paced);
  }
  return 0;
}
