#pragma once

// The saga manager's API as the deterministic tests call it: each request
// runs the coordinator to quiescence and returns the answer.

#include <string>
#include <utility>

#include <catch2/catch.hpp>

#include <troupe/runtime/errors.hpp>
#include <troupe/sagas/saga_manager.hpp>

#include "sagas/order_services.hpp"
#include "support/deterministic.hpp"

namespace sagatest {

/// A deterministic system with a saga manager `mgr` (spawned by the fixture).
struct saga_requests : troupe::test::deterministic {
  troupe::saga_manager_actor mgr;

  caf::expected<troupe::saga_started> start(const std::string& type, const order& input,
                                            std::string key = {}) {
    return ask<troupe::saga_started>(
        mgr, troupe::call_context{},
        troupe::make_start_saga(*sys, type, input, std::move(key)));
  }

  /// start, failing the test on an error.
  troupe::saga_started started(const std::string& type, const order& input,
                               std::string key = {}) {
    auto res = start(type, input, std::move(key));
    if (!res)
      FAIL("start_saga failed: " << troupe::describe(res.error()));
    return std::move(*res);
  }

  caf::expected<troupe::saga_snapshot> get(const std::string& id) {
    return ask<troupe::saga_snapshot>(mgr, troupe::call_context{}, troupe::get_saga{id});
  }

  /// get, failing the test on an error.
  troupe::saga_snapshot snapshot(const std::string& id) {
    auto res = get(id);
    if (!res)
      FAIL("get_saga failed: " << troupe::describe(res.error()));
    return std::move(*res);
  }

  caf::expected<troupe::saga_snapshot> cancel(const std::string& id) {
    return ask<troupe::saga_snapshot>(mgr, troupe::call_context{},
                                      troupe::cancel_saga{id});
  }

  caf::expected<troupe::saga_page> list(troupe::list_sagas q) {
    return ask<troupe::saga_page>(mgr, troupe::call_context{}, std::move(q));
  }
};

} // namespace sagatest
