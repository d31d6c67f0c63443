// The security layer without a node: JWT bearer authentication, access rules
// by role, and the per-client rate limit.

#include <troupe/gateways/security.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <troupe/runtime/config.hpp>

#include "gateways/support/test_tokens.hpp"
#include "support/node_process.hpp"
#include "support/test_certs.hpp"

namespace {

using namespace std::chrono_literals;
using namespace troupe::gateways;
using namespace troupe::test;

const std::string secret = "a-shared-secret-for-tests-0123456789";

// One RSA key pair for the whole run: generating one takes a moment.
struct rsa_material {
  temp_dir dir;
  rsa_key_pair files = make_rsa_key_pair(dir.path());
  std::string private_pem = read_text_file(files.private_key);
  std::string public_pem = read_text_file(files.public_key);
};

const rsa_material& rsa() {
  static rsa_material material;
  return material;
}

auth_settings hs256_settings() {
  auth_settings s;
  s.enabled = true;
  s.issuer = "troupe-tests";
  s.audience = "troupe";
  s.hs256_secret = secret;
  return s;
}

auth_settings rs256_settings() {
  auto s = hs256_settings();
  s.hs256_secret.clear();
  s.rs256_public_key_file = rsa().files.public_key.string();
  return s;
}

token_claims good_claims() {
  return token_claims{}.subject("alice").issuer("troupe-tests").audience("troupe");
}

api_status check(const authenticator& auth, const std::string& header,
                 caller* who = nullptr) {
  caller c;
  auto st = auth.authenticate(header, c);
  if (who != nullptr)
    *who = c;
  return st;
}

// A refusal says why, and never repeats the token or a secret.
void require_refused(const api_status& st, const std::string& token) {
  REQUIRE(st.code == api_code::unauthenticated);
  CHECK_FALSE(st.message.empty());
  if (!token.empty())
    CHECK(st.message.find(token) == std::string::npos);
  CHECK(st.message.find(secret) == std::string::npos);
  CHECK(st.details.find(secret) == std::string::npos);
}

// A token with a header of our own choosing, signed with HMAC-SHA256.
std::string hs256_signed(const std::string& header, const std::string& payload,
                         const std::string& key) {
  auto input = base64url(header) + "." + base64url(payload);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + base64url(std::string_view{reinterpret_cast<char*>(mac), len});
}

caller with_roles(std::vector<std::string> roles) {
  caller c;
  c.subject = "alice";
  c.roles = std::move(roles);
  c.authenticated = true;
  return c;
}

} // namespace

// --- authentication ---------------------------------------------------------

TEST_CASE("an HS256 token with the right issuer, audience and expiry is accepted") {
  authenticator auth{hs256_settings()};
  caller who;
  auto st = check(auth, "Bearer " + hs256_token(secret, good_claims()), &who);
  REQUIRE(st.ok());
  CHECK(who.authenticated);
  CHECK(who.subject == "alice");
}

TEST_CASE("an RS256 token signed by the configured key pair is accepted") {
  authenticator auth{rs256_settings()};
  caller who;
  auto st = check(auth, "Bearer " + rs256_token(rsa().private_pem, good_claims()), &who);
  REQUIRE(st.ok());
  CHECK(who.subject == "alice");
}

TEST_CASE("with both keys configured, HS256 and RS256 tokens are each accepted") {
  auto s = rs256_settings();
  s.hs256_secret = secret;
  authenticator auth{s};
  CHECK(check(auth, "Bearer " + hs256_token(secret, good_claims())).ok());
  CHECK(check(auth, "Bearer " + rs256_token(rsa().private_pem, good_claims())).ok());
}

TEST_CASE("the Bearer scheme is matched without regard to case") {
  authenticator auth{hs256_settings()};
  CHECK(check(auth, "bearer " + hs256_token(secret, good_claims())).ok());
  CHECK(check(auth, "BEARER   " + hs256_token(secret, good_claims())).ok());
}

TEST_CASE("an expired token is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims().expires_in(-1h));
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("expired") != std::string::npos);
}

TEST_CASE("a token expired by less than the leeway is still accepted") {
  authenticator auth{hs256_settings()}; // leeway 30 s
  CHECK(check(auth, "Bearer " + hs256_token(secret, good_claims().expires_in(-5s))).ok());
}

