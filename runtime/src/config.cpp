#include <troupe/runtime/config.hpp>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

// POSIX declares it only under _GNU_SOURCE; redeclaring is harmless and keeps
// troupe_environment() independent of feature macros.
extern char** environ;

namespace troupe {

namespace {

using namespace std::chrono_literals;

constexpr std::string_view env_prefix = "TROUPE_";
constexpr std::size_t max_hint_distance = 3;

std::string trim(std::string_view s) {
  auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return std::string{s};
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string env_name_of(const std::string& key) {
  std::string out{env_prefix};
  for (char c : key)
    out += (c == '.' || c == '-')
               ? '_'
               : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

/// Every proper dotted prefix of `key`: "a.b.c" -> "a", "a.b".
std::vector<std::string> groups_of(const std::string& key) {
  std::vector<std::string> out;
  for (auto pos = key.find('.'); pos != std::string::npos; pos = key.find('.', pos + 1))
    out.push_back(key.substr(0, pos));
  return out;
}

const char* kind_name(value_kind kind) {
  switch (kind) {
  case value_kind::string:
    return "string";
  case value_kind::integer:
    return "integer";
  case value_kind::floating:
    return "float";
  case value_kind::boolean:
    return "boolean";
  case value_kind::duration:
    return "duration";
  case value_kind::string_list:
    return "list of strings";
  }
  return "unknown";
}

const char* kind_phrase(value_kind kind) {
  switch (kind) {
  case value_kind::string:
    return "a string";
  case value_kind::integer:
    return "an integer";
  case value_kind::floating:
    return "a number";
  case value_kind::boolean:
    return "a boolean (true/false, yes/no, on/off, 1/0)";
  case value_kind::duration:
    return "a duration (e.g. 250ms, 2s, 1m)";
  case value_kind::string_list:
    return "a list of strings (a,b or [a, b])";
  }
  return "a value";
}

bool is_numeric(value_kind kind) {
  return kind == value_kind::integer || kind == value_kind::floating ||
         kind == value_kind::duration;
}

std::string format_number(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc{})
    return std::to_string(v);
  return std::string(buf, end);
}

std::string format_bound(const config_key& key, double v) {
  if (key.kind == value_kind::duration)
    return format_duration(std::chrono::nanoseconds{std::llround(v)});
  if (key.kind == value_kind::integer && std::trunc(v) == v && std::abs(v) < 9.0e18)
    return std::to_string(static_cast<int64_t>(v));
  return format_number(v);
}

/// "[0, 65535]", ">= 1", "<= 10" or "" when unbounded.
std::string bounds_phrase(const config_key& key) {
  if (key.min && key.max)
    return "[" + format_bound(key, *key.min) + ", " + format_bound(key, *key.max) + "]";
  if (key.min)
    return ">= " + format_bound(key, *key.min);
  if (key.max)
    return "<= " + format_bound(key, *key.max);
  return {};
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0)
      out += sep;
    out += items[i];
  }
  return out;
}

/// What a valid value looks like, for error messages.
std::string expectation(const config_key& key) {
  std::string out = kind_phrase(key.kind);
  if (auto bounds = bounds_phrase(key); !bounds.empty())
    out += key.min && key.max ? " in " + bounds : " " + bounds;
  if (!key.choices.empty()) {
    out = key.kind == value_kind::string_list ? out + ", each one of [" : "one of [";
    out += join(key.choices, ", ") + "]";
  }
  return out;
}

/// Optimal string alignment distance: a transposed pair of letters is one
/// typo, as people make them.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
  for (std::size_t i = 0; i <= n; ++i)
    d[i][0] = i;
  for (std::size_t j = 0; j <= m; ++j)
    d[0][j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

/// "; did you mean 'x'?" for the closest candidate, or "" if none is close.
template <class Range>
std::string hint(const std::string& name, const Range& candidates) {
  const std::string* best = nullptr;
  std::size_t best_distance = max_hint_distance + 1;
  for (const std::string& candidate : candidates) {
    auto distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best = &candidate;
      best_distance = distance;
    }
  }
  return best ? "; did you mean '" + *best + "'?" : std::string{};
}

std::string quoted(const std::string& s) {
  return "'" + s + "'";
}

/// Reads a whole file; throws std::runtime_error carrying the OS's reason.
std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw std::runtime_error("is a directory");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file{std::fopen(path.c_str(), "rb"),
                                                       &std::fclose};
  if (!file)
    throw std::runtime_error(std::generic_category().message(errno));
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0)
    out.append(buf, n);
  if (std::ferror(file.get()))
    throw std::runtime_error(std::generic_category().message(errno));
  return out;
}

