#pragma once

// A real nats-server with JetStream for the broker and node tests, run as a
// child process the test starts, stops and kills.

#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "support/http_get.hpp"
#include "support/node_process.hpp"

namespace troupe::test {

class nats_server_process {
public:
  /// Not started yet: `store` keeps JetStream's streams across restarts.
  nats_server_process(std::filesystem::path store, uint16_t port)
      : store_(std::move(store))
      , port_(port) {}

  /// Not started yet, on a free port, with a store directory of its own.
  nats_server_process()
      : own_store_(std::make_unique<temp_dir>())
      , store_(own_store_->path() / "js")
      , port_(free_port()) {}

  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

  void start() {
    using namespace std::chrono_literals;
    proc_ = std::make_unique<node_process>(
        "/usr/sbin/nats-server",
        std::vector<std::string>{"-js", "-sd", store_.string(), "-a", "127.0.0.1", "-p",
                                 std::to_string(port_)},
        std::map<std::string, std::string>{}, "nats");
    // The server logs this once JetStream has restored its streams.
    REQUIRE(proc_->wait_for_line("Server is ready", within(10s)));
  }

  /// SIGKILL: the server vanishes mid-stream, as in a crash.
  void stop() {
    using namespace std::chrono_literals;
    if (!proc_)
      return;
    proc_->kill(SIGKILL);
    proc_->wait_exit(within(10s));
    proc_.reset();
  }

private:
  std::unique_ptr<temp_dir> own_store_;
  std::filesystem::path store_;
  uint16_t port_;
  std::unique_ptr<node_process> proc_;
};

} // namespace troupe::test
