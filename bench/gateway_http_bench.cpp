// The HTTP gateway under wrk: POST /v1/sagas/greeting (a durable one-step
// saga per request, a fresh idempotency key each, as the gRPC benchmark
// starts) and GET
// /v1/sagas/{id}, over keep-alive, against a troupe-node and against
// bare_http_server answering bodies of the same sizes. wrk has no rate
// flag, so the light load is one connection (one request in flight) and
// saturation 64 connections; the ratio is the gateway's share of the bare
// server's throughput. A third load, an unknown route the gateway answers
// itself, shows its HTTP layer apart from the backend.
//
//   gateway_http_bench [--duration 10] [--quick]

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

// A child whose merged output a thread of its own reads (a chatty child
// never blocks on a full pipe), searched line by line.
class child {
public:
  explicit child(std::vector<std::string> argv) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0)
      throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      std::vector<char*> args;
      for (auto& a : argv)
        args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      std::perror("execv");
      ::_exit(127);
    }
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      std::array<char, 65536> buf{};
      for (;;) {
        auto n = ::read(fd, buf.data(), buf.size());
        if (n <= 0)
          break;
        std::lock_guard<std::mutex> guard{mtx_};
        text_.append(buf.data(), static_cast<size_t>(n));
        // Only the start matters (the ports); keep memory bounded.
        if (text_.size() > (1u << 20))
          text_.resize(1u << 20);
      }
      ::close(fd);
    });
  }
  ~child() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    auto deadline = steady::now() + std::chrono::seconds(20);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (steady::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    reader_.join();
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;

  // The first group of the first match of `re` in the output, within `timeout`.
  std::string wait_for(const std::regex& re, std::chrono::seconds timeout) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      {
        std::lock_guard<std::mutex> guard{mtx_};
        std::smatch m;
        if (std::regex_search(text_, m, re))
          return m.size() > 1 ? m[1].str() : m[0].str();
        if (steady::now() > deadline)
          throw std::runtime_error("a child did not print what was expected:\n" + text_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mtx_;
  std::string text_;
};

// Runs a command, returns its standard output.
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr)
    throw std::runtime_error("cannot run " + cmd);
  std::array<char, 4096> buf{};
  while (auto n = std::fread(buf.data(), 1, buf.size(), p))
    out.append(buf.data(), n);
  ::pclose(p);
  return out;
}

struct load_result {
  double qps = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  long non_2xx = 0;
};

double to_ms(double v, const std::string& unit) {
  if (unit == "us")
    return v / 1000;
  if (unit == "s")
    return v * 1000;
  if (unit == "m")
    return v * 60000;
  return v;
}

load_result parse_wrk(const std::string& out) {
  load_result r;
  std::smatch m;
  static const std::regex qps_re{R"(Requests/sec:\s+([0-9.]+))"};
  static const std::regex p50_re{R"(\n\s+50%\s+([0-9.]+)(us|ms|s|m)\b)"};
  static const std::regex p99_re{R"(\n\s+99%\s+([0-9.]+)(us|ms|s|m)\b)"};
  static const std::regex non2xx_re{R"(Non-2xx or 3xx responses:\s+(\d+))"};
  if (std::regex_search(out, m, qps_re))
    r.qps = std::stod(m[1]);
  if (std::regex_search(out, m, p50_re))
    r.p50_ms = to_ms(std::stod(m[1]), m[2]);
  if (std::regex_search(out, m, p99_re))
    r.p99_ms = to_ms(std::stod(m[1]), m[2]);
  if (std::regex_search(out, m, non2xx_re))
    r.non_2xx = std::stol(m[1]);
  return r;
}

// One request with curl, for the setup: the body.
std::string curl(const std::string& args) {
  return run("curl -s --max-time 10 " + args);
}

} // namespace

