// troupe's gRPC gateway against a bare asynchronous gRPC server, in one run:
// unary GetSaga and StartSaga of a trivial one-step durable saga ("greeting",
// one step on the greeter service, store sync on) sent to a troupe-node
// child process, and the same calls answered by a bare async server inside
// this process with a constant reply of the same size (the node's own reply,
// fetched first).
//
//   gateway_grpc_bench [--node PATH] [--seconds S] [--quick] [--inflight N]
//                      [--get-rate R] [--start-rate R] [--threads T] [--dir D]
//
//   --node        the troupe-node binary (default: the one built with the bench)
//   --seconds     measuring time per point (default 5; --quick 1)
//   --inflight    calls kept in flight at saturation (default 64)
//   --get-rate    offered GetSaga load of the fixed-load point (default 1000/s)
//   --start-rate  offered StartSaga load of the fixed-load point (default 500/s)
//   --threads     completion-queue threads of both servers (default 1)
//   --dir         where the node's store goes (default $TMPDIR or /tmp)
//   --rows        which rows to run, by number from 1 (default all), e.g. 2,6
//   --node-arg A  one more argument for the node (repeat it for several)
//
// The load generator is asynchronous: calls on one client completion queue
// over two connections, each call timed from its send to its answer.
// Fixed load sends on a schedule (open loop, at most 4096 in flight; a send
// that finds that many waiting is counted as dropped); saturation keeps
// --inflight calls outstanding (closed loop). QPS counts the answers a row
// expects (OK, except in the two rows that take GetSaga apart) and nothing
// else.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>
#include <grpc/health/v1/health.grpc.pb.h>
#include <grpcpp/grpcpp.h>

#include <troupe/api/v1/sagas.grpc.pb.h>

extern char** environ;

namespace bench {

namespace v1 = troupe::api::v1;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// -- the bare server -------------------------------------------------------------

// Answers GetSaga and StartSaga with constant replies, on its own
// completion-queue threads: what any async gRPC server costs, and nothing more.
class bare_server {
public:
  bare_server(v1::Saga saga, v1::StartSagaResponse started, int threads)
      : saga_(std::move(saga))
      , started_(std::move(started)) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    for (int i = 0; i < threads; ++i)
      cqs_.push_back(builder.AddCompletionQueue());
    server_ = builder.BuildAndStart();
    if (!server_ || port == 0)
      throw std::runtime_error("the bare server cannot listen");
    port_ = static_cast<uint16_t>(port);
    for (auto& cq : cqs_) {
      for (int i = 0; i < 4; ++i) {
        new unary<v1::GetSagaRequest, v1::Saga>(this, cq.get(), &saga_);
        new unary<v1::StartSagaRequest, v1::StartSagaResponse>(this, cq.get(), &started_);
      }
      threads_.emplace_back([cq = cq.get()] {
        void* tag = nullptr;
        bool ok = false;
        while (cq->Next(&tag, &ok))
          static_cast<call*>(tag)->proceed(ok);
      });
    }
  }

  ~bare_server() {
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
    for (auto& cq : cqs_)
      cq->Shutdown();
    for (auto& t : threads_)
      t.join();
  }

  uint16_t port() const { return port_; }

private:
  struct call {
    virtual ~call() = default;
    virtual void proceed(bool ok) = 0;
  };

  template <class Request, class Reply>
  struct unary final : call {
    unary(bare_server* srv, grpc::ServerCompletionQueue* cq, const Reply* reply)
        : srv(srv)
        , cq(cq)
        , reply(reply) {
      if constexpr (std::is_same_v<Request, v1::GetSagaRequest>)
        srv->service_.RequestGetSaga(&ctx, &req, &writer, cq, cq, this);
      else
        srv->service_.RequestStartSaga(&ctx, &req, &writer, cq, cq, this);
    }
    void proceed(bool ok) override {
      if (!ok || finishing) {
        delete this;
        return;
      }
      new unary(srv, cq, reply);
      finishing = true;
      writer.Finish(*reply, grpc::Status::OK, this);
    }
    bare_server* srv;
    grpc::ServerCompletionQueue* cq;
    const Reply* reply;
    grpc::ServerContext ctx;
    Request req;
    grpc::ServerAsyncResponseWriter<Reply> writer{&ctx};
    bool finishing = false;
  };

