// troupe-node with the event bus enabled: routes are checked before anything
// starts, and /readyz tells the state of each route without deciding
// readiness by it.

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "support/http_get.hpp"
#include "support/metrics_text.hpp"
#include "support/nats_server_process.hpp"
#include "support/node_process.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::test;

using strings = std::vector<std::string>;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

strings operator+(strings lhs, const strings& rhs) {
  lhs.insert(lhs.end(), rhs.begin(), rhs.end());
  return lhs;
}

/// Members notice each other going and coming within a second or two.
const strings fast_cluster{"--cluster.heartbeat_interval", "100ms",
                           "--cluster.failure_timeout", "1s"};

/// The order saga with its services, the event bus and the sales totals,
/// and six orders: 1, 2, 4 and 5 complete, all widgets (2 + 3 + 2 + 3
/// units), so the totals reach "sales: 10 units of widget sold".
strings sales_node(const std::filesystem::path& store) {
  return {"--services.enabled",
          "[sagas, orders, inventory, payment, shipping, events, orders_client, "
          "order_sales]",
          "--store.path",
          store.string(),
          "--orders_client.count",
          "6",
          "--orders_client.fail_every",
          "3"};
}

} // namespace

TEST_CASE("a route naming a broker this build lacks stops the node with exit code 2 "
          "naming events.routes",
          "[config][events]") {
  temp_dir dir;
  node_process proc{troupe_node_binary(),
                    {"--node.name", "a", "--services.enabled", "[events]", "--store.path",
                     (dir.path() / "store").string(), "--events.routes",
                     "[orders.*=rabbitmq]", "--status.port", "0", "--cluster.port", "0"},
                    {},
                    "events-config"};
  auto code = proc.wait_exit(within(15s));
  INFO("output:\n" << proc.output());
  REQUIRE(code.has_value());
  CHECK(*code == 2);
  CHECK(contains(proc.output(), "events.routes"));
  CHECK(contains(proc.output(), "rabbitmq"));
}

TEST_CASE("the event bus without store.path is rejected naming store.path",
          "[config][events]") {
  node_process proc{troupe_node_binary(),
                    {"--node.name", "a", "--services.enabled", "[events]",
                     "--status.port", "0", "--cluster.port", "0"},
                    {},
                    "events-config"};
  auto code = proc.wait_exit(within(15s));
  INFO("output:\n" << proc.output());
  REQUIRE(code.has_value());
  CHECK(*code == 2);
  CHECK(contains(proc.output(), "store.path"));
}

TEST_CASE("a node running the event bus lists each event route's state in /readyz",
          "[events]") {
  temp_dir dir;
  auto node = start_node("a",
                         {"--services.enabled", "[events]", "--store.path",
                          (dir.path() / "store").string(), "--events.routes",
                          "[audit.*=embedded]"},
                         within(20s));
  std::string body;
  bool listed = eventually(within(15s), [&] {
    auto r = http_get(node.status_port, "/readyz");
    if (!r || r->status != 200)
      return false;
    body = r->body;
    return contains(body, "events route audit.* (embedded): idle") &&
           contains(body, "events route * (embedded): idle");
  });
  // The routes show in /readyz before the bus logs its summary.
  auto summary = node->wait_for_line("event bus: relay publishing", within(15s));
  INFO("readyz:\n" << body << "\noutput:\n" << node->output());
  CHECK(listed);
  CHECK(summary.has_value());
}

TEST_CASE("every order saga's end is published as an event through the node's outbox "
          "and embedded broker",
          "[events][sagas]") {
  temp_dir dir;
  auto node = start_node(
      "a",
      {"--services.enabled",
       "[sagas, orders, inventory, payment, shipping, events, orders_client]",
       "--store.path", (dir.path() / "store").string(), "--orders_client.count", "6",
       "--orders_client.fail_every", "3", "--events.relay.poll_interval", "50ms"},
      within(20s));
  double published = 0;
  bool all = eventually(within(30s), [&] {
    auto r = http_get(node.status_port, "/metrics");
    if (!r || r->status != 200)
      return false;
    published = metric_sum(r->body, "troupe_outbox_published_total");
    return published >= 6;
  });
  INFO("output:\n" << node->output());
  CHECK(all);
  CHECK(published == 6);
}

