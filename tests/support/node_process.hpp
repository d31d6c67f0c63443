#pragma once

// Child processes for multi-process tests: a troupe-node (or any program)
// started with arguments and environment, its stdout and stderr collected
// line by line, waited on by events with deadlines, never by sleeping.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace troupe::test {

using steady = std::chrono::steady_clock;

/// A deadline `d` from now: `wait_for_line("joined", within(10s))`.
inline steady::time_point within(steady::duration d) {
  return steady::now() + d;
}

/// One line a child wrote, with the time the test process read it.
struct log_line {
  std::string text;
  steady::time_point received;
  /// Position in lines(); pass index + 1 as `from` to wait for the next line.
  size_t index = 0;
};

/// A child process whose stdout and stderr (merged) are read on a thread of
/// its own into a line buffer. The destructor kills (SIGKILL) and reaps it,
/// so a failed assertion never leaks a process. The child also gets SIGKILL
/// when the thread that started it ends (PR_SET_PDEATHSIG): start children
/// from the test's main thread, and a killed test run leaks none.
///
/// Not movable: hold it in a std::unique_ptr to restart or hand it around.
class node_process {
public:
  /// Starts `program` with `args` (argv[1..]). The child's environment is the
  /// test's own without any TROUPE_* variable, plus `env`, so a developer's
  /// shell cannot change what a test sees. Throws std::runtime_error when the
  /// program cannot be started.
  node_process(std::string program, std::vector<std::string> args,
               std::map<std::string, std::string> env = {}, std::string tag = {});

  ~node_process();

  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  pid_t pid() const noexcept { return pid_; }
  const std::string& tag() const noexcept { return tag_; }

  /// The first line at position >= `from` containing `substring`; nullopt
  /// when the deadline passes or the output ends (the child closed it) first.
  std::optional<std::string> wait_for_line(std::string_view substring,
                                           steady::time_point deadline, size_t from = 0);
  /// The first line at position >= `from` that `re` matches (std::regex_search).
  std::optional<std::string> wait_for_line(const std::regex& re,
                                           steady::time_point deadline, size_t from = 0);

  /// Like wait_for_line, with the line's position and arrival time.
  std::optional<log_line> wait_for(std::string_view substring,
                                   steady::time_point deadline, size_t from = 0);
  std::optional<log_line> wait_for(const std::regex& re, steady::time_point deadline,
                                   size_t from = 0);

  /// Every line read so far.
  std::vector<std::string> lines() const;
  /// Number of lines read so far: a mark to wait for lines written after now.
  size_t line_count() const;
  /// All output so far as one string, for failure messages.
  std::string output() const;
  /// Lines at position >= `from` containing `substring`.
  size_t count_lines(std::string_view substring, size_t from = 0) const;

  /// Sends `sig`; false when the child has already exited (never signals a
  /// reused pid: the child is reaped only after this object knows it exited).
  bool kill(int sig);

  /// The exit code (128 + signal number when killed by a signal), or nullopt
  /// when the child is still running at the deadline. Once it returns a code,
  /// lines() holds everything the child wrote.
  std::optional<int> wait_exit(steady::time_point deadline);

  /// True until the child has exited.
  bool running() const;

  /// VmRSS of the child in KiB from /proc/<pid>/status; nullopt once it exited.
  std::optional<uint64_t> rss_kib() const;

private:
  void read_loop(int fd);
  void reap_loop();
  std::optional<log_line> wait_impl(const std::function<bool(const std::string&)>& match,
                                    steady::time_point deadline, size_t from);

  std::string tag_;
  pid_t pid_ = -1;
  bool echo_ = false;

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<log_line> lines_;
  std::string partial_;
  bool eof_ = false;
  bool exited_ = false;
  int exit_code_ = -1;

  std::thread reader_;
  std::thread reaper_;
};

/// Port in "status endpoint listening on 127.0.0.1:<port>" and
/// "cluster endpoint listening on 127.0.0.1:<port> as node <name>".
std::optional<uint16_t> parse_status_port(std::string_view line);
std::optional<uint16_t> parse_cluster_port(std::string_view line);

/// A troupe-node child whose status and cluster endpoints are listening.
struct running_node {
  std::string name;
  std::unique_ptr<node_process> process;
  uint16_t status_port = 0;
  uint16_t cluster_port = 0;

  /// "127.0.0.1:<cluster_port>", the form cluster.seeds takes.
  std::string cluster_address() const;
  node_process* operator->() const { return process.get(); }
};

/// Starts the troupe-node at `program` as node `name` with `--node.name name`,
/// `--status.port 0` and `--cluster.port 0` (unless `args` set them) followed
/// by `args`, and waits until both endpoints log their ports. Throws
/// std::runtime_error with the node's output when they do not by `deadline`.
running_node start_node_at(const std::string& program, const std::string& name,
                           std::vector<std::string> args, steady::time_point deadline,
                           std::map<std::string, std::string> env = {});

// TROUPE_NODE_BINARY is defined for the test executables, not for this
// library: what needs it is inline.
#ifdef TROUPE_NODE_BINARY
/// The troupe-node built with the tests.
inline std::string troupe_node_binary() {
  return TROUPE_NODE_BINARY;
}

/// start_node_at for the troupe-node built with the tests.
inline running_node start_node(const std::string& name, std::vector<std::string> args,
                               steady::time_point deadline,
                               std::map<std::string, std::string> env = {}) {
  return start_node_at(troupe_node_binary(), name, std::move(args), deadline,
                       std::move(env));
}
#endif

/// Waits for `condition` to hold, checking it again every `every` (a
/// condition-based wait for state only observable by asking, such as an HTTP
/// endpoint); false when the deadline passes first.
bool eventually(steady::time_point deadline, const std::function<bool()>& condition,
                std::chrono::milliseconds every = std::chrono::milliseconds{20});

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents on
/// destruction.
class temp_dir {
public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  /// Writes `content` to path()/name and returns the file's path.
  std::filesystem::path write(const std::string& name, std::string_view content) const;

private:
  std::filesystem::path path_;
};

} // namespace troupe::test
