#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace troupe {

/// The kinds of value a configuration key may hold.
enum class value_kind { string, integer, floating, boolean, duration, string_list };

/// One declared configuration key. The declaration is the single source for
/// parsing, validation, `--print-config` and the generated reference docs.
struct config_key {
  std::string name; ///< dotted path, e.g. "cluster.failure_timeout"
  value_kind kind = value_kind::string;
  std::string
      default_text; ///< default in config syntax ("2s", "10", "[a, b]"); empty = none
  bool required = false;     ///< must be set by some source; no default
  std::optional<double> min; ///< bound for integer/floating; nanoseconds for duration
  std::optional<double> max;
  std::vector<std::string> choices; ///< allowed values of a string key, if restricted
  std::string description;
  bool secret = false; ///< never printed, whatever the source (passwords, signing keys)
};

/// Fluent builder returned by `config_schema::declare`.
class config_key_builder {
public:
  explicit config_key_builder(config_key& key)
      : key_(key) {}
  config_key_builder& default_value(std::string text);
  config_key_builder& required();
  config_key_builder& min(double v);
  config_key_builder& max(double v);
  config_key_builder& min(std::chrono::nanoseconds v);
  config_key_builder& max(std::chrono::nanoseconds v);
  config_key_builder& choices(std::vector<std::string> values);
  config_key_builder& describe(std::string text);
  /// The value is a secret even when written in plain text.
  config_key_builder& secret();

private:
  config_key& key_;
};

/// Every key a node understands. Components declare theirs at start-up; a key
/// that nobody declared is an error in any source.
class config_schema {
public:
  /// Declares a key; declaring the same name twice throws std::logic_error.
  config_key_builder declare(std::string name, value_kind kind);
  const config_key* find(const std::string& name) const;
  const std::map<std::string, config_key>& keys() const noexcept { return keys_; }
  /// Markdown reference table of all keys (name, type, default, bounds, description).
  void write_reference(std::ostream& out) const;

private:
  std::map<std::string, config_key> keys_;
};

/// A configuration problem, naming the key (or file) it concerns. `main`
/// turns it into one message on stderr and exit code 2.
class config_error : public std::runtime_error {
public:
  config_error(std::string key, const std::string& message);
  const std::string& key() const noexcept { return key_; }

private:
  std::string key_;
};

/// Where the values come from; later sources override earlier ones:
/// defaults < YAML file < environment (TROUPE_CLUSTER_FAILURE_TIMEOUT for
/// "cluster.failure_timeout") < command-line overrides.
struct config_sources {
  std::string file;                                           ///< YAML path; empty = none
  std::map<std::string, std::string> environment;             ///< e.g. from environ
  std::vector<std::pair<std::string, std::string>> overrides; ///< key, value text
};

/// The validated, effective configuration. Values referencing secrets as
/// `${env:NAME}` or `${file:/path}` are resolved on load and never printed.
class config {
public:
  config() = default;

  /// Loads and validates; throws config_error on the first problem: unreadable
  /// or malformed file, unknown key, wrong type, out-of-bounds value, missing
  /// required key, unresolvable secret.
  static config load(const config_schema& schema, const config_sources& sources);

  /// Copies the process environment into a map (only TROUPE_* variables).
  static std::map<std::string, std::string> troupe_environment();

  std::string get_string(const std::string& key) const;
  /// An optional text key without a default: empty when no source set it.
  std::string get_string_or_empty(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::chrono::nanoseconds get_duration(const std::string& key) const;
  std::vector<std::string> get_list(const std::string& key) const;
  /// False for optional keys without a default that no source set.
  bool has(const std::string& key) const;

  /// YAML of the effective configuration, secrets shown as "<secret>", each
  /// key annotated with the source it came from.
  void print(std::ostream& out) const;

  /// Sets a value after load (tests, programmatic defaults); validated.
  void set(const config_schema& schema, const std::string& key, const std::string& text);

private:
  struct entry {
    value_kind kind;
    std::string text; ///< canonical text form, as parsed
    std::vector<std::string> list;
    std::string source; ///< "default", "file", "env", "flag", "code"
    bool secret = false;
    bool has_value = true; ///< false: declared, optional, and set by no source
  };
  const entry& at(const std::string& key, value_kind kind) const;
  std::map<std::string, entry> values_;
};

/// Parses "250ms", "2s", "1m", "1h", "100us", "10ns"; throws std::invalid_argument.
std::chrono::nanoseconds parse_duration(const std::string& text);
/// Formats a duration in the largest unit that keeps it integral ("1500ms").
std::string format_duration(std::chrono::nanoseconds d);

} // namespace troupe
