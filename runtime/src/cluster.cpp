#include <troupe/runtime/cluster.hpp>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <string_view>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/message_origin.hpp>
#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/readiness.hpp>

#include <troupe/runtime/detail/json_text.hpp>

namespace troupe {

using cluster_atom = caf::atom_constant<caf::atom("cluster")>;
using resolve_atom = caf::atom_constant<caf::atom("resolve")>;

void cluster_view::update(std::string json, bool joined) {
  std::lock_guard<std::mutex> guard{mtx_};
  json_ = std::move(json);
  joined_ = joined;
}

std::string cluster_view::json() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return json_;
}

bool cluster_view::joined() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return joined_;
}

std::vector<std::string> resolve_addresses(const std::string& name) {
  std::vector<std::string> result;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0)
    return result;
  for (auto* p = res; p != nullptr; p = p->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {};
    const void* addr = p->ai_family == AF_INET
                           ? static_cast<const void*>(
                                 &reinterpret_cast<sockaddr_in*>(p->ai_addr)->sin_addr)
                           : static_cast<const void*>(
                                 &reinterpret_cast<sockaddr_in6*>(p->ai_addr)->sin6_addr);
    if (inet_ntop(p->ai_family, addr, buf, sizeof buf) != nullptr)
      result.emplace_back(buf);
  }
  freeaddrinfo(res);
  std::sort(result.begin(), result.end());
  result.erase(std::unique(result.begin(), result.end()), result.end());
  return result;
}

std::optional<peer_address> parse_peer_address(const std::string& text,
                                               std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<peer_address> {
    if (why != nullptr)
      *why = std::move(reason);
    return std::nullopt;
  };
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return fail("expected host:port");
  auto host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto digits = std::string_view{text}.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() ||
      port == 0 || port > 65535)
    return fail("the port must be a number from 1 to 65535");
  return peer_address{std::move(host), static_cast<uint16_t>(port)};
}

namespace {

using resolver_actor = caf::typed_actor<
    caf::replies_to<resolve_atom, std::string>::with<std::vector<std::string>>>;

// getaddrinfo blocks: it runs on a detached actor of its own.
resolver_actor::behavior_type resolver(resolver_actor::pointer) {
  return {[](resolve_atom, const std::string& name) { return resolve_addresses(name); }};
}

std::string address_key(const std::string& host, uint16_t port) {
  return host + ":" + std::to_string(port);
}

struct member_state {
  member_info info;
  cluster_peer_actor endpoint;
};

struct cluster_state {
  static inline const char* name = "cluster";

