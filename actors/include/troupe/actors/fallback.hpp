#pragma once

#include <map>
#include <typeindex>
#include <typeinfo>
#include <utility>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace troupe::resilience {

/// What answers a call when the chain fails with one of the policy's
/// `fallback_on` errors: a default reply per request type, or an alternative
/// actor speaking the same interface (asked with the caller's remaining time).
///
///   resilience::fallback fb;
///   fb.reply<quote_price>(price_quoted{0, "cached"});   // default reply
///   fb.forward_to(backup_pricing);                       // or another service
///
/// A default reply wins over the alternative for its request type.
class fallback {
public:
  /// Answers `Request` with `reply...` (the reply types of the interface).
  template <class Request, class... Reply>
  fallback& reply(Reply... reply) {
    replies_[std::type_index{typeid(Request)}] = caf::make_message(std::move(reply)...);
    return *this;
  }

  /// Sends failed calls to `alternative` (same interface as the guarded target).
  template <class Handle>
  fallback& forward_to(const Handle& alternative) {
    alternative_ = caf::actor_cast<caf::actor>(alternative);
    return *this;
  }

  /// The default reply for requests of type `request`, or nullptr.
  const caf::message* reply_for(const std::type_info& request) const {
    auto i = replies_.find(std::type_index{request});
    return i == replies_.end() ? nullptr : &i->second;
  }
  const caf::actor& alternative() const noexcept { return alternative_; }
  bool empty() const noexcept { return replies_.empty() && !alternative_; }

private:
  std::map<std::type_index, caf::message> replies_;
  caf::actor alternative_;
};

} // namespace troupe::resilience
