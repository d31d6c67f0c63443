#include <troupe/runtime/logging.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <stdexcept>

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <troupe/runtime/call_context.hpp>

#include <troupe/runtime/detail/json_text.hpp>

namespace troupe {

namespace {

void append(spdlog::memory_buf_t& out, std::string_view s) {
  out.append(s.data(), s.data() + s.size());
}

void append_json_string(spdlog::memory_buf_t& out, std::string_view s) {
  std::string quoted;
  detail::append_json_string(quoted, s);
  append(out, quoted);
}

void append_timestamp(spdlog::memory_buf_t& out, spdlog::log_clock::time_point tp) {
  auto secs = std::chrono::system_clock::to_time_t(tp);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch())
                .count() %
            1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  append(out, buf);
}

class troupe_formatter : public spdlog::formatter {
public:
  troupe_formatter(log_format format, std::string node)
      : format_(format)
      , node_(std::move(node)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const char* actor = context_scope::current_actor();
    const auto& cid = call_context::current().correlation_id;
    auto level = spdlog::level::to_string_view(msg.level);
    if (format_ == log_format::json) {
      append(dest, "{\"ts\":\"");
      append_timestamp(dest, msg.time);
      append(dest, "\",\"level\":");
      append_json_string(dest, std::string_view{level.data(), level.size()});
      append(dest, ",\"node\":");
      append_json_string(dest, node_);
      if (actor != nullptr) {
        append(dest, ",\"actor\":");
        append_json_string(dest, actor);
      }
      if (!cid.empty()) {
        append(dest, ",\"correlation_id\":");
        append_json_string(dest, cid);
      }
      append(dest, ",\"msg\":");
      append_json_string(dest, std::string_view{msg.payload.data(), msg.payload.size()});
      append(dest, "}\n");
      return;
    }
    append_timestamp(dest, msg.time);
    append(dest, " ");
    append(dest, std::string_view{level.data(), level.size()});
    append(dest, " [");
    append(dest, node_);
    append(dest, "]");
    if (actor != nullptr) {
      append(dest, " [");
      append(dest, actor);
      append(dest, "]");
    }
    if (!cid.empty()) {
      append(dest, " [cid=");
      append(dest, cid);
      append(dest, "]");
    }
    append(dest, " ");
    append(dest, std::string_view{msg.payload.data(), msg.payload.size()});
    append(dest, "\n");
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<troupe_formatter>(format_, node_);
  }

private:
  log_format format_;
  std::string node_;
};

/// The writer's formatter: records arrive formatted (see preformatting).
class passthrough_formatter : public spdlog::formatter {
public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    append(dest, std::string_view{msg.payload.data(), msg.payload.size()});
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<passthrough_formatter>();
  }
};

/// A marker record's payload starts with this; formatted records never do.
constexpr std::string_view marker_prefix{"\0troupe.flush ", 14};

/// The one sink the loggers write to: the output (stdout or a test's sink),
/// flushed after every record, and the flush markers flush_logging waits for.
class writer_sink final : public spdlog::sinks::sink {
public:
  explicit writer_sink(std::shared_ptr<spdlog::sinks::sink> out)
      : out_(std::move(out)) {
    out_->set_formatter(std::make_unique<passthrough_formatter>());
  }

  void log(const spdlog::details::log_msg& msg) override {
    std::string_view payload{msg.payload.data(), msg.payload.size()};
    if (payload.substr(0, marker_prefix.size()) == marker_prefix) {
      out_->flush();
      auto n = std::stoull(std::string{payload.substr(marker_prefix.size())});
      {
        std::lock_guard<std::mutex> guard{mutex_};
        written_marker_ = std::max<uint64_t>(written_marker_, n);
      }
      cv_.notify_all();
      return;
    }
    out_->log(msg);
    out_->flush();
  }

  void flush() override { out_->flush(); }
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

  /// Waits until marker `n` (or a later one) has passed through.
  bool wait_for_marker(uint64_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock{mutex_};
    return cv_.wait_for(lock, timeout, [&] { return written_marker_ >= n; });
  }

private:
  std::shared_ptr<spdlog::sinks::sink> out_;
  std::mutex mutex_;
  std::condition_variable cv_;
  uint64_t written_marker_ = 0;
};

/// The logger everybody logs to (spdlog's default): it formats each record
/// on the thread that logs it, where the thread-locals (actor, correlation
/// id) belong to the record, and hands the finished line to the back logger
/// (the async one with its writer thread; a synchronous one after shutdown).
class front_logger final : public spdlog::logger {
public:
  front_logger(troupe_formatter fmt, std::shared_ptr<spdlog::logger> back)
      : spdlog::logger("troupe")
      , fmt_(std::move(fmt))
      , back_(std::move(back)) {}

