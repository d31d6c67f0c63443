#include <troupe/runtime/readiness.hpp>

#include <atomic>
#include <memory>
#include <mutex>

namespace troupe {

namespace {

std::mutex probe_mtx;
std::shared_ptr<const std::function<bool()>> probe;
std::atomic<bool> quorum{true};
std::mutex details_mtx;
std::map<std::string, std::string> details;

} // namespace

bool node_is_ready() {
  std::shared_ptr<const std::function<bool()>> p;
  {
    std::lock_guard<std::mutex> guard{probe_mtx};
    p = probe;
  }
  return !p || (*p)();
}

void publish_readiness(std::function<bool()> f) {
  std::lock_guard<std::mutex> guard{probe_mtx};
  probe = f ? std::make_shared<const std::function<bool()>>(std::move(f)) : nullptr;
}

bool node_has_quorum() noexcept {
  return quorum.load(std::memory_order_relaxed);
}

void set_node_quorum(bool has_quorum) noexcept {
  quorum.store(has_quorum, std::memory_order_relaxed);
}

void set_readiness_detail(const std::string& subject, std::string state) {
  std::lock_guard<std::mutex> guard{details_mtx};
  if (state.empty())
    details.erase(subject);
  else
    details[subject] = std::move(state);
}

std::map<std::string, std::string> readiness_details() {
  std::lock_guard<std::mutex> guard{details_mtx};
  return details;
}

} // namespace troupe
