#pragma once

#include <functional>
#include <string>
#include <vector>

#include <caf/actor_system_config.hpp>

namespace troupe {

/// The one list of message types that may cross nodes. Every node of a
/// cluster must register the same types under the same names; troupe's own
/// (call_context, cluster protocol) are always included.
class message_catalog {
public:
  message_catalog();

  /// Registers `T` (which needs an `inspect` overload) under `name`.
  template <class T>
  message_catalog& add(std::string name) {
    names_.push_back(name);
    entries_.push_back(
        [name](caf::actor_system_config& cfg) { cfg.add_message_type<T>(name); });
    return *this;
  }

  /// Applies every registration to a CAF configuration (before the system starts).
  void apply_to(caf::actor_system_config& cfg) const;
  const std::vector<std::string>& names() const noexcept { return names_; }

private:
  std::vector<std::string> names_;
  std::vector<std::function<void(caf::actor_system_config&)>> entries_;
};

} // namespace troupe
