#include <troupe/gateways/security.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <list>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <troupe/actors/token_bucket.hpp>
#include <troupe/runtime/config.hpp>

#include "header_text.hpp"

namespace troupe::gateways {

namespace {

// Far above any real token; bounds the work an attacker can cause per request.
constexpr std::size_t max_token_bytes = 8 * 1024;

api_status unauthenticated(std::string message) {
  return api_status::failure(api_code::unauthenticated, std::move(message));
}

using detail::iequals;
using detail::trim;

int base64url_value(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

// JWT segments are unpadded base64url (RFC 7515 §2).
std::optional<std::string> base64url_decode(std::string_view in) {
  if (in.size() % 4 == 1)
    return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = base64url_value(c);
    if (v < 0)
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

std::optional<google::protobuf::Value> parse_json_value(std::string_view json) {
  google::protobuf::Value v;
  google::protobuf::util::JsonParseOptions opts;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece{json.data(), json.size()}, &v, opts);
  if (!st.ok())
    return std::nullopt;
  return v;
}

// A claim as JSON, parsed; nullopt when absent.
std::optional<google::protobuf::Value> claim(jwt_t* token, const std::string& name) {
  char* raw = jwt_get_grants_json(token, name.c_str());
  if (raw == nullptr)
    return std::nullopt;
  std::string text{raw};
  std::free(raw);
  auto v = parse_json_value(text);
  // A claim libjwt parsed is valid JSON; an unparsable one counts as a wrong type.
  if (!v)
    return google::protobuf::Value{};
  return v;
}

struct jwt_deleter {
  void operator()(jwt_t* p) const noexcept { jwt_free(p); }
};
using jwt_ptr = std::unique_ptr<jwt_t, jwt_deleter>;

std::string read_whole_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return {};
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// Whether `pem` holds an RSA public key OpenSSL can use, so a bad file fails
// at start rather than on every request.
bool is_rsa_public_key(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr)
    return false;
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr)
    return false;
  bool rsa = EVP_PKEY_base_id(key) == EVP_PKEY_RSA;
  EVP_PKEY_free(key);
  return rsa;
}

} // namespace

// --- authenticator ----------------------------------------------------------

struct authenticator::impl {
  auth_settings settings;
  std::string rs256_key; // PEM, read once

  api_status verify(std::string_view header, caller& out) const;
  api_status check_claims(jwt_t* token, caller& out) const;
};

authenticator::authenticator(auth_settings settings)
    : impl_(std::make_unique<impl>()) {
  impl_->settings = std::move(settings);
  const auto& s = impl_->settings;
  if (!s.enabled)
    return;
  if (s.hs256_secret.empty() && s.rs256_public_key_file.empty())
    throw config_error("gateways.auth.enabled",
                       "authentication is enabled but neither gateways.auth.hs256_secret "
                       "nor gateways.auth.rs256_public_key_file is set");
  if (!s.rs256_public_key_file.empty()) {
    impl_->rs256_key = read_whole_file(s.rs256_public_key_file);
    if (impl_->rs256_key.empty())
      throw config_error("gateways.auth.rs256_public_key_file",
                         "cannot read the RS256 public key file " +
                             s.rs256_public_key_file);
    if (!is_rsa_public_key(impl_->rs256_key))
      throw config_error("gateways.auth.rs256_public_key_file",
                         s.rs256_public_key_file + " holds no PEM RSA public key");
  }
}

authenticator::~authenticator() = default;

bool authenticator::enabled() const noexcept {
  return impl_->settings.enabled;
}

api_status authenticator::authenticate(std::string_view authorization_header,
                                       caller& out) const {
  out = caller{};
  if (!impl_->settings.enabled)
    return api_status::success();
  return impl_->verify(authorization_header, out);
}

