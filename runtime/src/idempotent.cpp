#include <troupe/runtime/idempotent.hpp>

namespace troupe {

void idempotency::finish(const std::string& key, const caf::error& err,
                         const std::string& reply) {
  auto i = in_progress_.find(key);
  if (i == in_progress_.end())
    return;
  auto waiting = std::move(i->second);
  in_progress_.erase(i);
  for (auto& w : waiting)
    w(err, reply);
}

} // namespace troupe
