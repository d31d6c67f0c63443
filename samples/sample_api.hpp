#pragma once

// What the samples expose to the gateways: the order_processing and greeting
// sagas, and the greeter's greet request for service invocation.

#include <memory>

#include <troupe/gateways/api_catalog.hpp>

namespace samples {

std::shared_ptr<troupe::gateways::api_catalog> sample_api();

} // namespace samples
