#include <troupe/runtime/node.hpp>

#include <atomic>
#include <csignal>
#include <iostream>
#include <pthread.h>
#include <set>
#include <thread>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/logging.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/readiness.hpp>
#include <troupe/runtime/scheduler_tuning.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/runtime/status_server.hpp>
#include <troupe/runtime/store_actor.hpp>

#include "cluster_gate.hpp"

namespace troupe {

using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;

void declare_runtime_config(config_schema& s) {
  using namespace std::chrono_literals;
  s.declare("node.name", value_kind::string)
      .required()
      .describe("Unique, stable name of this node (in Kubernetes: the pod name).");
  s.declare("cluster.bind_host", value_kind::string)
      .default_value("127.0.0.1")
      .describe("Address the cluster endpoint listens on.");
  s.declare("cluster.advertise_host", value_kind::string)
      .describe("Address other nodes use to reach this one; empty = cluster.bind_host.");
  s.declare("cluster.port", value_kind::integer)
      .default_value("4100")
      .min(0)
      .max(65535)
      .describe("Cluster endpoint port; 0 picks a free port.");
  s.declare("cluster.seeds", value_kind::string_list)
      .default_value("[]")
      .describe("Seed nodes as host:port; a node that is its own only seed starts the "
                "cluster.");
  s.declare("cluster.members", value_kind::string_list)
      .default_value("[]")
      .describe("Names of every node of the cluster (stable names such as StatefulSet "
                "pods). With a list a node serves only while it sees a majority of it; "
                "empty: no quorum rule. sagas.owners defaults to it.");
  s.declare("cluster.dns_name", value_kind::string)
      .describe("DNS name resolving to every member (a headless Service); used with "
                "cluster.dns_port.");
  s.declare("cluster.dns_port", value_kind::integer)
      .default_value("4100")
      .min(1)
      .max(65535)
      .describe("Cluster port of members discovered through cluster.dns_name.");
  s.declare("cluster.heartbeat_interval", value_kind::duration)
      .default_value("500ms")
      .min(10ms)
      .max(60s)
      .describe("How often members are pinged and unreachable seeds retried.");
  s.declare("cluster.failure_timeout", value_kind::duration)
      .default_value("3s")
      .min(50ms)
      .max(600s)
      .describe("A member that does not answer a ping within this time is marked down.");
  s.declare("cluster.max_frame_size", value_kind::integer)
      .default_value("16777216")
      .min(4096)
      .max(1073741824)
      .describe("Largest message frame a peer may send, in bytes; larger ones close its "
                "connection.");
  s.declare("cluster.connect_timeout", value_kind::duration)
      .default_value("2s")
      .min(10ms)
      .max(60s)
      .describe("Timeout for connecting and joining a peer.");
  s.declare("cluster.forget_after", value_kind::duration)
      .default_value("10m")
      .min(1s)
      .describe("Addresses of members that went away are retried this long, then "
                "forgotten; seeds are retried forever.");
  s.declare("cluster.max_connections", value_kind::integer)
      .default_value("256")
      .min(1)
      .max(65536)
      .describe("Most connections the cluster port holds open; more are refused.");
  s.declare("cluster.max_buffer_memory", value_kind::integer)
      .default_value("67108864")
      .min(1048576)
      .describe("Bytes of buffers all cluster connections may take together (about "
                "128 KiB each, plus 48 KiB with TLS); caps connections further.");
  s.declare("cluster.handshake_timeout", value_kind::duration)
      .default_value("5s")
      .min(10ms)
      .max(600s)
      .describe("A peer must finish its TLS and cluster handshakes within this time.");
  s.declare("cluster.idle_timeout", value_kind::duration)
      .default_value("60s")
      .min(100ms)
      .describe("A cluster connection without traffic for this long is closed; must "
                "exceed twice cluster.heartbeat_interval.");
  s.declare("cluster.tls.ca_file", value_kind::string)
      .describe("PEM bundle of the cluster CA (a path, or the PEM text from a "
                "${file:...} or ${env:...} secret); peers must present a certificate it "
                "signed. Setting cluster.tls.* turns on mutual TLS between nodes.");
  s.declare("cluster.tls.cert_file", value_kind::string)
      .describe("PEM certificate chain of this node, signed by cluster.tls.ca_file (a "
                "path or PEM text).");
  s.declare("cluster.tls.key_file", value_kind::string)
      .describe("PEM private key of cluster.tls.cert_file (a path or PEM text, e.g. "
                "${file:/run/secrets/node.key}); empty: in the cert file.");
  s.declare("status.enabled", value_kind::boolean)
      .default_value("true")
      .describe("Serve /metrics, /healthz, /readyz and /cluster over HTTP.");
  s.declare("status.host", value_kind::string)
      .default_value("127.0.0.1")
      .describe("Address of the status endpoint.");
  s.declare("status.port", value_kind::integer)
      .default_value("9100")
      .min(0)
      .max(65535)
      .describe("Port of the status endpoint; 0 picks a free port.");
  s.declare("log.format", value_kind::string)
      .default_value("console")
      .choices({"console", "json"})
      .describe("Log records as human-readable lines or JSON lines.");
  s.declare("log.level", value_kind::string)
      .default_value("info")
      .choices({"trace", "debug", "info", "warn", "error", "critical", "off"})
      .describe("Lowest level that is logged.");
  s.declare("log.queue_size", value_kind::integer)
      .default_value("8192")
      .min(16)
      .max(1 << 24)
      .describe("Records waiting for the log writer; when the output stalls and the "
                "queue is full, the oldest are dropped (never blocking an actor).");
  s.declare("shutdown.grace_period", value_kind::duration)
      .default_value("10s")
      .min(0ms)
      .max(3600s)
      .describe("Time in-flight work gets to finish after SIGTERM.");
  s.declare("shutdown.stop_timeout", value_kind::duration)
      .default_value("5s")
      .min(100ms)
      .max(3600s)
      .describe("Time the supervision tree gets to stop after the grace period (services "
                "end their calls, stores close); past it the node exits with code 1.");
  s.declare("scheduler.max_threads", value_kind::integer)
      .default_value("0")
      .min(0)
      .max(1024)
      .describe(
          "Scheduler worker threads; 0 = CAF's default, one per core but at least four.");
  s.declare("scheduler.max_throughput", value_kind::integer)
      .default_value("300")
      .min(1)
      .max(1000000)
      .describe("Messages an actor handles before yielding its worker thread.");
  s.declare("scheduler.spin_attempts", value_kind::integer)
      .default_value("100")
      .min(0)
      .max(100000)
      .describe("Polls of its queue an idle worker makes before it naps or blocks.");
  s.declare("scheduler.nap_attempts", value_kind::integer)
      .default_value("0")
      .min(0)
      .max(100000)
      .describe("Naps of scheduler.nap_duration after spinning, before an idle worker "
                "blocks; 0 blocks at once (wakes on new work, lowest latency and idle "
                "CPU). CAF's own default is 500.");
  s.declare("scheduler.nap_duration", value_kind::duration)
      .default_value("50us")
      .min(1us)
      .max(10ms)
      .describe("Length of one nap of an idle worker.");
  s.declare("scheduler.idle_wakeup", value_kind::duration)
      .default_value("10ms")
      .min(1ms)
      .max(1s)
      .describe("How often a blocked worker wakes to steal work from busy ones.");
  s.declare("supervisor.max_restarts", value_kind::integer)
      .default_value("5")
      .min(0)
      .max(1000)
      .describe(
          "Restarts allowed within supervisor.window before a supervisor gives up.");
  s.declare("supervisor.window", value_kind::duration)
      .default_value("30s")
      .min(1ms)
      .describe("Window of the restart budget.");
  s.declare("supervisor.initial_backoff", value_kind::duration)
      .default_value("50ms")
      .min(0ms)
      .describe("Delay before the first restart; doubles per recent restart.");
  s.declare("supervisor.max_backoff", value_kind::duration)
      .default_value("5s")
      .min(0ms)
      .describe("Longest delay between restarts.");
  s.declare("store.path", value_kind::string)
      .describe("Directory of the node's RocksDB store (sagas, idempotency keys, service "
                "state, outbox); required when a component that needs it is enabled.");
  s.declare("store.sync", value_kind::boolean)
      .default_value("true")
      .describe("fsync every group commit before answering its writers. false: a process "
                "crash loses nothing, a power loss may lose the last commits.");
  s.declare("store.max_batch_bytes", value_kind::integer)
      .default_value("4194304")
      .min(4096)
      .max(1073741824)
      .describe("Upper bound of one group commit in bytes.");
  s.declare("services.enabled", value_kind::string_list)
      .default_value("[\"*\"]")
      .describe("Services and actors this node runs; \"*\" = all it declares.");
}

node::node(std::string program_name)
    : program_(std::move(program_name)) {
  declare_runtime_config(schema_);
}

node::~node() = default;

node& node::check_config(std::string name, std::function<void(const config&)> check) {
  checks_.emplace_back(std::move(name), std::move(check));
  return *this;
}

node& node::only_when_named(std::string name) {
  named_only_.push_back(std::move(name));
  return *this;
}

node& node::on_store_open(std::function<void(store&, const config&)> hook) {
  store_hooks_.push_back(std::move(hook));
  return *this;
}

node& node::needs_store(std::string name) {
  store_users_.push_back(std::move(name));
  return *this;
}

node& node::actor(std::string name, start_fn start, restart_policy restart) {
  add_component(std::move(name), false, restart, std::move(start), nullptr);
  return *this;
}

void node::add_component(
    std::string name, bool is_service, restart_policy restart, start_fn start,
    std::function<std::vector<std::string>(caf::actor_system&)> iface) {
  components_.push_back(component{std::move(name), is_service, restart, std::move(start),
                                  std::move(iface)});
}

std::vector<std::string> node::to_vector(const std::set<std::string>& names) {
  return {names.begin(), names.end()};
}

namespace {

// A configuration message names its key, whether or not the thrower did.
std::string naming_key(const config_error& e) {
  std::string text = e.what();
  if (e.key().empty() || text.find(e.key()) != std::string::npos)
    return text;
  return e.key() + ": " + text;
}

// Signals are taken by one thread with sigwait, so no handler runs inside
// CAF's or spdlog's code.
class signal_watcher {
public:
  explicit signal_watcher(std::function<void(int)> on_signal)
      : on_signal_(std::move(on_signal)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~signal_watcher() {
    stopping_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR2);
    thread_.join();
  }

