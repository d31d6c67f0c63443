#include <troupe/runtime/readiness.hpp>

#include <memory>
#include <mutex>

namespace troupe {

namespace {

std::mutex probe_mtx;
std::shared_ptr<const std::function<bool()>> probe;

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

} // namespace troupe
