// libFuzzer target: the JSON → protobuf mapping of the API's bodies — a
// start's StartSagaRequest, its input read as the order saga's Order the way
// the backend reads it (the Struct printed and parsed into the message), an
// Invoke's body, a cancel's — and the round trip of what was accepted.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include "http_routing.hpp"

#ifdef TROUPE_FUZZ_ORDER
#include <orders/orders_api.pb.h>
#endif

namespace {

namespace api = troupe::gateways::http_api;
namespace v1 = troupe::api::v1;
namespace pbu = google::protobuf::util;

void check(bool invariant) {
  if (!invariant)
    __builtin_trap();
}

bool parse_strict(const std::string& json, google::protobuf::Message& msg) {
  pbu::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  return pbu::JsonStringToMessage(json, &msg, opts).ok();
}

// What was accepted prints, and the print reads back as the same message.
void round_trip(const google::protobuf::Message& msg) {
  std::string printed;
  pbu::JsonPrintOptions print;
  print.always_print_primitive_fields = true;
  check(pbu::MessageToJsonString(msg, &printed, print).ok());
  std::unique_ptr<google::protobuf::Message> back{msg.New()};
  check(parse_strict(printed, *back));
  check(pbu::MessageDifferencer::Equals(msg, *back));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body{reinterpret_cast<const char*>(data), size};

  v1::StartSagaRequest start;
  if (!api::start_request_from("order_processing", body, start)) {
    check(start.saga_type() == "order_processing");
    round_trip(start);
    if (start.has_json()) {
      // The backend's reading of a JSON input.
      std::string text;
      if (pbu::MessageToJsonString(start.json(), &text).ok()) {
#ifdef TROUPE_FUZZ_ORDER
        troupe::samples::orders::v1::Order order;
        if (parse_strict(text, order))
          round_trip(order);
#endif
      }
    }
  }

  v1::InvokeRequest invoke;
  if (!api::invoke_request_from("greeter", "greet", body, invoke))
    round_trip(invoke);

  v1::CancelSagaRequest cancel;
  if (!api::cancel_request_from("0123.a", body, cancel))
    check(cancel.id() == "0123.a");

#ifdef TROUPE_FUZZ_ORDER
  troupe::samples::orders::v1::Order direct;
  if (parse_strict(std::string{body}, direct))
    round_trip(direct);
#endif
  return 0;
}