  static void block_signals() {
    sigset_t set = watched();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
  }

private:
  static sigset_t watched() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR2);
    return set;
  }

  void loop() {
    sigset_t set = watched();
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0)
        continue;
      if (stopping_)
        return;
      if (sig == SIGUSR2)
        continue;
      on_signal_(sig);
    }
  }

  std::function<void(int)> on_signal_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

supervisor_settings supervisor_settings_from(const config& cfg,
                                             restart_strategy strategy) {
  using std::chrono::duration_cast;
  using ms = std::chrono::milliseconds;
  supervisor_settings s;
  s.strategy = strategy;
  s.max_restarts = static_cast<size_t>(cfg.get_int("supervisor.max_restarts"));
  s.window = duration_cast<ms>(cfg.get_duration("supervisor.window"));
  s.initial_backoff = duration_cast<ms>(cfg.get_duration("supervisor.initial_backoff"));
  s.max_backoff = duration_cast<ms>(cfg.get_duration("supervisor.max_backoff"));
  return s;
}

cluster_settings cluster_settings_from(const config& cfg) {
  using std::chrono::duration_cast;
  using ms = std::chrono::milliseconds;
  cluster_settings s;
  s.node_name = cfg.get_string("node.name");
  s.bind_host = cfg.get_string("cluster.bind_host");
  s.advertise_host = cfg.get_string_or_empty("cluster.advertise_host");
  if (s.advertise_host.empty()) {
    // Peers cannot dial a wildcard: it must be said which address to use.
    if (s.bind_host == "0.0.0.0" || s.bind_host == "::")
      throw config_error("cluster.advertise_host",
                         "cluster.advertise_host is required when cluster.bind_host is "
                         "the wildcard address '" +
                             s.bind_host + "'");
    s.advertise_host = s.bind_host;
  }
  s.port = static_cast<uint16_t>(cfg.get_int("cluster.port"));
  s.seeds = cfg.get_list("cluster.seeds");
  for (auto& seed : s.seeds) {
    std::string why;
    if (!parse_peer_address(seed, &why))
      throw config_error("cluster.seeds", "seed '" + seed + "': " + why);
  }
  s.dns_name = cfg.get_string_or_empty("cluster.dns_name");
  s.dns_port = static_cast<uint16_t>(cfg.get_int("cluster.dns_port"));
  s.heartbeat_interval =
      duration_cast<ms>(cfg.get_duration("cluster.heartbeat_interval"));
  s.failure_timeout = duration_cast<ms>(cfg.get_duration("cluster.failure_timeout"));
  s.connect_timeout = duration_cast<ms>(cfg.get_duration("cluster.connect_timeout"));
  s.forget_after = duration_cast<ms>(cfg.get_duration("cluster.forget_after"));
  s.members = cfg.get_list("cluster.members");
  if (!s.members.empty()) {
    std::set<std::string> unique{s.members.begin(), s.members.end()};
    if (unique.size() != s.members.size())
      throw config_error("cluster.members", "cluster.members lists a name twice");
    if (unique.count(s.node_name) == 0)
      throw config_error("cluster.members", "cluster.members does not list this node ('" +
                                                s.node_name + "')");
  }
  return s;
}

