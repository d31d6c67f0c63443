#pragma once

#include <cstdint>

#include <troupe/runtime/token_bucket.hpp>

namespace troupe::resilience {

/// Whose calls one token bucket limits.
enum class rate_limit_scope : uint8_t {
  dependency, ///< one bucket for all callers of the dependency
  caller,     ///< one bucket per calling actor
};

struct rate_limit_settings {
  bool enabled = false;
  double rate = 100.0; ///< tokens added per second
  double burst = 100;  ///< bucket size: calls allowed at once after a quiet period
  rate_limit_scope scope = rate_limit_scope::dependency;
};

using token_bucket = troupe::token_bucket;

} // namespace troupe::resilience
