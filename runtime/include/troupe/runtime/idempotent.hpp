#pragma once

// Idempotent request handling: a service applies each idempotency key once
// and answers repeats with the first reply, recorded in the store together
// with the service's own state change. Include this where a service actor is
// implemented; it pulls in CAF's typed-actor and serialization headers.

#include <chrono>
#include <functional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/expected.hpp>

#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/runtime/store_actor.hpp>

namespace troupe {

/// Applies each idempotency key once. Lives in a service's actor state, one
/// per service actor:
///
///   struct points_state {
///     static inline const char* name = "points";
///     troupe::idempotency idem;
///   };
///   return troupe::serve(self, [=](const call_context& ctx, const add_points& cmd) {
///     return self->state.idem.run<points_added>(self, ctx, [=](write_batch& tx)
///         -> caf::expected<points_added> {
///       tx.put(store_column::state, "points/" + cmd.account, ...);
///       return points_added{...};
///     });
///   });
///
/// Keys are recorded as `<actor name>/<key>` in the store's `idempotency`
/// column family, with the serialized reply, in the same batch as `tx`, so a
/// key counts as processed exactly when its state change is durable. All
/// store access goes through the node's store actor (`local_store`).
class idempotency {
public:
  /// How long one store request may take before the call fails with
  /// `sec::request_timeout` (retryable: the key makes a retry safe).
  static constexpr std::chrono::seconds store_timeout{30};

  /// Runs `apply(write_batch& tx) -> caf::expected<Reply>` (or `-> Reply`)
  /// once per `ctx.idempotency_key`. The first request for a key applies,
  /// commits `tx` plus (key -> serialized Reply) through the store actor, and
  /// is answered once that is durable; a repeated key is answered with the
  /// stored first reply without calling `apply`; a request arriving while the
  /// same key is in progress waits for the first one's result. An empty key
  /// applies every time (`tx` is still committed, and the reply waits for it).
  /// Errors returned by `apply` are not recorded (a later retry applies
  /// again) and are the reply; so are store failures. `apply` runs in the
  /// actor, with `ctx` current, possibly after the handler has returned
  /// (once the store has answered whether the key is new): it may change the
  /// actor's in-memory state, which a failed commit does not undo.
  /// A stored reply that cannot be decoded as `Reply` is answered with
  /// `errc::internal`; no store actor on the node, with `errc::internal`
  /// "no store configured".
  template <class Reply, class Self, class Apply>
  promise<Reply> run(Self* self, const call_context& ctx, Apply apply);

  /// Keys whose first request is still waiting for the store.
  size_t in_progress() const noexcept { return in_progress_.size(); }

private:
  // A request for a key in progress: called with the first request's error,
  // or with its serialized reply.
  using waiter = std::function<void(const caf::error& err, const std::string& reply)>;

  template <class Reply, class Self>
  static caf::expected<Reply> decode(Self* self, const std::string& bytes);

  template <class Reply, class Self>
  static caf::error encode(Self* self, Reply reply, std::string& bytes);

  template <class Reply, class Self, class Apply>
  void apply_and_commit(Self* self, const call_context& ctx, store_actor db,
                        std::string key, promise<Reply> rp, Apply& apply);

  /// Ends the key's processing: answers every request that waited for it.
  void finish(const std::string& key, const caf::error& err, const std::string& reply);

  std::unordered_map<std::string, std::vector<waiter>> in_progress_;
};

// -- implementation -----------------------------------------------------------

template <class Reply, class Self>
caf::expected<Reply> idempotency::decode(Self* self, const std::string& bytes) {
  Reply reply;
  caf::binary_deserializer source{self->system(), bytes.data(), bytes.size()};
  if (auto err = source(reply); err || source.remaining() != 0)
    return make_error(errc::internal, std::string{"the stored reply of "} + self->name() +
                                          " cannot be decoded");
  return reply;
}

template <class Reply, class Self>
caf::error idempotency::encode(Self* self, Reply reply, std::string& bytes) {
  std::vector<char> buf;
  caf::binary_serializer sink{self->system(), buf};
  if (auto err = sink(reply))
    return make_error(errc::internal, std::string{"the reply of "} + self->name() +
                                          " cannot be serialized");
  bytes.assign(buf.begin(), buf.end());
  return caf::none;
}

template <class Reply, class Self, class Apply>
promise<Reply> idempotency::run(Self* self, const call_context& ctx, Apply apply) {
  auto rp = make_promise<Reply>(self);
  auto db = local_store(self->system());
  if (!db) {
    rp.deliver(make_error(errc::internal, "no store configured"));
    return rp;
  }
  if (ctx.idempotency_key.empty()) {
    apply_and_commit<Reply>(self, ctx, db, std::string{}, rp, apply);
    return rp;
  }
  auto key = std::string{self->name()} + "/" + ctx.idempotency_key;
  if (auto i = in_progress_.find(key); i != in_progress_.end()) {
    i->second.push_back(
        [self, rp](const caf::error& err, const std::string& reply) mutable {
          if (err) {
            rp.deliver(err);
            return;
          }
          auto decoded = decode<Reply>(self, reply);
          if (decoded)
            rp.deliver(std::move(*decoded));
          else
            rp.deliver(std::move(decoded.error()));
        });
    return rp;
  }
  in_progress_.emplace(key, std::vector<waiter>{});
  self->request(db, store_timeout, store_get_atom::value, store_column::idempotency, key)
      .then(
          [this, self, ctx, db, key, rp,
           apply = std::move(apply)](caf::optional<std::string>& stored) mutable {
            context_scope scope{ctx, self->name()};
            if (!stored) {
              apply_and_commit<Reply>(self, ctx, db, key, rp, apply);
              return;
            }
            auto decoded = decode<Reply>(self, *stored);
            if (decoded) {
              rp.deliver(std::move(*decoded));
              finish(key, caf::none, *stored);
            } else {
              rp.deliver(decoded.error());
              finish(key, decoded.error(), {});
            }
          },
          [this, key, rp](caf::error& err) mutable {
            rp.deliver(err);
            finish(key, err, {});
          });
  return rp;
}

template <class Reply, class Self, class Apply>
void idempotency::apply_and_commit(Self* self, const call_context& ctx, store_actor db,
                                   std::string key, promise<Reply> rp, Apply& apply) {
  write_batch tx;
  caf::expected<Reply> result = apply(tx);
  if (!result) {
    rp.deliver(result.error());
    finish(key, result.error(), {});
    return;
  }
  std::string bytes;
  if (!key.empty()) {
    if (auto err = encode(self, *result, bytes)) {
      rp.deliver(err);
      finish(key, err, {});
      return;
    }
    tx.put(store_column::idempotency, key, bytes);
  }
  self->request(db, store_timeout, store_commit_atom::value, std::move(tx))
      .then(
          [this, self, ctx, key, rp, reply = std::move(*result),
           bytes = std::move(bytes)](caf::ok_atom) mutable {
            context_scope scope{ctx, self->name()};
            rp.deliver(std::move(reply));
            finish(key, caf::none, bytes);
          },
          [this, key, rp](caf::error& err) mutable {
            rp.deliver(err);
            finish(key, err, {});
          });
}

} // namespace troupe