  cluster_settings settings;
  std::shared_ptr<cluster_view> view;
  member_info self_info;
  bool joined = false;
  bool leaving = false;
  std::map<std::string, member_state> members; // by node name
  std::set<std::string> connecting;            // address keys in flight
  std::set<std::string> known_addresses;       // seeds, DNS results, lost members
  std::set<std::string> seeds;                 // never forgotten
  std::map<std::string, std::chrono::steady_clock::time_point> unanswered_since;
  std::set<std::string> down_members;                    // marked down, not back yet
  std::map<caf::actor_addr, std::string> local_services; // handle -> service name
  std::vector<service_entry> local_entries;
  resolver_actor resolver;
  bool resolving = false;
  bool has_quorum = true;
};

using self_ptr = cluster_actor::stateful_pointer<cluster_state>;

// How many of the configured members this node sees, itself included.
size_t reachable_members(const cluster_state& st) {
  size_t seen = 0;
  for (auto& name : st.settings.members)
    if (name == st.self_info.name || st.members.count(name) > 0)
      ++seen;
  return seen;
}

// A strict majority of the configured list, so two sides of a partition can
// never both serve; without a list there is no rule.
bool sees_majority(const cluster_state& st) {
  return st.settings.members.empty() ||
         2 * reachable_members(st) > st.settings.members.size();
}

std::string render_json(const cluster_state& st) {
  std::string out = "{\"node\":";
  detail::append_json_string(out, st.self_info.name);
  out += ",\"node_id\":";
  detail::append_json_string(out, st.self_info.node_id);
  out += ",\"address\":";
  detail::append_json_string(out, address_key(st.self_info.host, st.self_info.port));
  out += ",\"joined\":";
  out += st.joined ? "true" : "false";
  if (!st.settings.members.empty()) {
    out += ",\"quorum\":{\"configured\":";
    out += std::to_string(st.settings.members.size());
    out += ",\"reachable\":";
    out += std::to_string(reachable_members(st));
    out += ",\"majority\":";
    out += sees_majority(st) ? "true" : "false";
    out += "}";
  }
  out += ",\"members\":[";
  auto append_member = [&out](const member_info& m, bool first) {
    if (!first)
      out += ",";
    out += "{\"name\":";
    detail::append_json_string(out, m.name);
    out += ",\"address\":";
    detail::append_json_string(out, address_key(m.host, m.port));
    out += ",\"node_id\":";
    detail::append_json_string(out, m.node_id);
    out += ",\"services\":[";
    for (size_t i = 0; i < m.services.size(); ++i) {
      if (i > 0)
        out += ",";
      detail::append_json_string(out, m.services[i].name);
    }
    out += "]}";
  };
  append_member(st.self_info, true);
  for (auto& [name, m] : st.members)
    append_member(m.info, false);
  out += "]}";
  return out;
}

void update_quorum(self_ptr self) {
  auto& st = self->state;
  bool now = sees_majority(st);
  static auto& quorum_gauge =
      prometheus::BuildGauge()
          .Name("troupe_cluster_quorum")
          .Help("1 while this node sees a majority of cluster.members (or none is "
                "configured), 0 while it refuses new work.")
          .Register(metrics::instance().registry())
          .Add({});
  quorum_gauge.Set(now ? 1 : 0);
  if (now == st.has_quorum)
    return;
  st.has_quorum = now;
  set_node_quorum(now);
  auto seen = reachable_members(st);
  auto configured = st.settings.members.size();
  if (now)
    spdlog::info("cluster: majority reached: this node sees {} of {} configured members; "
                 "serving",
                 seen, configured);
  else
    spdlog::warn("cluster: majority lost: this node sees {} of {} configured members; "
                 "refusing new work until a majority is back",
                 seen, configured);
}

void publish_view(self_ptr self) {
  auto& st = self->state;
  update_quorum(self);
  st.self_info.services = st.local_entries;
  st.view->update(render_json(st), st.joined);
  auto& m = metrics::instance();
  m.cluster_members("up").Set(static_cast<double>(st.members.size() + 1));
  m.cluster_members("down").Set(static_cast<double>(st.down_members.size()));
  size_t services = st.local_entries.size();
  for (auto& [name, member] : st.members)
    services += member.info.services.size();
  m.registry_services().Set(static_cast<double>(services));
}

void mark_down(self_ptr self, const std::string& name, const std::string& why) {
  auto& st = self->state;
  auto i = st.members.find(name);
  if (i == st.members.end())
    return;
  spdlog::warn("member {} at {} is down: {}", name,
               address_key(i->second.info.host, i->second.info.port), why);
  self->demonitor(i->second.endpoint.address());
  // Keep its address for a while: a restarted process comes back there.
  auto address = address_key(i->second.info.host, i->second.info.port);
  st.known_addresses.insert(address);
  st.unanswered_since.emplace(address, std::chrono::steady_clock::now());
  st.down_members.insert(name);
  st.members.erase(i);
  publish_view(self);
}

void add_member(self_ptr self, const member_info& info) {
  auto& st = self->state;
  if (info.name == st.self_info.name || !info.endpoint)
    return;
  auto i = st.members.find(info.name);
  if (i != st.members.end()) {
    if (i->second.info.node_id == info.node_id) {
      i->second.info.services = info.services;
      publish_view(self);
      return;
    }
    // Same name, new process: the old incarnation is gone.
    mark_down(self, info.name, "replaced by a new incarnation");
  }
  auto endpoint = caf::actor_cast<cluster_peer_actor>(info.endpoint);
  self->monitor(endpoint);
  st.down_members.erase(info.name);
  st.members.emplace(info.name, member_state{info, endpoint});
  for (auto& svc : st.members[info.name].info.services)
    svc.node = info.name;
  spdlog::info("member {} joined from {} ({} services)", info.name,
               address_key(info.host, info.port), info.services.size());
  publish_view(self);
}

std::vector<member_info> view_of(self_ptr self) {
  auto& st = self->state;
  std::vector<member_info> result;
  st.self_info.services = st.local_entries;
  result.push_back(st.self_info);
  for (auto& [name, m] : st.members)
    result.push_back(m.info);
  return result;
}

void connect_to(self_ptr self, const std::string& host, uint16_t port);
void join_through(self_ptr self, const std::string& key, const std::string& host,
                  uint16_t port, const std::string& connect_host, uint16_t connect_port);

void handle_join_reply(self_ptr self, const std::vector<member_info>& view) {
  auto& st = self->state;
  for (auto& info : view) {
    if (info.name == st.self_info.name)
      continue;
    auto i = st.members.find(info.name);
    if (i != st.members.end() && i->second.info.node_id == info.node_id)
      continue;
    // Membership is a direct handshake: meet every member we heard of.
    connect_to(self, info.host, info.port);
  }
}

void connect_to(self_ptr self, const std::string& host, uint16_t port) {
  auto& st = self->state;
  auto key = address_key(host, port);
  if (st.leaving || st.connecting.count(key) > 0 ||
      (host == st.self_info.host && port == st.self_info.port))
    return;
  for (auto& [name, m] : st.members)
    if (m.info.host == host && m.info.port == port)
      return;
  st.connecting.insert(key);
  if (!st.settings.dial) {
    join_through(self, key, host, port, host, port);
    return;
  }
  // The gate resolves and connects on its own thread; CAF's middleman only
  // connects where a peer has just answered.
  auto weak = caf::actor_cast<caf::weak_actor_ptr>(self);
  st.settings.dial(
      host, port, st.settings.connect_timeout,
      [weak, key](bool ok, std::string at, uint16_t at_port, std::string error) {
        if (auto me = caf::actor_cast<caf::actor>(weak))
          caf::send_as(me, me, dialed_atom::value, key, ok, std::move(at), at_port,
                       std::move(error));
      });
}

void join_through(self_ptr self, const std::string& key, const std::string& host,
                  uint16_t port, const std::string& connect_host, uint16_t connect_port) {
  auto& st = self->state;
  auto mm = self->system().middleman().actor_handle();
  auto timeout = st.settings.connect_timeout;
  self->request(mm, timeout, caf::connect_atom::value, connect_host, connect_port)
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr,
              const std::set<std::string>&) {
            auto peer = caf::actor_cast<cluster_peer_actor>(ptr);
            if (!peer) {
              self->state.connecting.erase(key);
              return;
            }
            auto me = self->state.self_info;
            me.services = self->state.local_entries;
            self->request(peer, timeout, join_atom::value, me)
                .then(
                    [=](const std::vector<member_info>& view) {
                      self->state.connecting.erase(key);
                      // The peer's own entry comes first in its view.
                      for (auto& info : view)
                        if (info.host == host && info.port == port && info.endpoint &&
                            info.endpoint.node() == peer.node()) {
                          add_member(self, info);
                          // Services registered while the join was in flight
                          // were announced to members only, which the peer
                          // was not yet: announce them now.
                          for (auto& entry : self->state.local_entries) {
                            bool sent = false;
                            for (auto& old : me.services)
                              sent |=
                                  old.name == entry.name && old.handle == entry.handle;
                            if (!sent && info.endpoint)
                              self->send(
                                  caf::actor_cast<cluster_peer_actor>(info.endpoint),
                                  service_up_atom::value, entry);
                          }
                        }
                      if (!self->state.joined) {
                        self->state.joined = true;
                        spdlog::info("joined the cluster through {}", key);
                      }
                      if (self->state.seeds.count(key) == 0)
                        self->state.known_addresses.erase(key);
                      self->state.unanswered_since.erase(key);
                      publish_view(self);
                      handle_join_reply(self, view);
                    },
                    [=](caf::error& err) {
                      self->state.connecting.erase(key);
                      spdlog::debug("join through {} failed: {}", key, describe(err));
                    });
          },
          [=](caf::error& err) {
            self->state.connecting.erase(key);
            spdlog::debug("cannot reach {}: {}", key, describe(err));
          });
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  if (st.leaving)
    return;
  auto now = std::chrono::steady_clock::now();
  for (auto i = st.unanswered_since.begin(); i != st.unanswered_since.end();) {
    if (st.seeds.count(i->first) == 0 && now - i->second > st.settings.forget_after) {
      spdlog::info(
          "forgetting {}: no answer for {} s", i->first,
          std::chrono::duration_cast<std::chrono::seconds>(now - i->second).count());
      st.known_addresses.erase(i->first);
      i = st.unanswered_since.erase(i);
    } else {
      ++i;
    }
  }
  for (auto& addr : st.known_addresses)
    if (auto peer = parse_peer_address(addr))
      connect_to(self, peer->host, peer->port);
  if (!st.settings.dns_name.empty() && !st.resolving) {
    st.resolving = true;
    self->request(st.resolver, st.settings.connect_timeout, resolve_atom::value,
                  st.settings.dns_name)
        .then(
            [=](const std::vector<std::string>& addresses) {
              auto& st = self->state;
              st.resolving = false;
              bool only_self = !addresses.empty();
              for (auto& host : addresses) {
                if (host != st.self_info.host ||
                    st.settings.dns_port != st.self_info.port)
                  only_self = false;
                connect_to(self, host, st.settings.dns_port);
              }
              // The name resolves to this node alone: it is the whole cluster.
              if (only_self && !st.joined) {
                st.joined = true;
                spdlog::info("{} resolves to this node only: starting the cluster",
                             st.settings.dns_name);
                publish_view(self);
              }
            },
            [=](caf::error&) { self->state.resolving = false; });
  }
  for (auto& [name, m] : st.members) {
    auto member_name = name;
    auto node_id = m.info.node_id;
    self->request(m.endpoint, st.settings.failure_timeout, ping_atom::value,
                  st.self_info.name)
        .then([](pong_atom) {},
              [=](caf::error& err) {
                auto i = self->state.members.find(member_name);
                if (i == self->state.members.end() || i->second.info.node_id != node_id)
                  return;
                auto why = classify(err) == errc::not_found
                               ? std::string{"it no longer knows us"}
                               : "no answer within " +
                                     std::to_string(
                                         self->state.settings.failure_timeout.count()) +
                                     "ms";
                mark_down(self, member_name, why);
              });
  }
  self->delayed_send(self, st.settings.heartbeat_interval, cluster_tick_atom::value);
}