int main(int argc, char** argv) {
  int seconds = 10;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick")
      seconds = 1;
    else if (a == "--duration" && i + 1 < argc)
      seconds = std::max(1, std::atoi(argv[++i]));
  }
  if (run("command -v wrk").empty()) {
    std::printf(
        "gateway_http_bench: wrk is not installed (Debian: wrk); nothing measured\n");
    return 0;
  }
  auto dir =
      fs::temp_directory_path() / ("gateway-http-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  try {
    child node{{TROUPE_NODE_BINARY, "--node.name", "bench", "--services.enabled",
                "[greeter, sagas, gateway]", "--store.path", (dir / "store").string(),
                "--status.port", "0", "--cluster.port", "0", "--gateways.grpc.enabled",
                "false", "--gateways.http.port", "0", "--log.level", "info"}};
    auto port = node.wait_for(std::regex{R"(http gateway listening on [^ ]+:(\d+)\s)"},
                              std::chrono::seconds(60));
    auto base = "http://127.0.0.1:" + port;

    // The first start waits for the node to be ready.
    std::string greet = R"({"json":{"name":"bench-0"},"idempotencyKey":"bench-0"})";
    std::string started;
    auto deadline = steady::now() + std::chrono::seconds(60);
    while (started.find("\"created\"") == std::string::npos) {
      if (steady::now() > deadline)
        throw std::runtime_error("the node did not start a saga: " + started);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      started = curl("-H 'Content-Type: application/json' -d '" + greet + "' " + base +
                     "/v1/sagas/greeting");
    }
    std::smatch m;
    std::regex_search(started, m, std::regex{R"re("id":"([^"]+)")re"});
    auto id = m[1].str();
    // GET reads a saga that has ended, so every answer has the same size.
    std::string got;
    while (got.find("SAGA_STATE_COMPLETED") == std::string::npos) {
      if (steady::now() > deadline)
        throw std::runtime_error("the first saga did not complete: " + got);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      got = curl(base + "/v1/sagas/" + id);
    }
    // A fresh start's answer is a running saga; measure one of those.
    auto fresh = curl("-H 'Content-Type: application/json' -d '" +
                      std::regex_replace(greet, std::regex{"bench-0"}, "bench-size") +
                      "' " + base + "/v1/sagas/greeting");

    child bare{{BARE_HTTP_SERVER, "--post-bytes", std::to_string(fresh.size()),
                "--get-bytes", std::to_string(got.size())}};
    auto bare_port = bare.wait_for(std::regex{R"(listening on [^ ]+:(\d+)\s)"},
                                   std::chrono::seconds(10));
    auto bare_base = "http://127.0.0.1:" + bare_port;

    std::mt19937_64 rng{std::random_device{}()};
    auto run_id = std::to_string(rng() % 1000000000);
    auto script = dir / "post.lua";
    std::ofstream{script} << "-- one fresh idempotency key per request\n"
                             "local n = 0\n"
                             "request = function()\n"
                             "  n = n + 1\n"
                             "  local key = 'b"
                          << run_id
                          << "-' .. n\n"
                             "  local body = '{\"json\":{\"name\":\"' .. key .. "
                             "'\"},\"idempotencyKey\":\"' .. key .. '\"}'\n"
                             "  return wrk.format('POST', '/v1/sagas/greeting', "
                             "{['Content-Type'] = 'application/json'}, body)\n"
                             "end\n";

    std::printf("HTTP gateway vs bare Beast server, wrk -t1, keep-alive, %d s per run\n",
                seconds);
    std::printf("reply bodies: POST %zu bytes, GET %zu bytes\n\n", fresh.size(),
                got.size());
    std::printf("%-5s %5s | %10s %9s %9s | %10s %9s %9s | %6s\n", "op", "conns",
                "troupe/s", "p50 ms", "p99 ms", "bare/s", "p50 ms", "p99 ms", "ratio");
    // "404" is a request the gateway answers itself (an unknown route): its
    // HTTP layer alone, without the backend and the saga manager.
    for (std::string op : {"404", "GET", "POST"}) {
      for (int conns : {1, 64}) {
        auto wrk = [&](const std::string& url_base) {
          std::string cmd = "wrk -t1 -c" + std::to_string(conns) + " -d" +
                            std::to_string(seconds) + "s --latency ";
          if (op == "POST")
            cmd += "-s " + script.string() + " " + url_base + "/v1/sagas/greeting";
          else if (op == "404")
            cmd += url_base + "/v1/no-such-route";
          else
            cmd += url_base + "/v1/sagas/" + id;
          auto out = run(cmd + " 2>&1");
          return parse_wrk(out);
        };
        auto t = wrk(base);
        auto b = wrk(bare_base);
        std::printf("%-5s %5d | %10.0f %9.3f %9.3f | %10.0f %9.3f %9.3f | %6.2f%s\n",
                    op.c_str(), conns, t.qps, t.p50_ms, t.p99_ms, b.qps, b.p50_ms,
                    b.p99_ms, b.qps > 0 ? t.qps / b.qps : 0.0,
                    t.non_2xx > 0 && op != "404"
                        ? ("  (" + std::to_string(t.non_2xx) + " non-2xx)").c_str()
                        : "");
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gateway_http_bench: %s\n", e.what());
    fs::remove_all(dir);
    return 1;
  }
  fs::remove_all(dir);
  return 0;
}
