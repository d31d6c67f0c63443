#include <troupe/runtime/logging.hpp>

#include <catch2/catch.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/metrics.hpp>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// A log output that hangs (a full pipe, a stuck disk) until released.
class stalling_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  void release() {
    {
      std::lock_guard<std::mutex> guard{gate_};
      released_ = true;
    }
    cv_.notify_all();
  }

  /// True once the writer thread is stuck in the output.
  bool wait_until_stalled(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock{gate_};
    return cv_.wait_for(lock, timeout, [&] { return stalled_; });
  }

  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> guard{gate_};
    return lines_;
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::unique_lock<std::mutex> lock{gate_};
    stalled_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return released_; });
    lines_.emplace_back(buf.data(), buf.size());
  }

  void flush_() override {}

private:
  std::mutex gate_;
  std::condition_variable cv_;
  bool stalled_ = false;
  bool released_ = false;
  std::vector<std::string> lines_;
};

void restore_default_logger() {
  troupe::init_logging({troupe::log_format::console, "info", "test"},
                       std::make_shared<spdlog::sinks::stdout_sink_mt>());
}

} // namespace

TEST_CASE("logging into a stalled output neither blocks the caller nor loses the "
          "newest records") {
  auto sink = std::make_shared<stalling_sink>();
  troupe::logging_settings settings;
  settings.format = troupe::log_format::json;
  settings.node_name = "node-a";
  settings.queue_size = 64;
  troupe::init_logging(settings, sink);
  auto dropped_before = troupe::log_messages_dropped();

  spdlog::info("first");
  REQUIRE(sink->wait_until_stalled(5s));

  // 10000 records against a queue of 64, from a thread that must not block.
  auto logged = std::async(std::launch::async, [] {
    troupe::call_context ctx;
    ctx.correlation_id = "cid-7";
    troupe::context_scope scope{ctx, "inventory"};
    for (int i = 0; i < 10000; ++i)
      spdlog::info("record {}", i);
    spdlog::error("the last one");
  });
  REQUIRE(logged.wait_for(10s) == std::future_status::ready);
  logged.get();

  auto dropped = troupe::log_messages_dropped() - dropped_before;
  CHECK(dropped >= 10000 - 64);
  CHECK(troupe::metrics::instance().serialize().find(
            "troupe_log_messages_dropped_total") != std::string::npos);

  sink->release();
  REQUIRE(troupe::flush_logging(5s));
  auto lines = sink->lines();
  REQUIRE(lines.size() >= 2);
  CHECK(lines.size() <= 64 + 2);
  CHECK(lines.front().find("\"msg\":\"first\"") != std::string::npos);
  // The newest survive, with the context of the thread that logged them,
  // though the writer thread formatted nothing.
  auto& last = lines.back();
  CHECK(last.find("\"msg\":\"the last one\"") != std::string::npos);
  CHECK(last.find("\"level\":\"error\"") != std::string::npos);
  CHECK(last.find("\"actor\":\"inventory\"") != std::string::npos);
  CHECK(last.find("\"correlation_id\":\"cid-7\"") != std::string::npos);
  CHECK(last.find("\"node\":\"node-a\"") != std::string::npos);
  restore_default_logger();
}

TEST_CASE("after shutdown_logging every queued record is written and logging goes on "
          "synchronously") {
  auto sink = std::make_shared<stalling_sink>();
  sink->release();
  troupe::init_logging({troupe::log_format::console, "info", "node-b"}, sink);
  for (int i = 0; i < 100; ++i)
    spdlog::info("queued {}", i);
  troupe::shutdown_logging();
  CHECK(sink->lines().size() == 100);
  spdlog::warn("after shutdown");
  auto lines = sink->lines();
  REQUIRE(lines.size() == 101);
  CHECK(lines.back().find("warning [node-b] after shutdown") != std::string::npos);
  restore_default_logger();
}
