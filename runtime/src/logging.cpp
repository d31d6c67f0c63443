#include <troupe/runtime/logging.hpp>

#include <chrono>
#include <ctime>
#include <stdexcept>

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
  auto logger = std::make_shared<spdlog::logger>("troupe", sink);
  logger->set_formatter(
      std::make_unique<troupe_formatter>(settings.format, settings.node_name));
  logger->set_level(spdlog::level::from_str(settings.level));
  // Flush every record: node processes are read line by line by operators,
  // tests and log shippers, and a crash must not swallow the last lines.
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

} // namespace troupe
