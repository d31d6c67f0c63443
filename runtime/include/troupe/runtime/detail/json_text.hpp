#pragma once

// JSON string quoting shared by the JSON logs, the status endpoint and the
// gateways' hand-written replies.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::detail {

/// Length of the well-formed UTF-8 sequence at the start of `s` (1 to 4),
/// or 0 when it is not one (overlong, surrogate, beyond U+10FFFF, cut off).
inline size_t utf8_sequence_length(std::string_view s) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  auto c = b(0);
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2))
      return 0;
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F))
      return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3))
      return 0;
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) > 0x8F))
      return 0;
    return 4;
  }
  return 0;
}

/// Appends `s` to `out` as a quoted JSON string. Bytes that are not UTF-8
/// become U+FFFD, so the result is always valid JSON whatever `s` holds.
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20) {
        out += "\\u00";
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xF]);
      } else if (auto n = utf8_sequence_length(s.substr(i)); n > 0) {
        out.append(s.data() + i, n);
        i += n;
        continue;
      } else {
        out += "\xEF\xBF\xBD";
      }
    }
    ++i;
  }
  out.push_back('"');
}

} // namespace troupe::detail
