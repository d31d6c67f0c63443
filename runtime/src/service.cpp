#include <troupe/runtime/service.hpp>

#include <caf/actor_system.hpp>
#include <caf/detail/test_actor_clock.hpp>

#include <troupe/runtime/errors.hpp>

namespace troupe::detail {

bool checks_deadlines(caf::actor_system& sys) {
  return dynamic_cast<caf::detail::test_actor_clock*>(&sys.clock()) == nullptr;
}

caf::error expired_error(const std::string& actor) {
  return make_error(errc::timeout,
                    "the deadline had passed when " + actor + " received the request");
}

caf::error no_quorum_error(const std::string& actor) {
  return make_error(errc::service_unavailable,
                    actor + " refuses requests: this node sees no quorum of the cluster");
}

} // namespace troupe::detail
