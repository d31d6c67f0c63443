#pragma once

// A real nats-server for the broker tests, started and stopped by them.

#include <csignal>
#include <string>

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "outbox/events_fixture.hpp"
#include "support/http_get.hpp"
#include "support/nats_client.hpp"

namespace troupe::test {

inline constexpr const char* nats_server_binary = "/usr/sbin/nats-server";

/// A nats-server child with JetStream on a free port and a store directory
/// of its own; killed and reaped on destruction.
class nats_server {
public:
  nats_server()
      : port_(free_port()) {
    start();
  }
  ~nats_server() { stop(); }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;

  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

  /// Starts the server on the same port and store, and waits (with a
  /// deadline) until a client can connect and JetStream answers.
  void start() {
    auto store = (dir_.path / "js").string();
    auto port = std::to_string(port_);
    auto log = (dir_.path / "server.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec: the test
      // process has threads.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(nats_server_binary, nats_server_binary, "-js", "-sd", store.c_str(), "-a",
              "127.0.0.1", "-p", port.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    REQUIRE(pid_ > 0);
    auto ready = eventually([&] { return nats_client{url()}.jetstream_answers(); },
                            std::chrono::seconds(10));
    REQUIRE(ready);
  }

  /// SIGKILL and reap: the server disappears mid-stream.
  void stop() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

private:
  troupe::test::temp_store_dir dir_;
  uint16_t port_;
  pid_t pid_ = -1;
};

} // namespace troupe::test
