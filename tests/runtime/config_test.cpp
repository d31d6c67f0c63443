#include <troupe/runtime/config.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using troupe::config;
using troupe::config_error;
using troupe::config_schema;
using troupe::config_sources;
using troupe::value_kind;

namespace {

/// A directory of its own under the system temp dir, removed with everything
/// in it when the test ends, so parallel test runs cannot collide.
class temp_dir {
public:
  temp_dir() {
    std::random_device rd;
    std::mt19937_64 gen{(static_cast<uint64_t>(rd()) << 32) ^ rd()};
    path_ = std::filesystem::temp_directory_path() /
            ("troupe-config-test-" + std::to_string(gen()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  std::string write(const std::string& name, const std::string& content) const {
    auto file = path_ / name;
    std::ofstream out{file, std::ios::binary};
    out << content;
    return file.string();
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

private:
  std::filesystem::path path_;
};

/// Sets a process environment variable for one test; secrets are read from
/// the real environment, not from config_sources.
class scoped_env {
public:
  scoped_env(std::string name, const std::string& value)
      : name_(std::move(name)) {
    ::setenv(name_.c_str(), value.c_str(), 1);
  }
  ~scoped_env() { ::unsetenv(name_.c_str()); }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

private:
  std::string name_;
};

config_schema make_schema() {
  config_schema s;
  s.declare("node.name", value_kind::string).required().describe("name of this node");
  s.declare("cluster.port", value_kind::integer)
      .default_value("4242")
      .min(0)
      .max(65535)
      .describe("port the cluster listens on");
  s.declare("cluster.failure_timeout", value_kind::duration)
      .default_value("2s")
      .min(10ms)
      .max(1h)
      .describe("silence after which a peer counts as failed");
  s.declare("cluster.seeds", value_kind::string_list)
      .default_value("[a, b]")
      .describe("nodes to contact at start-up");
  s.declare("log.level", value_kind::string)
      .default_value("info")
      .choices({"debug", "info", "warning", "error"})
      .describe("minimum level | written");
  s.declare("metrics.enabled", value_kind::boolean).default_value("true");
  s.declare("saga.backoff_factor", value_kind::floating).default_value("1.5").min(1.0);
  s.declare("db.password", value_kind::string).describe("database password");
  return s;
}

config_sources with_name() {
  config_sources src;
  src.overrides.emplace_back("node.name", "n1");
  return src;
}

/// The message of the config_error that loading throws, or "" if none.
std::string load_error(const config_schema& schema, const config_sources& src) {
  try {
    config::load(schema, src);
  } catch (const config_error& e) {
    return e.what();
  }
  return {};
}

std::string printed(const config& cfg) {
  std::ostringstream out;
  cfg.print(out);
  return out.str();
}

} // namespace

TEST_CASE("defaults apply when no source sets a key") {
  auto schema = make_schema();
  auto cfg = config::load(schema, with_name());
  CHECK(cfg.get_int("cluster.port") == 4242);
  CHECK(cfg.get_duration("cluster.failure_timeout") == 2s);
  CHECK(cfg.get_list("cluster.seeds") == std::vector<std::string>{"a", "b"});
  CHECK(cfg.get_string("log.level") == "info");
  CHECK(cfg.get_bool("metrics.enabled"));
  CHECK(cfg.get_double("saga.backoff_factor") == 1.5);
  CHECK(cfg.get_string("node.name") == "n1");
}

TEST_CASE("an optional key without a default has no value until a source sets it") {
  auto schema = make_schema();
  auto cfg = config::load(schema, with_name());
  CHECK_FALSE(cfg.has("db.password"));
  CHECK(cfg.has("cluster.port"));
  CHECK_THROWS_AS(cfg.get_string("db.password"), std::logic_error);
}

TEST_CASE("reading an undeclared key or with the wrong type is a programming error") {
  auto schema = make_schema();
  auto cfg = config::load(schema, with_name());
  CHECK_THROWS_AS(cfg.get_int("cluster.nope"), std::logic_error);
  CHECK_THROWS_AS(cfg.get_string("cluster.port"), std::logic_error);
  CHECK_FALSE(cfg.has("cluster.nope"));
}

TEST_CASE("the file overrides defaults, nested maps naming dotted keys") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "cluster:\n"
                                 "  port: 5000\n"
                                 "  failure_timeout: 1500ms\n"
                                 "  seeds: [x, y, z]\n"
                                 "log:\n"
                                 "  level: debug\n"
                                 "metrics.enabled: off\n");
  auto cfg = config::load(schema, src);
  CHECK(cfg.get_int("cluster.port") == 5000);
  CHECK(cfg.get_duration("cluster.failure_timeout") == 1500ms);
  CHECK(cfg.get_list("cluster.seeds") == std::vector<std::string>{"x", "y", "z"});
  CHECK(cfg.get_string("log.level") == "debug");
  CHECK_FALSE(cfg.get_bool("metrics.enabled"));
}

TEST_CASE("the environment overrides the file") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "cluster: {port: 5000, failure_timeout: 3s}\n");
  src.environment["TROUPE_CLUSTER_PORT"] = "6000";
  src.environment["PATH"] = "/bin"; // not ours, ignored
  auto cfg = config::load(schema, src);
  CHECK(cfg.get_int("cluster.port") == 6000);
  CHECK(cfg.get_duration("cluster.failure_timeout") == 3s);
}