caf::node_id sender_node(self_ptr self) {
  const auto& sender = self->current_sender();
  return sender != nullptr ? sender->node() : caf::node_id{};
}

caf::error refuse(self_ptr self, const std::string& what, const std::string& why) {
  auto node = sender_node(self);
  spdlog::warn("cluster: refused {} from {}: {}", what,
               node ? caf::to_string(node) : std::string{"an anonymous sender"}, why);
  static auto& refused =
      prometheus::BuildCounter()
          .Name("troupe_cluster_refused_messages_total")
          .Help("Cluster messages refused because their sender may not "
                "send them (another node's claims, node-local API).")
          .Register(metrics::instance().registry())
          .Add({});
  refused.Increment();
  return make_error(errc::rejected, "refused " + what + ": " + why);
}

// Why a join does not describe the node that sent it; nothing if it does.
std::optional<std::string> claim_of_other_node(self_ptr self, const member_info& info) {
  auto node = sender_node(self);
  if (!node || node == self->node())
    return "a join must come from the joining node";
  if (info.node_id != caf::to_string(node) || !info.endpoint ||
      info.endpoint.node() != node)
    return "the join describes another node";
  for (auto& svc : info.services)
    if (svc.handle && svc.handle.node() != node)
      return "service " + svc.name + " runs on another node";
  return std::nullopt;
}

