#include <troupe/runtime/service_ref.hpp>

#include <algorithm>

#include <caf/abstract_actor.hpp>
#include <spdlog/spdlog.h>

namespace troupe::detail {

ref_waiter::~ref_waiter() = default;

service_ref_state::service_ref_state(std::string name, std::vector<std::string> interface,
                                     caf::actor registry)
    : name_(std::move(name))
    , interface_(std::move(interface))
    , registry_(std::move(registry)) {}

service_ref_state::~service_ref_state() = default;

caf::actor service_ref_state::registry(caf::actor_system& sys) const {
  if (registry_)
    return registry_;
  return caf::actor_cast<caf::actor>(local_cluster(sys));
}

bool service_ref_state::wait(std::unique_ptr<ref_waiter> w) {
  if (w)
    waiting_.push_back(std::move(w));
  if (resolving_)
    return false;
  resolving_ = true;
  return true;
}

void service_ref_state::resolved(std::vector<caf::actor> found, time_point now) {
  resolving_ = false;
  resolved_at_ = now;
  std::vector<instance> next;
  next.reserve(found.size());
  for (auto& handle : found) {
    if (!handle)
      continue;
    // Keep the flag of an instance already known: it is attached once.
    auto known = std::find_if(instances_.begin(), instances_.end(),
                              [&](const instance& x) { return x.handle == handle; });
    if (known != instances_.end()) {
      next.push_back(std::move(*known));
      continue;
    }
    auto alive = std::make_shared<std::atomic<bool>>(true);
    // Runs when the actor terminates or, for a remote one, when its node's
    // connection is lost; at once if it is already gone.
    handle->attach_functor([alive] { alive->store(false, std::memory_order_release); });
    next.push_back(instance{std::move(handle), std::move(alive)});
  }
  bool changed = next.size() != instances_.size();
  instances_ = std::move(next);
  instances_changed();
  if (changed)
    spdlog::debug("service '{}': {} instance(s)", name_, instances_.size());
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& w : waiting)
    w->resume(nullptr);
}

void service_ref_state::resolve_failed(caf::error err, time_point now) {
  resolving_ = false;
  resolved_at_ = now;
  auto code = classify(err);
  if (code == errc::service_unavailable || code == errc::interface_mismatch) {
    instances_.clear();
    instances_changed();
  }
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& w : waiting)
    w->resume(&err);
}

caf::error no_registry_error(const std::string& name) {
  return make_error(errc::service_unavailable, "cannot look up service '" + name +
                                                   "': no cluster registry on "
                                                   "this node");
}

caf::error resolve_timeout_error(const std::string& name) {
  return make_error(errc::timeout,
                    "looking up service '" + name + "' took the call's whole timeout");
}

} // namespace troupe::detail
