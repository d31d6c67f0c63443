// troupe's messaging benchmark: every troupe figure beside its raw-CAF
// baseline, measured in the same run on the same actor system.
//
//   messaging_bench            full run (~1-2 minutes on 2 cores)
//   messaging_bench --quick    small sizes for CI smoke runs (< 20 s)
//   messaging_bench --only local|remote|tls|scheduler|service_ref|breakdown
//                              run one group
//   messaging_bench --reps N   repetitions per measurement (default 5, 3 quick)
//   messaging_bench --threads N  CAF scheduler workers (default: usable CPUs)
//
// What is measured (each for raw CAF and for troupe):
//   one-way       a pusher actor sends N `ping`s to a server that counts
//                 them (raw: `send`, `reacts_to<ping>`; troupe: `tell`,
//                 `on<ping>` built with `serve`). Flow control: every chunk
//                 of 1000 pings is followed by a `drain` request; at most 8
//                 chunks are unanswered, so the mailbox stays bounded.
//   rr sequential one request outstanding (raw: `request(...).then`;
//                 troupe: `troupe::call(...).then`), latency of every round
//                 trip sampled with steady_clock.
//   rr pipelined  64 requests outstanding.
//   service_ref   (local) a call through a troupe::service_ref against a
//                 call on the plain handle of the same troupe service,
//                 sequential and pipelined; the left column is the plain call.
//   breakdown     (--only breakdown) raw CAF against raw CAF handlers that
//                 receive troupe's message shape, call_context + payload, with
//                 one prebuilt context: the cost of carrying the context alone.
// Locally both servers live in this process; across nodes the benchmark
// re-executes itself as `--server --port 0`, which publishes a raw CAF server
// and a troupe service on loopback and prints the two ports. The tls group
// does the same with cluster TLS: the troupe service's gate requires mutual
// TLS and this process dials it through a gate of its own, as nodes do; the
// raw CAF baseline stays plain, so the ratio includes TLS's cost.
//
// Each measurement runs once as a warm-up (a quarter of the size), then
// `reps` times, raw and troupe alternating; the table reports the best
// repetition (highest rate) and the latency percentiles of that repetition.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "cluster_gate.hpp" // private to runtime: a node's inbound cluster path
#include "support/test_certs.hpp"
#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/scheduler_tuning.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/runtime/service_ref.hpp>

extern char** environ;