// --- value parsing --------------------------------------------------------

struct parsed_value {
  std::string text; ///< canonical form
  std::vector<std::string> list;
};

[[noreturn]] void reject(const config_key& key, const std::string& shown,
                         const std::string& origin) {
  throw config_error(key.name, key.name + ": expected " + expectation(key) + ", got " +
                                   shown + " (from " + origin + ")");
}

bool in_bounds(const config_key& key, double v) {
  return (!key.min || v >= *key.min) && (!key.max || v <= *key.max);
}

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size())
    return std::nullopt;
  return v;
}

std::optional<double> parse_double(std::string_view s) {
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

std::optional<bool> parse_bool(const std::string& s) {
  auto v = lower(s);
  if (v == "true" || v == "yes" || v == "on" || v == "1")
    return true;
  if (v == "false" || v == "no" || v == "off" || v == "0")
    return false;
  return std::nullopt;
}

/// Splits "a,b,c" or "[a, b]"; items may be quoted. Empty text is an empty
/// list; an empty item ("a,,b") is almost certainly a typo and rejected.
std::optional<std::vector<std::string>> split_list(const std::string& text) {
  auto body = trim(text);
  if (body.size() >= 2 && body.front() == '[' && body.back() == ']')
    body = trim(std::string_view{body}.substr(1, body.size() - 2));
  std::vector<std::string> out;
  if (body.empty())
    return out;
  std::size_t start = 0;
  while (true) {
    auto comma = body.find(',', start);
    auto item = trim(std::string_view{body}.substr(
        start, comma == std::string::npos ? std::string::npos : comma - start));
    if (item.size() >= 2 && (item.front() == '"' || item.front() == '\'') &&
        item.back() == item.front())
      item = item.substr(1, item.size() - 2);
    else if (item.empty())
      return std::nullopt;
    out.push_back(std::move(item));
    if (comma == std::string::npos)
      return out;
    start = comma + 1;
  }
}

/// Validates one value against its declaration. `items` is set when the value
/// came as a YAML sequence. `shown` is how the value appears in an error: the
/// quoted text, or a description for secrets, whose text must never leak.
parsed_value parse_value(const config_key& key, const std::string& text,
                         const std::vector<std::string>* items, const std::string& shown,
                         const std::string& origin) {
  parsed_value out;
  if (key.kind == value_kind::string_list) {
    if (items) {
      out.list = *items;
    } else if (auto list = split_list(text)) {
      out.list = std::move(*list);
    } else {
      reject(key, shown, origin);
    }
    if (!key.choices.empty()) {
      for (const auto& item : out.list)
        if (std::find(key.choices.begin(), key.choices.end(), item) == key.choices.end())
          reject(key, shown, origin);
    }
    out.text = "[" + join(out.list, ", ") + "]";
    return out;
  }
  if (items)
    reject(key, "a list " + shown, origin);
  if (key.kind == value_kind::string) {
    if (!key.choices.empty() &&
        std::find(key.choices.begin(), key.choices.end(), text) == key.choices.end())
      reject(key, shown, origin);
    out.text = text;
    return out;
  }
  // Numbers, booleans and durations tolerate surrounding blanks, which env
  // files and shell quoting add easily.
  auto t = trim(text);
  switch (key.kind) {
  case value_kind::integer: {
    auto v = parse_int(t);
    if (!v || !in_bounds(key, static_cast<double>(*v)))
      reject(key, shown, origin);
    out.text = std::to_string(*v);
    break;
  }
  case value_kind::floating: {
    auto v = parse_double(t);
    if (!v || !in_bounds(key, *v))
      reject(key, shown, origin);
    out.text = format_number(*v);
    break;
  }
  case value_kind::boolean: {
    auto v = parse_bool(t);
    if (!v)
      reject(key, shown, origin);
    out.text = *v ? "true" : "false";
    break;
  }
  case value_kind::duration: {
    std::chrono::nanoseconds v{};
    try {
      v = parse_duration(t);
    } catch (const std::invalid_argument&) {
      reject(key, shown, origin);
    }
    if (!in_bounds(key, static_cast<double>(v.count())))
      reject(key, shown, origin);
    out.text = format_duration(v);
    break;
  }
  case value_kind::string:
  case value_kind::string_list:
    break; // handled above
  }
  return out;
}

std::string shown_text(const std::string& text) {
  return text.empty() ? std::string{"an empty value"} : quoted(text);
}

std::string shown_items(const std::vector<std::string>& items) {
  std::vector<std::string> q;
  for (const auto& item : items)
    q.push_back(quoted(item));
  return "[" + join(q, ", ") + "]";
}

// --- secrets ----------------------------------------------------------------

bool is_secret_reference(const std::string& text) {
  return text.size() >= 3 && text.compare(0, 2, "${") == 0 && text.back() == '}';
}

/// Checks the reference's form; returns {scheme, target}.
std::pair<std::string, std::string> split_secret_reference(const config_key& key,
                                                           const std::string& text,
                                                           const std::string& origin) {
  auto inner = text.substr(2, text.size() - 3);
  auto colon = inner.find(':');
  auto scheme = inner.substr(0, colon == std::string::npos ? inner.size() : colon);
  auto target = colon == std::string::npos ? std::string{} : inner.substr(colon + 1);
  if ((scheme != "env" && scheme != "file") || target.empty())
    throw config_error(key.name, key.name + ": invalid secret reference " + quoted(text) +
                                     "; expected ${env:NAME} or ${file:/path} (from " +
                                     origin + ")");
  return {scheme, target};
}

std::string resolve_secret(const config_key& key, const std::string& text,
                           const std::string& origin) {
  auto [scheme, target] = split_secret_reference(key, text, origin);
  if (scheme == "env") {
    // Secrets live in ordinary variables (DB_PASSWORD), not in TROUPE_*, so
    // they are read from the process, not from config_sources::environment.
    const char* value = std::getenv(target.c_str());
    if (!value)
      throw config_error(key.name, key.name + ": environment variable '" + target +
                                       "' for secret " + text + " is not set (from " +
                                       origin + ")");
    return value;
  }
  std::string content;
  try {
    content = read_file(target);
  } catch (const std::runtime_error& e) {
    throw config_error(key.name, key.name + ": cannot read secret file '" + target +
                                     "': " + e.what() + " (from " + origin + ")");
  }
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r'))
    content.pop_back();
  return content;
}

// --- loading ----------------------------------------------------------------

/// One key's value while sources are applied.
struct assigned {
  bool has_value = false;
  parsed_value value;
  std::string source;
  std::string origin;
  bool secret = false;
  std::string reference; ///< unresolved ${...} while a later source may replace it
};

/// Applies sources in order. Plain values are validated as soon as they are
/// read, so a typo in the file is reported even when the environment
/// overrides it; secret references are resolved only if they survive, so an
/// overridden `${env:X}` does not need X.
class loader {
public:
  explicit loader(const config_schema& schema)
      : schema_(schema) {
    for (const auto& [name, key] : schema.keys()) {
      values_[name];
      env_to_key_.emplace(env_name_of(name), name);
      for (auto& group : groups_of(name))
        groups_.insert(std::move(group));
    }
  }

  void apply_defaults() {
    for (const auto& [name, key] : schema_.keys()) {
      if (key.default_text.empty())
        continue;
      try {
        assign(key, key.default_text, nullptr, "default", "default");
      } catch (const config_error& e) {
        // The declaration itself is wrong: a bug, not a user's mistake.
        throw std::logic_error(std::string{"invalid default: "} + e.what());
      }
    }
  }

  void apply_file(const std::string& path) {
    std::string content;
    try {
      content = read_file(path);
    } catch (const std::runtime_error& e) {
      throw config_error(path, "cannot read config file '" + path + "': " + e.what());
    }
    YAML::Node root;
    try {
      root = YAML::Load(content);
    } catch (const YAML::Exception& e) {
      std::string where;
      if (!e.mark.is_null())
        where = " at line " + std::to_string(e.mark.line + 1) + ", column " +
                std::to_string(e.mark.column + 1);
      throw config_error(path,
                         "malformed config file '" + path + "'" + where + ": " + e.msg);
    }
    if (!root || root.IsNull())
      return;
    if (!root.IsMap())
      throw config_error(path, "config file '" + path +
                                   "' must hold a map of configuration keys");
    try {
      walk(path, root, "");
    } catch (const YAML::Exception& e) {
      throw config_error(path, "malformed config file '" + path + "': " + e.msg);
    }
  }

  void apply_environment(const std::map<std::string, std::string>& environment) {
    for (const auto& [var, value] : environment) {
      if (var.compare(0, env_prefix.size(), env_prefix) != 0)
        continue;
      auto it = env_to_key_.find(var);
      if (it == env_to_key_.end()) {
        std::vector<std::string> names;
        for (const auto& [env, key] : env_to_key_)
          names.push_back(env);
        throw config_error(var, "unknown environment variable '" + var +
                                    "': it matches no configuration key" +
                                    hint(var, names));
      }
      assign(*schema_.find(it->second), value, nullptr, "env", "env " + var);
    }
  }

  void
  apply_overrides(const std::vector<std::pair<std::string, std::string>>& overrides) {
    for (const auto& [name, text] : overrides) {
      const auto* key = schema_.find(name);
      if (!key)
        throw unknown_key(name, "flag --" + name, false);
      assign(*key, text, nullptr, "flag", "flag --" + name);
    }
  }

  void resolve_secrets() {
    for (auto& [name, slot] : values_) {
      if (slot.reference.empty())
        continue;
      const auto& key = *schema_.find(name);
      auto text = resolve_secret(key, slot.reference, slot.origin);
      slot.value =
          parse_value(key, text, nullptr, "the secret " + slot.reference, slot.origin);
      slot.reference.clear();
    }
  }

  void check_required() const {
    for (const auto& [name, key] : schema_.keys()) {
      if (key.required && !values_.at(name).has_value)
        throw config_error(name, "missing required configuration key '" + name +
                                     "' (set it in the config file, " +
                                     env_name_of(name) + " or --" + name + ")");
    }
  }

  std::map<std::string, assigned>& values() { return values_; }

  /// Validates `text` for `key` and records it as the key's current value.
  void assign(const config_key& key, const std::string& text,
              const std::vector<std::string>* items, std::string source,
              std::string origin) {
    auto& slot = values_[key.name];
    slot = assigned{};
    slot.has_value = true;
    if (!items && is_secret_reference(text)) {
      split_secret_reference(key, text, origin); // reject bad forms right away
      slot.secret = true;
      slot.reference = text;
    } else {
      slot.value = parse_value(key, text, items,
                               items ? shown_items(*items) : shown_text(text), origin);
    }
    slot.source = std::move(source);
    slot.origin = std::move(origin);
  }

private:
  config_error unknown_key(const std::string& name, const std::string& origin,
                           bool with_groups) const {
    std::vector<std::string> candidates;
    for (const auto& [key, value] : schema_.keys())
      candidates.push_back(key);
    if (with_groups)
      candidates.insert(candidates.end(), groups_.begin(), groups_.end());
    return config_error(name, "unknown configuration key '" + name + "' (from " + origin +
                                  ")" + hint(name, candidates));
  }

  void walk(const std::string& path, const YAML::Node& map, const std::string& prefix) {
    // Range-for, not `it->first`: yaml-cpp's operator-> returns a temporary
    // proxy, so references taken through it dangle.
    for (const auto& pair : map) {
      const YAML::Node& k = pair.first;
      const YAML::Node& v = pair.second;
      auto line = "file '" + path + "', line " + std::to_string(k.Mark().line + 1);
      if (!k.IsScalar())
        throw config_error(path, "config file '" + path + "' line " +
                                     std::to_string(k.Mark().line + 1) +
                                     ": keys must be plain names");
      auto name = prefix.empty() ? k.Scalar() : prefix + "." + k.Scalar();
      if (const auto* key = schema_.find(name)) {
        assign_node(*key, v, line);
      } else if (groups_.count(name) != 0) {
        if (v.IsMap())
          walk(path, v, name);
        else if (!v.IsNull()) // an empty section is harmless
          throw config_error(name, "'" + name +
                                       "' is a section of configuration keys, not a "
                                       "value; expected a map (from " +
                                       line + ")");
      } else {
        throw unknown_key(name, line, true);
      }
    }
  }

  void assign_node(const config_key& key, const YAML::Node& v, const std::string& line) {
    if (v.IsMap())
      reject(key, "a map", line);
    if (v.IsSequence()) {
      std::vector<std::string> items;
      for (const auto& item : v) {
        if (!item.IsScalar())
          reject(key,
                 "a list holding a nested " + std::string{item.IsMap() ? "map" : "value"},
                 line);
        items.push_back(item.Scalar());
      }
      assign(key, {}, &items, "file", line);
      return;
    }
    // `key:` with nothing after it is YAML's null: treated as an empty value,
    // valid for strings and lists, rejected with a clear message otherwise.
    assign(key, v.IsNull() ? std::string{} : v.Scalar(), nullptr, "file", line);
  }

  const config_schema& schema_;
  std::map<std::string, assigned> values_;
  std::map<std::string, std::string> env_to_key_;
  std::set<std::string> groups_;
};

// --- printing ---------------------------------------------------------------

/// Double-quotes `s` unless it reads back unchanged as a YAML plain scalar.
std::string yaml_scalar(const std::string& s, bool in_flow) {
  static constexpr std::string_view indicators = "-?:,[]{}#&*!|>'\"%@`";
  bool plain = !s.empty() && indicators.find(s.front()) == std::string_view::npos &&
               s.front() != ' ' && s.back() != ' ' && s.find(": ") == std::string::npos &&
               s.find(" #") == std::string::npos && s.back() != ':';
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\' ||
        (in_flow && (c == ',' || c == '[' || c == ']' || c == '{' || c == '}')))
      plain = false;
  }
  if (plain)
    return s;
  std::string out = "\"";
  for (char c : s) {
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
    case '\t':
      out += "\\t";
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
        out += buf;
      } else {
        out += c;
      }
    }
  }
  return out + "\"";
}