cluster_gate::settings gate_settings_from(const config& cfg,
                                          const cluster_settings& cluster) {
  using std::chrono::duration_cast;
  using ms = std::chrono::milliseconds;
  cluster_gate::settings g;
  g.bind_host = cluster.bind_host;
  g.port = cluster.port;
  g.max_frame_bytes = static_cast<uint32_t>(cfg.get_int("cluster.max_frame_size"));
  g.max_connections = static_cast<uint32_t>(cfg.get_int("cluster.max_connections"));
  g.max_buffer_bytes = static_cast<uint64_t>(cfg.get_int("cluster.max_buffer_memory"));
  g.handshake_timeout = duration_cast<ms>(cfg.get_duration("cluster.handshake_timeout"));
  g.idle_timeout = duration_cast<ms>(cfg.get_duration("cluster.idle_timeout"));
  if (g.idle_timeout <= 2 * cluster.heartbeat_interval)
    throw config_error("cluster.idle_timeout",
                       "cluster.idle_timeout must exceed twice "
                       "cluster.heartbeat_interval, or healthy connections are closed");
  g.tls = {cfg.get_string_or_empty("cluster.tls.ca_file"),
           cfg.get_string_or_empty("cluster.tls.cert_file"),
           cfg.get_string_or_empty("cluster.tls.key_file")};
  if (!g.tls.ca_file.empty() || !g.tls.cert_file.empty() || !g.tls.key_file.empty()) {
    if (g.tls.ca_file.empty() || g.tls.cert_file.empty())
      throw config_error(g.tls.ca_file.empty() ? "cluster.tls.ca_file"
                                               : "cluster.tls.cert_file",
                         "mutual TLS between nodes needs both cluster.tls.ca_file and "
                         "cluster.tls.cert_file");
  }
  return g;
}

