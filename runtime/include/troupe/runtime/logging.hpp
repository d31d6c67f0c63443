#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <spdlog/sinks/sink.h>
#include <spdlog/spdlog.h>

namespace troupe {

enum class log_format { console, json };

struct logging_settings {
  log_format format = log_format::console;
  std::string level = "info"; ///< trace, debug, info, warn, error, critical, off
  std::string node_name;
  /// Records waiting for the writer thread; when full, the oldest is dropped.
  std::size_t queue_size = 8192;
};

/// Makes spdlog's default logger write to stdout in the chosen format. Every
/// record carries timestamp, level, node name, and — when logged while an
/// actor handles a message — the actor's name and the message's correlation id.
/// `sink` replaces stdout (tests capture records this way).
///
/// Logging never blocks the calling thread (a scheduler thread, mostly): the
/// record is formatted where it is logged (so the thread's actor and
/// correlation id are the ones it carries) and handed to one writer thread
/// through a bounded queue. When the output stalls and the queue is full,
/// the oldest waiting record is dropped and counted
/// (`troupe_log_messages_dropped_total`). The writer flushes the output after
/// every record, so an error reaches it without waiting for a later one.
void init_logging(const logging_settings& settings,
                  std::shared_ptr<spdlog::sinks::sink> sink = nullptr);

/// Waits until every record logged before the call is written and flushed,
/// or `timeout` passes; false on timeout (a stalled output).
bool flush_logging(std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// Writes what is queued, stops the writer thread and logs synchronously from
/// then on (what a process does last, after its actors stopped).
void shutdown_logging();

/// Records dropped because the queue was full, since the process started.
std::uint64_t log_messages_dropped();

/// Parses "console" / "json"; throws std::invalid_argument otherwise.
log_format parse_log_format(const std::string& text);

} // namespace troupe