std::vector<std::string> split_dotted(const std::string& key) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (auto dot = key.find('.'); dot != std::string::npos; dot = key.find('.', start)) {
    out.push_back(key.substr(start, dot - start));
    start = dot + 1;
  }
  out.push_back(key.substr(start));
  return out;
}

std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n')
      out += ' ';
    else
      out += c;
  }
  return out;
}

bool valid_key_name(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.back() == '.' ||
      name.find("..") != std::string::npos)
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

} // namespace

// --- config_key_builder -----------------------------------------------------

config_key_builder& config_key_builder::default_value(std::string text) {
  if (key_.required)
    throw std::logic_error("configuration key '" + key_.name +
                           "' is required and cannot have a default");
  key_.default_text = std::move(text);
  return *this;
}

config_key_builder& config_key_builder::required() {
  if (!key_.default_text.empty())
    throw std::logic_error("configuration key '" + key_.name +
                           "' has a default and cannot be required");
  key_.required = true;
  return *this;
}

namespace {

void check_bound(const config_key& key, bool duration_bound) {
  if (!is_numeric(key.kind))
    throw std::logic_error("configuration key '" + key.name + "' is a " +
                           kind_name(key.kind) + " and cannot have bounds");
  if (duration_bound && key.kind != value_kind::duration)
    throw std::logic_error("configuration key '" + key.name +
                           "' is not a duration; give its bounds as numbers");
  if (key.min && key.max && *key.min > *key.max)
    throw std::logic_error("configuration key '" + key.name + "' has min > max");
}

} // namespace