TEST_CASE("a flag overrides the environment") {
  auto schema = make_schema();
  auto src = with_name();
  src.environment["TROUPE_CLUSTER_PORT"] = "6000";
  src.overrides.emplace_back("cluster.port", "7000");
  CHECK(config::load(schema, src).get_int("cluster.port") == 7000);
}

TEST_CASE("the output of print names the source of every value") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "cluster:\n  port: 5000\n");
  src.environment["TROUPE_LOG_LEVEL"] = "error";
  auto out = printed(config::load(schema, src));
  CHECK_THAT(out, Contains("cluster:\n"));
  CHECK_THAT(out, Contains("  port: 5000"));
  CHECK_THAT(out, Contains("# from file"));
  CHECK_THAT(out, Contains("level: error"));
  CHECK_THAT(out, Contains("# from env"));
  CHECK_THAT(out, Contains("name: n1"));
  CHECK_THAT(out, Contains("# from flag"));
  CHECK_THAT(out, Contains("failure_timeout: 2s"));
  CHECK_THAT(out, Contains("# default"));
  CHECK_THAT(out, Contains("# password: (not set)"));
}

TEST_CASE("an unknown key in the file names the key and suggests the closest one") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "cluster:\n  falure_timeout: 3s\n");
  try {
    config::load(schema, src);
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == "cluster.falure_timeout");
    CHECK_THAT(e.what(), Contains("unknown configuration key 'cluster.falure_timeout'"));
    CHECK_THAT(e.what(), Contains("did you mean 'cluster.failure_timeout'?"));
    CHECK_THAT(e.what(), Contains("line 2"));
  }
}

TEST_CASE("an unknown section in the file suggests the closest section") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "clustr:\n  port: 1\n");
  auto msg = load_error(schema, src);
  CHECK_THAT(msg, Contains("unknown configuration key 'clustr'"));
  CHECK_THAT(msg, Contains("did you mean 'cluster'?"));
}

TEST_CASE("an unknown key far from every declared key gets no suggestion") {
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("completely.different", "1");
  auto msg = load_error(schema, src);
  CHECK_THAT(msg, Contains("unknown configuration key 'completely.different'"));
  CHECK_THAT(msg, !Contains("did you mean"));
}

TEST_CASE("an unknown TROUPE_ variable in the environment is named") {
  auto schema = make_schema();
  auto src = with_name();
  src.environment["TROUPE_CLUSTER_PROT"] = "1";
  try {
    config::load(schema, src);
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == "TROUPE_CLUSTER_PROT");
    CHECK_THAT(e.what(), Contains("unknown environment variable 'TROUPE_CLUSTER_PROT'"));
    CHECK_THAT(e.what(), Contains("did you mean 'TROUPE_CLUSTER_PORT'?"));
  }
}

TEST_CASE("an unknown key in a flag is named and a close key suggested") {
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("cluster.prot", "1");
  try {
    config::load(schema, src);
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == "cluster.prot");
    CHECK_THAT(e.what(), Contains("unknown configuration key 'cluster.prot'"));
    CHECK_THAT(e.what(), Contains("did you mean 'cluster.port'?"));
  }
}

TEST_CASE("a value of the wrong type names the key, the value, the type and the source") {
  auto schema = make_schema();
  auto src = with_name();
  src.environment["TROUPE_CLUSTER_PORT"] = "abc";
  try {
    config::load(schema, src);
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == "cluster.port");
    CHECK(std::string{e.what()} ==
          "cluster.port: expected an integer in [0, 65535], got 'abc' (from env "
          "TROUPE_CLUSTER_PORT)");
  }
}

