// Sagas started from a broker: a troupe-node consumes StartSagaRequests from
// a Kafka topic (librdkafka's mock cluster, the real protocol on loopback)
// and starts each saga once, however often the topic delivers its command;
// commands that can never start are dead-lettered and the stream moves on.

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <troupe/api/v1/sagas.pb.h>
#include <troupe/gateways/api_backend.hpp>

#include "gateways/support/api_json.hpp"
#include "gateways/support/gateway_node.hpp"
#include "gateways/support/http_client.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;
namespace v1 = troupe::api::v1;
using strings = std::vector<std::string>;

constexpr const char* commands_topic = "orders.commands";
constexpr const char* dead_letter_topic = "orders.commands.dead-letters";

struct kafka_record {
  std::string key;
  std::string payload;
  std::map<std::string, std::string> headers;
};

// A three-broker mock cluster owned by a bare client, with a producer and
// a reader of its own for the test's side of the topics.
struct command_cluster {
  rd_kafka_t* owner = nullptr;
  rd_kafka_mock_cluster_t* cluster = nullptr;
  rd_kafka_t* producer = nullptr;
  std::string bootstraps;

  command_cluster() {
    char err[512];
    auto* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    REQUIRE(owner != nullptr);
    cluster = rd_kafka_mock_cluster_new(owner, 3);
    REQUIRE(cluster != nullptr);
    bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
    REQUIRE(rd_kafka_mock_topic_create(cluster, commands_topic, 2, 3) ==
            RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(rd_kafka_mock_topic_create(cluster, dead_letter_topic, 1, 3) ==
            RD_KAFKA_RESP_ERR_NO_ERROR);
    auto* pconf = rd_kafka_conf_new();
    rd_kafka_conf_set(pconf, "bootstrap.servers", bootstraps.c_str(), err, sizeof(err));
    rd_kafka_conf_set(pconf, "log_level", "3", err, sizeof(err));
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
    REQUIRE(producer != nullptr);
  }
  ~command_cluster() {
    rd_kafka_destroy(producer);
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(owner);
  }

  /// Produces one command and waits until the cluster acknowledged it.
  void produce(const std::string& key, const std::string& payload,
               const std::map<std::string, std::string>& headers) {
    auto* hdrs = rd_kafka_headers_new(headers.size());
    for (auto& [name, value] : headers)
      rd_kafka_header_add(hdrs, name.c_str(), -1, value.data(),
                          static_cast<ssize_t>(value.size()));
    auto rc = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(commands_topic),
        RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_END);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
      rd_kafka_headers_destroy(hdrs);
    REQUIRE(rc == RD_KAFKA_RESP_ERR_NO_ERROR);
    REQUIRE(rd_kafka_flush(producer, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR);
  }

  /// Reads `topic` from the start through a fresh group until `n` records
  /// arrived or `deadline` passed.
  std::vector<kafka_record> read(const std::string& topic, size_t n,
                                 steady::time_point deadline) {
    char err[512];
    auto* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "test-reader", err, sizeof(err));
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    auto* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    REQUIRE(c != nullptr);
    rd_kafka_poll_set_consumer(c);
    auto* topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic.c_str(), RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(c, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    std::vector<kafka_record> out;
    while (out.size() < n && steady::now() < deadline) {
      auto* m = rd_kafka_consumer_poll(c, 100);
      if (m == nullptr)
        continue;
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        kafka_record r;
        r.key.assign(static_cast<const char*>(m->key), m->key_len);
        r.payload.assign(static_cast<const char*>(m->payload), m->len);
        rd_kafka_headers_t* hdrs = nullptr;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
          const char* name = nullptr;
          const void* value = nullptr;
          size_t size = 0;
          for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
                             RD_KAFKA_RESP_ERR_NO_ERROR;
               ++i)
            r.headers[name].assign(static_cast<const char*>(value), size);
        }
        out.push_back(std::move(r));
      }
      rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
  }

  /// The sum of the group's committed offsets over the commands topic: how
  /// many commands the node acknowledged.
  int64_t acknowledged(const std::string& group) {
    char err[512];
    auto* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(), err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group.c_str(), err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    auto* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    REQUIRE(c != nullptr);
    auto* list = rd_kafka_topic_partition_list_new(2);
    for (int p = 0; p < 2; ++p)
      rd_kafka_topic_partition_list_add(list, commands_topic, p);
    int64_t sum = 0;
    if (rd_kafka_committed(c, list, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
      for (int p = 0; p < 2; ++p)
        sum += std::max<int64_t>(list->elems[p].offset, 0);
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return sum;
  }
};

constexpr const char* group = "order-commands";

// A node running the order saga, the event bus and the gateway, consuming
// saga commands from the mock cluster's commands topic.
running_gateway command_node(const command_cluster& kc) {
  return start_gateway_node(
      "a",
      {"--services.enabled", "orders,inventory,payment,shipping,sagas,gateway,events",
       "--gateways.grpc.enabled", "false", "--events.routes", "[orders.commands*=kafka]",
       "--events.kafka.bootstrap_servers", kc.bootstraps, "--events.kafka.properties",
       "[session.timeout.ms=4000, heartbeat.interval.ms=300, "
       "auto.commit.interval.ms=100, "
       "topic.metadata.refresh.interval.ms=500]",
       "--events.relay.poll_interval", "50ms", "--gateways.saga_commands.topics",
       "[orders.commands]", "--gateways.saga_commands.group", group},
      within(60s));
}

std::string order_command(const std::string& order_id, const std::string& extra = "") {
  return R"({"sagaType":"order_processing","json":{"orderId":")" + order_id +
         R"(","customer":"c-1","sku":"widget","quantity":1})" + extra + "}";
}