namespace bench {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// -- messages -----------------------------------------------------------------

/// One-way event.
struct ping {
  int64_t seq = 0;
};

/// Request and its reply.
struct echo_req {
  int64_t seq = 0;
};

struct echo_rep {
  int64_t seq = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ping& x) {
  return f(caf::meta::type_name("bench.ping"), x.seq);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, echo_req& x) {
  return f(caf::meta::type_name("bench.echo_req"), x.seq);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, echo_rep& x) {
  return f(caf::meta::type_name("bench.echo_rep"), x.seq);
}

using run_atom = caf::atom_constant<caf::atom("run")>;

// -- the servers under test -------------------------------------------------

/// Raw CAF baseline. It answers the same drain barrier as a troupe service so
/// the pusher's flow control costs the same on both sides.
using raw_server_actor =
    caf::typed_actor<caf::reacts_to<ping>, caf::replies_to<echo_req>::with<echo_rep>,
                     caf::replies_to<troupe::drain_atom>::with<troupe::drained_atom>>;

/// The same server as a troupe service.
using troupe_server_actor =
    troupe::service<troupe::on<ping>, troupe::handles<echo_req, echo_rep>>;

/// Only for the breakdown: raw CAF handlers on troupe's wire format
/// (call_context + payload), without serve's wrapper.
using ctx_server_actor =
    caf::typed_actor<caf::reacts_to<troupe::call_context, ping>,
                     caf::replies_to<troupe::call_context, echo_req>::with<echo_rep>,
                     caf::replies_to<troupe::drain_atom>::with<troupe::drained_atom>>;

struct raw_server_state {
  static inline const char* name = "bench_raw_server";
};

struct troupe_server_state {
  static inline const char* name = "bench_troupe_server";
};

struct ctx_server_state {
  static inline const char* name = "bench_ctx_server";
};

// `received` counts the pings; the one-way runs check it after the last drain.
raw_server_actor::behavior_type
raw_server(raw_server_actor::stateful_pointer<raw_server_state>, int64_t* received) {
  return {
      [=](const ping&) { ++*received; },
      [](const echo_req& req) { return echo_rep{req.seq}; },
      [](troupe::drain_atom) { return troupe::drained_atom::value; },
  };
}

troupe_server_actor::behavior_type
troupe_server(troupe_server_actor::stateful_pointer<troupe_server_state> self,
              int64_t* received) {
  return troupe::serve(
      self, [=](const ping&) { ++*received; },
      [](const echo_req& req) { return echo_rep{req.seq}; });
}

ctx_server_actor::behavior_type
ctx_server(ctx_server_actor::stateful_pointer<ctx_server_state>, int64_t* received) {
  return {
      [=](const troupe::call_context&, const ping&) { ++*received; },
      [](const troupe::call_context&, const echo_req& req) { return echo_rep{req.seq}; },
      [](troupe::drain_atom) { return troupe::drained_atom::value; },
  };
}

// How each flavour sends: raw CAF calls, troupe's API, or raw CAF calls with a
// prebuilt call_context (breakdown only).

void send_ping(caf::event_based_actor* self, const raw_server_actor& h, int64_t seq) {
  self->send(h, ping{seq});
}

void send_ping(caf::event_based_actor* self, const troupe_server_actor& h, int64_t seq) {
  troupe::tell(self, h, ping{seq});
}

// A context built once, as if every message inherited it: isolates the cost
// of carrying call_context from the cost of creating one per message.
const troupe::call_context& fixed_context() {
  static const troupe::call_context ctx{troupe::new_correlation_id(), 0, {}};
  return ctx;
}

void send_ping(caf::event_based_actor* self, const ctx_server_actor& h, int64_t seq) {
  self->send(h, fixed_context(), ping{seq});
}

auto ask(caf::event_based_actor* self, const raw_server_actor& h,
         std::chrono::nanoseconds timeout, echo_req req) {
  return self->request(h, caf::duration{timeout}, req);
}

auto ask(caf::event_based_actor* self, const troupe_server_actor& h,
         std::chrono::nanoseconds timeout, echo_req req) {
  return troupe::call(self, h, timeout, req);
}

// Through a service_ref whose registry lists one instance: the cost of the
// ref (pick an instance, check its liveness) over a call on a plain handle.
auto ask(caf::event_based_actor* self, const troupe::service_ref<troupe_server_actor>& h,
         std::chrono::nanoseconds timeout, echo_req req) {
  return troupe::call(self, h, timeout, req);
}

auto ask(caf::event_based_actor* self, const ctx_server_actor& h,
         std::chrono::nanoseconds timeout, echo_req req) {
  return self->request(h, caf::duration{timeout}, fixed_context(), req);
}

// -- drivers ------------------------------------------------------------------

constexpr int64_t push_chunk_size = 1000;
constexpr int64_t push_window = 8;
constexpr std::chrono::nanoseconds call_timeout = 30s;

struct pusher_state {
  static inline const char* name = "bench_pusher";
  int64_t left = 0;
  int64_t sent = 0;
  int64_t in_flight = 0;
  caf::response_promise rp;
};

using pusher_pointer = caf::stateful_actor<pusher_state>*;

template <class Handle>
void push_chunk(pusher_pointer self, const Handle& server) {
  auto& st = self->state;
  auto count = std::min(push_chunk_size, st.left);
  if (count == 0)
    return;
  for (int64_t i = 0; i < count; ++i)
    send_ping(self, server, st.sent++);
  st.left -= count;
  ++st.in_flight;
  self->request(server, caf::duration{call_timeout}, troupe::drain_atom::value)
      .then(
          [=](troupe::drained_atom) {
            auto& st = self->state;
            --st.in_flight;
            if (st.left > 0)
              push_chunk(self, server);
            else if (st.in_flight == 0)
              st.rp.deliver(st.sent);
          },
          [=](caf::error& err) { self->state.rp.deliver(std::move(err)); });
}

/// Answers `(run, n)` with n once n pings were sent and the server drained them.
template <class Handle>
caf::behavior pusher(pusher_pointer self, Handle server) {
  return {
      [=](run_atom, int64_t n) {
        auto& st = self->state;
        st.left = n;
        st.sent = 0;
        st.in_flight = 0;
        st.rp = self->make_response_promise();
        for (int64_t i = 0; i < push_window; ++i)
          push_chunk(self, server);
      },
  };
}

struct client_state {
  static inline const char* name = "bench_client";
  int64_t n = 0;
  int64_t issued = 0;
  int64_t done = 0;
  bool record = false;
  std::vector<int64_t> latency_ns;
  caf::response_promise rp;
};

using client_pointer = caf::stateful_actor<client_state>*;

template <class Handle>
void issue(client_pointer self, const Handle& server) {
  auto& st = self->state;
  auto seq = st.issued++;
  auto started = st.record ? clock_type::now() : clock_type::time_point{};
  ask(self, server, call_timeout, echo_req{seq})
      .then(
          [=](const echo_rep& rep) {
            auto& st = self->state;
            if (st.record)
              st.latency_ns.push_back((clock_type::now() - started).count());
            if (rep.seq != seq) {
              st.rp.deliver(caf::make_error(caf::sec::unexpected_response));
              return;
            }
            ++st.done;
            if (st.issued < st.n)
              issue(self, server);
            else if (st.done == st.n)
              st.rp.deliver(st.done, std::move(st.latency_ns));
          },
          [=](caf::error& err) { self->state.rp.deliver(std::move(err)); });
}

/// Answers `(run, n, window, record)` with (n, latencies) after n round trips
/// with `window` requests outstanding.
template <class Handle>
caf::behavior client(client_pointer self, Handle server) {
  return {
      [=](run_atom, int64_t n, int64_t window, bool record) {
        auto& st = self->state;
        st.n = n;
        st.issued = 0;
        st.done = 0;
        st.record = record;
        st.latency_ns.clear();
        if (record)
          st.latency_ns.reserve(static_cast<size_t>(n));
        st.rp = self->make_response_promise();
        for (int64_t i = 0; i < std::min(window, n); ++i)
          issue(self, server);
      },
  };
}

// -- measurement --------------------------------------------------------------

struct sample {
  double rate = 0; // messages (one-way) or round trips (rr) per second
  double p50_us = NAN;
  double p99_us = NAN;
};

double percentile_us(std::vector<int64_t>& v, double q) {
  if (v.empty())
    return NAN;
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  auto idx = std::min(v.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(idx), v.end());
  return static_cast<double>(v[idx]) / 1000.0;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "messaging_bench: %s\n", what.c_str());
  std::exit(1);
}