TEST_CASE("integers must parse as a whole") {
  auto schema = make_schema();
  for (const char* bad : {"12x", "1.5", "", "0x10", "99999999999999999999"}) {
    auto src = with_name();
    src.overrides.emplace_back("cluster.port", bad);
    CAPTURE(bad);
    CHECK_THAT(load_error(schema, src), Contains("expected an integer"));
  }
}

TEST_CASE("booleans accept true/false, yes/no, on/off and 1/0") {
  auto schema = make_schema();
  for (auto [text, value] : {std::pair{"yes", true},
                             {"no", false},
                             {"on", true},
                             {"off", false},
                             {"1", true},
                             {"0", false},
                             {"True", true},
                             {"false", false}}) {
    auto src = with_name();
    src.overrides.emplace_back("metrics.enabled", text);
    CAPTURE(text);
    CHECK(config::load(schema, src).get_bool("metrics.enabled") == value);
  }
  auto src = with_name();
  src.overrides.emplace_back("metrics.enabled", "maybe");
  CHECK_THAT(load_error(schema, src), Contains("expected a boolean"));
}

TEST_CASE("floating values parse and respect their bounds") {
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("saga.backoff_factor", "2.25");
  CHECK(config::load(schema, src).get_double("saga.backoff_factor") == 2.25);
  src.overrides.emplace_back("saga.backoff_factor", "0.5");
  CHECK_THAT(load_error(schema, src), Contains("expected a number >= 1, got '0.5'"));
  src.overrides.back().second = "fast";
  CHECK_THAT(load_error(schema, src), Contains("expected a number"));
}

TEST_CASE("a value out of bounds names the bounds") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "cluster:\n  port: 70000\n");
  auto msg = load_error(schema, src);
  CHECK_THAT(msg,
             Contains("cluster.port: expected an integer in [0, 65535], got '70000'"));
  CHECK_THAT(msg, Contains("file '" + src.file + "', line 2"));
}

TEST_CASE("duration bounds are checked and shown as durations") {
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("cluster.failure_timeout", "5ms");
  CHECK_THAT(
      load_error(schema, src),
      Contains("expected a duration (e.g. 250ms, 2s, 1m) in [10ms, 1h], got '5ms'"));
  src.overrides.back().second = "2h";
  CHECK_THAT(load_error(schema, src), Contains("got '2h'"));
  src.overrides.back().second = "10";
  CHECK_THAT(load_error(schema, src), Contains("expected a duration"));
}

TEST_CASE("a string with choices accepts only those choices") {
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("log.level", "warning");
  CHECK(config::load(schema, src).get_string("log.level") == "warning");
  src.overrides.back().second = "verbose";
  CHECK_THAT(load_error(schema, src),
             Contains("log.level: expected one of [debug, info, warning, error], got "
                      "'verbose' (from flag --log.level)"));
}

TEST_CASE("a missing required key says where it can be set") {
  auto schema = make_schema();
  try {
    config::load(schema, {});
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == "node.name");
    CHECK(std::string{e.what()} ==
          "missing required configuration key 'node.name' (set it in the config "
          "file, TROUPE_NODE_NAME or --node.name)");
  }
}

TEST_CASE("an unreadable config file is named with the reason") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.path("missing.yaml");
  try {
    config::load(schema, src);
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == src.file);
    CHECK_THAT(e.what(), Contains("cannot read config file '" + src.file + "': "));
    CHECK_THAT(e.what(), Contains("No such file"));
  }
}

TEST_CASE("a malformed config file reports the line and column") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("bad.yaml", "cluster:\n  port: [1, 2\n");
  auto msg = load_error(schema, src);
  CHECK_THAT(msg, Contains("malformed config file '" + src.file + "'"));
  CHECK_THAT(msg, Contains("line "));
  CHECK_THAT(msg, Contains("column "));
}

TEST_CASE("a config file that is not a map is rejected") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("list.yaml", "- a\n- b\n");
  CHECK_THAT(load_error(schema, src), Contains("must hold a map"));
}

TEST_CASE("an empty config file changes nothing") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("empty.yaml", "");
  CHECK(config::load(schema, src).get_int("cluster.port") == 4242);
}