config_key_builder& config_key_builder::min(double v) {
  key_.min = v;
  check_bound(key_, false);
  return *this;
}

config_key_builder& config_key_builder::max(double v) {
  key_.max = v;
  check_bound(key_, false);
  return *this;
}

config_key_builder& config_key_builder::min(std::chrono::nanoseconds v) {
  key_.min = static_cast<double>(v.count());
  check_bound(key_, true);
  return *this;
}

config_key_builder& config_key_builder::max(std::chrono::nanoseconds v) {
  key_.max = static_cast<double>(v.count());
  check_bound(key_, true);
  return *this;
}

config_key_builder& config_key_builder::choices(std::vector<std::string> values) {
  if (key_.kind != value_kind::string && key_.kind != value_kind::string_list)
    throw std::logic_error("configuration key '" + key_.name +
                           "' is not a string and cannot have choices");
  key_.choices = std::move(values);
  return *this;
}

config_key_builder& config_key_builder::describe(std::string text) {
  key_.description = std::move(text);
  return *this;
}

config_key_builder& config_key_builder::secret() {
  key_.secret = true;
  return *this;
}

// --- config_schema ----------------------------------------------------------

config_key_builder config_schema::declare(std::string name, value_kind kind) {
  if (!valid_key_name(name))
    throw std::logic_error("invalid configuration key name '" + name +
                           "': use lower-case dotted names like cluster.port");
  if (keys_.count(name) != 0)
    throw std::logic_error("configuration key '" + name + "' is declared twice");
  // A name that is both a value and a section cannot be written in YAML, and
  // two names sharing an environment variable cannot both be set from it.
  auto env = env_name_of(name);
  for (const auto& [other, key] : keys_) {
    if (other.compare(0, name.size() + 1, name + ".") == 0 ||
        name.compare(0, other.size() + 1, other + ".") == 0)
      throw std::logic_error("configuration keys '" + name + "' and '" + other +
                             "' conflict: one is a section of the other");
    if (env_name_of(other) == env)
      throw std::logic_error("configuration keys '" + name + "' and '" + other +
                             "' both map to environment variable " + env);
  }
  auto& key = keys_[name];
  key.name = std::move(name);
  key.kind = kind;
  return config_key_builder{key};
}