// Why the sender may not speak for member `name`; nothing if it may.
std::optional<std::string> not_sent_by_member(self_ptr self, const std::string& name) {
  auto i = self->state.members.find(name);
  if (i == self->state.members.end())
    return "no member " + name;
  auto node = sender_node(self);
  if (!node || i->second.info.node_id != caf::to_string(node))
    return "the message is about another node";
  return std::nullopt;
}

// Every registration of `name` this node knows of, its own first.
std::vector<const service_entry*> entries_named(const cluster_state& st,
                                                const std::string& name) {
  std::vector<const service_entry*> result;
  for (auto& e : st.local_entries)
    if (e.name == name)
      result.push_back(&e);
  for (auto& [member, m] : st.members)
    for (auto& e : m.info.services)
      if (e.name == name)
        result.push_back(&e);
  return result;
}

caf::error no_provider(const std::string& name) {
  return make_error(errc::service_unavailable,
                    "no live node provides service '" + name + "'");
}

caf::error other_interface(const service_entry& e) {
  return make_error(errc::interface_mismatch, "service '" + e.name + "' on node " +
                                                  e.node + " speaks another interface");
}

cluster_actor::behavior_type cluster(self_ptr self, cluster_settings settings,
                                     std::shared_ptr<cluster_view> view) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.view = std::move(view);
  st.self_info.name = st.settings.node_name;
  st.self_info.host = st.settings.advertise_host;
  st.self_info.port = st.settings.port;
  st.self_info.node_id = caf::to_string(self->system().node());
  st.self_info.endpoint = caf::actor_cast<caf::actor>(self);
  for (auto& seed : st.settings.seeds) {
    st.known_addresses.insert(seed);
    st.seeds.insert(seed);
  }
  if (!st.settings.dns_name.empty())
    st.resolver = self->spawn<caf::linked + caf::detached>(resolver);
  st.has_quorum = sees_majority(st);
  set_node_quorum(st.has_quorum);
  if (!st.has_quorum)
    spdlog::info("cluster: waiting for a majority of the {} configured members before "
                 "serving",
                 st.settings.members.size());

  self->set_down_handler([=](caf::down_msg& msg) {
    auto& st = self->state;
    if (auto i = st.local_services.find(msg.source); i != st.local_services.end()) {
      auto name = i->second;
      st.local_services.erase(i);
      auto& entries = st.local_entries;
      entries.erase(std::remove_if(entries.begin(), entries.end(),
                                   [&](const service_entry& e) {
                                     return e.handle.address() == msg.source;
                                   }),
                    entries.end());
      spdlog::info("service {} stopped; unregistered", name);
      // Peers drop a service by name: while another instance of it runs
      // here (a restarted one registered before this down arrived), they
      // must keep it.
      bool still_here =
          std::any_of(entries.begin(), entries.end(),
                      [&](const service_entry& e) { return e.name == name; });
      if (!still_here)
        for (auto& [member, m] : st.members)
          self->send(m.endpoint, service_down_atom::value, st.self_info.name, name);
      publish_view(self);
      return;
    }
    for (auto& [name, m] : st.members) {
      if (m.endpoint.address() == msg.source) {
        auto member_name = name;
        mark_down(self, member_name, caf::to_string(msg.reason));
        return;
      }
    }
  });

  // Publishing is asynchronous: the supervisor restarts us (with backoff)
  // when it fails.
  auto mm = self->system().middleman().actor_handle();
  // Peers learn the peer protocol only.
  auto ifs = self->system().message_types<cluster_peer_actor>();
  self->request(mm, std::chrono::seconds(10), caf::publish_atom::value, uint16_t{0},
                caf::actor_cast<caf::strong_actor_ptr>(self), ifs,
                st.settings.backend_host, true)
      .then(
          [=](uint16_t backend) {
            auto& st = self->state;
            st.view->set_backend_port(backend);
            spdlog::info("cluster endpoint listening on {}:{} as node {}",
                         st.settings.bind_host, st.self_info.port, st.self_info.name);
            // Without other seeds this node starts the cluster.
            auto self_address = address_key(st.self_info.host, st.self_info.port);
            bool other_seed = !st.settings.dns_name.empty();
            for (auto& seed : st.settings.seeds)
              if (seed != self_address)
                other_seed = true;
            if (!other_seed)
              st.joined = true;
            st.known_addresses.erase(self_address);
            publish_view(self);
            on_tick(self);
          },
          [=](caf::error& err) {
            spdlog::error("cannot open the cluster endpoint on {}: {}",
                          self->state.settings.backend_host, describe(err));
            self->quit(err);
          });

  self->attach_functor([mm, view = st.view](const caf::error&) {
    // Close the endpoint; the next incarnation of this actor opens its own.
    if (auto port = view->backend_port(); port != 0) {
      view->set_backend_port(0);
      caf::anon_send(mm, caf::close_atom::value, port);
    }
  });

  return {
      [=](join_atom, const member_info& info) -> caf::result<std::vector<member_info>> {
        if (auto why = claim_of_other_node(self, info))
          return refuse(self, "join as " + info.name, *why);
        if (self->state.leaving)
          return std::vector<member_info>{};
        add_member(self, info);
        if (!self->state.joined) {
          // Someone reached us: we are part of a cluster now.
          self->state.joined = true;
          publish_view(self);
        }
        return view_of(self);
      },
      [=](ping_atom, const std::string& from) -> caf::result<pong_atom> {
        if (self->state.members.count(from) == 0)
          return make_error(errc::not_found, "unknown member " + from);
        return pong_atom::value;
      },
      [=](leave_atom, const std::string& name, const std::string& node_id) {
        if (auto why = not_sent_by_member(self, name)) {
          refuse(self, "leave of " + name, *why);
          return;
        }
        auto i = self->state.members.find(name);
        if (i != self->state.members.end() && i->second.info.node_id == node_id) {
          self->demonitor(i->second.endpoint.address());
          self->state.members.erase(i);
          spdlog::info("member {} left the cluster", name);
          publish_view(self);
        }
      },
      [=](service_up_atom, service_entry entry) {
        auto why = not_sent_by_member(self, entry.node);
        if (!why && entry.handle && entry.handle.node() != sender_node(self))
          why = "the service runs on another node";
        if (why) {
          refuse(self, "service up of " + entry.name + " on " + entry.node, *why);
          return;
        }
        auto i = self->state.members.find(entry.node);
        auto& services = i->second.info.services;
        services.erase(std::remove_if(services.begin(), services.end(),
                                      [&](auto& e) { return e.name == entry.name; }),
                       services.end());
        services.push_back(std::move(entry));
        publish_view(self);
      },
      [=](service_down_atom, const std::string& node, const std::string& service) {
        if (auto why = not_sent_by_member(self, node)) {
          refuse(self, "service down of " + service + " on " + node, *why);
          return;
        }
        auto i = self->state.members.find(node);
        auto& services = i->second.info.services;
        services.erase(std::remove_if(services.begin(), services.end(),
                                      [&](auto& e) { return e.name == service; }),
                       services.end());
        publish_view(self);
      },
      [=](register_service_atom, const std::string& name, caf::actor handle,
          std::vector<std::string> interface) {
        if (!sent_from_this_node(self) || !handle || handle.node() != self->node()) {
          refuse(self, "register of service " + name,
                 "only this node registers its services");
          return;
        }
        auto& st = self->state;
        service_entry entry{name, st.self_info.name, handle, std::move(interface)};
        auto& entries = st.local_entries;
        entries.erase(std::remove_if(entries.begin(), entries.end(),
                                     [&](auto& e) { return e.name == name; }),
                      entries.end());
        entries.push_back(entry);
        st.local_services[handle.address()] = name;
        self->monitor(handle);
        for (auto& [member, m] : st.members)
          self->send(m.endpoint, service_up_atom::value, entry);
        spdlog::info("service {} registered", name);
        publish_view(self);
      },
      [=](find_service_atom, const std::string& name,
          const std::vector<std::string>& interface) -> caf::result<caf::actor> {
        if (!sent_from_this_node(self))
          return refuse(self, "lookup of " + name, "the registry API is node-local");
        auto entries = entries_named(self->state, name);
        if (entries.empty())
          return no_provider(name);
        if (!interface.empty() && interface != entries.front()->interface)
          return other_interface(*entries.front());
        return entries.front()->handle;
      },
      [=](find_services_atom, const std::string& name,
          const std::vector<std::string>& interface)
          -> caf::result<std::vector<caf::actor>> {
        if (!sent_from_this_node(self))
          return refuse(self, "lookup of " + name, "the registry API is node-local");
        std::vector<caf::actor> result;
        const service_entry* mismatch = nullptr;
        for (auto* e : entries_named(self->state, name)) {
          if (!e->handle)
            continue;
          if (!interface.empty() && interface != e->interface)
            mismatch = e;
          else
            result.push_back(e->handle);
        }
        if (!result.empty())
          return result;
        if (mismatch != nullptr)
          return other_interface(*mismatch);
        return no_provider(name);
      },
      [=](members_atom) -> caf::result<std::vector<member_info>> {
        if (!sent_from_this_node(self))
          return refuse(self, "members", "the registry API is node-local");
        return view_of(self);
      },
      [=](leave_cluster_atom) -> caf::result<caf::ok_atom> {
        if (!sent_from_this_node(self))
          return refuse(self, "leave_cluster", "only this node makes itself leave");
        auto& st = self->state;
        st.leaving = true;
        for (auto& [name, m] : st.members) {
          self->send(m.endpoint, leave_atom::value, st.self_info.name,
                     st.self_info.node_id);
          self->demonitor(m.endpoint.address());
        }
        st.members.clear();
        st.joined = false;
        publish_view(self);
        spdlog::info("left the cluster");
        return caf::ok_atom::value;
      },
      [=](cluster_tick_atom) {
        if (sent_from_this_node(self))
          on_tick(self);
      },
      [=](dialed_atom, const std::string& key, bool ok, const std::string& at,
          uint16_t at_port, const std::string& error) {
        if (!sent_from_this_node(self))
          return;
        if (!ok) {
          self->state.connecting.erase(key);
          self->state.unanswered_since.emplace(key, std::chrono::steady_clock::now());
          spdlog::debug("cannot reach {}: {}", key, error);
          return;
        }
        if (auto peer = parse_peer_address(key))
          join_through(self, key, peer->host, peer->port, at, at_port);
        else
          self->state.connecting.erase(key);
      },
  };
}

} // namespace

cluster_actor spawn_cluster(caf::actor_system& sys, cluster_settings settings,
                            std::shared_ptr<cluster_view> view) {
  auto handle = sys.spawn(cluster, std::move(settings), std::move(view));
  // Registered here, not in the actor's init: services spawned right after
  // must find it before it first runs.
  sys.registry().put(cluster_atom::value, caf::actor_cast<caf::strong_actor_ptr>(handle));
  return handle;
}

void register_service(caf::actor_system& sys, const std::string& name,
                      const caf::actor& handle, std::vector<std::string> interface) {
  // Sent as the service itself: the registry refuses senders of other nodes
  // and anonymous ones.
  caf::send_as(handle, local_cluster(sys), register_service_atom::value, name, handle,
               std::move(interface));
}

cluster_actor local_cluster(caf::actor_system& sys) {
  return caf::actor_cast<cluster_actor>(sys.registry().get(cluster_atom::value));
}

} // namespace troupe