  v1::Saga saga_;
  v1::StartSagaResponse started_;
  v1::Sagas::AsyncService service_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
};

// -- the troupe-node child -----------------------------------------------------------

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class node_child {
public:
  node_child(const std::string& binary, const fs::path& dir, uint16_t port, int threads,
             const std::vector<std::string>& extra) {
    log_ = dir / "node.log";
    std::vector<std::string> args{binary,
                                  "--node.name",
                                  "bench",
                                  "--services.enabled",
                                  "greeter,sagas,gateway",
                                  "--store.path",
                                  (dir / "store").string(),
                                  "--status.port",
                                  "0",
                                  "--cluster.port",
                                  "0",
                                  "--gateways.grpc.port",
                                  std::to_string(port),
                                  "--gateways.grpc.threads",
                                  std::to_string(threads),
                                  "--gateways.http.enabled",
                                  "false",
                                  "--log.level",
                                  "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
      throw std::runtime_error("cannot start " + binary + ": " + std::strerror(rc));
  }

  ~node_child() { stop(); }

  void stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGTERM);
    auto deadline = steady::now() + 20s;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (steady::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid_ = -1;
  }

  pid_t pid() const { return pid_; }

  bool running() const {
    int status = 0;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
  }

  const fs::path& log() const { return log_; }

private:
  pid_t pid_ = -1;
  fs::path log_;
};

std::shared_ptr<grpc::Channel> channel_to(uint16_t port, int n) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Distinct arguments keep the connections apart.
  args.SetInt("troupe.bench.connection", n);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

