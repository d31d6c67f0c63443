// The hand-written JSON of the API's frequent replies against protobuf's own
// JSON mapping: whatever a saga holds, both texts parse to the same message.

#include "api_json.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <troupe/gateways/api_backend.hpp>

namespace {

namespace v1 = troupe::api::v1;
namespace pbu = google::protobuf::util;
using troupe::gateways::json_of;
using troupe::gateways::to_json;

// Strings a saga can carry: plain, quoted, escaped, control characters,
// multi-byte UTF-8, empty.
const std::vector<std::string> samples{
    "",
    "reserve_stock",
    "say \"hi\" \\ back",
    "line\nbreak\ttab\r\x01\x1f",
    "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x9A\x80",
    "{\"sku\":\"A-1\",\"qty\":2}",
    "</script>&'=",
};

class saga_maker {
public:
  explicit saga_maker(uint32_t seed)
      : rng_(seed) {}

  v1::Saga saga() {
    v1::Saga s;
    s.set_id(text());
    s.set_saga_type(text());
    s.set_version(pick(3) == 0 ? 0 : static_cast<uint32_t>(rng_()));
    s.set_idempotency_key(text());
    s.set_correlation_id(text());
    s.set_state(static_cast<v1::SagaState>(pick(8)));
    s.set_reason(text());
    s.set_cancel_requested(pick(2) == 1);
    if (pick(2) == 1)
      fill(*s.mutable_input(), 2);
    s.set_input_text(text());
    s.set_current_step(text());
    set_time(s.mutable_create_time());
    set_time(s.mutable_update_time());
    if (pick(2) == 1)
      set_time(s.mutable_deadline());
    if (pick(2) == 1)
      set_time(s.mutable_end_time());
    for (auto n = pick(5); n > 0; --n) {
      auto* st = s.add_steps();
      st->set_name(text());
      st->set_state(static_cast<v1::StepState>(pick(7)));
      st->set_attempts(static_cast<uint32_t>(pick(4)));
      if (pick(2) == 1)
        set_time(st->mutable_start_time());
      if (pick(2) == 1)
        set_time(st->mutable_end_time());
      st->set_request(text());
      st->set_reply(text());
      st->set_error(text());
      st->set_compensation_attempts(static_cast<uint32_t>(pick(3)));
      if (pick(3) == 0)
        set_time(st->mutable_compensate_time());
      st->set_compensation_error(text());
    }
    return s;
  }

private:
  uint64_t pick(uint64_t n) { return rng_() % n; }

  std::string text() { return samples[pick(samples.size())]; }

  void set_time(google::protobuf::Timestamp* t) {
    // From 0001-01-01 to 9999-12-31, with 0, 3, 6 or 9 significant digits.
    constexpr int64_t min_s = -62135596800, max_s = 253402300799;
    t->set_seconds(min_s +
                   static_cast<int64_t>(pick(static_cast<uint64_t>(max_s - min_s))));
    switch (pick(4)) {
    case 0:
      t->set_nanos(0);
      break;
    case 1:
      t->set_nanos(static_cast<int32_t>(pick(1000)) * 1000000);
      break;
    case 2:
      t->set_nanos(static_cast<int32_t>(pick(1000000)) * 1000);
      break;
    default:
      t->set_nanos(static_cast<int32_t>(pick(1000000000)));
    }
  }

  void fill(google::protobuf::Struct& s, int depth) {
    for (auto n = pick(4); n > 0; --n)
      fill((*s.mutable_fields())[text() + std::to_string(n)], depth);
  }

  void fill(google::protobuf::Value& v, int depth) {
    switch (depth > 0 ? pick(6) : pick(4)) {
    case 0:
      v.set_null_value(google::protobuf::NULL_VALUE);
      break;
    case 1: {
      const double numbers[] = {0, -1, 2, 1.5, 0.1, 1e21, -3.25e-7, 123456789012};
      v.set_number_value(numbers[pick(std::size(numbers))]);
      break;
    }
    case 2:
      v.set_string_value(text());
      break;
    case 3:
      v.set_bool_value(pick(2) == 1);
      break;
    case 4:
      fill(*v.mutable_struct_value(), depth - 1);
      break;
    default:
      for (auto n = pick(3); n > 0; --n)
        fill(*v.mutable_list_value()->add_values(), depth - 1);
    }
  }

  std::mt19937_64 rng_;
};

template <class Message>
Message parsed(const std::string& json) {
  Message out;
  auto st = pbu::JsonStringToMessage(json, &out, pbu::JsonParseOptions{});
  INFO(json);
  REQUIRE(st.ok());
  return out;
}

template <class Message>
void require_same_as_mapping(const Message& m) {
  auto ours = json_of(m);
  auto theirs = to_json(m);
  INFO("ours:   " << ours);
  INFO("theirs: " << theirs);
  REQUIRE(
      pbu::MessageDifferencer::Equals(parsed<Message>(ours), parsed<Message>(theirs)));
}

} // namespace

TEST_CASE("a saga written directly parses back to the same saga as protobuf's "
          "JSON mapping of it") {
  saga_maker make{20261203};
  for (int i = 0; i < 500; ++i)
    require_same_as_mapping(make.saga());
}

TEST_CASE("a start response and a list page written directly parse back as "
          "protobuf's JSON mapping of them") {
  saga_maker make{7};
  for (int i = 0; i < 100; ++i) {
    v1::StartSagaResponse start;
    *start.mutable_saga() = make.saga();
    start.set_created(i % 2 == 0);
    require_same_as_mapping(start);
    v1::ListSagasResponse page;
    for (int n = i % 4; n > 0; --n) {
      auto s = make.saga();
      auto* summary = page.add_sagas();
      summary->set_id(s.id());
      summary->set_saga_type(s.saga_type());
      summary->set_state(s.state());
      summary->set_current_step(s.current_step());
      *summary->mutable_create_time() = s.create_time();
      *summary->mutable_update_time() = s.update_time();
    }
    page.set_next_page_token(i % 3 == 0 ? "" : "0000018c.node-a");
    require_same_as_mapping(page);
  }
}

TEST_CASE("bytes that are not UTF-8 in a saga's text become U+FFFD and the reply "
          "stays valid JSON") {
  v1::Saga s;
  s.set_reason(std::string{"bad \xFF\xC3 byte \xED\xA0\x80 end"});
  auto json = json_of(s);
  auto back = parsed<v1::Saga>(json);
  REQUIRE(back.reason() == "bad \xEF\xBF\xBD\xEF\xBF\xBD byte "
                           "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end");
}