sample run_one_way(caf::actor_system& sys, const caf::actor& pusher_actor, int64_t n,
                   int64_t* received) {
  if (received)
    *received = 0;
  caf::scoped_actor me{sys};
  std::optional<int64_t> sent;
  caf::error err;
  auto start = clock_type::now();
  me->request(pusher_actor, caf::duration{300s}, run_atom::value, n)
      .receive([&](int64_t s) { sent = s; }, [&](caf::error& e) { err = std::move(e); });
  auto elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  if (!sent)
    fail("one-way run failed: " + sys.render(err));
  if (received && *received != n)
    fail("one-way run lost messages: " + std::to_string(*received) + " of " +
         std::to_string(n));
  return {static_cast<double>(n) / elapsed};
}

sample run_round_trips(caf::actor_system& sys, const caf::actor& client_actor, int64_t n,
                       int64_t window) {
  caf::scoped_actor me{sys};
  bool record = window == 1;
  std::optional<int64_t> done;
  std::vector<int64_t> latency;
  caf::error err;
  auto start = clock_type::now();
  me->request(client_actor, caf::duration{300s}, run_atom::value, n, window, record)
      .receive(
          [&](int64_t d, std::vector<int64_t>& lat) {
            done = d;
            latency = std::move(lat);
          },
          [&](caf::error& e) { err = std::move(e); });
  auto elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
  if (!done || *done != n)
    fail("round-trip run failed: " + sys.render(err));
  sample s{static_cast<double>(n) / elapsed};
  if (record) {
    s.p50_us = percentile_us(latency, 0.50);
    s.p99_us = percentile_us(latency, 0.99);
  }
  return s;
}

struct row {
  std::string name;
  std::string unit; // "msg/s" or "rt/s"
  std::string right_label = "troupe";
  std::vector<sample> raw;
  std::vector<sample> troupe;
};

const sample& best(const std::vector<sample>& v) {
  return *std::max_element(v.begin(), v.end(), [](const sample& a, const sample& b) {
    return a.rate < b.rate;
  });
}

double median_rate(const std::vector<sample>& v) {
  std::vector<double> rates;
  for (auto& s : v)
    rates.push_back(s.rate);
  std::sort(rates.begin(), rates.end());
  auto n = rates.size();
  return n % 2 == 1 ? rates[n / 2] : (rates[n / 2 - 1] + rates[n / 2]) / 2;
}

