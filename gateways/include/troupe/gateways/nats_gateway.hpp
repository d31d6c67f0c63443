#pragma once

// NATS as a broker of the event bus, and NATS request/reply bridged to
// actors. Every actor here runs detached (a thread of its own) and owns its
// connection, so no NATS call ever runs on a scheduler thread; nats.c's
// callbacks only send messages. Stop each actor with an exit message
// (user_shutdown): it then unsubscribes, joins its threads and closes its
// connection; its own thread ends once the last handle to it is dropped,
// which ~actor_system waits for. A subscribing actor also ends when the
// actor it delivers to ends, with that actor's exit reason.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/timespan.hpp>
#include <caf/typed_actor.hpp>

#include <troupe/outbox/outbound_event.hpp>
#include <troupe/runtime/config.hpp>

namespace troupe {

/// A JetStream stream the gateway creates when it is missing.
struct nats_stream {
  std::string name;
  std::vector<std::string> subjects;
};

/// The `events.nats.*` configuration, parsed once at start.
struct nats_settings {
  std::vector<std::string> servers{"nats://127.0.0.1:4222"};
  std::string client_name = "troupe";
  /// TLS material: a path, or the PEM text itself (from a secret). Any of
  /// them turns TLS on.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string user;
  std::string password; ///< secret
  std::string token;    ///< secret
  /// Publish through JetStream (acknowledged once stored, deduplicated on
  /// the event id); false: core NATS, acknowledged once the server has it.
  bool jetstream = true;
  std::vector<nats_stream> streams;
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(2);
  std::chrono::milliseconds reconnect_wait = std::chrono::milliseconds(500);
  std::chrono::milliseconds publish_timeout = std::chrono::seconds(5);
  /// A consumer that does not answer a delivery within this gets it again.
  std::chrono::milliseconds deliver_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds redeliver_delay = std::chrono::milliseconds(200);
  /// Pull consumers: how long one fetch waits, how many messages it takes,
  /// and after how long JetStream redelivers a message nobody acknowledged.
  std::chrono::milliseconds fetch_wait = std::chrono::milliseconds(500);
  uint32_t fetch_batch = 64;
  std::chrono::milliseconds ack_wait = std::chrono::seconds(30);
};

/// Declares the `events.nats.*` keys; the password and token are secrets.
void declare_nats_config(config_schema& schema);

/// Throws config_error naming the key: a server URL that is not
/// nats://, tls:// or a host:port, a stream entry that is not
/// "NAME=subject subject…", a password without a user, user and token both
/// set, a certificate without its key.
nats_settings nats_settings_from(const config& cfg);

/// A publisher to NATS: subject = destination, the event's headers as NATS
/// headers. With JetStream, `Nats-Msg-Id` is the event id, so a
/// re-publication within the stream's duplicate window is stored once; an
/// event is acknowledged when JetStream stored it. JetStream publishes are
/// asynchronous, many in flight, but per key one at a time: a key's next
/// event goes once the one before it is stored, never after a failed one
/// (until that one comes again). An unreachable server answers errors at
/// once (nats.c reconnects behind).
publisher_actor spawn_nats_publisher(caf::actor_system& sys, nats_settings settings);

using nats_ready_atom = caf::atom_constant<caf::atom("natsready")>;

/// A subscription's handle: answers (nats_ready_atom) with ok once the
/// server has the subscription (so nothing published after is missed), or
/// with errc::service_unavailable when it cannot subscribe at all.
using nats_subscription_actor =
    caf::typed_actor<caf::replies_to<nats_ready_atom>::with<caf::ok_atom>>;

/// Core NATS: delivers every message on `subject` (wildcards allowed) to
/// `consumer`, one delivery (an event, or what is queued up to a batch
/// consumer's batch size) at a time, offset = a per-subscription counter. With a
/// non-empty `queue_group`, subscriptions of the same group share the
/// messages, each going to one of them. At most once across restarts; an
/// error answer redelivers from memory after redeliver_delay.
nats_subscription_actor spawn_nats_subscriber(caf::actor_system& sys,
                                              nats_settings settings, std::string subject,
                                              std::string queue_group,
                                              event_subscriber consumer);

/// JetStream durable pull consumer `durable` on `stream` for `subject`: a
/// fetch loop on its own thread delivers to `consumer` in stream order
/// (a batch consumer gets up to its batch size of a fetch at once), offset =
/// stream sequence; a message is acknowledged only after the consumer
/// handled it, negatively acknowledged (so redelivered, before
/// anything after it) on an error or no answer within deliver_timeout.
nats_subscription_actor spawn_nats_pull_consumer(caf::actor_system& sys,
                                                 nats_settings settings,
                                                 std::string stream, std::string durable,
                                                 std::string subject,
                                                 event_subscriber consumer);

using nats_request_atom = caf::atom_constant<caf::atom("natsreq")>;
using nats_serve_atom = serve_request_atom;

/// Calls a NATS responder: answers the reply's payload; errc::timeout when
/// no reply came within the deadline, errc::service_unavailable when no
/// responder listens or the server is unreachable, errc::rejected with the
/// responder's text when it replied with an `error` header.
using nats_requester_actor =
    caf::typed_actor<caf::replies_to<nats_request_atom, std::string, std::string,
                                     caf::timespan>::with<std::string>>;

nats_requester_actor spawn_nats_requester(caf::actor_system& sys, nats_settings settings);

/// What serves NATS requests: (subject, payload) -> reply payload, as any
/// request over a broker is served.
using nats_handler_actor = request_handler_actor;

/// Answers NATS requests on `subject` (queue group `queue_group`, may be
/// empty) by asking `handler` within deliver_timeout. An error answer or
/// none becomes an empty reply with an `error` header holding the reason.
nats_subscription_actor spawn_nats_responder(caf::actor_system& sys,
                                             nats_settings settings, std::string subject,
                                             std::string queue_group,
                                             nats_handler_actor handler);

} // namespace troupe
