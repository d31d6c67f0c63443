// libFuzzer target: the HTTP gateway's request path — bytes read under the
// limits, split into reads at arbitrary points, each whole request routed
// and its body converted — exactly as a connection runs it, without the
// network and the backend.
//
// An input whose first byte is below 0x20 (never the start of a request)
// uses that byte as the read size: the parser sees requests cut anywhere.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "http_routing.hpp"

namespace {

namespace api = troupe::gateways::http_api;
namespace v1 = troupe::api::v1;

void check(bool invariant) {
  if (!invariant)
    __builtin_trap();
}

void route_one(const api::request& req) {
  auto d = api::decide(req);
  if (!d.match) {
    auto s = d.error.status;
    check(s == 400 || s == 404 || s == 405 || s == 415);
    check(!d.error.message.empty());
    check(s != 405 || !d.error.allow.empty());
    return;
  }
  auto& r = *d.match;
  std::string_view body{req.body()};
  switch (r.kind) {
  case api::route_kind::start_saga: {
    check(!r.saga_type.empty());
    v1::StartSagaRequest msg;
    if (!api::start_request_from(r.saga_type, body, msg))
      check(msg.saga_type() == r.saga_type);
    break;
  }
  case api::route_kind::invoke: {
    v1::InvokeRequest msg;
    api::invoke_request_from(r.service, r.method, body, msg);
    check(msg.service() == r.service && msg.method() == r.method);
    break;
  }
  case api::route_kind::cancel_saga: {
    v1::CancelSagaRequest msg;
    if (!api::cancel_request_from(r.id, body, msg))
      check(msg.id() == r.id);
    break;
  }
  case api::route_kind::get_saga:
  case api::route_kind::watch_saga:
    check(!r.id.empty());
    break;
  case api::route_kind::list_sagas:
    check(v1::SagaState_IsValid(r.list.state()));
    break;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t step = size == 0 ? 1 : size;
  if (size > 0 && data[0] < 0x20) {
    step = static_cast<size_t>(data[0]) + 1;
    ++data;
    --size;
  }
  constexpr size_t max_header = 4096;
  constexpr size_t max_body = 16384;
  api::request_reader reader{max_header, max_body};
  boost::beast::flat_buffer buffer;
  size_t at = 0;
  while (at < size) {
    auto n = std::min(step, size - at);
    auto room = buffer.prepare(n);
    std::memcpy(room.data(), data + at, n);
    buffer.commit(n);
    at += n;
    for (;;) {
      auto state = reader.feed(buffer);
      if (state == api::request_reader::state::need_more) {
        // What waits for more is bounded by the limits.
        check(buffer.size() <= max_header + 1 || reader.header_done());
        break;
      }
      if (state == api::request_reader::state::failed) {
        auto s = reader.error().status;
        check(s == 400 || s == 411 || s == 413 || s == 431);
        return 0; // the gateway answers and closes the connection
      }
      auto req = reader.take();
      check(req.body().size() <= max_body);
      route_one(req);
    }
  }
  return 0;
}
