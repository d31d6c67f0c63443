#pragma once

#include <memory>
#include <string>

#include <troupe/outbox/event_codec.hpp>
#include <troupe/outbox/outbox_row.hpp>
#include <troupe/outbox/outbox_sequence.hpp>
#include <troupe/runtime/store.hpp>

namespace troupe {

/// A state change and the events it emits, committed as one write_batch:
/// when the store answers the commit, state and events are durable together,
/// or neither is.
class outbox_transaction {
public:
  explicit outbox_transaction(std::shared_ptr<outbox_sequence> sequence)
      : sequence_(std::move(sequence)) {}

  /// Service state in `store_column::state`.
  void put(std::string key, std::string value) {
    batch_.put(store_column::state, std::move(key), std::move(value));
  }
  void erase(std::string key) { batch_.erase(store_column::state, std::move(key)); }

  /// Emits `event` (a catalog type with an `inspect`) to `destination`;
  /// events of one key are published in the order they are emitted.
  template <class Event>
  void emit(std::string destination, std::string key, const Event& event) {
    emit_encoded(std::move(destination), std::move(key), event_type_name<Event>(),
                 encode_event(event));
  }
  /// The same with an already encoded payload in CAF's binary format.
  /// `extra_headers` are added after the standard ones.
  void emit_encoded(std::string destination, std::string key, std::string event_type,
                    std::string payload,
                    std::vector<std::pair<std::string, std::string>> extra_headers = {});

  /// Anything else the change writes (inbox ids, other column families).
  write_batch& batch() noexcept { return batch_; }
  size_t events() const noexcept { return events_; }
  /// The batch to commit through the store actor.
  write_batch take() && { return std::move(batch_); }

private:
  std::shared_ptr<outbox_sequence> sequence_;
  write_batch batch_;
  size_t events_ = 0;
};

} // namespace troupe
