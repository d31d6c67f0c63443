#pragma once

// Header values as HTTP reads them: names and schemes compare without case,
// values are trimmed of blanks. Shared by the HTTP request path and the
// Authorization header of both gateways.

#include <algorithm>
#include <cctype>
#include <string_view>

namespace troupe::gateways::detail {

inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// `s` without leading and trailing spaces and tabs.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

} // namespace troupe::gateways::detail
