#include <troupe/runtime/errors.hpp>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include <utility>
#include <vector>

namespace {

using troupe::errc;

} // namespace

TEST_CASE("each CAF error the runtime meets is classified by one table") {
  // The table of troupe::classify (runtime/src/errors.cpp): guards, sagas,
  // gateways and the cluster all decide on these answers.
  const std::vector<std::pair<caf::sec, errc>> table{
      {caf::sec::request_timeout, errc::timeout},
      {caf::sec::request_receiver_down, errc::service_unavailable},
      {caf::sec::no_route_to_receiving_node, errc::service_unavailable},
      {caf::sec::cannot_connect_to_node, errc::service_unavailable},
      {caf::sec::remote_linking_failed, errc::service_unavailable},
      // A request to an invalid handle: nobody there to receive it.
      {caf::sec::invalid_argument, errc::service_unavailable},
      {caf::sec::unexpected_message, errc::bad_input},
      {caf::sec::unexpected_actor_messaging_interface, errc::interface_mismatch},
      {caf::sec::runtime_error, errc::internal},
      {caf::sec::unexpected_response, errc::internal},
  };
  for (auto& [code, expected] : table) {
    INFO(caf::to_string(code));
    CHECK(troupe::classify(caf::make_error(code)) == expected);
  }
}

TEST_CASE("a request to an invalid handle fails with an error classified as "
          "service_unavailable, which is retryable") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  caf::actor nobody;
  caf::error seen;
  self->request(nobody, std::chrono::seconds(1), caf::get_atom::value)
      .receive([](int) {}, [&](caf::error& err) { seen = std::move(err); });
  REQUIRE(seen);
  CHECK(troupe::classify(seen) == errc::service_unavailable);
  CHECK(troupe::is_retryable(seen));
}

TEST_CASE("exit reasons mean the receiver is gone, troupe's own codes pass through") {
  CHECK(troupe::classify(caf::make_error(caf::exit_reason::remote_link_unreachable)) ==
        errc::service_unavailable);
  CHECK(troupe::classify(caf::make_error(caf::exit_reason::user_shutdown)) ==
        errc::service_unavailable);
  CHECK(troupe::classify(caf::error{}) == errc::none);
  for (auto code : {errc::timeout, errc::overloaded, errc::circuit_open, errc::bad_input,
                    errc::not_found, errc::rejected, errc::cancelled})
    CHECK(troupe::classify(troupe::make_error(code, "detail")) == code);
  CHECK_FALSE(troupe::is_retryable(caf::make_error(caf::sec::unexpected_message)));
  CHECK(troupe::is_retryable(caf::make_error(caf::sec::request_timeout)));
}