const config_key* config_schema::find(const std::string& name) const {
  auto it = keys_.find(name);
  return it == keys_.end() ? nullptr : &it->second;
}

void config_schema::write_reference(std::ostream& out) const {
  out << "| key | type | default | bounds | description |\n"
      << "|-----|------|---------|--------|-------------|\n";
  for (const auto& [name, key] : keys_) {
    std::string def = key.required               ? "**required**"
                      : key.default_text.empty() ? "(none)"
                                                 : "`" + key.default_text + "`";
    auto bounds = bounds_phrase(key);
    if (!key.choices.empty()) {
      std::vector<std::string> choices;
      for (const auto& c : key.choices)
        choices.push_back("`" + c + "`");
      bounds += (bounds.empty() ? "one of " : "; one of ") + join(choices, ", ");
    }
    out << "| `" << name << "` | " << kind_name(key.kind) << " | " << markdown_cell(def)
        << " | " << markdown_cell(bounds) << " | " << markdown_cell(key.description)
        << " |\n";
  }
}

// --- config_error -----------------------------------------------------------

config_error::config_error(std::string key, const std::string& message)
    : std::runtime_error(message)
    , key_(std::move(key)) {}

// --- config -----------------------------------------------------------------

config config::load(const config_schema& schema, const config_sources& sources) {
  loader l{schema};
  l.apply_defaults();
  if (!sources.file.empty())
    l.apply_file(sources.file);
  l.apply_environment(sources.environment);
  l.apply_overrides(sources.overrides);
  l.resolve_secrets();
  l.check_required();
  config result;
  for (auto& [name, slot] : l.values()) {
    entry e{schema.find(name)->kind,
            std::move(slot.value.text),
            std::move(slot.value.list),
            std::move(slot.source),
            slot.secret || schema.find(name)->secret,
            slot.has_value};
    result.values_.emplace(name, std::move(e));
  }
  return result;
}