TEST_CASE("a kafka route without events.kafka.bootstrap_servers stops the node with exit "
          "code 2 naming the key",
          "[config][events]") {
  temp_dir dir;
  node_process proc{troupe_node_binary(),
                    {"--node.name", "a", "--services.enabled", "[events]", "--store.path",
                     (dir.path() / "store").string(), "--events.routes",
                     "[orders.*=kafka]", "--status.port", "0", "--cluster.port", "0"},
                    {},
                    "events-config"};
  auto code = proc.wait_exit(within(15s));
  INFO("output:\n" << proc.output());
  REQUIRE(code.has_value());
  CHECK(*code == 2);
  CHECK(contains(proc.output(), "events.kafka.bootstrap_servers"));
}

TEST_CASE("a node whose NATS route's server is unreachable starts, stays ready and lists "
          "the route in /readyz",
          "[events]") {
  temp_dir dir;
  auto nowhere = "nats://127.0.0.1:" + std::to_string(free_port());
  auto node = start_node("a",
                         {"--services.enabled", "[events]", "--store.path",
                          (dir.path() / "store").string(), "--events.routes", "[*=nats]",
                          "--events.nats.servers", "[" + nowhere + "]"},
                         within(20s));
  std::optional<http_response> r;
  bool ready = eventually(within(15s), [&] {
    r = http_get(node.status_port, "/readyz");
    return r && r->status == 200 && contains(r->body, "events route * (nats)");
  });
  // The route shows in /readyz as soon as the route publisher runs; the bus
  // logs its summary a moment later.
  auto summary = node->wait_for_line(
      "event bus: relay publishing through 1 route(s) to embedded, nats", within(15s));
  INFO("output:\n" << node->output());
  CHECK(ready);
  CHECK(summary.has_value());
}

TEST_CASE("a service subscribed to the order saga's end events applies each of them once "
          "through the embedded broker",
          "[events][sagas]") {
  temp_dir dir;
  auto node = start_node("a",
                         {"--services.enabled",
                          "[sagas, orders, inventory, payment, shipping, events, "
                          "orders_client, order_notifications]",
                          "--store.path", (dir.path() / "store").string(),
                          "--orders_client.count", "6", "--orders_client.fail_every", "3",
                          "--events.relay.poll_interval", "50ms"},
                         within(20s));
  bool all = eventually(within(30s), [&] {
    return node->count_lines("notifications: customer ") +
               node->count_lines("did not go through") >=
           6;
  });
  auto r = http_get(node.status_port, "/readyz");
  INFO("output:\n" << node->output() << "\nreadyz:\n" << (r ? r->body : ""));
  REQUIRE(all);
  CHECK(node->count_lines("notifications: customer ") == 4);
  CHECK(node->count_lines("did not go through") == 2);
  REQUIRE(r);
  CHECK(contains(r->body, "events subscription orders.completed (embedded, group "
                          "order-notifications): subscribed"));
}

