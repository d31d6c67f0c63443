#include "support/node_process.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include <csignal>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace troupe::test {

namespace {

std::runtime_error system_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

bool has_prefix(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The child's environment: ours without TROUPE_* (and without the keys the
// caller sets), then the caller's.
std::vector<std::string>
child_environment(const std::map<std::string, std::string>& env) {
  std::vector<std::string> result;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry{*e};
    auto key = entry.substr(0, entry.find('='));
    if (has_prefix(key, "TROUPE_") || env.count(std::string{key}) > 0)
      continue;
    result.emplace_back(entry);
  }
  for (auto& [key, value] : env)
    result.push_back(key + "=" + value);
  return result;
}

int exit_code_of(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

std::optional<uint16_t> port_after(std::string_view line, std::string_view marker) {
  auto pos = line.find(marker);
  if (pos == std::string_view::npos)
    return std::nullopt;
  auto rest = line.substr(pos + marker.size());
  auto colon = rest.find(':');
  if (colon == std::string_view::npos)
    return std::nullopt;
  unsigned long value = 0;
  size_t digits = 0;
  for (size_t i = colon + 1; i < rest.size() && rest[i] >= '0' && rest[i] <= '9'; ++i) {
    value = value * 10 + static_cast<unsigned long>(rest[i] - '0');
    if (value > 65535)
      return std::nullopt;
    ++digits;
  }
  if (digits == 0)
    return std::nullopt;
  return static_cast<uint16_t>(value);
}

} // namespace

node_process::node_process(std::string program, std::vector<std::string> args,
                           std::map<std::string, std::string> env, std::string tag)
    : tag_(std::move(tag)) {
  if (tag_.empty())
    tag_ = std::filesystem::path{program}.filename().string();
  echo_ = std::getenv("TROUPE_TEST_ECHO") != nullptr;

  // Everything the child needs is prepared before fork: between fork and
  // exec it may only call async-signal-safe functions.
  std::vector<std::string> argv_strings;
  argv_strings.push_back(program);
  for (auto& a : args)
    argv_strings.push_back(a);
  std::vector<char*> argv;
  for (auto& a : argv_strings)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  auto env_strings = child_environment(env);
  std::vector<char*> envp;
  for (auto& e : env_strings)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  // O_CLOEXEC: no other child inherits this pipe, so EOF means this child
  // (and only it) closed its output.
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0)
    throw system_error("pipe2");
  int exec_error[2];
  if (pipe2(exec_error, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    throw system_error("pipe2");
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {out[0], out[1], exec_error[0], exec_error[1]})
      close(fd);
    throw system_error("fork");
  }
  if (pid == 0) {
    // Child.
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, nullptr);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execve(argv[0], argv.data(), envp.data());
    int err = errno;
    [[maybe_unused]] auto n = write(exec_error[1], &err, sizeof err);
    _exit(127);
  }
  close(out[1]);
  close(exec_error[1]);
  int err = 0;
  ssize_t n;
  do {
    n = read(exec_error[0], &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  close(exec_error[0]);
  if (n == static_cast<ssize_t>(sizeof err)) {
    close(out[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    errno = err;
    throw system_error("cannot execute " + program);
  }
  pid_ = pid;
  reader_ = std::thread([this, fd = out[0]] { read_loop(fd); });
  reaper_ = std::thread([this] { reap_loop(); });
}

node_process::~node_process() {
  kill(SIGKILL);
  if (reaper_.joinable())
    reaper_.join();
  if (reader_.joinable())
    reader_.join();
}

void node_process::read_loop(int fd) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    auto now = steady::now();
    std::vector<std::string> echoed;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      partial_.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (auto nl = partial_.find('\n'); nl != std::string::npos;
           nl = partial_.find('\n', start)) {
        auto line = partial_.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r')
          line.pop_back();
        if (echo_)
          echoed.push_back(line);
        lines_.push_back(log_line{std::move(line), now, lines_.size()});
        start = nl + 1;
      }
      partial_.erase(0, start);
    }
    cv_.notify_all();
    for (auto& line : echoed)
      std::cerr << "[" << tag_ << "] " << line << "\n";
  }
  close(fd);
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!partial_.empty()) {
      lines_.push_back(log_line{std::move(partial_), steady::now(), lines_.size()});
      partial_.clear();
    }
    eof_ = true;
  }
  cv_.notify_all();
}

void node_process::reap_loop() {
  // Wait without reaping, then reap under the lock kill() takes: the pid
  // stays ours (a zombie) until exited_ is set.
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0) {
    if (errno != EINTR)
      break;
  }
  {
    std::lock_guard<std::mutex> guard{mtx_};
    int status = 0;
    pid_t r;
    do {
      r = waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    exit_code_ = r == pid_ ? exit_code_of(status) : -1;
    exited_ = true;
  }
  cv_.notify_all();
}

std::optional<log_line>
node_process::wait_impl(const std::function<bool(const std::string&)>& match,
                        steady::time_point deadline, size_t from) {
  std::unique_lock<std::mutex> lock{mtx_};
  size_t i = from;
  for (;;) {
    for (; i < lines_.size(); ++i)
      if (match(lines_[i].text))
        return lines_[i];
    if (eof_)
      return std::nullopt;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      for (; i < lines_.size(); ++i)
        if (match(lines_[i].text))
          return lines_[i];
      return std::nullopt;
    }
  }
}

