#include <troupe/gateways/saga_command_consumer.hpp>

#include <map>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/gateways/api_backend.hpp>
#include <troupe/gateways/event_bus.hpp>
#include <troupe/outbox/outbox_transaction.hpp>
#include <troupe/runtime/errors.hpp>

namespace troupe::gateways {

namespace {

using command_done_atom = caf::atom_constant<caf::atom("cmddone")>;

constexpr auto store_timeout = std::chrono::seconds(30);
// Below the brokers' default redelivery timeouts (10 s), so a slow start is
// answered as a failure before the broker gives the command to someone else.
constexpr auto start_timeout = std::chrono::seconds(5);

// Codes no redelivery can change: the command itself is wrong.
bool is_poison(api_code code) {
  return code == api_code::invalid_argument || code == api_code::not_found ||
         code == api_code::failed_precondition;
}

struct command_consumer_state {
  static inline const char* name = "saga_command_consumer";
  command_consumer_state() = default;
  std::shared_ptr<api_backend> backend;
  uint64_t next_id = 0;
  std::map<uint64_t,
           std::pair<caf::typed_response_promise<caf::ok_atom>, delivered_event>>
      pending;
};

using consumer_pointer = caf::stateful_actor<command_consumer_state>*;

void dead_letter(consumer_pointer self, caf::typed_response_promise<caf::ok_atom> rp,
                 const delivered_event& d, const std::string& error) {
  spdlog::warn("saga command {} from {} cannot start a saga: {}", d.event.id, d.topic,
               error);
  auto bus = local_event_bus(self->system());
  if (!bus.sequence || !bus.store) {
    // Without the node's outbox the command would be lost; keep it at the broker.
    rp.deliver(make_error(errc::service_unavailable, "the event bus is not running"));
    return;
  }
  outbox_transaction tx{bus.sequence};
  auto content_type = d.event.header(event_headers::content_type);
  tx.emit_encoded(d.topic + ".dead-letters", d.event.key,
                  "troupe.api.v1.StartSagaRequest", d.event.payload,
                  {{event_headers::error, error},
                   {"original-id", d.event.id},
                   {"original-topic", d.topic},
                   {"original-content-type",
                    content_type.empty() ? json_content_type : content_type}});
  self->request(bus.store, store_timeout, store_commit_atom::value, std::move(tx).take())
      .then(
          [=](caf::ok_atom) mutable {
            if (bus.relay)
              caf::anon_send(bus.relay, relay_wake_atom::value);
            rp.deliver(caf::ok_atom::value);
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

caf::behavior saga_command_consumer(consumer_pointer self,
                                    std::shared_ptr<api_backend> backend) {
  self->state.backend = std::move(backend);
  return {
      [self](deliver_atom, delivered_event& d) -> caf::result<caf::ok_atom> {
        auto rp = self->make_response_promise<caf::ok_atom>();
        api::v1::StartSagaRequest req;
        auto content_type = d.event.header(event_headers::content_type);
        if (content_type.empty() || content_type == json_content_type) {
          auto st = from_json(d.event.payload, req);
          if (!st.ok()) {
            dead_letter(self, rp, d, st.message);
            return rp;
          }
        } else if (content_type == protobuf_content_type) {
          if (!req.ParseFromString(d.event.payload)) {
            dead_letter(self, rp, d, "the payload is not a binary StartSagaRequest");
            return rp;
          }
        } else {
          dead_letter(self, rp, d,
                      "unsupported content type '" + content_type + "' (expected " +
                          json_content_type + " or " + protobuf_content_type + ")");
          return rp;
        }
        if (req.idempotency_key().empty())
          req.set_idempotency_key(d.topic + "/" + d.event.id);
        request_info info;
        info.correlation_id =
            correlation_from(d.event.header(event_headers::traceparent),
                             d.event.header(event_headers::correlation_id));
        info.timeout = start_timeout;
        info.peer = "broker:" + d.topic;
        auto id = self->state.next_id++;
        self->state.pending.emplace(id, std::make_pair(rp, d));
        // The backend answers on another actor's thread: hand the outcome
        // back to this actor, which owns the promise.
        auto me = caf::actor_cast<caf::actor>(self);
        self->state.backend->start_saga(
            info, req, [me, id](const api_status& st, api::v1::StartSagaResponse) {
              caf::anon_send(me, command_done_atom::value, id,
                             static_cast<uint8_t>(st.code), st.message);
            });
        return rp;
      },
      [self](command_done_atom, uint64_t id, uint8_t code, const std::string& message) {
        auto it = self->state.pending.find(id);
        if (it == self->state.pending.end())
          return;
        auto [rp, d] = std::move(it->second);
        self->state.pending.erase(it);
        auto c = static_cast<api_code>(code);
        if (c == api_code::ok)
          rp.deliver(caf::ok_atom::value);
        else if (is_poison(c))
          dead_letter(self, rp, d, std::string{to_string(c)} + ": " + message);
        else
          rp.deliver(make_error(errc::service_unavailable,
                                "saga command " + d.event.id +
                                    " deferred: " + to_string(c) + ": " + message));
      },
  };
}

} // namespace

event_consumer_actor spawn_saga_command_consumer(caf::actor_system& sys,
                                                 std::shared_ptr<api_backend> backend) {
  return caf::actor_cast<event_consumer_actor>(
      sys.spawn(saga_command_consumer, std::move(backend)));
}

} // namespace troupe::gateways