api_status authenticator::impl::verify(std::string_view header, caller& out) const {
  header = trim(header);
  auto space = header.find_first_of(" \t");
  if (space == std::string_view::npos || !iequals(header.substr(0, space), "Bearer"))
    return unauthenticated("expected a Bearer token");
  auto token = trim(header.substr(space + 1));
  if (token.empty())
    return unauthenticated("expected a Bearer token");
  if (token.size() > max_token_bytes)
    return unauthenticated("token is too long");
  // Compact JWS: exactly three segments, and a signature is mandatory.
  auto dot1 = token.find('.');
  auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos ||
      token.find('.', dot2 + 1) != std::string_view::npos)
    return unauthenticated("malformed token");
  if (dot2 + 1 == token.size())
    return unauthenticated("token is not signed");

  // Choose the key by the header's algorithm ourselves: libjwt would use any
  // key with any algorithm it names, so an RS256 public key (which is public)
  // could verify an HS256 token signed with that key as the secret.
  auto head_json = base64url_decode(token.substr(0, dot1));
  if (!head_json)
    return unauthenticated("malformed token");
  auto head = parse_json_value(*head_json);
  if (!head || !head->has_struct_value())
    return unauthenticated("malformed token");
  const auto& fields = head->struct_value().fields();
  auto alg_it = fields.find("alg");
  if (alg_it == fields.end() || !alg_it->second.has_string_value() ||
      alg_it->second.string_value().empty())
    return unauthenticated("token names no algorithm");
  // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we
  // understand none.
  if (fields.count("crit") != 0)
    return unauthenticated("token names critical header extensions");
  const auto& alg = alg_it->second.string_value();
  jwt_alg_t expected;
  const std::string* key;
  if (alg == "HS256" && !settings.hs256_secret.empty()) {
    expected = JWT_ALG_HS256;
    key = &settings.hs256_secret;
  } else if (alg == "RS256" && !rs256_key.empty()) {
    expected = JWT_ALG_RS256;
    key = &rs256_key;
  } else {
    return unauthenticated("token algorithm is not accepted");
  }

  std::string text{token};
  jwt_t* raw = nullptr;
  int rc =
      jwt_decode(&raw, text.c_str(), reinterpret_cast<const unsigned char*>(key->data()),
                 static_cast<int>(key->size()));
  jwt_ptr decoded{raw};
  if (rc != 0 || !decoded)
    return unauthenticated("token signature is not valid");
  // libjwt read the header itself; it must agree with what chose the key.
  if (jwt_get_alg(decoded.get()) != expected)
    return unauthenticated("token algorithm is not accepted");
  return check_claims(decoded.get(), out);
}

api_status authenticator::impl::check_claims(jwt_t* token, caller& out) const {
  auto now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  auto leeway = static_cast<double>(settings.leeway.count());

  auto exp = claim(token, "exp");
  if (!exp)
    return unauthenticated("token has no expiry (exp)");
  if (!exp->has_number_value())
    return unauthenticated("token expiry (exp) is not a number");
  if (exp->number_value() <= now - leeway)
    return unauthenticated("token has expired");

  if (auto nbf = claim(token, "nbf")) {
    if (!nbf->has_number_value())
      return unauthenticated("token not-before (nbf) is not a number");
    if (nbf->number_value() > now + leeway)
      return unauthenticated("token is not valid yet");
  }

  if (!settings.issuer.empty()) {
    auto iss = claim(token, "iss");
    if (!iss || !iss->has_string_value() || iss->string_value() != settings.issuer)
      return unauthenticated("token issuer is not accepted");
  }

  if (!settings.audience.empty()) {
    bool found = false;
    if (auto aud = claim(token, "aud")) {
      if (aud->has_string_value()) {
        found = aud->string_value() == settings.audience;
      } else if (aud->has_list_value()) {
        for (const auto& v : aud->list_value().values())
          if (v.has_string_value() && v.string_value() == settings.audience)
            found = true;
      }
    }
    if (!found)
      return unauthenticated("token audience is not accepted");
  }

  if (auto sub = claim(token, "sub"); sub && sub->has_string_value())
    out.subject = sub->string_value();

  if (!settings.roles_claim.empty()) {
    if (auto roles = claim(token, settings.roles_claim)) {
      if (roles->has_list_value()) {
        for (const auto& v : roles->list_value().values())
          if (v.has_string_value() && !v.string_value().empty())
            out.roles.push_back(v.string_value());
      } else if (roles->has_string_value()) {
        // OAuth's `scope` style: one space-separated string.
        std::istringstream words{roles->string_value()};
        for (std::string w; words >> w;)
          out.roles.push_back(w);
      } else {
        return unauthenticated("token roles claim is neither a list nor a string");
      }
    }
  }
  out.authenticated = true;
  return api_status::success();
}

// --- access_policy ----------------------------------------------------------

