#include <troupe/sagas/saga_definition.hpp>

namespace troupe {

std::vector<const step_definition*> saga_definition::steps() const {
  std::vector<const step_definition*> out;
  for (auto& group : groups)
    for (auto& s : group)
      out.push_back(&s);
  return out;
}

} // namespace troupe
