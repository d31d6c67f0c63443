#include <troupe/runtime/cluster.hpp>

#include <algorithm>
#include <map>
#include <set>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/metrics.hpp>

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
  cluster_actor endpoint;
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
  std::set<std::string> down_members;          // marked down, not back yet
  std::map<caf::actor_addr, std::string> local_services; // handle -> service name
  std::vector<service_entry> local_entries;
  resolver_actor resolver;
  bool resolving = false;
};

using self_ptr = cluster_actor::stateful_pointer<cluster_state>;

std::string render_json(const cluster_state& st) {
  std::string out = "{\"node\":";
  detail::append_json_string(out, st.self_info.name);
  out += ",\"node_id\":";
  detail::append_json_string(out, st.self_info.node_id);
  out += ",\"address\":";
  detail::append_json_string(out, address_key(st.self_info.host, st.self_info.port));
  out += ",\"joined\":";
  out += st.joined ? "true" : "false";
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

void publish_view(self_ptr self) {
  auto& st = self->state;
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
  // Keep its address: a restarted process comes back there.
  st.known_addresses.insert(address_key(i->second.info.host, i->second.info.port));
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
  auto endpoint = caf::actor_cast<cluster_actor>(info.endpoint);
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
  auto mm = self->system().middleman().actor_handle();
  auto timeout = st.settings.connect_timeout;
  self->request(mm, timeout, caf::connect_atom::value, host, port)
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr,
              const std::set<std::string>&) {
            auto peer = caf::actor_cast<cluster_actor>(ptr);
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
                        if (info.host == host && info.port == port) {
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
                              self->send(caf::actor_cast<cluster_actor>(info.endpoint),
                                         service_up_atom::value, entry);
                          }
                        }
                      if (!self->state.joined) {
                        self->state.joined = true;
                        spdlog::info("joined the cluster through {}", key);
                      }
                      self->state.known_addresses.erase(key);
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

std::pair<std::string, uint16_t> split_address(const std::string& addr) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos)
    return {addr, 0};
  auto host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return {host, static_cast<uint16_t>(std::stoul(addr.substr(colon + 1)))};
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  if (st.leaving)
    return;
  for (auto& addr : st.known_addresses) {
    auto [host, port] = split_address(addr);
    if (port != 0)
      connect_to(self, host, port);
  }
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
  for (auto& seed : st.settings.seeds)
    st.known_addresses.insert(seed);
  if (!st.settings.dns_name.empty())
    st.resolver = self->spawn<caf::linked + caf::detached>(resolver);

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
  auto ifs = self->system().message_types<cluster_actor>();
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
      [=](join_atom, const member_info& info) -> std::vector<member_info> {
        if (self->state.leaving)
          return {};
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
        auto i = self->state.members.find(name);
        if (i != self->state.members.end() && i->second.info.node_id == node_id) {
          self->demonitor(i->second.endpoint.address());
          self->state.members.erase(i);
          spdlog::info("member {} left the cluster", name);
          publish_view(self);
        }
      },
      [=](service_up_atom, service_entry entry) {
        auto i = self->state.members.find(entry.node);
        if (i == self->state.members.end())
          return;
        auto& services = i->second.info.services;
        services.erase(std::remove_if(services.begin(), services.end(),
                                      [&](auto& e) { return e.name == entry.name; }),
                       services.end());
        services.push_back(std::move(entry));
        publish_view(self);
      },
      [=](service_down_atom, const std::string& node, const std::string& service) {
        auto i = self->state.members.find(node);
        if (i == self->state.members.end())
          return;
        auto& services = i->second.info.services;
        services.erase(std::remove_if(services.begin(), services.end(),
                                      [&](auto& e) { return e.name == service; }),
                       services.end());
        publish_view(self);
      },
      [=](register_service_atom, const std::string& name, caf::actor handle,
          std::vector<std::string> interface) -> caf::ok_atom {
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
        return caf::ok_atom::value;
      },
      [=](find_service_atom, const std::string& name,
          const std::vector<std::string>& interface) -> caf::result<caf::actor> {
        auto& st = self->state;
        const service_entry* found = nullptr;
        for (auto& e : st.local_entries)
          if (e.name == name)
            found = &e;
        for (auto i = st.members.begin(); found == nullptr && i != st.members.end(); ++i)
          for (auto& e : i->second.info.services)
            if (e.name == name)
              found = &e;
        if (found == nullptr)
          return make_error(errc::service_unavailable,
                            "no live node provides service '" + name + "'");
        if (!interface.empty() && interface != found->interface)
          return make_error(errc::interface_mismatch, "service '" + name + "' on node " +
                                                          found->node +
                                                          " speaks another interface");
        return found->handle;
      },
      [=](members_atom) { return view_of(self); },
      [=](leave_cluster_atom) {
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
      [=](cluster_tick_atom) { on_tick(self); },
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

cluster_actor local_cluster(caf::actor_system& sys) {
  return caf::actor_cast<cluster_actor>(sys.registry().get(cluster_atom::value));
}

} // namespace troupe
