// A peer that breaks the cluster protocol, for the tests of what a node
// refuses: it reaches a node's cluster port like any peer, then sends each
// message a peer may not send and prints what came back, one line each:
//
//   rogue_peer <host> <port> <name of another member> <a service of that member>
//
// Lines: "<message>: refused (<error>)", "<message>: ACCEPTED", "<message>: sent"
// (one-way messages, whose refusal only the node's log shows), then "done".

#include <cstdio>
#include <string>
#include <thread>

#include <unistd.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/message_catalog.hpp>

namespace {

using namespace std::chrono_literals;

void print(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

template <class Reply, class Handle, class... Ts>
void expect_refusal(caf::scoped_actor& self, const Handle& target,
                    const std::string& what, Ts&&... xs) {
  self->request(caf::actor_cast<caf::actor>(target), 5s, std::forward<Ts>(xs)...)
      .receive([&](Reply&) { print(what + ": ACCEPTED"); },
               [&](caf::error& err) {
                 print(what + ": refused (" + self->system().render(err) + ")");
               });
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s host port member service\n", argv[0]);
    return 2;
  }
  std::string host = argv[1];
  auto port = static_cast<uint16_t>(std::stoi(argv[2]));
  std::string member = argv[3];
  std::string service = argv[4];

  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  troupe::message_catalog{}.apply_to(cfg);
  cfg.set("logger.console", caf::atom("none"));
  caf::actor_system sys{cfg};

  auto peer = sys.middleman().remote_actor<troupe::cluster_peer_actor>(host, port);
  if (!peer) {
    print("cannot reach the node: " + sys.render(peer.error()));
    return 1;
  }
  // What a peer holds is the cluster actor itself; try its node-local API.
  auto full = caf::actor_cast<troupe::cluster_actor>(*peer);
  auto decoy = sys.spawn([]() -> caf::behavior { return {[](int) {}}; });
  caf::scoped_actor self{sys};
  using namespace troupe;

  expect_refusal<std::vector<member_info>>(self, full, "members", members_atom::value);
  expect_refusal<caf::actor>(self, full, "find_service", find_service_atom::value,
                             service, std::vector<std::string>{});
  expect_refusal<caf::ok_atom>(self, full, "leave_cluster", leave_cluster_atom::value);
  self->send(full, register_service_atom::value, std::string{"evil"}, decoy,
             std::vector<std::string>{});
  print("register_service: sent");

  member_info impostor;
  impostor.name = member;
  impostor.host = "127.0.0.1";
  impostor.port = 1;
  impostor.node_id = "not-my-node";
  impostor.endpoint = decoy;
  expect_refusal<std::vector<member_info>>(self, *peer, "join as another node",
                                           join_atom::value, impostor);

  self->send(*peer, leave_atom::value, member, std::string{"any"});
  print("leave of another member: sent");
  self->send(*peer, service_up_atom::value,
             service_entry{"evil", member, decoy, std::vector<std::string>{}});
  print("service up on another member: sent");
  self->send(*peer, service_down_atom::value, member, service);
  print("service down on another member: sent");

  // Ask the node's registry by name, the way CAF's remote_lookup does: only
  // CAF's spawn server may be addressed by name, so the gate closes the
  // connection. remote_lookup waits minutes for an answer that never comes:
  // run it aside and let the test end this process.
  auto nid = peer->node();
  std::thread{[&sys, nid] {
    sys.middleman().remote_lookup(caf::atom("cluster"), nid);
  }}.detach();
  print("named lookup: sent");
  print("done");
  // The test kills this process once it has seen what it waits for.
  while (true)
    ::pause();
}