std::map<std::string, std::string> config::troupe_environment() {
  std::map<std::string, std::string> out;
  for (char** var = environ; var && *var; ++var) {
    std::string_view entry{*var};
    if (entry.compare(0, env_prefix.size(), env_prefix) != 0)
      continue;
    auto eq = entry.find('=');
    if (eq == std::string_view::npos)
      continue;
    out.emplace(std::string{entry.substr(0, eq)}, std::string{entry.substr(eq + 1)});
  }
  return out;
}

const config::entry& config::at(const std::string& key, value_kind kind) const {
  auto it = values_.find(key);
  if (it == values_.end())
    throw std::logic_error("configuration key '" + key + "' is not declared");
  if (it->second.kind != kind)
    throw std::logic_error("configuration key '" + key + "' is a " +
                           kind_name(it->second.kind) + ", not a " + kind_name(kind));
  if (!it->second.has_value)
    throw std::logic_error("configuration key '" + key +
                           "' is optional and has no value; check has() first");
  return it->second;
}

std::string config::get_string(const std::string& key) const {
  return at(key, value_kind::string).text;
}

std::string config::get_string_or_empty(const std::string& key) const {
  return has(key) ? get_string(key) : std::string{};
}

int64_t config::get_int(const std::string& key) const {
  // The text is canonical (validated on load), so these parses cannot fail.
  return *parse_int(at(key, value_kind::integer).text);
}