std::string human_rate(double r) {
  char buf[32];
  if (r >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", r / 1e6);
  else if (r >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f k", r / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", r);
  return buf;
}

/// A warm-up of each flavour at a quarter of the size, then `reps`
/// alternating repetitions of `measure(troupe, size_divisor)`.
row measure_pair(std::string name, std::string unit, int reps,
                 const std::function<sample(bool troupe, int64_t divisor)>& measure) {
  row r;
  r.name = std::move(name);
  r.unit = std::move(unit);
  measure(false, 4);
  measure(true, 4);
  for (int i = 0; i < reps; ++i) {
    r.raw.push_back(measure(false, 1));
    r.troupe.push_back(measure(true, 1));
  }
  std::fprintf(stderr, "  %-34s raw", r.name.c_str());
  for (auto& s : r.raw)
    std::fprintf(stderr, " %s", human_rate(s.rate).c_str());
  std::fprintf(stderr, " | troupe");
  for (auto& s : r.troupe)
    std::fprintf(stderr, " %s", human_rate(s.rate).c_str());
  std::fprintf(stderr, " %s\n", r.unit.c_str());
  return r;
}

void print_table(const std::vector<row>& rows) {
  std::printf("\n%-36s | %-14s | %-14s | %-6s | %-19s | %-19s | %s\n", "benchmark",
              "raw CAF", "troupe", "ratio", "p50 raw / troupe", "p99 raw / troupe",
              "median ratio");
  std::printf("%s\n", std::string(36 + 14 + 14 + 6 + 19 + 19 + 12 + 18, '-').c_str());
  for (auto& r : rows) {
    auto& a = best(r.raw);
    auto& b = best(r.troupe);
    char p50[40] = "";
    char p99[40] = "";
    if (!std::isnan(a.p50_us)) {
      std::snprintf(p50, sizeof p50, "%.1f / %.1f us", a.p50_us, b.p50_us);
      std::snprintf(p99, sizeof p99, "%.1f / %.1f us", a.p99_us, b.p99_us);
    }
    auto label = r.name;
    if (r.right_label != "troupe")
      label += " [" + r.right_label + "]";
    std::printf("%-36s | %-14s | %-14s | %-6.2f | %-19s | %-19s | %.2f\n", label.c_str(),
                (human_rate(a.rate) + " " + r.unit).c_str(),
                (human_rate(b.rate) + " " + r.unit).c_str(), b.rate / a.rate, p50, p99,
                median_rate(r.troupe) / median_rate(r.raw));
  }
  std::fflush(stdout);
}

// -- configuration ------------------------------------------------------------

struct sizes {
  int64_t local_one_way;
  int64_t local_sequential;
  int64_t local_pipelined;
  int64_t remote_one_way;
  int64_t remote_sequential;
  int64_t remote_pipelined;
};

constexpr sizes full_sizes{2'000'000, 200'000, 500'000, 400'000, 10'000, 100'000};
constexpr sizes quick_sizes{100'000, 10'000, 50'000, 20'000, 2'000, 20'000};
constexpr int64_t pipeline_depth = 64;

/// Both processes use the same configuration: the middleman, and every
/// message type under one name (troupe's catalog for troupe's own types).
struct bench_config : caf::actor_system_config {
  bench_config(size_t threads, const troupe::scheduler_tuning& tuning) {
    load<caf::io::middleman>();
    // CAF 0.17 defaults to max(cores, 4) workers; on a 2-core machine that
    // oversubscribes the CPUs, so both processes use one worker per core.
    set("scheduler.max-threads", threads);
    troupe::apply(*this, tuning);
    add_message_type<ping>("bench.ping");
    add_message_type<echo_req>("bench.echo_req");
    add_message_type<echo_rep>("bench.echo_rep");
    troupe::message_catalog catalog;
    catalog.apply_to(*this);
  }
};

struct options {
  bool quick = false;
  bool server = false;
  uint16_t port = 0;
  int reps = 0;       // repetitions per measurement; 0 = 5, or 3 with --quick
  size_t threads = 0; // scheduler workers; 0 = CPUs this process may use
  std::string
      only; // "", "local", "remote", "tls", "scheduler", "service_ref", "breakdown"
  troupe::cluster_tls_files tls;    // --server: the gate requires mutual TLS
  std::string scheduler = "troupe"; // "troupe" (a node's defaults) or "caf"
  int idle_seconds = 0;             // scheduler group: idle CPU window; 0 = 60, 5 quick

  troupe::scheduler_tuning tuning() const {
    return scheduler == "caf" ? troupe::scheduler_tuning::caf_defaults()
                              : troupe::scheduler_tuning{};
  }
};

options parse_options(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        fail("missing value after " + std::string{arg});
      return argv[++i];
    };
    if (arg == "--quick")
      opts.quick = true;
    else if (arg == "--server")
      opts.server = true;
    else if (arg == "--port")
      opts.port = static_cast<uint16_t>(std::stoi(value()));
    else if (arg == "--reps")
      opts.reps = std::max(1, std::stoi(value()));
    else if (arg == "--threads")
      opts.threads = static_cast<size_t>(std::max(1, std::stoi(value())));
    else if (arg == "--only")
      opts.only = value();
    else if (arg == "--scheduler") {
      opts.scheduler = value();
      if (opts.scheduler != "caf" && opts.scheduler != "troupe")
        fail("--scheduler takes caf or troupe");
    } else if (arg == "--idle-seconds")
      opts.idle_seconds = std::max(1, std::stoi(value()));
    else if (arg == "--tls-ca")
      opts.tls.ca_file = value();
    else if (arg == "--tls-cert")
      opts.tls.cert_file = value();
    else if (arg == "--tls-key")
      opts.tls.key_file = value();
    else if (arg == "--help" || arg == "-h") {
      std::printf("usage: messaging_bench [--quick] [--reps N] [--threads N] "
                  "[--only local|remote|tls|scheduler|service_ref|breakdown] "
                  "[--scheduler caf|troupe] "
                  "[--idle-seconds N]\n");
      std::exit(0);
    } else
      fail("unknown argument " + std::string{arg} + " (try --help)");
  }
  if (opts.reps == 0)
    opts.reps = opts.quick ? 3 : 5;
  if (opts.idle_seconds == 0)
    opts.idle_seconds = opts.quick ? 5 : 60;
  if (opts.threads == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    opts.threads = sched_getaffinity(0, sizeof set, &set) == 0
                       ? static_cast<size_t>(CPU_COUNT(&set))
                       : size_t{2};
  }
  return opts;
}