namespace {

bool has_role(const caller& who, std::string_view role) {
  if (role == "*")
    return true;
  return std::find(who.roles.begin(), who.roles.end(), role) != who.roles.end();
}

// "target:role" entries; an entry without a colon is a role for every
// target. The last colon splits, so a target may contain colons.
bool targeted_allows(const std::vector<std::string>& entries, const caller& who,
                     const std::string& target) {
  if (entries.empty())
    return true;
  for (const auto& entry : entries) {
    auto colon = entry.rfind(':');
    if (colon == std::string::npos) {
      if (has_role(who, entry))
        return true;
      continue;
    }
    std::string_view pattern{entry.data(), colon};
    std::string_view role{entry.data() + colon + 1, entry.size() - colon - 1};
    if ((pattern == "*" || pattern == target) && has_role(who, role))
      return true;
  }
  return false;
}

bool plain_allows(const std::vector<std::string>& roles, const caller& who) {
  if (roles.empty())
    return true;
  return std::any_of(roles.begin(), roles.end(),
                     [&](const std::string& r) { return has_role(who, r); });
}

} // namespace

access_policy::access_policy(access_rules rules, bool enforced)
    : rules_(std::move(rules))
    , enforced_(enforced) {}

api_status access_policy::check(const caller& who, api_action action,
                                const std::string& target) const {
  if (!enforced_)
    return api_status::success();
  if (!who.authenticated)
    return unauthenticated("authentication required");
  switch (action) {
  case api_action::start:
    if (targeted_allows(rules_.start, who, target))
      return api_status::success();
    return api_status::failure(api_code::permission_denied,
                               "not allowed to start sagas of type '" + target + "'");
  case api_action::read:
    if (plain_allows(rules_.read, who))
      return api_status::success();
    return api_status::failure(api_code::permission_denied, "not allowed to read sagas");
  case api_action::cancel:
    if (plain_allows(rules_.cancel, who))
      return api_status::success();
    return api_status::failure(api_code::permission_denied,
                               "not allowed to cancel sagas");
  case api_action::invoke:
    if (targeted_allows(rules_.invoke, who, target))
      return api_status::success();
    return api_status::failure(api_code::permission_denied,
                               "not allowed to invoke " + target);
  }
  return api_status::failure(api_code::permission_denied, "not allowed");
}

// --- client_rate_limiter ----------------------------------------------------

struct client_rate_limiter::impl {
  using clock = std::chrono::steady_clock;

  struct entry {
    std::string key;
    resilience::token_bucket bucket;
  };

  double rate;
  double burst;
  std::size_t max_clients;
  std::mutex mtx;
  // Most recently used first: the back is the idlest, evicted when full.
  std::list<entry> lru;
  std::unordered_map<std::string_view, std::list<entry>::iterator> index;
};

client_rate_limiter::client_rate_limiter(double rate_per_second, uint32_t burst,
                                         std::size_t max_clients)
    : impl_(std::make_unique<impl>()) {
  impl_->rate = rate_per_second;
  impl_->burst = std::max<uint32_t>(burst, 1);
  impl_->max_clients = std::max<std::size_t>(max_clients, 1);
}

client_rate_limiter::~client_rate_limiter() = default;

bool client_rate_limiter::enabled() const noexcept {
  return impl_->rate > 0;
}

api_status client_rate_limiter::acquire(const std::string& client_key) {
  if (!enabled())
    return api_status::success();
  auto now = impl::clock::now();
  std::chrono::nanoseconds wait{0};
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    auto& m = *impl_;
    auto it = m.index.find(client_key);
    std::list<impl::entry>::iterator pos;
    if (it != m.index.end()) {
      pos = it->second;
      m.lru.splice(m.lru.begin(), m.lru, pos);
    } else {
      if (m.lru.size() >= m.max_clients) {
        m.index.erase(m.lru.back().key);
        m.lru.pop_back();
      }
      m.lru.push_front(impl::entry{client_key, {m.rate, m.burst, now}});
      pos = m.lru.begin();
      // The key view points into the list node, which never moves.
      m.index.emplace(pos->key, pos);
    }
    if (pos->bucket.try_take(now))
      return api_status::success();
    wait = pos->bucket.time_to_next(now);
  }
  auto seconds = std::chrono::duration<double>(wait).count();
  auto st =
      api_status::failure(api_code::resource_exhausted, "rate limit exceeded; slow down");
  st.details = "troupe.rate_limited";
  st.retry_after = std::chrono::seconds{
      std::max<long long>(1, static_cast<long long>(std::ceil(seconds)))};
  return st;
}

} // namespace troupe::gateways