bool enabled(const std::vector<std::string>& list, const std::string& name,
             const std::vector<std::string>& named_only) {
  bool wildcard_ok =
      std::find(named_only.begin(), named_only.end(), name) == named_only.end();
  for (auto& entry : list)
    if ((entry == "*" && wildcard_ok) || entry == name)
      return true;
  return false;
}

} // namespace

int node::run(int argc, char** argv) {
  // 1. Configuration: flags > environment > file > defaults; no partial start.
  CLI::App app{program_ + " — a troupe node"};
  std::string config_file;
  bool print_config = false;
  bool print_reference = false;
  app.add_option("-c,--config", config_file, "YAML configuration file");
  app.add_flag("--print-config", print_config,
               "Print the effective configuration and exit");
  app.add_flag("--config-reference", print_reference,
               "Print the reference of every configuration key (Markdown) and exit");
  std::map<std::string, std::string> flag_values;
  for (auto& [name, key] : schema_.keys())
    app.add_option("--" + name, flag_values[name], key.description);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << program_ << ": " << e.what() << "\n";
    return 2;
  }
  if (print_reference) {
    std::cout << "# " << program_ << " configuration reference\n\n"
              << "Generated by `" << program_
              << " --config-reference` from the key "
                 "declarations.\nEach key can be set in the YAML file (nested by its "
                 "dots), as an environment\nvariable (`TROUPE_` + the key in upper case, "
                 "dots as `_`) or as a flag (`--key value`).\n\n";
    schema_.write_reference(std::cout);
    return 0;
  }
  config_sources sources;
  sources.file = config_file;
  sources.environment = config::troupe_environment();
  for (auto& [name, key] : schema_.keys())
    if (app.count("--" + name) > 0)
      sources.overrides.emplace_back(name, flag_values[name]);
  config cfg;
  try {
    cfg = config::load(schema_, sources);
  } catch (const config_error& e) {
    std::cerr << program_ << ": configuration error: " << naming_key(e) << "\n";
    return 2;
  }
  if (print_config) {
    cfg.print(std::cout);
    return 0;
  }
  cluster_settings settings;
  cluster_gate::settings gate_settings;
  try {
    settings = cluster_settings_from(cfg);
    gate_settings = gate_settings_from(cfg, settings);
    auto wanted_now = cfg.get_list("services.enabled");
    for (auto& [name, check] : checks_)
      if (enabled(wanted_now, name, named_only_))
        check(cfg);
  } catch (const config_error& e) {
    std::cerr << program_ << ": configuration error: " << naming_key(e) << "\n";
    return 2;
  }

  // Signals go to the watcher thread only; block them before RocksDB and
  // CAF start their threads so those inherit the mask.
  signal_watcher::block_signals();

  // The store is opened before anything starts: a locked or unusable path
  // stops the node with one message.
  std::shared_ptr<store> db;
  {
    auto wanted_now = cfg.get_list("services.enabled");
    std::string user;
    for (auto& name : store_users_)
      if (enabled(wanted_now, name, named_only_))
        user = name;
    if (!user.empty() && !cfg.has("store.path")) {
      std::cerr << program_ << ": configuration error: store.path: store.path is "
                << "required because '" << user << "' is enabled\n";
      return 2;
    }
    if (cfg.has("store.path") && !cfg.get_string("store.path").empty()) {
      store_settings ss;
      ss.path = cfg.get_string("store.path");
      ss.sync = cfg.get_bool("store.sync");
      ss.max_batch_bytes = static_cast<size_t>(cfg.get_int("store.max_batch_bytes"));
      try {
        db = store::open(ss);
        for (auto& hook : store_hooks_)
          hook(*db, cfg);
      } catch (const std::exception& e) {
        std::cerr << program_ << ": " << e.what() << "\n";
        return 1;
      }
    }
  }

  auto node_name = cfg.get_string("node.name");
  init_logging({parse_log_format(cfg.get_string("log.format")),
                cfg.get_string("log.level"), node_name,
                static_cast<std::size_t>(cfg.get_int("log.queue_size"))});

  caf::actor_system_config caf_cfg;
  caf_cfg.load<caf::io::middleman>();
  catalog_.apply_to(caf_cfg);
  if (auto n = cfg.get_int("scheduler.max_threads"); n > 0)
    caf_cfg.set("scheduler.max-threads", static_cast<size_t>(n));
  caf_cfg.set("scheduler.max-throughput",
              static_cast<size_t>(cfg.get_int("scheduler.max_throughput")));
  {
    using std::chrono::duration_cast;
    scheduler_tuning tuning;
    tuning.spin_attempts = static_cast<size_t>(cfg.get_int("scheduler.spin_attempts"));
    tuning.nap_attempts = static_cast<size_t>(cfg.get_int("scheduler.nap_attempts"));
    tuning.nap_duration = duration_cast<std::chrono::microseconds>(
        cfg.get_duration("scheduler.nap_duration"));
    tuning.idle_wakeup = duration_cast<std::chrono::milliseconds>(
        cfg.get_duration("scheduler.idle_wakeup"));
    apply(caf_cfg, tuning);
  }
  caf_cfg.set("logger.console", caf::atom("none"));
  caf::actor_system sys{caf_cfg};

  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};
  auto view = std::make_shared<cluster_view>();

  // 3. Health and metrics first, so probes answer (not ready) during start-up.
  //    Gateways follow the same readiness.
  publish_readiness(
      [&] { return started && !stopping && view->joined() && node_has_quorum(); });
  struct withdraw_readiness {
    ~withdraw_readiness() { publish_readiness(nullptr); }
  } withdraw; // the probe refers to this frame
  std::unique_ptr<status_server> status;
  if (cfg.get_bool("status.enabled")) {
    try {
      status = std::make_unique<status_server>(
          cfg.get_string("status.host"),
          static_cast<uint16_t>(cfg.get_int("status.port")),
          status_server::handlers{[&] { return node_is_ready(); },
                                  [] { return metrics::instance().serialize(); },
                                  [view] { return view->json(); }});
    } catch (const std::exception& e) {
      spdlog::critical("{}", e.what());
      return 1;
    }
    spdlog::info("status endpoint listening on {}:{}", cfg.get_string("status.host"),
                 status->port());
  }

  // 4. The supervision tree: the cluster first; services after it, restarted
  //    with it (rest-for-one) so they re-register in a fresh registry.
  auto wanted = cfg.get_list("services.enabled");
  std::vector<child_spec> workload;
  for (auto& comp : components_) {
    if (!enabled(wanted, comp.name, named_only_))
      continue;
    auto start = comp.start;
    auto iface = comp.interface;
    auto name = comp.name;
    bool is_service = comp.is_service;
    workload.push_back(
        child_spec{name,
                   [start, iface, name, is_service, &cfg](caf::actor_system& s) {
                     auto handle = start(s, cfg);
                     if (is_service)
                       register_service(s, name, handle, iface(s));
                     return handle;
                   },
                   comp.restart});
  }
  // The gate owns the public cluster port and checks peers' framing before
  // CAF's endpoint (on loopback) sees a byte.
  std::shared_ptr<cluster_gate> gate;
  try {
    gate = std::make_shared<cluster_gate>(gate_settings,
                                          [view] { return view->backend_port(); });
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  settings.port = gate->port();
  if (!gate_settings.tls.enabled())
    spdlog::warn("the cluster port {}:{} is unauthenticated and unencrypted: anyone who "
                 "reaches it can join and call services; set cluster.tls.* for mutual "
                 "TLS between nodes",
                 settings.bind_host, settings.port);
  // Peers are dialed by the gate, off CAF's threads. The gate dies before
  // the actor system, so the cluster actor holds it weakly.
  settings.dial =
      [weak = std::weak_ptr<cluster_gate>{gate}](
          const std::string& host, uint16_t port, std::chrono::milliseconds timeout,
          std::function<void(bool, std::string, uint16_t, std::string)> done) {
        auto g = weak.lock();
        if (!g)
          return;
        g->dial(host, port, timeout, [done = std::move(done)](dial_result r) {
          done(r.ok, std::move(r.host), r.port, std::move(r.error));
        });
      };
  std::vector<child_spec> root_children{
      child_spec{"cluster",
                 [settings, view](caf::actor_system& s) {
                   return caf::actor_cast<caf::actor>(spawn_cluster(s, settings, view));
                 },
                 restart_policy::permanent}};
  if (db)
    root_children.push_back(child_spec{"store",
                                       [db](caf::actor_system& s) {
                                         return caf::actor_cast<caf::actor>(
                                             spawn_store_actor(s, db));
                                       },
                                       restart_policy::permanent});
  root_children.push_back(supervisor_child(
      "services", supervisor_settings_from(cfg, restart_strategy::one_for_one),
      std::move(workload)));
  auto root = spawn_supervisor(
      sys, "root", supervisor_settings_from(cfg, restart_strategy::rest_for_one),
      std::move(root_children));
  started = true;

  caf::scoped_actor self{sys};
  self->monitor(root);
  std::atomic<int> signals{0};
  auto waiter = caf::actor_cast<caf::actor>(self);
  signal_watcher watcher{[&signals, waiter](int sig) {
    if (signals.fetch_add(1) > 0) {
      // A second signal means "now": no grace.
      spdlog::warn("second signal {}: stopping at once", sig);
      flush_logging(std::chrono::seconds(1)); // _Exit skips the log writer's drain
      std::_Exit(130);
    }
    caf::anon_send(waiter, shutdown_atom::value);
  }};

  int exit_code = 0;
  bool root_alive = true;
  self->receive([&](shutdown_atom) { spdlog::info("shutdown requested: draining"); },
                [&](caf::down_msg& msg) {
                  root_alive = false;
                  exit_code = 1;
                  spdlog::critical("supervision tree failed: {}", describe(msg.reason));
                });

  // 5. Graceful shutdown: unready, leave (peers stop routing to us), drain
  //    what is queued, then stop the tree in reverse order.
  stopping = true;
  auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
      cfg.get_duration("shutdown.grace_period"));
  auto deadline = std::chrono::steady_clock::now() + grace;
  auto left = [&] {
    auto d = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return caf::duration{std::max(d, std::chrono::milliseconds{1})};
  };
  if (root_alive) {
    auto cluster = local_cluster(sys);
    std::vector<caf::actor> local_services;
    if (cluster) {
      self->request(cluster, left(), members_atom::value)
          .receive(
              [&](std::vector<member_info>& members) {
                for (auto& svc : members.front().services)
                  local_services.push_back(svc.handle);
              },
              [](caf::error&) {});
      self->request(cluster, left(), leave_cluster_atom::value)
          .receive([](caf::ok_atom) {}, [](caf::error&) {});
    }
    size_t drained = 0;
    for (auto& svc : local_services) {
      self->request(svc, left(), drain_atom::value)
          .receive([&](drained_atom) { ++drained; },
                   [&](caf::error& err) {
                     spdlog::warn("service did not drain in time: {}", describe(err));
                   });
    }
    spdlog::info("drained {} of {} services", drained, local_services.size());
    // The stop has a budget of its own: a drain that used the whole grace
    // period (a call that never finishes) must not leave the tree no time
    // to end the rest in order.
    auto stop_budget = std::chrono::duration_cast<std::chrono::milliseconds>(
        cfg.get_duration("shutdown.stop_timeout"));
    self->send_exit(root, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {},
                  caf::after(std::max(
                      stop_budget, std::chrono::duration_cast<std::chrono::milliseconds>(
                                       deadline - std::chrono::steady_clock::now()))) >>
                      [&] {
                        // ~actor_system would wait for the stuck actors forever.
                        spdlog::error("supervision tree did not stop in time; exiting");
                        flush_logging(std::chrono::seconds(1));
                        std::_Exit(1);
                      });
  }
  gate->stop();
  if (status)
    status->stop();
  spdlog::info("node {} stopped", node_name);
  shutdown_logging();
  return exit_code;
}

} // namespace troupe
