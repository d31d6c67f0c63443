#include <troupe/runtime/detail/pem_material.hpp>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace troupe::detail {

bool is_pem_text(const std::string& value) {
  return value.find("-----BEGIN ") != std::string::npos;
}

std::string pem_material(const std::string& value, const char* key) {
  if (is_pem_text(value))
    return value;
  std::ifstream in{value, std::ios::binary};
  if (!in)
    throw std::runtime_error(std::string{key} + ": cannot read '" + value + "'");
  std::ostringstream text;
  text << in.rdbuf();
  auto out = text.str();
  if (out.empty())
    throw std::runtime_error(std::string{key} + ": '" + value + "' is empty");
  return out;
}

std::string pem_source(const std::string& value) {
  return is_pem_text(value) ? std::string{"the PEM text given"} : "'" + value + "'";
}

} // namespace troupe::detail
