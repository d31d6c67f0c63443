#pragma once

// Reading the API's JSON replies in tests: the gateway's own JSON mapping,
// so a test fails where the product would reject the text.

#include <string>

#include <catch2/catch.hpp>

#include <troupe/gateways/api_backend.hpp>

namespace troupe::test {

/// `json` as a `Message`; fails the test (showing the text) when it does not fit.
template <class Message>
Message parse(const std::string& json) {
  Message m;
  auto st = troupe::gateways::from_json(json, m);
  INFO(json);
  REQUIRE(st.ok());
  return m;
}

} // namespace troupe::test