TEST_CASE("a map where a value belongs and a value where a section belongs are errors") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("a.yaml", "cluster:\n  port: {x: 1}\n");
  CHECK_THAT(load_error(schema, src), Contains("cluster.port: expected an integer"));
  CHECK_THAT(load_error(schema, src), Contains("got a map"));
  src.file = dir.write("b.yaml", "cluster: 5\n");
  CHECK_THAT(load_error(schema, src), Contains("'cluster' is a section"));
  src.file = dir.write("c.yaml", "cluster:\n  port: [1, 2]\n");
  CHECK_THAT(load_error(schema, src), Contains("got a list"));
}

TEST_CASE("an env secret is resolved and never printed") {
  scoped_env secret{"CONFIG_TEST_DB_PASSWORD", "hunter2"};
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "db:\n  password: ${env:CONFIG_TEST_DB_PASSWORD}\n");
  auto cfg = config::load(schema, src);
  CHECK(cfg.get_string("db.password") == "hunter2");
  auto out = printed(cfg);
  CHECK_THAT(out, Contains("password: <secret>"));
  CHECK_THAT(out, !Contains("hunter2"));
}

TEST_CASE("a file secret is resolved without its trailing newline and never printed") {
  temp_dir dir;
  auto secret_file = dir.write("pw", "s3cr3t\n\n");
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("db.password", "${file:" + secret_file + "}");
  auto cfg = config::load(schema, src);
  CHECK(cfg.get_string("db.password") == "s3cr3t");
  CHECK_THAT(printed(cfg), !Contains("s3cr3t"));
  CHECK_THAT(printed(cfg), Contains("<secret>"));
}

TEST_CASE("an unresolvable secret names the key") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("db.password", "${env:CONFIG_TEST_SURELY_UNSET_VAR}");
  try {
    config::load(schema, src);
    FAIL("expected a config_error");
  } catch (const config_error& e) {
    CHECK(e.key() == "db.password");
    CHECK_THAT(e.what(), Contains("CONFIG_TEST_SURELY_UNSET_VAR"));
    CHECK_THAT(e.what(), Contains("is not set"));
  }
  src.overrides.back().second = "${file:" + dir.path("nope") + "}";
  auto msg = load_error(schema, src);
  CHECK_THAT(msg, Contains("db.password: cannot read secret file"));
  src.overrides.back().second = "${vault:x}";
  CHECK_THAT(load_error(schema, src), Contains("invalid secret reference"));
}

TEST_CASE("a secret that fails validation is not echoed in the error") {
  temp_dir dir;
  auto secret_file = dir.write("port", "not-a-port-but-secret\n");
  auto schema = make_schema();
  auto src = with_name();
  src.overrides.emplace_back("cluster.port", "${file:" + secret_file + "}");
  auto msg = load_error(schema, src);
  CHECK_THAT(msg, Contains("cluster.port: expected an integer"));
  CHECK_THAT(msg, !Contains("not-a-port-but-secret"));
}

TEST_CASE("a secret overridden by a later source need not resolve") {
  auto schema = make_schema();
  auto src = with_name();
  src.environment["TROUPE_DB_PASSWORD"] = "${env:CONFIG_TEST_SURELY_UNSET_VAR}";
  src.overrides.emplace_back("db.password", "plain");
  auto cfg = config::load(schema, src);
  CHECK(cfg.get_string("db.password") == "plain");
  CHECK_THAT(printed(cfg), Contains("password: plain"));
}

TEST_CASE("durations parse with every unit and plain zero") {
  using troupe::parse_duration;
  CHECK(parse_duration("10ns") == 10ns);
  CHECK(parse_duration("100us") == 100us);
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("2s") == 2s);
  CHECK(parse_duration("1m") == 1min);
  CHECK(parse_duration("1h") == 1h);
  CHECK(parse_duration("0") == 0ns);
  CHECK(parse_duration("0ms") == 0ns);
}

TEST_CASE("durations reject negatives, missing units and garbage") {
  using troupe::parse_duration;
  for (const char* bad :
       {"-1s", "10", "", "s", "1.5s", "2 s", "5d", "abc", "+1s", "99999999999h"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_duration(bad), std::invalid_argument);
  }
}

TEST_CASE("durations format in the largest unit that keeps them integral") {
  using troupe::format_duration;
  CHECK(format_duration(1500ms) == "1500ms");
  CHECK(format_duration(2s) == "2s");
  CHECK(format_duration(0ns) == "0s");
  CHECK(format_duration(90s) == "90s");
  CHECK(format_duration(120s) == "2m");
  CHECK(format_duration(2h) == "2h");
  CHECK(format_duration(1001ns) == "1001ns");
  CHECK(format_duration(3us) == "3us");
}