TEST_CASE("a token without an expiry is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims().no_expiry());
  require_refused(check(auth, "Bearer " + token), token);
}

TEST_CASE("a token whose expiry is not a number is refused") {
  authenticator auth{hs256_settings()};
  auto token =
      hs256_token(secret, good_claims().no_expiry().extra("exp", "\"tomorrow\""));
  require_refused(check(auth, "Bearer " + token), token);
}

TEST_CASE("a token that is not valid yet is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims().not_before_in(1h));
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("not valid yet") != std::string::npos);
}

TEST_CASE("a token whose not-before has passed is accepted") {
  authenticator auth{hs256_settings()};
  CHECK(check(auth, "Bearer " + hs256_token(secret, good_claims().not_before_in(-1min)))
            .ok());
}

TEST_CASE("a token for another audience is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims().audience("someone-else"));
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("audience") != std::string::npos);
  auto list = hs256_token(secret, good_claims().audiences({"a", "b"}));
  require_refused(check(auth, "Bearer " + list), list);
  auto none = hs256_token(secret, token_claims{}.subject("alice").issuer("troupe-tests"));
  require_refused(check(auth, "Bearer " + none), none);
}

TEST_CASE("a token whose audience list contains ours is accepted") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims().audiences({"billing", "troupe"}));
  CHECK(check(auth, "Bearer " + token).ok());
}

TEST_CASE("a token from another issuer is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims().issuer("mallory"));
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("issuer") != std::string::npos);
  auto none = hs256_token(secret, token_claims{}.subject("alice").audience("troupe"));
  require_refused(check(auth, "Bearer " + none), none);
}

TEST_CASE("without a configured issuer and audience, any issuer and audience pass") {
  auto s = hs256_settings();
  s.issuer.clear();
  s.audience.clear();
  authenticator auth{s};
  CHECK(check(auth, "Bearer " + hs256_token(secret, token_claims{}.subject("x"))).ok());
}

TEST_CASE("a token signed with another secret is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token("some-other-secret", good_claims());
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("signature") != std::string::npos);
}

TEST_CASE("a token whose payload was changed after signing is refused") {
  authenticator auth{hs256_settings()};
  auto token = hs256_token(secret, good_claims());
  auto first_dot = token.find('.');
  auto second_dot = token.find('.', first_dot + 1);
  auto forged = token.substr(0, first_dot + 1) +
                base64url(good_claims().subject("root").json()) +
                token.substr(second_dot);
  require_refused(check(auth, "Bearer " + forged), forged);
}

TEST_CASE("an RS256 token signed by another key pair is refused") {
  authenticator auth{rs256_settings()};
  temp_dir dir;
  auto other = make_rsa_key_pair(dir.path(), "other");
  auto token = rs256_token(read_text_file(other.private_key), good_claims());
  require_refused(check(auth, "Bearer " + token), token);
}

TEST_CASE("an unsigned token (alg none) is refused") {
  auto s = rs256_settings();
  s.hs256_secret = secret;
  authenticator auth{s};
  auto token = unsigned_token(good_claims());
  require_refused(check(auth, "Bearer " + token), token);
  // The same with a made-up signature, and with "None" spelt otherwise.
  require_refused(check(auth, "Bearer " + token + "c2ln"), token);
  auto other_case = base64url(R"({"alg":"None"})") + "." +
                    base64url(good_claims().json()) + "." + base64url("sig");
  require_refused(check(auth, "Bearer " + other_case), other_case);
}

TEST_CASE("a request without an Authorization header is refused") {
  authenticator auth{hs256_settings()};
  auto st = check(auth, "");
  require_refused(st, "");
  CHECK(st.message == "expected a Bearer token");
  require_refused(check(auth, "Bearer"), "");
  require_refused(check(auth, "Bearer   "), "");
}

TEST_CASE("an Authorization header with another scheme is refused") {
  authenticator auth{hs256_settings()};
  auto st = check(auth, "Basic YWxpY2U6c2VjcmV0");
  require_refused(st, "YWxpY2U6c2VjcmV0");
  CHECK(st.message == "expected a Bearer token");
  auto token = hs256_token(secret, good_claims());
  require_refused(check(auth, token), token); // no scheme at all
}

