#pragma once

// What the gateways expose: saga types whose input arrives as a protobuf
// message (or its JSON mapping), and service requests that opted in to be
// called from outside. Nothing that is not listed here is reachable.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/event_based_actor.hpp>
#include <google/protobuf/message.h>

#include <troupe/runtime/cluster.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/sagas/saga_definition.hpp>

namespace troupe::gateways {

class api_catalog {
public:
  /// A saga type and the protobuf message its input arrives as.
  struct saga_binding {
    std::string type;
    const google::protobuf::Message* input_prototype = nullptr;
    /// The input in CAF's binary format (start_saga::input); throws
    /// std::invalid_argument naming the field when the input is not valid.
    std::function<std::string(caf::actor_system&, const google::protobuf::Message&)>
        encode_input;
    /// The stored input back as its protobuf message; nullptr if unreadable.
    std::function<std::unique_ptr<google::protobuf::Message>(caf::actor_system&,
                                                             const std::string&)>
        decode_input;
  };

  /// One request type of one service, callable from outside.
  struct call_binding {
    using done_fn = std::function<void(const caf::error&,
                                       std::unique_ptr<google::protobuf::Message>)>;
    std::string service;
    std::string method;
    const google::protobuf::Message* request_prototype = nullptr;
    const google::protobuf::Message* reply_prototype = nullptr;
    /// Looks the service up, sends the converted request from `self` and
    /// calls `done` on `self`'s thread with the converted reply or the error.
    std::function<void(caf::event_based_actor* self, std::chrono::nanoseconds timeout,
                       call_context ctx, const google::protobuf::Message& request,
                       done_fn done)>
        send;
  };

  /// Exposes the saga `type`: `from(const Proto&) -> Input` (throwing
  /// std::invalid_argument for input it rejects) and `to(const Input&) -> Proto`.
  template <class Input, class Proto, class FromProto, class ToProto>
  api_catalog& expose_saga(std::string type, FromProto from, ToProto to) {
    saga_binding b;
    b.type = type;
    b.input_prototype = &Proto::default_instance();
    b.encode_input = [from](caf::actor_system& sys, const google::protobuf::Message& m) {
      return troupe::encode(sys, Input{from(static_cast<const Proto&>(m))});
    };
    b.decode_input =
        [to](caf::actor_system& sys,
             const std::string& bytes) -> std::unique_ptr<google::protobuf::Message> {
      auto in = troupe::decode<Input>(sys, bytes);
      if (!in)
        return nullptr;
      return std::make_unique<Proto>(to(*in));
    };
    sagas_.insert_or_assign(std::move(type), std::move(b));
    return *this;
  }

  /// Exposes `Request` of the service `name` (interface `Handle`) as
  /// `method`: `from(const RequestProto&) -> Request`, `to(const Reply&) -> ReplyProto`.
  template <class Handle, class Request, class Reply, class RequestProto,
            class ReplyProto, class FromProto, class ToProto>
  api_catalog& expose_call(std::string name, std::string method, FromProto from,
                           ToProto to) {
    call_binding b;
    b.service = name;
    b.method = method;
    b.request_prototype = &RequestProto::default_instance();
    b.reply_prototype = &ReplyProto::default_instance();
    b.send = [name, from, to](caf::event_based_actor* self,
                              std::chrono::nanoseconds timeout, call_context ctx,
                              const google::protobuf::Message& m,
                              call_binding::done_fn done) {
      Request req = from(static_cast<const RequestProto&>(m));
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
      find_service<Handle>(self, name, wait)
          .then(
              [=](const caf::actor& found) {
                auto svc = caf::actor_cast<Handle>(found);
                self->request(svc, caf::duration{timeout}, ctx, req)
                    .then(
                        [=](const Reply& reply) {
                          done(caf::error{}, std::make_unique<ReplyProto>(to(reply)));
                        },
                        [=](caf::error& err) { done(err, nullptr); });
              },
              [=](caf::error& err) { done(err, nullptr); });
    };
    calls_.insert_or_assign(std::make_pair(std::move(name), std::move(method)),
                            std::move(b));
    return *this;
  }

  const saga_binding* find_saga(const std::string& type) const;
  const call_binding* find_call(const std::string& service,
                                const std::string& method) const;
  std::vector<std::string> saga_types() const;

private:
  std::map<std::string, saga_binding> sagas_;
  std::map<std::pair<std::string, std::string>, call_binding> calls_;
};

} // namespace troupe::gateways