  /// Sends a flush marker down the same path as the records.
  void post_marker(uint64_t n) {
    auto text = std::string{marker_prefix} + std::to_string(n);
    back_->log(spdlog::log_clock::now(), {}, spdlog::level::critical,
               spdlog::string_view_t{text.data(), text.size()});
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    fmt_.format(msg, line);
    back_->log(msg.time, msg.source, msg.level,
               spdlog::string_view_t{line.data(), line.size()});
  }

  void flush_() override {} // the writer flushes after every record

private:
  troupe_formatter fmt_;
  std::shared_ptr<spdlog::logger> back_;
};

/// The process's logging: one writer thread behind a bounded queue.
struct logging_state {
  std::mutex mutex;
  std::shared_ptr<spdlog::details::thread_pool> pool;
  std::shared_ptr<front_logger> logger;
  std::shared_ptr<writer_sink> writer;
  logging_settings settings;
  uint64_t dropped_before = 0; ///< by writer threads already stopped
  uint64_t next_marker = 0;
};

logging_state& state() {
  static logging_state s;
  return s;
}

/// Writes what is queued and joins the writer thread.
void retire(logging_state& s, std::shared_ptr<spdlog::details::thread_pool> pool) {
  if (!pool)
    return;
  s.dropped_before += pool->overrun_counter();
  pool.reset(); // ~thread_pool drains the queue, then joins
}

std::shared_ptr<front_logger> make_front(const logging_settings& settings,
                                         std::shared_ptr<spdlog::logger> back) {
  back->set_level(spdlog::level::trace); // the front filters
  back->flush_on(spdlog::level::off);    // no flush messages through the queue
  auto front = std::make_shared<front_logger>(
      troupe_formatter{settings.format, settings.node_name}, std::move(back));
  front->set_level(spdlog::level::from_str(settings.level));
  front->flush_on(spdlog::level::off);
  return front;
}

} // namespace

log_format parse_log_format(const std::string& text) {
  if (text == "console")
    return log_format::console;
  if (text == "json")
    return log_format::json;
  throw std::invalid_argument("unknown log format '" + text + "'");
}

void init_logging(const logging_settings& settings,
                  std::shared_ptr<spdlog::sinks::sink> sink) {
  if (!sink)
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  auto& s = state();
  std::lock_guard<std::mutex> guard{s.mutex};
  auto old_pool = std::move(s.pool);
  s.writer = std::make_shared<writer_sink>(std::move(sink));
  s.settings = settings;
  s.pool = std::make_shared<spdlog::details::thread_pool>(
      std::max<std::size_t>(settings.queue_size, 1), 1);
  // Dropping the oldest record, never blocking the caller: spdlog 1.10 has
  // no discard_new policy, and the newest records say most about a stall.
  auto back = std::make_shared<spdlog::async_logger>(
      "troupe", s.writer, s.pool, spdlog::async_overflow_policy::overrun_oldest);
  s.logger = make_front(settings, std::move(back));
  spdlog::set_default_logger(s.logger);
  retire(s, std::move(old_pool));
}

bool flush_logging(std::chrono::milliseconds timeout) {
  auto& s = state();
  std::shared_ptr<writer_sink> writer;
  uint64_t n = 0;
  {
    std::lock_guard<std::mutex> guard{s.mutex};
    if (!s.logger)
      return true;
    n = ++s.next_marker;
    writer = s.writer;
    s.logger->post_marker(n);
  }
  return writer->wait_for_marker(n, timeout);
}

void shutdown_logging() {
  auto& s = state();
  std::lock_guard<std::mutex> guard{s.mutex};
  if (!s.pool)
    return;
  // Synchronous from here on, through the same writer: records logged while
  // the queue drains (or later) are not lost.
  auto was_default = spdlog::default_logger_raw() == s.logger.get();
  s.logger = make_front(
      s.settings, std::make_shared<spdlog::logger>(
                      "troupe", std::static_pointer_cast<spdlog::sinks::sink>(s.writer)));
  if (was_default)
    spdlog::set_default_logger(s.logger);
  retire(s, std::move(s.pool));
}

uint64_t log_messages_dropped() {
  auto& s = state();
  std::lock_guard<std::mutex> guard{s.mutex};
  return s.dropped_before + (s.pool ? s.pool->overrun_counter() : 0);
}

} // namespace troupe