bool wait_serving(uint16_t port, steady::time_point deadline) {
  auto stub = grpc::health::v1::Health::NewStub(channel_to(port, 99));
  while (steady::now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 1s);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    if (stub->Check(&ctx, req, &resp).ok() &&
        resp.status() == grpc::health::v1::HealthCheckResponse::SERVING)
      return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// -- the load generator ----------------------------------------------------------------

enum class rpc { get, start };

struct point {
  double qps = 0;
  double p50_us = 0;
  double p99_us = 0;
  int64_t ok = 0;
  int64_t errors = 0;
  int64_t dropped = 0;
  std::string first_error;
};

class load {
public:
  /// GetSaga asks for `saga_id`; an answer counts when its code is `expect`.
  load(uint16_t port, std::string saga_id, std::string tag,
       grpc::StatusCode expect = grpc::StatusCode::OK)
      : saga_id_(std::move(saga_id))
      , tag_(std::move(tag))
      , expect_(expect) {
    for (int i = 0; i < 2; ++i)
      stubs_.push_back(v1::Sagas::NewStub(channel_to(port, i)));
    google::protobuf::util::JsonStringToMessage(R"({"name":"bench"})", &input_);
  }

  /// Keeps `inflight` calls outstanding for warmup + seconds.
  point closed(rpc kind, int inflight, double warmup, double seconds) {
    return run(kind, warmup, seconds, true, inflight, 0);
  }

  /// Sends `rate` calls a second on a schedule for warmup + seconds.
  point open(rpc kind, double rate, double warmup, double seconds) {
    return run(kind, warmup, seconds, false, 0, rate);
  }

private:
  struct pending {
    grpc::ClientContext ctx;
    steady::time_point sent;
    grpc::Status status;
    v1::Saga saga;
    v1::StartSagaResponse started;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Saga>> get;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::StartSagaResponse>> start;
  };

  void issue(rpc kind, grpc::CompletionQueue& cq) {
    auto* p = new pending;
    p->ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto n = counter_.fetch_add(1);
    auto& stub = *stubs_[static_cast<size_t>(n) % stubs_.size()];
    ++outstanding_;
    p->sent = steady::now();
    if (kind == rpc::get) {
      v1::GetSagaRequest req;
      req.set_id(saga_id_);
      p->get = stub.PrepareAsyncGetSaga(&p->ctx, req, &cq);
      p->get->StartCall();
      p->get->Finish(&p->saga, &p->status, p);
    } else {
      v1::StartSagaRequest req;
      req.set_saga_type("greeting");
      *req.mutable_json() = input_;
      req.set_idempotency_key(tag_ + "-" + std::to_string(n));
      p->start = stub.PrepareAsyncStartSaga(&p->ctx, req, &cq);
      p->start->StartCall();
      p->start->Finish(&p->started, &p->status, p);
    }
  }

  point run(rpc kind, double warmup, double seconds, bool closed_loop, int inflight,
            double rate) {
    grpc::CompletionQueue cq;
    auto begin = steady::now() + std::chrono::duration_cast<steady::duration>(
                                     std::chrono::duration<double>(warmup));
    auto end = begin + std::chrono::duration_cast<steady::duration>(
                           std::chrono::duration<double>(seconds));
    int64_t dropped = 0;
    std::vector<int64_t> latencies;
    latencies.reserve(1 << 20);
    point out;
    std::thread reaper{[&] {
      void* tag = nullptr;
      bool ok = false;
      while (cq.Next(&tag, &ok)) {
        auto* p = static_cast<pending*>(tag);
        auto done = steady::now();
        if (p->sent >= begin && p->sent < end) {
          if (p->status.error_code() == expect_) {
            ++out.ok;
            latencies.push_back((done - p->sent).count());
          } else if (out.errors++ == 0) {
            out.first_error =
                std::to_string(p->status.error_code()) + " " + p->status.error_message();
          }
        }
        delete p;
        // The refill counts before the answered call stops counting: the
        // main thread shuts the queue down only once nothing is outstanding.
        if (closed_loop && done < end)
          issue(kind, cq);
        --outstanding_;
      }
    }};
    if (closed_loop) {
      for (int i = 0; i < inflight; ++i)
        issue(kind, cq);
      std::this_thread::sleep_until(end);
    } else {
      auto gap = std::chrono::duration_cast<steady::duration>(
          std::chrono::duration<double>(1.0 / rate));
      for (auto next = steady::now(); next < end; next += gap) {
        std::this_thread::sleep_until(next);
        if (outstanding_.load() >= 4096 && next >= begin)
          ++dropped;
        else if (outstanding_.load() < 4096)
          issue(kind, cq);
      }
    }
    // Every call has a deadline: this ends.
    while (outstanding_.load() > 0)
      std::this_thread::sleep_for(1ms);
    cq.Shutdown();
    reaper.join();
    std::sort(latencies.begin(), latencies.end());
    auto pct = [&](double q) {
      if (latencies.empty())
        return 0.0;
      auto i = static_cast<size_t>(q * static_cast<double>(latencies.size() - 1));
      return static_cast<double>(latencies[i]) / 1e3;
    };
    out.qps = static_cast<double>(out.ok) / seconds;
    out.p50_us = pct(0.50);
    out.p99_us = pct(0.99);
    out.dropped = dropped;
    return out;
  }

  std::vector<std::unique_ptr<v1::Sagas::Stub>> stubs_;
  std::string saga_id_;
  std::string tag_;
  grpc::StatusCode expect_;
  google::protobuf::Struct input_;
  std::atomic<int64_t> counter_{0};
  std::atomic<int64_t> outstanding_{0};
};

// -- main -------------------------------------------------------------------------------

struct options {
  std::string node;
  double seconds = 5;
  bool quick = false;
  int inflight = 64;
  double get_rate = 1000;
  double start_rate = 500;
  int threads = 1;
  std::string dir;
  std::vector<int> rows; ///< 1-based; empty: all
  std::vector<std::string> node_args;
};

std::string fmt_point(const point& p) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%9.0f qps  p50 %7.0f us  p99 %7.0f us", p.qps, p.p50_us,
                p.p99_us);
  std::string s = buf;
  if (p.errors > 0 || p.dropped > 0)
    s += "  (" + std::to_string(p.errors) + " errors, " + std::to_string(p.dropped) +
         " dropped)";
  return s;
}