double config::get_double(const std::string& key) const {
  return *parse_double(at(key, value_kind::floating).text);
}

bool config::get_bool(const std::string& key) const {
  return at(key, value_kind::boolean).text == "true";
}

std::chrono::nanoseconds config::get_duration(const std::string& key) const {
  return parse_duration(at(key, value_kind::duration).text);
}

std::vector<std::string> config::get_list(const std::string& key) const {
  return at(key, value_kind::string_list).list;
}

bool config::has(const std::string& key) const {
  auto it = values_.find(key);
  return it != values_.end() && it->second.has_value;
}

void config::print(std::ostream& out) const {
  struct line {
    std::string text;
    std::string comment;
  };
  std::vector<line> lines;
  std::vector<std::string> open; // sections printed so far, outermost first
  for (const auto& [name, e] : values_) {
    auto parts = split_dotted(name);
    std::size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() &&
           open[common] == parts[common])
      ++common;
    open.resize(common);
    for (std::size_t i = common; i + 1 < parts.size(); ++i) {
      lines.push_back({std::string(2 * i, ' ') + parts[i] + ":", {}});
      open.push_back(parts[i]);
    }
    std::string indent(2 * (parts.size() - 1), ' ');
    if (!e.has_value) {
      lines.push_back({indent + "# " + parts.back() + ": (not set)", {}});
      continue;
    }
    std::string value;
    if (e.secret) {
      value = "<secret>";
    } else if (e.kind == value_kind::string_list) {
      std::vector<std::string> items;
      for (const auto& item : e.list)
        items.push_back(yaml_scalar(item, true));
      value = "[" + join(items, ", ") + "]";
    } else if (e.kind == value_kind::string) {
      value = yaml_scalar(e.text, false);
    } else {
      value = e.text;
    }
    lines.push_back({indent + parts.back() + ": " + value,
                     e.source == "default" ? "default" : "from " + e.source});
  }
  // Align the source comments, but not past a column where one long value
  // would push every comment off the screen.
  std::size_t column = 0;
  for (const auto& l : lines)
    if (!l.comment.empty())
      column = std::max(column, std::min<std::size_t>(l.text.size(), 48));
  for (const auto& l : lines) {
    out << l.text;
    if (!l.comment.empty())
      out << std::string(column > l.text.size() ? column - l.text.size() : 0, ' ')
          << "  # " << l.comment;
    out << '\n';
  }
}

