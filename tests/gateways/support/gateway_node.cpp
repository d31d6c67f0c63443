#include "gateways/support/gateway_node.hpp"

#include <set>
#include <stdexcept>

#include "support/http_get.hpp"

namespace troupe::test {

namespace {

using strings = std::vector<std::string>;

// The value of `--key` in `args`, if given.
std::optional<std::string> value_of(const strings& args, const std::string& key) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == key)
      return args[i + 1];
  return std::nullopt;
}

bool disabled(const strings& args, const std::string& key) {
  auto v = value_of(args, key);
  return v && (*v == "false" || *v == "0" || *v == "no" || *v == "off");
}

uint16_t wait_for_port(running_node& node, std::string_view kind,
                       steady::time_point deadline) {
  std::regex re{std::string{kind} + R"( gateway listening on [^:\s]+:(\d+))"};
  auto line = node->wait_for_line(re, deadline);
  if (!line)
    throw std::runtime_error("node " + node.name + " never logged its " +
                             std::string{kind} + " gateway's port:\n" + node->output());
  return *parse_gateway_port(*line, kind);
}

} // namespace

std::string running_gateway::grpc_address() const {
  return "127.0.0.1:" + std::to_string(grpc_port);
}

std::string running_gateway::http_address() const {
  return "127.0.0.1:" + std::to_string(http_port);
}

std::optional<uint16_t> parse_gateway_port(std::string_view line, std::string_view kind) {
  std::regex re{std::string{kind} + R"( gateway listening on [^:\s]+:(\d+))"};
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_search(line.begin(), line.end(), m, re))
    return std::nullopt;
  auto port = std::stoul(m[1].str());
  if (port == 0 || port > 65535)
    return std::nullopt;
  return static_cast<uint16_t>(port);
}

strings gateway_node_args(const std::string& store_dir, const strings& extra) {
  const strings defaults{
      "--services.enabled",   "orders,inventory,payment,shipping,sagas,greeter,gateway",
      "--store.path",         store_dir,
      "--gateways.grpc.port", "0",
      "--gateways.http.port", "0",
      "--gateways.invocable", "greeter/greet"};
  std::set<std::string> named;
  for (const auto& a : extra)
    if (a.rfind("--", 0) == 0)
      named.insert(a);
  strings args;
  for (size_t i = 0; i + 1 < defaults.size(); i += 2) {
    if (named.count(defaults[i]) > 0)
      continue;
    args.push_back(defaults[i]);
    args.push_back(defaults[i + 1]);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

running_gateway start_gateway_node(const std::string& name, strings extra,
                                   steady::time_point deadline,
                                   std::map<std::string, std::string> env) {
  running_gateway g;
  g.dir = std::make_unique<temp_dir>();
  auto args = gateway_node_args((g.dir->path() / "store").string(), extra);
  g.node = start_node(name, args, deadline, std::move(env));
  if (!disabled(extra, "--gateways.grpc.enabled"))
    g.grpc_port = wait_for_port(g.node, "grpc", deadline);
  if (!disabled(extra, "--gateways.http.enabled"))
    g.http_port = wait_for_port(g.node, "http", deadline);
  auto status_port = g.node.status_port;
  bool ready = eventually(
      deadline, [&] { return http_status(status_port, "/readyz") == 200; },
      std::chrono::milliseconds{50});
  if (!ready)
    throw std::runtime_error("node " + name + " never became ready:\n" +
                             g.node->output());
  return g;
}

} // namespace troupe::test