int run(const options& opt) {
  auto dir = fs::path(opt.dir) / ("gateway_grpc_bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto port = free_port();
  node_child node{opt.node, dir, port, opt.threads, opt.node_args};
  if (!wait_serving(port, steady::now() + 60s)) {
    std::fprintf(stderr, "gateway_grpc_bench: the node never served; its log: %s\n",
                 node.log().c_str());
    return 1;
  }

  // The node's own replies: the bare server answers with the same bytes.
  auto stub = v1::Sagas::NewStub(channel_to(port, 98));
  v1::StartSagaRequest first;
  first.set_saga_type("greeting");
  google::protobuf::util::JsonStringToMessage(R"({"name":"bench"})",
                                              first.mutable_json());
  first.set_idempotency_key("bench-probe");
  v1::StartSagaResponse started;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto st = stub->StartSaga(&ctx, first, &started);
    if (!st.ok()) {
      std::fprintf(stderr, "gateway_grpc_bench: StartSaga failed: %s\n",
                   st.error_message().c_str());
      return 1;
    }
  }
  v1::Saga saga;
  for (auto deadline = steady::now() + 30s; steady::now() < deadline;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::GetSagaRequest req;
    req.set_id(started.saga().id());
    if (stub->GetSaga(&ctx, req, &saga).ok() && saga.state() == v1::SAGA_STATE_COMPLETED)
      break;
    std::this_thread::sleep_for(50ms);
  }
  if (saga.state() != v1::SAGA_STATE_COMPLETED) {
    std::fprintf(stderr, "gateway_grpc_bench: the probe saga did not complete\n");
    return 1;
  }
  // A freshly started instance, as StartSaga answers at saturation.
  v1::StartSagaResponse start_reply = started;
  start_reply.set_created(true);

  bare_server bare{saga, start_reply, opt.threads};
  double warmup = opt.quick ? 0.3 : 1.0;

  std::printf("gateway_grpc_bench%s: %u CPUs, %.1f s per point (after %.1f s warm-up), "
              "%d in flight at saturation, %d completion-queue thread(s) per server\n",
              opt.quick ? " --quick" : "", std::thread::hardware_concurrency(),
              opt.seconds, warmup, opt.inflight, opt.threads);
  std::printf(
      "  replies: Saga %zu bytes (GetSaga), StartSagaResponse %zu bytes; saga "
      "\"greeting\": one step on the greeter, store sync on; troupe-node pid %d\n",
      saga.ByteSizeLong(), start_reply.ByteSizeLong(), static_cast<int>(node.pid()));
  std::printf("  %-28s | %-52s | %-52s | %s\n", "point", "bare async gRPC server",
              "troupe gateway (troupe-node)", "ratio");
  std::fflush(stdout);

  // The last two rows take the node's GetSaga apart: an empty id is refused
  // by the gateway itself (INVALID_ARGUMENT, no actor involved), an unknown
  // one goes through the bridge actor to the saga manager (NOT_FOUND, no
  // store read). The bare server answers them as it answers every GetSaga.
  struct row {
    std::string name;
    rpc kind;
    bool saturate;
    double rate;
    std::string troupe_id;
    grpc::StatusCode troupe_expect;
  };
  char get_fixed[64];
  char start_fixed[64];
  std::snprintf(get_fixed, sizeof get_fixed, "GetSaga at %.0f/s", opt.get_rate);
  std::snprintf(start_fixed, sizeof start_fixed, "StartSaga at %.0f/s", opt.start_rate);
  const auto ok = grpc::StatusCode::OK;
  std::vector<row> rows{{get_fixed, rpc::get, false, opt.get_rate, saga.id(), ok},
                        {"GetSaga saturation", rpc::get, true, 0, saga.id(), ok},
                        {start_fixed, rpc::start, false, opt.start_rate, saga.id(), ok},
                        {"StartSaga saturation", rpc::start, true, 0, saga.id(), ok},
                        {"GetSaga sat., gateway only", rpc::get, true, 0, "",
                         grpc::StatusCode::INVALID_ARGUMENT},
                        {"GetSaga sat., to manager", rpc::get, true, 0, "unknown.bench",
                         grpc::StatusCode::NOT_FOUND}};
  double get_ratio = 0;
  double start_ratio = 0;
  int run_no = 0;
  for (size_t n = 0; n < rows.size(); ++n) {
    const auto& r = rows[n];
    if (!opt.rows.empty() && std::find(opt.rows.begin(), opt.rows.end(),
                                       static_cast<int>(n + 1)) == opt.rows.end())
      continue;
    point results[2];
    uint16_t ports[2] = {bare.port(), port};
    for (int side = 0; side < 2; ++side) {
      load l{ports[side], side == 0 ? saga.id() : r.troupe_id,
             "bench-" + std::to_string(::getpid()) + "-" + std::to_string(run_no++),
             side == 0 ? ok : r.troupe_expect};
      results[side] = r.saturate ? l.closed(r.kind, opt.inflight, warmup, opt.seconds)
                                 : l.open(r.kind, r.rate, warmup, opt.seconds);
    }
    double ratio = results[0].qps > 0 ? results[1].qps / results[0].qps : 0;
    std::printf("  %-28s | %-52s | %-52s | %5.2f\n", r.name.c_str(),
                fmt_point(results[0]).c_str(), fmt_point(results[1]).c_str(), ratio);
    if (!results[1].first_error.empty())
      std::printf("  %-28s   first unexpected troupe answer: %s\n", "",
                  results[1].first_error.c_str());
    if (r.saturate && r.troupe_expect == ok)
      (r.kind == rpc::get ? get_ratio : start_ratio) = ratio;
    std::fflush(stdout);
  }
  std::printf("  floors at saturation: GetSaga >= 0.70 x bare: %.2f -> %s; StartSaga >= "
              "0.50 x bare: %.2f -> %s\n",
              get_ratio, get_ratio >= 0.7 ? "MET" : "MISSED", start_ratio,
              start_ratio >= 0.5 ? "MET" : "MISSED");
  if (!node.running())
    std::printf("  the node exited during the run; its log: %s\n", node.log().c_str());
  node.stop();
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}

} // namespace bench

