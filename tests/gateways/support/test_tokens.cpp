#include "gateways/support/test_tokens.hpp"

#include <cstdlib>
#include <memory>
#include <stdexcept>

#include <jwt.h>

namespace troupe::test {

namespace {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

struct jwt_deleter {
  void operator()(jwt_t* p) const noexcept { jwt_free(p); }
};

std::string signed_token(jwt_alg_t alg, std::string_view key,
                         const token_claims& claims) {
  jwt_t* raw = nullptr;
  if (jwt_new(&raw) != 0)
    throw std::runtime_error("jwt_new failed");
  std::unique_ptr<jwt_t, jwt_deleter> token{raw};
  if (jwt_add_grants_json(token.get(), claims.json().c_str()) != 0)
    throw std::runtime_error("libjwt refused the claims " + claims.json());
  if (jwt_set_alg(token.get(), alg, reinterpret_cast<const unsigned char*>(key.data()),
                  static_cast<int>(key.size())) != 0)
    throw std::runtime_error("libjwt refused the key");
  char* text = jwt_encode_str(token.get());
  if (text == nullptr)
    throw std::runtime_error("libjwt could not sign the token");
  std::string out{text};
  std::free(text);
  return out;
}

} // namespace

long long token_claims::now_plus(std::chrono::seconds d) {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch() + d)
      .count();
}

void token_claims::set(std::string name, std::string json_value) {
  for (auto& f : fields_)
    if (f.first == name) {
      f.second = std::move(json_value);
      return;
    }
  fields_.emplace_back(std::move(name), std::move(json_value));
}

token_claims& token_claims::subject(std::string sub) {
  set("sub", json_string(sub));
  return *this;
}

token_claims& token_claims::issuer(std::string iss) {
  set("iss", json_string(iss));
  return *this;
}

token_claims& token_claims::audience(std::string aud) {
  set("aud", json_string(aud));
  return *this;
}

token_claims& token_claims::audiences(std::vector<std::string> aud) {
  std::string list = "[";
  for (size_t i = 0; i < aud.size(); ++i)
    list += (i > 0 ? "," : "") + json_string(aud[i]);
  set("aud", list + "]");
  return *this;
}

token_claims& token_claims::roles(std::vector<std::string> roles, std::string claim) {
  std::string list = "[";
  for (size_t i = 0; i < roles.size(); ++i)
    list += (i > 0 ? "," : "") + json_string(roles[i]);
  set(std::move(claim), list + "]");
  return *this;
}

token_claims& token_claims::expires_in(std::chrono::seconds d) {
  exp_ = now_plus(d);
  return *this;
}

token_claims& token_claims::no_expiry() {
  exp_.reset();
  return *this;
}

token_claims& token_claims::not_before_in(std::chrono::seconds d) {
  set("nbf", std::to_string(now_plus(d)));
  return *this;
}

token_claims& token_claims::extra(std::string name, std::string json_value) {
  set(std::move(name), std::move(json_value));
  return *this;
}

std::string token_claims::json() const {
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::string& name, const std::string& value) {
    out += (first ? "" : ",") + json_string(name) + ":" + value;
    first = false;
  };
  if (exp_)
    add("exp", std::to_string(*exp_));
  for (const auto& [name, value] : fields_)
    add(name, value);
  return out + "}";
}

std::string hs256_token(std::string_view secret, const token_claims& claims) {
  return signed_token(JWT_ALG_HS256, secret, claims);
}

std::string rs256_token(std::string_view private_key_pem, const token_claims& claims) {
  return signed_token(JWT_ALG_RS256, private_key_pem, claims);
}

std::string unsigned_token(const token_claims& claims) {
  return base64url(R"({"alg":"none","typ":"JWT"})") + "." + base64url(claims.json()) +
         ".";
}

std::string base64url(std::string_view bytes) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(alphabet[(acc >> bits) & 0x3F]);
    }
  }
  if (bits > 0)
    out.push_back(alphabet[(acc << (6 - bits)) & 0x3F]);
  return out;
}

} // namespace troupe::test