void config::set(const config_schema& schema, const std::string& key,
                 const std::string& text) {
  const auto* decl = schema.find(key);
  if (!decl)
    throw config_error(key, "unknown configuration key '" + key + "' (from code)");
  bool secret = is_secret_reference(text);
  auto value = secret ? parse_value(*decl, resolve_secret(*decl, text, "code"), nullptr,
                                    "the secret " + text, "code")
                      : parse_value(*decl, text, nullptr, shown_text(text), "code");
  values_[key] = entry{decl->kind, std::move(value.text),  std::move(value.list),
                       "code",     secret || decl->secret, true};
}

// --- durations --------------------------------------------------------------

std::chrono::nanoseconds parse_duration(const std::string& text) {
  auto fail = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("invalid duration '" + text + "': " + why);
  };
  if (text == "0")
    return 0ns;
  if (!text.empty() && text.front() == '-')
    throw fail("durations cannot be negative");
  int64_t count = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [end, ec] = std::from_chars(first, last, count);
  if (ec == std::errc::result_out_of_range)
    throw fail("too large");
  if (ec != std::errc{})
    throw fail(
        "expected an integer followed by a unit (ns, us, ms, s, m, h), e.g. 250ms");
  std::string_view unit{end, static_cast<std::size_t>(last - end)};
  static constexpr std::pair<std::string_view, int64_t> units[] = {
      {"ns", 1},
      {"us", 1'000},
      {"ms", 1'000'000},
      {"s", 1'000'000'000},
      {"m", 60'000'000'000},
      {"h", 3'600'000'000'000},
  };
  for (const auto& [name, factor] : units) {
    if (unit != name)
      continue;
    if (count > std::numeric_limits<int64_t>::max() / factor)
      throw fail("too large");
    return std::chrono::nanoseconds{count * factor};
  }
  throw fail(unit.empty()
                 ? std::string{"missing unit (ns, us, ms, s, m, h)"}
                 : "unknown unit '" + std::string{unit} + "' (use ns, us, ms, s, m, h)");
}

std::string format_duration(std::chrono::nanoseconds d) {
  static constexpr std::pair<int64_t, const char*> units[] = {
      {3'600'000'000'000, "h"}, {60'000'000'000, "m"}, {1'000'000'000, "s"},
      {1'000'000, "ms"},        {1'000, "us"},
  };
  auto count = d.count();
  if (count == 0)
    return "0s";
  for (const auto& [factor, name] : units)
    if (count % factor == 0)
      return std::to_string(count / factor) + name;
  return std::to_string(count) + "ns";
}

} // namespace troupe
