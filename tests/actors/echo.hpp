#pragma once

// The dependency the resilience tests guard: a service that answers a ping
// with a pong. Shared by the in-process tests and the peer node program.

#include <cstdint>
#include <string>

#include <caf/meta/type_name.hpp>

#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/service.hpp>

namespace echo {

/// Command: answer with the same number.
struct ping {
  int32_t n = 0;
};

/// Reply: the number, and who answered (the backend or a fallback).
struct pong {
  int32_t n = 0;
  std::string by;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ping& x) {
  return f(caf::meta::type_name("ping"), x.n);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pong& x) {
  return f(caf::meta::type_name("pong"), x.n, x.by);
}

using echo_actor = troupe::service<troupe::handles<ping, pong>>;

inline void add_messages(troupe::message_catalog& catalog) {
  catalog.add<ping>("actors_test.ping").add<pong>("actors_test.pong");
}

} // namespace echo
