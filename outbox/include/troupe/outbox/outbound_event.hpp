#pragma once

// The broker-agnostic shape of one event on its way out and on its way in,
// and the two actor interfaces every broker gateway implements: a publisher
// (for the relay) and a consumer it delivers to (for subscribers).

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

namespace troupe {

/// Header names every event carries.
namespace event_headers {
constexpr const char* content_type = "content-type";
constexpr const char* event_type = "event-type";
constexpr const char* correlation_id = "correlation-id";
constexpr const char* traceparent = "traceparent";
constexpr const char* error = "error"; ///< why a dead-lettered message failed
/// On a request over a broker: how long the requester waits, in milliseconds.
constexpr const char* deadline_ms = "troupe-deadline-ms";
/// On an error reply: troupe's code for it (timeout, service_unavailable, …).
constexpr const char* error_code = "troupe-error-code";
} // namespace event_headers

/// One event as brokers see it. `id` is unique per node and stable across
/// re-publication, so brokers and inboxes dedupe on it.
struct outbound_event {
  std::string id;
  std::string destination;
  std::string key;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload;

  /// The value of header `name`, or an empty string.
  std::string header(const std::string& name) const;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, outbound_event& x) {
  return f(caf::meta::type_name("outbound_event"), x.id, x.destination, x.key, x.headers,
           x.payload);
}

/// An event handed to a consumer: where it came from and its position there.
struct delivered_event {
  std::string topic;
  uint64_t offset = 0;
  outbound_event event;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, delivered_event& x) {
  return f(caf::meta::type_name("delivered_event"), x.topic, x.offset, x.event);
}

/// The W3C `traceparent` of an event emitted under `correlation_id`: its
/// trace is the correlation id when that is a trace id (32 hex digits, as an
/// incoming traceparent gives), else one derived from it, so all events of
/// one correlation share a trace; `span` names the event within it.
std::string event_traceparent(std::string_view correlation_id, uint64_t span);

/// The correlation id handling `event` continues: its correlation-id header,
/// else its traceparent's trace id, else empty (a fresh one is then made).
std::string correlation_of(const outbound_event& event);

/// The publisher contract applied to one call's answers: per key, an event
/// after a failed one is reported failed too, even if its broker took it.
/// `key_of(i)` is event i's key; `who` prefixes the reason.
void hold_back_after_failures(std::vector<std::string>& results,
                              const std::function<const std::string&(size_t)>& key_of,
                              std::string_view who);

using publish_atom = caf::atom_constant<caf::atom("evpublish")>;
using deliver_atom = caf::atom_constant<caf::atom("evdeliver")>;
using deliver_batch_atom = caf::atom_constant<caf::atom("evdelbatch")>;

/// What the relay publishes through. The reply holds one entry per event, in
/// order: empty when the broker acknowledged it durably, else the error.
/// Contract: per key, an event is acknowledged only if every earlier event
/// of the same key in the call was, so a failure never lets a later event
/// of its key overtake it.
using publisher_actor = caf::typed_actor<caf::replies_to<
    publish_atom, std::vector<outbound_event>>::with<std::vector<std::string>>>;

/// What a broker delivers to. Answering `ok` acknowledges the event (the
/// broker then commits its offset); an error or no answer redelivers it.
using event_consumer_actor =
    caf::typed_actor<caf::replies_to<deliver_atom, delivered_event>::with<caf::ok_atom>>;

/// What a broker delivers batches to, for stream processing: up to the
/// subscription's batch size of events, in the order of one partition (or
/// subject). The reply counts the events, from the first, the consumer has
/// handled; the broker acknowledges those and redelivers the rest.
using event_batch_consumer_actor = caf::typed_actor<
    caf::replies_to<deliver_batch_atom, std::vector<delivered_event>>::with<uint32_t>>;

using serve_request_atom = caf::atom_constant<caf::atom("evserve")>;

/// What answers requests sent over a broker: (destination, request) -> reply,
/// both encoded as events are (event_codec.hpp). An error answer reaches the
/// requester as errc::rejected with its text.
using request_handler_actor = caf::typed_actor<
    caf::replies_to<serve_request_atom, std::string, std::string>::with<std::string>>;

/// Whom a broker subscription delivers to: single events to `consumer`, or
/// batches of up to `max_batch` events to `batch_consumer`.
struct event_subscriber {
  event_consumer_actor consumer;
  event_batch_consumer_actor batch_consumer;
  uint32_t max_batch = 1;

  event_subscriber() = default;
  // Implicit: a single-event consumer (or a handle that extends its
  // interface) is the common subscriber.
  template <class Handle,
            class = std::enable_if_t<std::is_convertible_v<Handle, event_consumer_actor>>>
  event_subscriber(Handle c) // NOLINT(google-explicit-constructor)
      : consumer(std::move(c)) {}
  event_subscriber(event_batch_consumer_actor c, uint32_t max)
      : batch_consumer(std::move(c))
      , max_batch(max == 0 ? 1 : max) {}

  /// How many events one delivery may carry.
  size_t batch_size() const noexcept { return batch_consumer ? max_batch : 1; }
  caf::actor_addr address() const {
    return batch_consumer ? batch_consumer.address() : consumer.address();
  }
  caf::actor handle() const;
  explicit operator bool() const noexcept {
    return static_cast<bool>(consumer) || static_cast<bool>(batch_consumer);
  }
  bool operator==(const event_subscriber& other) const {
    return address() == other.address();
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_subscriber& x) {
  return f(caf::meta::type_name("event_subscriber"), x.consumer, x.batch_consumer,
           x.max_batch);
}

} // namespace troupe
