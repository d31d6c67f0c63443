#include <troupe/gateways/api_catalog.hpp>

namespace troupe::gateways {

const api_catalog::saga_binding* api_catalog::find_saga(const std::string& type) const {
  auto i = sagas_.find(type);
  return i == sagas_.end() ? nullptr : &i->second;
}

const api_catalog::call_binding* api_catalog::find_call(const std::string& service,
                                                        const std::string& method) const {
  auto i = calls_.find({service, method});
  return i == calls_.end() ? nullptr : &i->second;
}

std::vector<std::string> api_catalog::saga_types() const {
  std::vector<std::string> out;
  for (const auto& [type, binding] : sagas_)
    out.push_back(type);
  return out;
}

} // namespace troupe::gateways