std::optional<log_line> node_process::wait_for(std::string_view substring,
                                               steady::time_point deadline, size_t from) {
  std::string needle{substring};
  return wait_impl(
      [&needle](const std::string& line) {
        return line.find(needle) != std::string::npos;
      },
      deadline, from);
}

std::optional<log_line> node_process::wait_for(const std::regex& re,
                                               steady::time_point deadline, size_t from) {
  return wait_impl([&re](const std::string& line) { return std::regex_search(line, re); },
                   deadline, from);
}

std::optional<std::string> node_process::wait_for_line(std::string_view substring,
                                                       steady::time_point deadline,
                                                       size_t from) {
  if (auto hit = wait_for(substring, deadline, from))
    return std::move(hit->text);
  return std::nullopt;
}

std::optional<std::string> node_process::wait_for_line(const std::regex& re,
                                                       steady::time_point deadline,
                                                       size_t from) {
  if (auto hit = wait_for(re, deadline, from))
    return std::move(hit->text);
  return std::nullopt;
}

std::vector<std::string> node_process::lines() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::string> result;
  result.reserve(lines_.size());
  for (auto& l : lines_)
    result.push_back(l.text);
  return result;
}

size_t node_process::line_count() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return lines_.size();
}

std::string node_process::output() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::string result;
  for (auto& l : lines_) {
    result += l.text;
    result += '\n';
  }
  result += partial_;
  return result;
}

size_t node_process::count_lines(std::string_view substring, size_t from) const {
  std::lock_guard<std::mutex> guard{mtx_};
  size_t n = 0;
  for (size_t i = from; i < lines_.size(); ++i)
    if (lines_[i].text.find(substring) != std::string::npos)
      ++n;
  return n;
}

bool node_process::kill(int sig) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (exited_ || pid_ <= 0)
    return false;
  return ::kill(pid_, sig) == 0;
}

std::optional<int> node_process::wait_exit(steady::time_point deadline) {
  std::unique_lock<std::mutex> lock{mtx_};
  // Also wait for the end of its output, so lines() is complete afterwards.
  cv_.wait_until(lock, deadline, [this] { return exited_ && eof_; });
  if (!exited_)
    return std::nullopt;
  return exit_code_;
}

bool node_process::running() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return !exited_;
}

std::optional<uint64_t> node_process::rss_kib() const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (exited_)
    return std::nullopt;
  std::ifstream in{"/proc/" + std::to_string(pid_) + "/status"};
  std::string line;
  while (std::getline(in, line)) {
    if (has_prefix(line, "VmRSS:")) {
      std::istringstream fields{line.substr(6)};
      uint64_t kib = 0;
      if (fields >> kib)
        return kib;
    }
  }
  return std::nullopt; // a zombie has no VmRSS
}

std::optional<uint16_t> parse_status_port(std::string_view line) {
  return port_after(line, "status endpoint listening on ");
}

std::optional<uint16_t> parse_cluster_port(std::string_view line) {
  return port_after(line, "cluster endpoint listening on ");
}

std::string running_node::cluster_address() const {
  return "127.0.0.1:" + std::to_string(cluster_port);
}

running_node start_node_at(const std::string& program, const std::string& name,
                           std::vector<std::string> args, steady::time_point deadline,
                           std::map<std::string, std::string> env) {
  std::vector<std::string> full{"--node.name", name};
  auto given = [&args](std::string_view flag) {
    return std::find(args.begin(), args.end(), flag) != args.end();
  };
  if (!given("--status.port"))
    full.insert(full.end(), {"--status.port", "0"});
  if (!given("--cluster.port"))
    full.insert(full.end(), {"--cluster.port", "0"});
  full.insert(full.end(), args.begin(), args.end());

  running_node result;
  result.name = name;
  result.process =
      std::make_unique<node_process>(program, std::move(full), std::move(env), name);
  auto& proc = *result.process;
  auto fail = [&](const std::string& what) {
    return std::runtime_error("node " + name + " " + what + "; its output:\n" +
                              proc.output());
  };
  auto status_line = proc.wait_for_line("status endpoint listening on ", deadline);
  if (!status_line)
    throw fail("did not open its status endpoint");
  auto cluster_line = proc.wait_for_line("cluster endpoint listening on ", deadline);
  if (!cluster_line)
    throw fail("did not open its cluster endpoint");
  auto status_port = parse_status_port(*status_line);
  auto cluster_port = parse_cluster_port(*cluster_line);
  if (!status_port || !cluster_port)
    throw fail("logged ports that do not parse");
  result.status_port = *status_port;
  result.cluster_port = *cluster_port;
  return result;
}

bool eventually(steady::time_point deadline, const std::function<bool()>& condition,
                std::chrono::milliseconds every) {
  for (;;) {
    if (condition())
      return true;
    auto now = steady::now();
    if (now >= deadline)
      return false;
    std::this_thread::sleep_for(std::min<steady::duration>(every, deadline - now));
  }
}

temp_dir::temp_dir() {
  auto pattern = (std::filesystem::temp_directory_path() / "troupe-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr)
    throw system_error("mkdtemp");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path temp_dir::write(const std::string& name,
                                      std::string_view content) const {
  auto file = path_ / name;
  std::ofstream out{file, std::ios::binary | std::ios::trunc};
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out)
    throw std::runtime_error("cannot write " + file.string());
  return file;
}

} // namespace troupe::test
