#pragma once

// Reading a node's /metrics (Prometheus text format) in tests.

#include <optional>
#include <string>

namespace troupe::test {

/// The sum of the samples of `family` whose labels contain `label` (every
/// sample when it is empty); nullopt when no sample matches.
inline std::optional<double> metric_samples_sum(const std::string& text,
                                                const std::string& family,
                                                const std::string& label = {}) {
  std::optional<double> sum;
  size_t pos = 0;
  while ((pos = text.find(family, pos)) != std::string::npos) {
    bool line_start = pos == 0 || text[pos - 1] == '\n';
    auto after = pos + family.size();
    pos = after;
    if (!line_start || after >= text.size() || (text[after] != ' ' && text[after] != '{'))
      continue;
    auto labels_end = text[after] == '{' ? text.find('}', after) : after;
    if (!label.empty() &&
        text.substr(after, labels_end - after).find(label) == std::string::npos)
      continue;
    auto space = text.find(' ', labels_end);
    sum = sum.value_or(0) +
          std::stod(text.substr(space + 1, text.find('\n', space) - space - 1));
  }
  return sum;
}

/// The sum of all samples of `family`; 0 when it has none.
inline double metric_sum(const std::string& text, const std::string& family) {
  return metric_samples_sum(text, family).value_or(0);
}

} // namespace troupe::test