// -- the server process -------------------------------------------------------

int run_server(const options& opts) {
  bench_config cfg{opts.threads, opts.tuning()};
  caf::actor_system sys{cfg};
  // An idle node is not silent: heartbeats arrive every few hundred ms. A
  // 100 ms timer stands in for them when the scheduler group reads idle CPU.
  auto ticker = sys.spawn([](caf::event_based_actor* self) -> caf::behavior {
    self->delayed_send(self, 100ms, run_atom::value);
    return {[=](run_atom) { self->delayed_send(self, 100ms, run_atom::value); }};
  });
  // Written by the servers' handlers only; never read in this process.
  static int64_t raw_received = 0;
  static int64_t troupe_received = 0;
  auto raw = sys.spawn(raw_server, &raw_received);
  auto tro = sys.spawn(troupe_server, &troupe_received);
  auto raw_port = sys.middleman().publish(raw, opts.port, "127.0.0.1");
  auto troupe_port = sys.middleman().publish(
      tro, opts.port == 0 ? uint16_t{0} : static_cast<uint16_t>(opts.port + 1),
      "127.0.0.1");
  if (!raw_port || !troupe_port) {
    std::fprintf(stderr, "messaging_bench --server: publish failed: %s\n",
                 sys.render(raw_port ? troupe_port.error() : raw_port.error()).c_str());
    return 1;
  }
  // A troupe node's peers reach its endpoint through the cluster gate, which
  // checks their framing: the troupe side is measured the way it is deployed.
  uint16_t backend = *troupe_port;
  troupe::cluster_gate::settings gate_settings;
  gate_settings.bind_host = "127.0.0.1";
  gate_settings.tls = opts.tls;
  troupe::cluster_gate gate{gate_settings, [backend] { return backend; }};
  std::printf("PORTS %u %u\n", static_cast<unsigned>(*raw_port),
              static_cast<unsigned>(gate.port()));
  std::fflush(stdout);
  // The parent closes our stdin when it is done (or dies): then shut down.
  char buf[64];
  while (true) {
    auto got = ::read(STDIN_FILENO, buf, sizeof buf);
    if (got == 0 || (got < 0 && errno != EINTR))
      break;
  }
  caf::anon_send_exit(raw, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(tro, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(ticker, caf::exit_reason::user_shutdown);
  return 0;
}

/// The server child process: started with posix_spawn, stopped by closing its
/// stdin; killed and reaped by the destructor if it does not exit in time.
class server_process {
public:
  explicit server_process(size_t threads, std::vector<std::string> extra) {
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
      fail("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::string self_exe = "/proc/self/exe";
    auto threads_arg = std::to_string(threads);
    std::vector<std::string> words{self_exe, "--server",  "--port",
                                   "0",      "--threads", threads_arg};
    words.insert(words.end(), extra.begin(), extra.end());
    std::vector<char*> args;
    for (auto& w : words)
      args.push_back(w.data());
    args.push_back(nullptr);
    auto rc =
        posix_spawn(&pid_, self_exe.c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    if (rc != 0)
      fail(std::string{"posix_spawn failed: "} + std::strerror(rc));
    stdin_ = in[1];
    stdout_ = out[0];
    read_ports();
  }

  ~server_process() { stop(); }

  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  uint16_t raw_port() const noexcept { return raw_port_; }
  pid_t pid() const noexcept { return pid_; }
  uint16_t troupe_port() const noexcept { return troupe_port_; }

  void stop() {
    if (pid_ <= 0)
      return;
    ::close(stdin_);
    ::close(stdout_);
    int status = 0;
    for (int i = 0; i < 300; ++i) { // 3 s to exit on its own
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      ::usleep(10'000);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

private:
  void read_ports() {
    std::string line;
    auto deadline = clock_type::now() + 10s;
    while (line.find('\n') == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                        clock_type::now())
                      .count();
      pollfd pfd{stdout_, POLLIN, 0};
      if (left <= 0 || ::poll(&pfd, 1, static_cast<int>(left)) <= 0)
        fail("server process did not report its ports within 10 s");
      char buf[128];
      auto got = ::read(stdout_, buf, sizeof buf);
      if (got <= 0)
        fail("server process exited before reporting its ports");
      line.append(buf, static_cast<size_t>(got));
    }
    unsigned a = 0;
    unsigned b = 0;
    if (std::sscanf(line.c_str(), "PORTS %u %u", &a, &b) != 2)
      fail("unexpected output from server process: " + line);
    raw_port_ = static_cast<uint16_t>(a);
    troupe_port_ = static_cast<uint16_t>(b);
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  uint16_t raw_port_ = 0;
  uint16_t troupe_port_ = 0;
};

// -- benchmark groups ---------------------------------------------------------

/// One-way, sequential and pipelined rows against one pair of servers.
template <class Left, class Right>
void measure_servers(caf::actor_system& sys, std::vector<row>& rows,
                     const std::string& prefix, const options& opts, int64_t n_one_way,
                     int64_t n_sequential, int64_t n_pipelined, Left left, Right right,
                     int64_t* left_received, int64_t* right_received,
                     const std::string& right_label = "troupe") {
  auto left_pusher = sys.spawn(pusher<Left>, left);
  auto right_pusher = sys.spawn(pusher<Right>, right);
  auto left_client = sys.spawn(client<Left>, left);
  auto right_client = sys.spawn(client<Right>, right);
  auto add = [&](row r) {
    r.right_label = right_label;
    rows.push_back(std::move(r));
  };
  std::fprintf(stderr, "%s (%s vs raw CAF):\n", prefix.c_str(), right_label.c_str());
  add(measure_pair(prefix + " one-way", "msg/s", opts.reps, [&](bool t, int64_t div) {
    return t ? run_one_way(sys, right_pusher, n_one_way / div, right_received)
             : run_one_way(sys, left_pusher, n_one_way / div, left_received);
  }));
  add(measure_pair(prefix + " rr sequential", "rt/s", opts.reps,
                   [&](bool t, int64_t div) {
                     return run_round_trips(sys, t ? right_client : left_client,
                                            n_sequential / div, 1);
                   }));
  add(measure_pair(prefix + " rr pipelined x" + std::to_string(pipeline_depth), "rt/s",
                   opts.reps, [&](bool t, int64_t div) {
                     return run_round_trips(sys, t ? right_client : left_client,
                                            n_pipelined / div, pipeline_depth);
                   }));
  for (auto& a : {left_pusher, right_pusher, left_client, right_client})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

/// CPU time (user + system) a process has used so far, from /proc.
double cpu_seconds(pid_t pid) {
  auto path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr)
    fail("cannot read " + path);
  char buf[1024];
  auto got = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[got] = '\0';
  // Fields 14 and 15 (utime, stime) follow the parenthesised command name.
  const char* p = std::strrchr(buf, ')');
  unsigned long utime = 0;
  unsigned long stime = 0;
  if (p == nullptr ||
      std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                  &stime) != 2)
    fail("cannot parse " + path);
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// The same raw CAF traffic under CAF 0.17's scheduler defaults (left) and
/// troupe's tuning (right), each in an actor system and server process of its
/// own; then the idle CPU of both servers. Returns the idle report.
std::string measure_scheduler(std::vector<row>& rows, const options& opts,
                              const sizes& n) {
  bench_config caf_cfg{opts.threads, troupe::scheduler_tuning::caf_defaults()};
  bench_config tro_cfg{opts.threads, troupe::scheduler_tuning{}};
  caf::actor_system caf_sys{caf_cfg};
  caf::actor_system tro_sys{tro_cfg};
  server_process caf_child{opts.threads, {"--scheduler", "caf"}};
  server_process tro_child{opts.threads, {"--scheduler", "troupe"}};
  auto connect = [](caf::actor_system& sys, const server_process& child) {
    auto h =
        sys.middleman().remote_actor<raw_server_actor>("127.0.0.1", child.raw_port());
    if (!h)
      fail("cannot connect to the raw server: " + sys.render(h.error()));
    return *h;
  };
  int64_t caf_received = 0;
  int64_t tro_received = 0;
  auto caf_local = caf_sys.spawn(raw_server, &caf_received);
  auto tro_local = tro_sys.spawn(raw_server, &tro_received);
  auto caf_remote = connect(caf_sys, caf_child);
  auto tro_remote = connect(tro_sys, tro_child);
  std::vector<caf::actor> actors{caf_sys.spawn(client<raw_server_actor>, caf_local),
                                 tro_sys.spawn(client<raw_server_actor>, tro_local),
                                 caf_sys.spawn(client<raw_server_actor>, caf_remote),
                                 tro_sys.spawn(client<raw_server_actor>, tro_remote)};
  auto add = [&](row r) {
    r.right_label = "troupe tuning";
    rows.push_back(std::move(r));
  };
  std::fprintf(stderr, "scheduler (raw CAF traffic, CAF defaults vs troupe tuning):\n");
  auto trips = [&](size_t pair, int64_t count, int64_t window) {
    return [&, pair, count, window](bool t, int64_t div) {
      return run_round_trips(t ? tro_sys : caf_sys, actors[2 * pair + (t ? 1 : 0)],
                             count / div, window);
    };
  };
  add(measure_pair("sched local rr sequential", "rt/s", opts.reps,
                   trips(0, n.local_sequential, 1)));
  add(measure_pair("sched local rr pipelined x" + std::to_string(pipeline_depth), "rt/s",
                   opts.reps, trips(0, n.local_pipelined, pipeline_depth)));
  add(measure_pair("sched remote rr sequential", "rt/s", opts.reps,
                   trips(1, n.remote_sequential, 1)));
  add(measure_pair("sched remote rr pipelined x" + std::to_string(pipeline_depth), "rt/s",
                   opts.reps, trips(1, n.remote_pipelined, pipeline_depth)));
  for (auto& a : actors)
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(caf_local, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(tro_local, caf::exit_reason::user_shutdown);

  // Idle: both servers hold their connection and run their 100 ms timer.
  std::fprintf(stderr, "  idle CPU over %d s ...\n", opts.idle_seconds);
  std::this_thread::sleep_for(1s); // let the last replies settle
  auto caf_before = cpu_seconds(caf_child.pid());
  auto tro_before = cpu_seconds(tro_child.pid());
  auto start = clock_type::now();
  std::this_thread::sleep_for(std::chrono::seconds{opts.idle_seconds});
  auto wall = std::chrono::duration<double>(clock_type::now() - start).count();
  auto caf_share = 100.0 * (cpu_seconds(caf_child.pid()) - caf_before) / wall;
  auto tro_share = 100.0 * (cpu_seconds(tro_child.pid()) - tro_before) / wall;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "\nidle CPU of a server process (one connection, a 100 ms timer) over "
                "%.0f s: CAF defaults %.2f %% of a core, troupe tuning %.2f %% "
                "(goal <= 0.2 %%)\n",
                wall, caf_share, tro_share);
  return buf;
}

int run_benchmarks(const options& opts) {
  const sizes& n = opts.quick ? quick_sizes : full_sizes;
  bench_config cfg{opts.threads, opts.tuning()};
  caf::actor_system sys{cfg};
  std::vector<row> rows;
  const std::vector<std::string> child_args{"--scheduler", opts.scheduler};
  auto wanted = [&](std::string_view group) {
    return opts.only.empty() ? group != "breakdown" : opts.only == group;
  };
  std::fprintf(stderr,
               "messaging_bench%s: %d scheduler threads, best of %d after a warm-up\n",
               opts.quick ? " --quick" : "",
               static_cast<int>(sys.scheduler().num_workers()), opts.reps);

  int64_t raw_received = 0;
  int64_t troupe_received = 0;
  int64_t ctx_received = 0;
  auto raw = sys.spawn(raw_server, &raw_received);
  auto tro = sys.spawn(troupe_server, &troupe_received);
  if (wanted("local"))
    measure_servers(sys, rows, "local", opts, n.local_one_way, n.local_sequential,
                    n.local_pipelined, raw, tro, &raw_received, &troupe_received);
  if (wanted("breakdown")) {
    // Raw CAF handlers, but troupe's message shape (call_context + payload)
    // with one prebuilt context: the share of the gap that is the wire format.
    auto ctx = sys.spawn(ctx_server, &ctx_received);
    measure_servers(sys, rows, "local", opts, n.local_one_way, n.local_sequential,
                    n.local_pipelined, raw, ctx, &raw_received, &ctx_received, "raw+ctx");
    caf::anon_send_exit(ctx, caf::exit_reason::user_shutdown);
  }
  if (wanted("local") || opts.only == "service_ref") {
    // A call through a service_ref against a call on the plain handle, both
    // troupe: the registry (a stand-in answering find_services) lists `tro`.
    auto registry = sys.spawn([tro]() -> caf::behavior {
      return {
          [tro](troupe::find_services_atom, const std::string&,
                const std::vector<std::string>&) {
            return std::vector<caf::actor>{caf::actor_cast<caf::actor>(tro)};
          },
      };
    });
    troupe::service_ref<troupe_server_actor> ref{sys, "bench", registry};
    auto plain_client = sys.spawn(client<troupe_server_actor>, tro);
    auto ref_client = sys.spawn(client<troupe::service_ref<troupe_server_actor>>, ref);
    std::fprintf(stderr, "local (service_ref vs plain troupe handle):\n");
    auto add = [&](row r) {
      r.right_label = "service_ref vs plain";
      rows.push_back(std::move(r));
    };
    add(measure_pair("local service_ref call", "rt/s", opts.reps,
                     [&](bool t, int64_t div) {
                       return run_round_trips(sys, t ? ref_client : plain_client,
                                              n.local_sequential / div, 1);
                     }));
    add(measure_pair("local service_ref call x" + std::to_string(pipeline_depth), "rt/s",
                     opts.reps, [&](bool t, int64_t div) {
                       return run_round_trips(sys, t ? ref_client : plain_client,
                                              n.local_pipelined / div, pipeline_depth);
                     }));
    for (auto& a : {plain_client, ref_client, registry})
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
  caf::anon_send_exit(raw, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(tro, caf::exit_reason::user_shutdown);

  if (wanted("remote")) {
    server_process child{opts.threads, child_args};
    auto remote_raw =
        sys.middleman().remote_actor<raw_server_actor>("127.0.0.1", child.raw_port());
    if (!remote_raw)
      fail("cannot connect to the raw server: " + sys.render(remote_raw.error()));
    auto remote_troupe = sys.middleman().remote_actor<troupe_server_actor>(
        "127.0.0.1", child.troupe_port());
    if (!remote_troupe)
      fail("cannot connect to the troupe service: " + sys.render(remote_troupe.error()));
    measure_servers(sys, rows, "remote", opts, n.remote_one_way, n.remote_sequential,
                    n.remote_pipelined, *remote_raw, *remote_troupe, nullptr, nullptr);
    child.stop();
  }

  if (wanted("tls")) {
    char dir_template[] = "/tmp/messaging_bench.XXXXXX";
    if (::mkdtemp(dir_template) == nullptr)
      fail("mkdtemp failed");
    std::filesystem::path dir{dir_template};
    auto certs = troupe::test::make_test_certs(dir);
    troupe::cluster_tls_files tls{certs.ca_cert, certs.node_cert, certs.node_key};
    auto args = child_args;
    args.insert(args.end(), {"--tls-ca", tls.ca_file, "--tls-cert", tls.cert_file,
                             "--tls-key", tls.key_file});
    server_process child{opts.threads, args};
    auto remote_raw =
        sys.middleman().remote_actor<raw_server_actor>("127.0.0.1", child.raw_port());
    if (!remote_raw)
      fail("cannot connect to the raw server: " + sys.render(remote_raw.error()));
    // This process's own gate dials the troupe side over mutual TLS and hands
    // CAF a loopback port tunnelled into that connection.
    troupe::cluster_gate::settings gate_settings;
    gate_settings.bind_host = "127.0.0.1";
    gate_settings.tls = tls;
    troupe::cluster_gate gate{gate_settings, [] { return uint16_t{0}; }};
    std::promise<troupe::dial_result> dialed;
    auto tunnel = dialed.get_future();
    gate.dial("127.0.0.1", child.troupe_port(), 5000ms,
              [&dialed](troupe::dial_result r) { dialed.set_value(std::move(r)); });
    if (tunnel.wait_for(10s) != std::future_status::ready)
      fail("TLS dial did not finish within 10 s");
    auto at = tunnel.get();
    if (!at.ok)
      fail("TLS dial failed: " + at.error);
    auto remote_troupe =
        sys.middleman().remote_actor<troupe_server_actor>(at.host, at.port);
    if (!remote_troupe)
      fail("cannot connect to the troupe service over TLS: " +
           sys.render(remote_troupe.error()));
    measure_servers(sys, rows, "remote mTLS", opts, n.remote_one_way, n.remote_sequential,
                    n.remote_pipelined, *remote_raw, *remote_troupe, nullptr, nullptr);
    child.stop();
    std::filesystem::remove_all(dir);
  }

  std::string idle_report;
  if (wanted("scheduler"))
    idle_report = measure_scheduler(rows, opts, n);

  print_table(rows);
  std::printf("%s", idle_report.c_str());
  std::printf("\nratio = troupe rate / raw CAF rate (goal >= 0.90); rates are the best "
              "of %d runs, median ratio compares the medians; p50/p99 per round trip "
              "from the best sequential run.\n",
              opts.reps);
  return 0;
}

} // namespace bench

int main(int argc, char** argv) {
  auto opts = bench::parse_options(argc, argv);
  return opts.server ? bench::run_server(opts) : bench::run_benchmarks(opts);
}
