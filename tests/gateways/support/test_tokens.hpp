#pragma once

// JSON Web Tokens for tests, made with libjwt:
//
//   auto claims = troupe::test::token_claims{}
//                     .subject("alice").issuer("tests").audience("troupe")
//                     .roles({"operator"}).expires_in(std::chrono::hours{1});
//   auto hs = troupe::test::hs256_token("secret", claims);
//   auto rs = troupe::test::rs256_token(private_key_pem, claims);
//   auto none = troupe::test::unsigned_token(claims); // alg "none", empty signature
//   std::string header = "Bearer " + hs;
//
// Times are relative to the system clock at the time the claims are built.
// Each maker throws std::runtime_error when libjwt refuses the input.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::test {

/// A token's payload, built claim by claim; `exp` is one hour from now by
/// default, every other claim is absent until set.
class token_claims {
public:
  token_claims& subject(std::string sub);
  token_claims& issuer(std::string iss);
  token_claims& audience(std::string aud);
  /// `aud` as a JSON array.
  token_claims& audiences(std::vector<std::string> aud);
  token_claims& roles(std::vector<std::string> roles, std::string claim = "roles");
  /// `exp` = now + d (negative: already expired).
  token_claims& expires_in(std::chrono::seconds d);
  token_claims& no_expiry();
  /// `nbf` = now + d.
  token_claims& not_before_in(std::chrono::seconds d);
  /// Any other claim as a JSON value text, e.g. extra("scope", "\"a b\"").
  token_claims& extra(std::string name, std::string json_value);

  /// The payload as a JSON object.
  std::string json() const;

private:
  std::vector<std::pair<std::string, std::string>> fields_; // name, JSON value
  std::optional<long long> exp_ = now_plus(std::chrono::hours{1});
  static long long now_plus(std::chrono::seconds d);
  void set(std::string name, std::string json_value);
};

std::string hs256_token(std::string_view secret, const token_claims& claims);
/// `private_key_pem` is the key file's content (see make_rsa_key_pair).
std::string rs256_token(std::string_view private_key_pem, const token_claims& claims);
/// Header {"alg":"none"}, the payload, and an empty signature, by hand.
std::string unsigned_token(const token_claims& claims);
/// Unpadded base64url, as JWT segments use.
std::string base64url(std::string_view bytes);

} // namespace troupe::test