TEST_CASE("a stream processor taking the order saga's end events in batches counts each "
          "order once, also across a restart that reloads its totals",
          "[events][sagas]") {
  temp_dir dir;
  auto args = [&](const std::string& count) {
    return std::vector<std::string>{
        "--services.enabled",
        "[sagas, orders, inventory, payment, shipping, events, "
        "orders_client, order_sales]",
        "--store.path",
        (dir.path() / "store").string(),
        "--orders_client.count",
        count,
        "--orders_client.fail_every",
        "3",
        "--order_sales.max_batch",
        "4"};
  };
  {
    // Orders 1, 2, 4 and 5 complete, all widgets: 2 + 3 + 2 + 3 units.
    auto node = start_node("a", args("6"), within(20s));
    auto line = node->wait_for_line("sales: 10 units of widget sold", within(30s));
    INFO("output:\n" << node->output());
    REQUIRE(line);
    node->kill(SIGTERM);
    REQUIRE(node->wait_exit(within(30s)) == 0);
    CHECK(node->count_lines("units of gadget") == 0);
    CHECK(node->count_lines("units of discontinued") == 0);
  }
  // The same six again (idempotent) and two more widgets of 2 and 3 units.
  auto node = start_node("a", args("8"), within(20s));
  auto line = node->wait_for_line("sales: 15 units of widget sold", within(30s));
  INFO("output:\n" << node->output());
  REQUIRE(line);
  // Nothing counted twice: no total ever passed 15, none started over.
  std::regex total{"sales: ([0-9]+) units of widget"};
  for (auto& l : node->lines()) {
    std::smatch m;
    if (std::regex_search(l, m, total)) {
      CHECK(std::stoi(m[1]) > 10);
      CHECK(std::stoi(m[1]) <= 15);
    }
  }
}

TEST_CASE("a sales report asks the sales totals over the embedded broker and logs the "
          "units they reloaded from the store",
          "[events][sagas]") {
  temp_dir dir;
  auto store = (dir.path() / "store").string();
  {
    auto node = start_node("a", sales_node(store), within(20s));
    auto line = node->wait_for_line("sales: 10 units of widget sold", within(30s));
    INFO("output:\n" << node->output());
    REQUIRE(line);
    node->kill(SIGTERM);
    REQUIRE(node->wait_exit(within(30s)) == 0);
    // The event bus's registered peer actor drains like any service.
    CHECK(node->count_lines("did not drain") == 0);
  }
  // The report starts with the totals: it asks again until they serve.
  auto node = start_node("a",
                         {"--services.enabled", "[events, order_sales, sales_report]",
                          "--store.path", store, "--sales_report.deadline", "10s"},
                         within(20s));
  auto report = node->wait_for_line("sales report:", within(15s));
  INFO("output:\n" << node->output());
  REQUIRE(report);
  CHECK(contains(*report, "sales report: 10 units of widget sold"));
}

TEST_CASE("a sales report on one node gets its figure from the sales totals on another "
          "through a NATS queue group, and a clear error while nobody serves them",
          "[events][sagas][nats]") {
  temp_dir dir;
  nats_server_process nats{dir.path() / "js", free_port()};
  nats.start();
  auto nats_flags = [&](std::vector<std::string> args) {
    for (auto& a : {std::string{"--events.routes"}, std::string{"[orders.sales=nats]"},
                    std::string{"--events.nats.servers"}, "[" + nats.url() + "]"})
      args.push_back(a);
    return args;
  };
  auto report_args = [&](const std::string& deadline) {
    return nats_flags({"--services.enabled", "[events, sales_report]", "--store.path",
                       (dir.path() / "report").string(), "--sales_report.deadline",
                       deadline});
  };
  {
    auto early = start_node("report", report_args("300ms"), within(20s));
    auto line = early->wait_for_line("sales report:", within(15s));
    INFO("output:\n" << early->output());
    REQUIRE(line);
    CHECK(contains(*line, "sales report: no figure: service_unavailable"));
  }

  auto sales =
      start_node("sales", nats_flags(sales_node(dir.path() / "sales")), within(20s));
  auto counted = sales->wait_for_line("sales: 10 units of widget sold", within(30s));
  std::string readyz;
  bool serving = eventually(within(15s), [&] {
    auto r = http_get(sales.status_port, "/readyz");
    readyz = r ? r->body : "";
    return contains(readyz,
                    "events requests orders.sales (nats, group order-sales): serving");
  });
  INFO("sales output:\n" << sales->output() << "\nreadyz:\n" << readyz);
  REQUIRE(counted);
  REQUIRE(serving);

  // The report's node runs no sales totals: only NATS can answer it.
  auto report = start_node("report", report_args("10s"), within(20s));
  auto line = report->wait_for_line("sales report:", within(15s));
  INFO("report output:\n" << report->output());
  REQUIRE(line);
  CHECK(contains(*line, "sales report: 10 units of widget sold"));
}