TEST_CASE("lists come from YAML sequences, comma text or bracketed text") {
  temp_dir dir;
  auto schema = make_schema();
  auto src = with_name();
  src.file = dir.write("c.yaml", "cluster:\n  seeds:\n    - h1:4242\n    - h2:4242\n");
  CHECK(config::load(schema, src).get_list("cluster.seeds") ==
        std::vector<std::string>{"h1:4242", "h2:4242"});
  src.environment["TROUPE_CLUSTER_SEEDS"] = "a,b,c";
  CHECK(config::load(schema, src).get_list("cluster.seeds") ==
        std::vector<std::string>{"a", "b", "c"});
  src.overrides.emplace_back("cluster.seeds", "[x, 'y z']");
  CHECK(config::load(schema, src).get_list("cluster.seeds") ==
        std::vector<std::string>{"x", "y z"});
  src.overrides.back().second = "";
  CHECK(config::load(schema, src).get_list("cluster.seeds").empty());
  src.overrides.back().second = "a,,b";
  CHECK_THAT(load_error(schema, src), Contains("expected a list of strings"));
}

TEST_CASE("set validates like a flag and records code as the source") {
  auto schema = make_schema();
  auto cfg = config::load(schema, with_name());
  cfg.set(schema, "cluster.port", "9000");
  CHECK(cfg.get_int("cluster.port") == 9000);
  CHECK_THAT(printed(cfg), Contains("# from code"));
  CHECK_THROWS_AS(cfg.set(schema, "cluster.port", "-1"), config_error);
  CHECK_THROWS_AS(cfg.set(schema, "cluster.nope", "1"), config_error);
  CHECK(cfg.get_int("cluster.port") == 9000);
}

TEST_CASE("troupe_environment collects only TROUPE_ variables") {
  scoped_env ours{"TROUPE_CONFIG_TEST_MARKER", "42"};
  scoped_env theirs{"NOT_TROUPE_CONFIG_TEST_MARKER", "1"};
  auto env = config::troupe_environment();
  CHECK(env.at("TROUPE_CONFIG_TEST_MARKER") == "42");
  CHECK(env.count("NOT_TROUPE_CONFIG_TEST_MARKER") == 0);
  for (const auto& [name, value] : env)
    CHECK(name.rfind("TROUPE_", 0) == 0);
}

TEST_CASE("write_reference lists every key with its type, default and bounds") {
  auto schema = make_schema();
  std::ostringstream out;
  schema.write_reference(out);
  auto ref = out.str();
  CHECK_THAT(ref, Contains("| key | type | default | bounds | description |"));
  for (const auto& [name, key] : schema.keys())
    CHECK_THAT(ref, Contains("`" + name + "`"));
  CHECK_THAT(ref, Contains("| `cluster.port` | integer | `4242` | [0, 65535] | port the "
                           "cluster listens on |"));
  CHECK_THAT(ref, Contains("[10ms, 1h]"));
  CHECK_THAT(ref, Contains("**required**"));
  CHECK_THAT(ref, Contains("minimum level \\| written"));
  // Sorted by key.
  CHECK(ref.find("`cluster.failure_timeout`") < ref.find("`cluster.port`"));
  CHECK(ref.find("`cluster.port`") < ref.find("`node.name`"));
}

TEST_CASE("declaring a key twice or with conflicting names is a programming error") {
  config_schema s;
  s.declare("a.b", value_kind::string);
  CHECK_THROWS_AS(s.declare("a.b", value_kind::integer), std::logic_error);
  CHECK_THROWS_AS(s.declare("a", value_kind::integer), std::logic_error);
  CHECK_THROWS_AS(s.declare("a.b.c", value_kind::integer), std::logic_error);
  CHECK_THROWS_AS(s.declare("a_b", value_kind::integer).min(1), std::logic_error);
  CHECK_THROWS_AS(s.declare("Bad Name", value_kind::integer), std::logic_error);
  CHECK_THROWS_AS(s.declare("x.s", value_kind::string).min(1), std::logic_error);
  CHECK_THROWS_AS(s.declare("x.r", value_kind::string).default_value("a").required(),
                  std::logic_error);
}

TEST_CASE("an invalid default is a programming error") {
  config_schema s;
  s.declare("x.port", value_kind::integer).default_value("80").min(1000);
  CHECK_THROWS_AS(config::load(s, {}), std::logic_error);
}
