#pragma once

// Who is calling and what they may do: JWT bearer authentication, access
// rules by role, and a per-client rate limit. Transport-neutral and
// thread-safe; the gateways run every request through `api_backend`, which
// applies these.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <troupe/gateways/api_status.hpp>
#include <troupe/gateways/gateway_settings.hpp>

namespace troupe::gateways {

/// A caller as authentication established it.
struct caller {
  std::string subject;            ///< the token's `sub`; empty without authentication
  std::vector<std::string> roles; ///< from the roles claim
  bool authenticated = false;
};

/// Verifies `Authorization: Bearer <jwt>` values: signature (HS256 or RS256
/// only; `alg: none` and any other algorithm are refused), `iss`, `aud`,
/// `exp` and `nbf` within the leeway. Throws config_error at construction
/// when the key material cannot be read.
class authenticator {
public:
  explicit authenticator(auth_settings settings);
  ~authenticator();
  authenticator(const authenticator&) = delete;
  authenticator& operator=(const authenticator&) = delete;

  bool enabled() const noexcept;
  /// The caller, or UNAUTHENTICATED with a reason that names no secret.
  /// With authentication off every caller is anonymous and allowed.
  api_status authenticate(std::string_view authorization_header, caller& out) const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// What a request wants to do, for the access rules.
enum class api_action { start, read, cancel, invoke };

/// Checks callers against the access rules; PERMISSION_DENIED names the
/// action and target, never the caller's token.
class access_policy {
public:
  access_policy(access_rules rules, bool enforced);
  /// `target` is the saga type for start, "service/method" for invoke, empty otherwise.
  api_status check(const caller& who, api_action action, const std::string& target) const;

private:
  access_rules rules_;
  bool enforced_;
};

/// A token bucket per client key (the subject, else the peer's address);
/// RESOURCE_EXHAUSTED with a retry hint when a client's bucket is empty.
/// Keeps at most a bounded number of buckets, forgetting the idlest.
class client_rate_limiter {
public:
  client_rate_limiter(double rate_per_second, uint32_t burst,
                      std::size_t max_clients = 65536);
  ~client_rate_limiter();
  client_rate_limiter(const client_rate_limiter&) = delete;
  client_rate_limiter& operator=(const client_rate_limiter&) = delete;

  bool enabled() const noexcept;
  api_status acquire(const std::string& client_key);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::gateways