int main(int argc, char** argv) {
  bench::options opt;
#ifdef TROUPE_NODE_BINARY
  opt.node = TROUPE_NODE_BINARY;
#endif
  bool seconds_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gateway_grpc_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--node") {
      opt.node = value();
    } else if (a == "--seconds") {
      opt.seconds = std::stod(value());
      seconds_set = true;
    } else if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--inflight") {
      opt.inflight = std::stoi(value());
    } else if (a == "--get-rate") {
      opt.get_rate = std::stod(value());
    } else if (a == "--start-rate") {
      opt.start_rate = std::stod(value());
    } else if (a == "--threads") {
      opt.threads = std::stoi(value());
    } else if (a == "--node-arg") {
      opt.node_args.push_back(value());
    } else if (a == "--rows") {
      auto list = value();
      for (size_t pos = 0; pos < list.size();) {
        auto comma = list.find(',', pos);
        opt.rows.push_back(std::stoi(list.substr(pos, comma - pos)));
        pos = comma == std::string::npos ? list.size() : comma + 1;
      }
    } else if (a == "--dir") {
      opt.dir = value();
    } else {
      std::fprintf(stderr,
                   "usage: gateway_grpc_bench [--node PATH] [--seconds S] [--quick] "
                   "[--inflight N] [--get-rate R] [--start-rate R] [--threads T] "
                   "[--dir D] [--rows 1,2,...] [--node-arg A]...\n");
      return 2;
    }
  }
  if (opt.quick && !seconds_set)
    opt.seconds = 1;
  if (opt.node.empty()) {
    std::fprintf(stderr, "gateway_grpc_bench: --node PATH is required\n");
    return 2;
  }
  if (opt.dir.empty()) {
    auto* t = std::getenv("TMPDIR");
    opt.dir = t != nullptr && *t != '\0' ? t : "/tmp";
  }
  try {
    return bench::run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gateway_grpc_bench: %s\n", e.what());
    return 1;
  }
}
