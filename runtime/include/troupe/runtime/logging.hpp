#pragma once

#include <string>

#include <memory>

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

namespace troupe {

enum class log_format { console, json };

struct logging_settings {
  log_format format = log_format::console;
  std::string level = "info"; ///< trace, debug, info, warn, error, critical, off
  std::string node_name;
};

/// Makes spdlog's default logger write to stdout in the chosen format. Every
/// record carries timestamp, level, node name, and — when logged while an
/// actor handles a message — the actor's name and the message's correlation id.
/// `sink` replaces stdout (tests capture records this way).
void init_logging(const logging_settings& settings,
                  std::shared_ptr<spdlog::sinks::sink> sink = nullptr);

/// Parses "console" / "json"; throws std::invalid_argument otherwise.
log_format parse_log_format(const std::string& text);

} // namespace troupe
