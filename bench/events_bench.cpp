// Relay throughput: outbox rows committed → acknowledged (200-byte payloads,
// fsync on), by the embedded broker against raw store commits of the same
// rows, and by a Kafka cluster (librdkafka's mock cluster, in process)
// against a raw idempotent librdkafka producer sending the same messages, in
// the same run; then commit → consumed latency through the relay to Kafka;
// then by NATS JetStream (a nats-server child on loopback, skipped when none
// is on PATH) against raw nats.c publishing the same messages asynchronously;
// last, consumption: a topic's backlog in the embedded broker applied once by
// an inbox consumer (state change and processed id in one commit), one event
// per delivery and in batches, against the same run's raw store commits.
// Usage: events_bench [--quick] [--batch N (the relay's batch size)]
//                     [--in-flight N (its publish calls in flight)] [rows]

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <caf/all.hpp>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <troupe/gateways/embedded_broker.hpp>
#include <troupe/gateways/kafka_gateway.hpp>
#include <troupe/gateways/nats_gateway.hpp>
#include <troupe/outbox/event_codec.hpp>
#include <troupe/outbox/inbox.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/outbox/relay.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/scheduler_tuning.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

#include "support/http_get.hpp"
#include "support/nats_client.hpp"

using namespace std::chrono;

namespace {

using troupe::test::free_port;
using troupe::test::nats_client;

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

/// Rows the relays of this process have seen acknowledged. Read from the
/// metric rather than by scanning the outbox, whose scan from the first key
/// walks every deleted row's tombstone and would tax the run it measures.
double published_rows() {
  for (auto& family : troupe::metrics::instance().registry().Collect())
    if (family.name == "troupe_outbox_published_total" && !family.metric.empty())
      return family.metric.front().counter.value;
  return 0;
}

using publisher_factory = std::function<troupe::publisher_actor(troupe::store_actor)>;

constexpr const char* bench_topic = "bench.events";
constexpr const char* latency_topic = "bench.latency";

uint32_t relay_batch = 0;     // 0: the relay's default
uint32_t relay_in_flight = 0; // 0: the relay's default

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

/// Stops `actors` in order (the store actor last), closes `db` and removes
/// its directory.
void stop_then_remove(caf::actor_system& sys, std::initializer_list<caf::actor> actors,
                      std::shared_ptr<troupe::store>& db,
                      const std::filesystem::path& dir) {
  caf::scoped_actor self{sys};
  for (auto& h : actors) {
    self->send_exit(h, caf::exit_reason::user_shutdown);
    self->wait_for(h);
  }
  sys.registry().erase(caf::atom("store"));
  db.reset();
  std::filesystem::remove_all(dir);
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
    if (relay_in_flight > 0)
      rs.max_in_flight = relay_in_flight;
    relay = troupe::spawn_relay(sys, store, publisher, rs);
  }
  ~relay_pipeline() {
    stop_then_remove(sys,
                     {caf::actor_cast<caf::actor>(relay),
                      caf::actor_cast<caf::actor>(publisher),
                      caf::actor_cast<caf::actor>(store)},
                     db, dir);
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
  auto before = published_rows();
  auto start = steady_clock::now();
  commit_all(*p.db, std::move(batches));
  while (published_rows() - before < static_cast<double>(rows) || !outbox_empty(*p.db))
    std::this_thread::sleep_for(milliseconds(1));
  auto secs = duration<double>(steady_clock::now() - start).count();
  return static_cast<double>(rows) / secs;
}

// -- consumption -----------------------------------------------------------------

/// A topic of `rows` events in the embedded broker of a fresh store, applied
/// by an inbox consumer of group "bench" that writes one state key per event
/// (`max_batch` 0: one event per delivery); events/s from subscribing until
/// the broker has heard every acknowledgement.
double consume_rate(caf::actor_system& sys, size_t rows, const std::string& payload,
                    uint32_t max_batch) {
  auto dir = fresh_dir("consume");
  troupe::store_settings s;
  s.path = (dir / "db").string();
  auto db = troupe::store::open(s);
  auto store = troupe::spawn_store_actor(sys, db);
  auto sequence = troupe::outbox_sequence::open(*db, "bench");
  auto broker = troupe::spawn_embedded_broker(sys, store);
  caf::scoped_actor self{sys};
  for (size_t first = 0; first < rows; first += 2048) {
    std::vector<troupe::outbound_event> events;
    for (size_t i = first; i < std::min(rows, first + 2048); ++i) {
      troupe::outbound_event ev;
      ev.id = "bench:" + std::to_string(i);
      ev.destination = bench_topic;
      ev.key = key_of(i);
      ev.payload = payload;
      events.push_back(std::move(ev));
    }
    self->request(broker, seconds(60), troupe::publish_atom::value, std::move(events))
        .receive([](const std::vector<std::string>&) {},
                 [](caf::error&) { std::fprintf(stderr, "consume: filling failed\n"); });
  }
  std::atomic<size_t> applied{0};
  troupe::inbox_settings is;
  is.consumer = max_batch == 0 ? "bench-single" : "bench-batch";
  troupe::event_subscriber subscriber;
  caf::actor consumer;
  if (max_batch == 0) {
    auto c = troupe::spawn_inbox_consumer(
        sys, store, sequence, is,
        [&applied](const troupe::delivered_event& d, troupe::outbox_transaction& tx) {
          tx.put("applied/" + d.event.key, d.event.id);
          ++applied;
          return std::string{};
        });
    subscriber = troupe::event_consumer_actor{c};
    consumer = caf::actor_cast<caf::actor>(c);
  } else {
    auto c = troupe::spawn_inbox_batch_consumer(
        sys, store, sequence, is,
        [&applied](const std::vector<const troupe::delivered_event*>& fresh,
                   troupe::outbox_transaction& tx) {
          for (auto* d : fresh)
            tx.put("applied/" + d->event.key, d->event.id);
          applied += fresh.size();
          return std::vector<std::string>(fresh.size());
        });
    subscriber =
        troupe::event_subscriber{troupe::event_batch_consumer_actor{c}, max_batch};
    consumer = caf::actor_cast<caf::actor>(c);
  }
  auto group = is.consumer;
  auto start = steady_clock::now();
  self->request(broker, seconds(10), troupe::subscribe_atom::value,
                std::string{bench_topic}, group, subscriber)
      .receive([](caf::ok_atom) {},
               [](caf::error&) { std::fprintf(stderr, "consume: subscribe failed\n"); });
  // The group's offset reaches the head once the last acknowledgement is in.
  auto lag = [&] {
    for (auto& family : troupe::metrics::instance().registry().Collect())
      if (family.name == "troupe_events_consumer_lag")
        for (auto& m : family.metric)
          for (auto& l : m.label)
            if (l.name == "group" && l.value == group)
              return m.gauge.value;
    return -1.0;
  };
  auto until = start + minutes(5);
  while ((applied.load() < rows || lag() != 0) && steady_clock::now() < until)
    std::this_thread::sleep_for(milliseconds(1));
  auto secs = duration<double>(steady_clock::now() - start).count();
  if (applied.load() != rows)
    std::fprintf(stderr, "consume: %zu of %zu events applied\n", applied.load(), rows);
  stop_then_remove(
      sys,
      {consumer, caf::actor_cast<caf::actor>(broker), caf::actor_cast<caf::actor>(store)},
      db, dir);
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

// -- NATS ----------------------------------------------------------------------

/// The stream both NATS rows publish into; the gateway creates it the same way
/// when it is missing.
constexpr const char* bench_stream = "BENCH";
constexpr const char* bench_subjects = "bench.>";

/// `name` in the first directory of $PATH that has it executable, or "".
std::string on_path(const char* name) {
  const char* path = std::getenv("PATH");
  std::string_view rest{path == nullptr ? "" : path};
  while (!rest.empty()) {
    auto colon = rest.find(':');
    auto dir = rest.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    if (dir.empty())
      continue;
    auto candidate = std::filesystem::path{dir} / name;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate.string();
  }
  return {};
}

/// The last non-empty line of the file at `path`.
std::string last_line(const std::string& path) {
  std::ifstream in{path};
  std::string line;
  std::string last;
  while (std::getline(in, line))
    if (!line.empty())
      last = line;
  return last;
}

/// `binary` with JetStream on a free loopback port and a store directory of
/// its own, started once JetStream answers (or `failure` says why not);
/// killed, reaped and its directory removed on destruction.
struct nats_server {
  std::filesystem::path dir = fresh_dir("nats");
  pid_t pid = -1;
  std::string url;
  std::string failure;

  explicit nats_server(const std::string& binary) {
    // A port taken between free_port() and the server's bind makes it exit:
    // then another port.
    for (int attempt = 0; attempt < 3; ++attempt)
      if (start(binary) != outcome::exited)
        break;
  }
  ~nats_server() {
    stop();
    std::filesystem::remove_all(dir);
  }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;

  bool started() const { return !url.empty(); }

  enum class outcome { answered, exited, failed };

  outcome start(const std::string& binary) {
    auto store = (dir / "js").string();
    auto log = (dir / "server.log").string();
    auto port = std::to_string(free_port());
    pid = ::fork();
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec: the bench has
      // threads. The server dies with the bench if the bench dies first.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(binary.c_str(), binary.c_str(), "-js", "-sd", store.c_str(), "-a",
              "127.0.0.1", "-p", port.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (pid < 0) {
      failure = std::string{"cannot fork: "} + std::strerror(errno);
      return outcome::failed;
    }
    auto candidate = "nats://127.0.0.1:" + port;
    for (auto until = steady_clock::now() + seconds(10); steady_clock::now() < until;) {
      if (nats_client{candidate}.jetstream_answers()) {
        url = candidate;
        return outcome::answered;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        failure = binary + " exited at start: " + last_line(log);
        return outcome::exited;
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    failure = binary + " did not answer within 10 s";
    stop();
    return outcome::failed;
  }

  void stop() {
    if (pid <= 0)
      return;
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
  }
};

/// Creates the bench stream as the gateway would (file storage, default
/// limits and duplicate window); "" on success.
std::string add_bench_stream(const nats_client& c) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {bench_subjects};
  cfg.Name = bench_stream;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  if (auto st = js_AddStream(&info, c.js, &cfg, nullptr, &code); st != NATS_OK)
    return std::string{natsStatus_GetText(st)} + " (JetStream error " +
           std::to_string(static_cast<int>(code)) + ")";
  jsStreamInfo_Destroy(info);
  return {};
}

/// Messages the bench stream holds, or 0 when it cannot say.
/// The raw baseline: one nats.c connection publishing the same keyed
/// messages, with the headers the gateway sets (the event's, the key's and
/// `Nats-Msg-Id`), asynchronously to the same stream, clocked until
/// JetStream acknowledged the last one. 0 when it could not run.
double raw_nats_rate(const std::string& url, size_t rows, const std::string& payload) {
  static std::atomic<size_t> failed;
  failed = 0;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.ErrHandler = [](jsCtx*, jsPubAckErr*, void*) { failed.fetch_add(1); };
  nats_client c{url, &jo};
  if (!c.ok()) {
    std::fprintf(stderr, "raw nats.c: cannot connect to %s\n", url.c_str());
    return 0;
  }
  if (auto error = add_bench_stream(c); !error.empty()) {
    std::fprintf(stderr, "raw nats.c: cannot create stream %s: %s\n", bench_stream,
                 error.c_str());
    return 0;
  }
  // The same warm-up as the relay's publisher gets: one message acknowledged.
  jsPubOptions warm;
  jsPubOptions_Init(&warm);
  warm.MsgId = "raw-warm-up";
  jsPubAck* ack = nullptr;
  if (js_Publish(&ack, c.js, bench_topic, "warm-up", 7, &warm, nullptr) == NATS_OK)
    jsPubAck_Destroy(ack);
  auto start = steady_clock::now();
  for (size_t i = 0; i < rows; ++i) {
    auto key = key_of(i);
    // Not the relay's ids ("bench:" and 16 hex digits), or JetStream would
    // take the relay's messages for duplicates of these.
    char id[32];
    std::snprintf(id, sizeof id, "raw:%016zx", i);
    natsMsg* msg = nullptr;
    natsMsg_Create(&msg, bench_topic, nullptr, payload.data(),
                   static_cast<int>(payload.size()));
    natsMsgHeader_Add(msg, troupe::event_headers::content_type,
                      troupe::caf_binary_content_type);
    natsMsgHeader_Add(msg, troupe::event_headers::event_type, "bench_event");
    natsMsgHeader_Set(msg, "Troupe-Event-Key", key.c_str()); // the gateway's key header
    natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
    if (js_PublishMsgAsync(c.js, &msg, nullptr) != NATS_OK)
      failed.fetch_add(1);
    natsMsg_Destroy(msg); // no-op once the library took it
  }
  jsPubOptions all;
  jsPubOptions_Init(&all);
  all.MaxWait = 60000;
  if (js_PublishAsyncComplete(c.js, &all) != NATS_OK)
    std::fprintf(stderr, "raw nats.c: not every publish acknowledged within 60 s\n");
  auto secs = duration<double>(steady_clock::now() - start).count();
  if (failed > 0)
    std::fprintf(stderr, "raw nats.c: %zu publishes failed\n", failed.load());
  return static_cast<double>(rows) / secs;
}

troupe::nats_settings nats_for(const nats_server& ns) {
  troupe::nats_settings s;
  s.servers = {ns.url};
  s.jetstream = true;
  s.streams = {{bench_stream, {bench_subjects}}};
  return s;
}

/// The NATS rows, or one line saying why they were skipped.
void nats_rows(caf::actor_system& sys, size_t rows, const std::string& payload) {
  auto binary = on_path("nats-server");
  if (binary.empty()) {
    std::printf("nats: skipped (nats-server not on PATH)\n");
    return;
  }
  nats_server ns{binary};
  if (!ns.started()) {
    std::printf("nats: skipped (%s)\n", ns.failure.c_str());
    return;
  }
  auto raw_nats = raw_nats_rate(ns.url, rows, payload);
  auto relay_nats = relay_rate(sys, rows, payload, [&](troupe::store_actor) {
    return troupe::spawn_nats_publisher(sys, nats_for(ns));
  });
  // Both warm-ups and every row of both runs, none taken for a duplicate.
  auto stored = nats_client{ns.url}.stored(bench_stream).value_or(0);
  if (stored != 2 * rows + 2)
    std::fprintf(stderr, "nats: stream %s holds %llu messages, expected %zu\n",
                 bench_stream, static_cast<unsigned long long>(stored), 2 * rows + 2);
  std::printf(
      "raw nats.c → jetstream:           %10.0f msgs/s (nats-server, 1 node, file "
      "store; js_PublishMsgAsync, then js_PublishAsyncComplete)\n",
      raw_nats);
  std::printf("outbox → relay → jetstream:       %10.0f rows/s (%.2f × raw nats.c)\n",
              relay_nats, raw_nats > 0 ? relay_nats / raw_nats : 0.0);
}

} // namespace

int main(int argc, char** argv) {
  size_t rows = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      rows = 1000;
    else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
      relay_batch = static_cast<uint32_t>(std::stoul(argv[++i]));
    else if (std::strcmp(argv[i], "--in-flight") == 0 && i + 1 < argc)
      relay_in_flight = static_cast<uint32_t>(std::stoul(argv[++i]));
    else
      rows = std::stoul(argv[i]);
  }
  caf::actor_system_config cfg;
  // The scheduler a node runs with: idle workers block instead of napping.
  troupe::apply(cfg, troupe::scheduler_tuning{});
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
  nats_rows(sys, rows, payload);
  auto single = consume_rate(sys, rows, payload, 0);
  auto batched = consume_rate(sys, rows, payload, 256);
  std::printf("embedded broker → inbox, 1 per delivery: %10.0f events/s (%.3f × raw "
              "store commits)\n",
              single, single / raw);
  std::printf("embedded broker → inbox, batches of 256: %10.0f events/s (%.3f × raw "
              "store commits, %.1f × one per delivery)\n",
              batched, batched / raw, batched / single);
  return 0;
}
