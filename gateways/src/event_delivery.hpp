#pragma once

// How a broker gateway hands events to a subscriber, single or batched, and
// learns how many of them, from the first, were handled.

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include <troupe/outbox/outbound_event.hpp>
#include <troupe/runtime/errors.hpp>

namespace troupe::gateways {

inline caf::error short_batch(size_t handled, size_t n) {
  return make_error(errc::rejected, "the consumer handled " + std::to_string(handled) +
                                        " of " + std::to_string(n) + " events");
}

/// Asks `to` from actor `self` to handle `events` (at most to.batch_size(),
/// at least one); `done(handled, error)` runs on `self` with the count of
/// events handled from the first and, when that is short, why (`rejected`
/// when the batch consumer answered a short count).
template <class Self, class Done>
void deliver_events(Self* self, const event_subscriber& to,
                    std::chrono::milliseconds timeout,
                    std::vector<delivered_event> events, Done done) {
  auto n = events.size();
  if (to.batch_consumer) {
    self->request(to.batch_consumer, timeout, deliver_batch_atom::value,
                  std::move(events))
        .then(
            [=](uint32_t handled) {
              auto k = std::min<size_t>(handled, n);
              done(k, k == n ? caf::error{} : short_batch(k, n));
            },
            [=](caf::error& err) { done(size_t{0}, std::move(err)); });
    return;
  }
  self->request(to.consumer, timeout, deliver_atom::value, std::move(events.front()))
      .then([=](caf::ok_atom) { done(size_t{1}, caf::error{}); },
            [=](caf::error& err) { done(size_t{0}, std::move(err)); });
}

/// The same from a thread of a gateway's own, waiting for the answer.
inline size_t deliver_events_waiting(caf::scoped_actor& self, const event_subscriber& to,
                                     std::chrono::milliseconds timeout,
                                     std::vector<delivered_event> events,
                                     caf::error& why) {
  auto n = events.size();
  size_t handled = 0;
  if (to.batch_consumer) {
    self->request(to.batch_consumer, timeout, deliver_batch_atom::value,
                  std::move(events))
        .receive([&](uint32_t k) { handled = std::min<size_t>(k, n); },
                 [&](caf::error& err) { why = std::move(err); });
    if (!why && handled < n)
      why = short_batch(handled, n);
    return handled;
  }
  self->request(to.consumer, timeout, deliver_atom::value, std::move(events.front()))
      .receive([&](caf::ok_atom) { handled = 1; },
               [&](caf::error& err) { why = std::move(err); });
  return handled;
}

} // namespace troupe::gateways