/// Every order saga the node lists, one page of up to 1000.
std::vector<v1::SagaSummary> order_sagas(http_client& api) {
  auto r = api.get("/v1/sagas?type=order_processing&page_size=1000");
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  auto page = parse<v1::ListSagasResponse>(r->body);
  return {page.sagas().begin(), page.sagas().end()};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

} // namespace

TEST_CASE("a saga command published to a kafka topic starts its saga once, however often "
          "the topic delivers it",
          "[gateway][events][kafka]") {
  command_cluster kc;
  auto node = command_node(kc);
  for (int i = 1; i <= 3; ++i)
    kc.produce("o-" + std::to_string(i), order_command("o-" + std::to_string(i)),
               {{"message-id", "cmd-" + std::to_string(i)}});
  // The same command again, as a producer retrying after a lost ack sends it.
  kc.produce("o-2", order_command("o-2"), {{"message-id", "cmd-2"}});

  bool all_handled = eventually(within(30s), [&] { return kc.acknowledged(group) == 4; });
  INFO("output:\n" << node->output());
  REQUIRE(all_handled);
  http_client api{node.http_port};
  auto sagas = order_sagas(api);
  CHECK(sagas.size() == 3);
  CHECK(contains(node->output(),
                 "saga commands: starting sagas from topic orders.commands"));
}

TEST_CASE("a binary StartSagaRequest with content type application/x-protobuf starts a "
          "saga under its own idempotency key",
          "[gateway][events][kafka]") {
  command_cluster kc;
  auto node = command_node(kc);
  auto json = parse<v1::StartSagaRequest>(order_command("o-bin"));
  json.set_idempotency_key("order-o-bin");
  std::string binary;
  REQUIRE(json.SerializeToString(&binary));
  kc.produce("o-bin", binary,
             {{"message-id", "cmd-bin-1"}, {"content-type", "application/x-protobuf"}});
  // A second command with another message id but the same idempotency key.
  kc.produce("o-bin", binary,
             {{"message-id", "cmd-bin-2"}, {"content-type", "application/x-protobuf"}});

  bool handled = eventually(within(30s), [&] { return kc.acknowledged(group) == 2; });
  INFO("output:\n" << node->output());
  REQUIRE(handled);
  http_client api{node.http_port};
  CHECK(order_sagas(api).size() == 1);
}

TEST_CASE("saga commands that can never start go to the topic's dead letters with the "
          "error, and the commands after them still start",
          "[gateway][events][kafka]") {
  command_cluster kc;
  auto node = command_node(kc);
  // One key, so the three commands reach the node in this order.
  kc.produce("k", "{not json", {{"message-id", "bad-json"}});
  kc.produce("k", R"({"sagaType":"no_such_saga","json":{}})",
             {{"message-id", "bad-type"}});
  kc.produce("k", order_command("o-after"), {{"message-id", "good"}});

  auto dead = kc.read(dead_letter_topic, 2, within(30s));
  INFO("output:\n" << node->output());
  REQUIRE(dead.size() == 2);
  std::map<std::string, kafka_record> by_id;
  for (auto& r : dead)
    by_id[r.headers["original-id"]] = r;
  REQUIRE(by_id.count("bad-json") == 1);
  REQUIRE(by_id.count("bad-type") == 1);
  CHECK(by_id["bad-json"].payload == "{not json");
  CHECK_FALSE(by_id["bad-json"].headers["error"].empty());
  CHECK(contains(by_id["bad-type"].headers["error"], "no_such_saga"));
  CHECK(by_id["bad-type"].headers["original-topic"] == commands_topic);

  bool handled = eventually(within(30s), [&] { return kc.acknowledged(group) == 3; });
  REQUIRE(handled);
  http_client api{node.http_port};
  auto sagas = order_sagas(api);
  CHECK(sagas.size() == 1);
}

TEST_CASE("saga command topics without the events service stop the node with exit code "
          "2 naming gateways.saga_commands.topics",
          "[gateway][config]") {
  temp_dir dir;
  node_process proc{troupe_node_binary(),
                    {"--node.name", "a", "--services.enabled", "sagas,gateway",
                     "--store.path", (dir.path() / "store").string(),
                     "--gateways.saga_commands.topics", "[orders.commands]",
                     "--status.port", "0", "--cluster.port", "0"},
                    {},
                    "saga-commands-config"};
  auto code = proc.wait_exit(within(15s));
  INFO("output:\n" << proc.output());
  REQUIRE(code.has_value());
  CHECK(*code == 2);
  CHECK(contains(proc.output(), "gateways.saga_commands.topics"));
}