TEST_CASE("garbage in place of a token is refused") {
  authenticator auth{hs256_settings()};
  for (const std::string& junk : std::vector<std::string>{
           "x", "a.b", "a.b.c", "a.b.c.d", "...", "!!!.###.$$$",
           "eyJhbGciOiJIUzI1NiJ9..sig",
           base64url("not json") + "." + base64url("{}") + ".c2ln",
           base64url("[1,2]") + "." + base64url("{}") + ".c2ln",
           base64url(R"({"alg":7})") + "." + base64url("{}") + ".c2ln",
           base64url(R"({"alg":"HS256"})") + "." + base64url("not json") + ".c2ln",
           std::string(20000, 'a')}) {
    INFO(junk.substr(0, 80));
    require_refused(check(auth, "Bearer " + junk), junk.size() > 3 ? junk : "");
  }
}

TEST_CASE("an RS256 token is refused when only HS256 is configured") {
  authenticator auth{hs256_settings()};
  auto token = rs256_token(rsa().private_pem, good_claims());
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("algorithm") != std::string::npos);
}

TEST_CASE("an HS256 token is refused when only RS256 is configured") {
  authenticator auth{rs256_settings()};
  auto token = hs256_token(secret, good_claims());
  require_refused(check(auth, "Bearer " + token), token);
}

TEST_CASE(
    "an HS256 token keyed with the RSA public key is refused (algorithm confusion)") {
  // The public key is public: were it used as an HMAC secret, anyone could
  // sign tokens.
  auto token = hs256_token(rsa().public_pem, good_claims());
  {
    authenticator auth{rs256_settings()};
    require_refused(check(auth, "Bearer " + token), token);
  }
  {
    auto s = rs256_settings();
    s.hs256_secret = secret;
    authenticator auth{s};
    require_refused(check(auth, "Bearer " + token), token);
  }
}

TEST_CASE("a token with an algorithm other than HS256 and RS256 is refused") {
  authenticator auth{hs256_settings()};
  auto token = base64url(R"({"alg":"HS384","typ":"JWT"})") + "." +
               base64url(good_claims().json()) + "." + base64url("signature");
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("algorithm") != std::string::npos);
}

TEST_CASE("a token with critical header extensions is refused") {
  // Signed correctly, so only the header's `crit` can be the reason.
  authenticator auth{hs256_settings()};
  auto token = hs256_signed(R"({"alg":"HS256","crit":["exp-x"],"exp-x":1})",
                            good_claims().json(), secret);
  auto st = check(auth, "Bearer " + token);
  require_refused(st, token);
  CHECK(st.message.find("critical") != std::string::npos);
  // The same signing, without `crit`, passes: the helper signs correctly.
  CHECK(check(auth, "Bearer " +
                        hs256_signed(R"({"alg":"HS256"})", good_claims().json(), secret))
            .ok());
}

TEST_CASE("roles come from the roles claim as a list or a space-separated string") {
  SECTION("a list") {
    authenticator auth{hs256_settings()};
    caller who;
    REQUIRE(check(auth,
                  "Bearer " + hs256_token(secret, good_claims().roles({"ops", "audit"})),
                  &who)
                .ok());
    CHECK(who.roles == std::vector<std::string>{"ops", "audit"});
  }
  SECTION("a string under a configured claim name") {
    auto s = hs256_settings();
    s.roles_claim = "scope";
    authenticator auth{s};
    caller who;
    REQUIRE(check(auth,
                  "Bearer " +
                      hs256_token(secret, good_claims().extra("scope", "\"ops  audit\"")),
                  &who)
                .ok());
    CHECK(who.roles == std::vector<std::string>{"ops", "audit"});
  }
  SECTION("no claim: no roles") {
    authenticator auth{hs256_settings()};
    caller who;
    REQUIRE(check(auth, "Bearer " + hs256_token(secret, good_claims()), &who).ok());
    CHECK(who.roles.empty());
  }
  SECTION("a claim of another type is refused") {
    authenticator auth{hs256_settings()};
    auto token = hs256_token(secret, good_claims().extra("roles", "42"));
    require_refused(check(auth, "Bearer " + token), token);
  }
}

TEST_CASE("with authentication off every caller is anonymous and allowed") {
  authenticator auth{auth_settings{}};
  CHECK_FALSE(auth.enabled());
  caller who;
  who.subject = "stale";
  REQUIRE(check(auth, "", &who).ok());
  CHECK_FALSE(who.authenticated);
  CHECK(who.subject.empty());
  CHECK(check(auth, "Basic whatever").ok());
}