TEST_CASE(
    "a service on a node without sagas applies the order saga's end events another "
    "node's embedded broker holds, each once, also after it is killed and restarted",
    "[events][sagas][cluster]") {
  temp_dir dir;
  // Four orders, all complete; their events stay in node a's embedded broker.
  auto sagas =
      start_node("a",
                 strings{"--services.enabled",
                         "[sagas, orders, inventory, payment, shipping, events, "
                         "orders_client]",
                         "--store.path", (dir.path() / "a").string(),
                         "--orders_client.count", "4", "--orders_client.fail_every", "0",
                         // A delivery to a member that is gone would
                         // hold the group for good: the broker must
                         // drop it when its node goes, not time out.
                         "--events.embedded.deliver_timeout", "1h"} +
                     fast_cluster,
                 within(20s));
  REQUIRE(sagas->wait_for_line("orders client finished: 4 orders", within(30s)));
  auto notifications_args = strings{"--services.enabled", "[events, order_notifications]",
                                    "--store.path",       (dir.path() / "b").string(),
                                    "--cluster.seeds",    sagas.cluster_address()} +
                            fast_cluster;
  auto told = [](const running_node& n) { return n->count_lines("told order order-"); };
  {
    auto notifications = start_node("b", notifications_args, within(20s));
    bool all = eventually(within(30s), [&] { return told(notifications) >= 4; });
    INFO("b's output:\n" << notifications->output());
    REQUIRE(all);
    CHECK(told(notifications) == 4);
    // b logs before its inbox commits; a's broker counts an event consumed
    // only once b acknowledged it after the commit. Killed before that, b
    // would rightly be told again.
    bool acknowledged = eventually(within(30s), [&] {
      auto r = http_get(sagas.status_port, "/metrics");
      auto lag = r ? metric_samples_sum(r->body, "troupe_events_consumer_lag",
                                        "group=\"order-notifications\"")
                   : std::nullopt;
      return lag && *lag == 0;
    });
    REQUIRE(acknowledged);
    notifications->kill(SIGKILL);
    notifications->wait_exit(within(10s));
  }
  // Restarted, b subscribes again; its inbox has every order's event already,
  // so a redelivery from a's broker tells nobody twice. A new order shows
  // that a's events reach b again.
  auto notifications = start_node("b", notifications_args, within(20s));
  auto more =
      start_node("c",
                 strings{"--services.enabled", "[orders_client]", "--orders_client.count",
                         "1", "--orders_client.key_prefix", "later", "--cluster.seeds",
                         sagas.cluster_address()} +
                     fast_cluster,
                 within(20s));
  bool later = eventually(within(30s), [&] {
    return notifications->count_lines("told order later-1 ships") == 1;
  });
  INFO("b's output after the restart:\n" << notifications->output());
  REQUIRE(later);
  CHECK(told(notifications) == 0);
}

TEST_CASE("a sales report on a node without the sales totals gets its figure from them "
          "on another node through the embedded brokers",
          "[events][sagas][cluster]") {
  temp_dir dir;
  auto sales =
      start_node("sales", sales_node(dir.path() / "sales") + fast_cluster, within(20s));
  auto counted = sales->wait_for_line("sales: 10 units of widget sold", within(30s));
  INFO("sales output:\n" << sales->output());
  REQUIRE(counted);

  // The report's node serves nothing: its bus finds the handler on the
  // sales node's bus (it asks again while it has not yet).
  auto report =
      start_node("report",
                 strings{"--services.enabled", "[events, sales_report]", "--store.path",
                         (dir.path() / "report").string(), "--sales_report.deadline",
                         "10s", "--cluster.seeds", sales.cluster_address()} +
                     fast_cluster,
                 within(20s));
  auto line = report->wait_for_line("sales report:", within(15s));
  INFO("report output:\n" << report->output());
  REQUIRE(line);
  CHECK(contains(*line, "sales report: 10 units of widget sold"));
}