TEST_CASE("an unreadable RS256 public key file is a configuration error naming the key") {
  auto s = rs256_settings();
  s.rs256_public_key_file = "/nonexistent/troupe/jwt.pub";
  try {
    authenticator auth{s};
    FAIL("no config_error");
  } catch (const troupe::config_error& e) {
    CHECK(e.key() == "gateways.auth.rs256_public_key_file");
  }
}

TEST_CASE("an RS256 public key file without a public key is a configuration error") {
  temp_dir dir;
  auto s = rs256_settings();
  s.rs256_public_key_file = dir.write("not-a-key.pem", "hello\n").string();
  CHECK_THROWS_AS(authenticator{s}, troupe::config_error);
}

TEST_CASE("authentication enabled without any key is a configuration error") {
  auth_settings s;
  s.enabled = true;
  CHECK_THROWS_AS(authenticator{s}, troupe::config_error);
}

TEST_CASE("one authenticator serves many threads at once") {
  authenticator auth{rs256_settings()};
  auto good = "Bearer " + rs256_token(rsa().private_pem, good_claims());
  auto bad = "Bearer " + rs256_token(rsa().private_pem, good_claims().expires_in(-1h));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        caller who;
        if (!auth.authenticate(good, who).ok() || who.subject != "alice")
          ++wrong;
        if (auth.authenticate(bad, who).ok())
          ++wrong;
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(wrong == 0);
}

// --- access rules -----------------------------------------------------------

TEST_CASE("with enforcement off every action is allowed, even to anonymous callers") {
  access_rules rules;
  rules.start = {"order_processing:ops"};
  rules.read = {"audit"};
  rules.cancel = {"ops"};
  rules.invoke = {"greeter/greet:ops"};
  access_policy policy{rules, false};
  caller anonymous;
  CHECK(policy.check(anonymous, api_action::start, "order_processing").ok());
  CHECK(policy.check(anonymous, api_action::read, "").ok());
  CHECK(policy.check(anonymous, api_action::cancel, "").ok());
  CHECK(policy.check(anonymous, api_action::invoke, "greeter/greet").ok());
}

TEST_CASE("empty access lists allow every authenticated caller") {
  access_policy policy{access_rules{}, true};
  auto who = with_roles({});
  CHECK(policy.check(who, api_action::start, "order_processing").ok());
  CHECK(policy.check(who, api_action::read, "").ok());
  CHECK(policy.check(who, api_action::cancel, "").ok());
  CHECK(policy.check(who, api_action::invoke, "greeter/greet").ok());
}

TEST_CASE("an unauthenticated caller is refused when the rules are enforced") {
  access_policy policy{access_rules{}, true};
  CHECK(policy.check(caller{}, api_action::read, "").code == api_code::unauthenticated);
}

TEST_CASE("starting a saga type needs a role the rules grant for that type") {
  access_rules rules;
  rules.start = {"order_processing:ops", "refund:finance"};
  access_policy policy{rules, true};
  CHECK(policy.check(with_roles({"ops"}), api_action::start, "order_processing").ok());
  CHECK(policy.check(with_roles({"finance"}), api_action::start, "refund").ok());
  auto denied = policy.check(with_roles({"ops"}), api_action::start, "refund");
  CHECK(denied.code == api_code::permission_denied);
  CHECK(denied.message.find("start") != std::string::npos);
  CHECK(denied.message.find("refund") != std::string::npos);
  CHECK(policy.check(with_roles({}), api_action::start, "order_processing").code ==
        api_code::permission_denied);
}

TEST_CASE("a wildcard start rule grants a role every saga type") {
  access_rules rules;
  rules.start = {"*:admin", "order_processing:ops"};
  access_policy policy{rules, true};
  CHECK(policy.check(with_roles({"admin"}), api_action::start, "anything").ok());
  CHECK(policy.check(with_roles({"admin"}), api_action::start, "order_processing").ok());
  CHECK(policy.check(with_roles({"ops"}), api_action::start, "anything").code ==
        api_code::permission_denied);
}

TEST_CASE("reading and cancelling need one of the listed roles") {
  access_rules rules;
  rules.read = {"audit", "ops"};
  rules.cancel = {"ops"};
  access_policy policy{rules, true};
  CHECK(policy.check(with_roles({"audit"}), api_action::read, "").ok());
  CHECK(policy.check(with_roles({"guest", "ops"}), api_action::cancel, "").ok());
  auto denied = policy.check(with_roles({"audit"}), api_action::cancel, "");
  CHECK(denied.code == api_code::permission_denied);
  CHECK(denied.message.find("cancel") != std::string::npos);
  CHECK(policy.check(with_roles({"guest"}), api_action::read, "").code ==
        api_code::permission_denied);
}

TEST_CASE("invoking a method needs a role granted for that service and method") {
  access_rules rules;
  rules.invoke = {"greeter/greet:ops", "*:admin"};
  access_policy policy{rules, true};
  CHECK(policy.check(with_roles({"ops"}), api_action::invoke, "greeter/greet").ok());
  CHECK(
      policy.check(with_roles({"admin"}), api_action::invoke, "inventory/restock").ok());
  auto denied =
      policy.check(with_roles({"ops"}), api_action::invoke, "inventory/restock");
  CHECK(denied.code == api_code::permission_denied);
  CHECK(denied.message.find("inventory/restock") != std::string::npos);
}

// --- rate limit -------------------------------------------------------------

TEST_CASE("a rate limit of zero lets every request through") {
  client_rate_limiter limiter{0, 1};
  CHECK_FALSE(limiter.enabled());
  for (int i = 0; i < 1000; ++i)
    REQUIRE(limiter.acquire("client").ok());
}

TEST_CASE("a client may send a burst, then is refused with a retry hint") {
  // One token per 100 s: nothing refills while the test runs.
  client_rate_limiter limiter{0.01, 3};
  REQUIRE(limiter.enabled());
  for (int i = 0; i < 3; ++i)
    REQUIRE(limiter.acquire("alice").ok());
  auto refused = limiter.acquire("alice");
  CHECK(refused.code == api_code::resource_exhausted);
  CHECK(refused.retry_after >= 1s);
  CHECK(refused.retry_after <= 100s);
  CHECK_FALSE(refused.message.empty());
}

TEST_CASE("the retry hint is at least one second even when a token is near") {
  // A token every 10 ms: the next one is always less than a second away.
  client_rate_limiter limiter{100, 1};
  REQUIRE(limiter.acquire("alice").ok());
  api_status refused;
  for (int i = 0; i < 10000 && refused.ok(); ++i)
    refused = limiter.acquire("alice");
  REQUIRE(refused.code == api_code::resource_exhausted);
  CHECK(refused.retry_after == 1s);
}

TEST_CASE("clients have separate buckets") {
  client_rate_limiter limiter{0.01, 2};
  REQUIRE(limiter.acquire("alice").ok());
  REQUIRE(limiter.acquire("alice").ok());
  REQUIRE_FALSE(limiter.acquire("alice").ok());
  CHECK(limiter.acquire("bob").ok());
  CHECK(limiter.acquire("bob").ok());
  CHECK_FALSE(limiter.acquire("bob").ok());
}

TEST_CASE("a full limiter forgets the idlest client to stay bounded") {
  client_rate_limiter limiter{0.01, 1, 2};
  REQUIRE(limiter.acquire("a").ok());
  REQUIRE(limiter.acquire("b").ok());
  REQUIRE(limiter.acquire("c").ok());     // forgets a
  CHECK_FALSE(limiter.acquire("b").ok()); // still known, and now the most recent
  CHECK(limiter.acquire("a").ok());       // a fresh bucket; forgets c
  CHECK(limiter.acquire("c").ok());       // c was forgotten too; forgets b
  CHECK_FALSE(limiter.acquire("c").ok());
}

TEST_CASE("the limiter is safe to use from many threads") {
  client_rate_limiter limiter{0.01, 50, 16};
  std::atomic<int> allowed{0};
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 500; ++i)
          if (limiter.acquire("shared").ok())
            ++allowed;
      });
    for (auto& t : threads)
      t.join();
  }
  CHECK(allowed == 50);
  // Many more clients than slots, from several threads: evictions race with
  // lookups.
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 200; ++i)
          (void)limiter.acquire("t" + std::to_string(t) + "-" + std::to_string(i % 40));
      });
    for (auto& t : threads)
      t.join();
  }
  CHECK(limiter.acquire("a newcomer").ok());
}
