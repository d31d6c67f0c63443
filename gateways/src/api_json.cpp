#include "api_json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <vector>

#include <troupe/gateways/api_backend.hpp>
#include <troupe/runtime/detail/json_text.hpp>

namespace troupe::gateways {

namespace v1 = api::v1;
using detail::append_json_string;

namespace {

// Writes one object: `field` adds `"name":` with the separating comma.
class object_writer {
public:
  explicit object_writer(std::string& out)
      : out_(out) {
    out_.push_back('{');
  }
  ~object_writer() { out_.push_back('}'); }
  object_writer(const object_writer&) = delete;
  object_writer& operator=(const object_writer&) = delete;

  std::string& field(std::string_view name) {
    if (!first_)
      out_.push_back(',');
    first_ = false;
    out_.push_back('"');
    out_.append(name);
    out_ += "\":";
    return out_;
  }

  // A name from data (a Struct's key), quoted and escaped.
  std::string& key(std::string_view name) {
    if (!first_)
      out_.push_back(',');
    first_ = false;
    append_json_string(out_, name);
    out_.push_back(':');
    return out_;
  }

  void string(std::string_view name, std::string_view value) {
    append_json_string(field(name), value);
  }

  void number(std::string_view name, uint64_t value) {
    char buf[24];
    auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
    field(name).append(buf, end);
  }

  void boolean(std::string_view name, bool value) {
    field(name) += value ? "true" : "false";
  }

  template <class Name>
  void enumeration(std::string_view name, int value, Name name_of, bool valid) {
    if (valid) {
      append_json_string(field(name), name_of(value));
    } else {
      char buf[16];
      auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
      field(name).append(buf, end);
    }
  }

  // An unset message field is left out, as the mapping does.
  void timestamp(std::string_view name, bool present,
                 const google::protobuf::Timestamp& t);

private:
  std::string& out_;
  bool first_ = true;
};

void append_digits(std::string& out, int64_t value, int width) {
  char buf[24];
  auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  for (auto n = end - buf; n < width; ++n)
    out.push_back('0');
  out.append(buf, end);
}

// "1972-01-01T10:00:20.021Z": 0, 3, 6 or 9 fractional digits, as few as
// the value needs. Days to a civil date by the proleptic Gregorian calendar
// in 400-year eras of 146,097 days, counted from 0000-03-01.
void append_rfc3339(std::string& out, int64_t seconds, int32_t nanos) {
  auto days = seconds / 86400;
  auto in_day = seconds % 86400;
  if (in_day < 0) {
    in_day += 86400;
    --days;
  }
  auto z = days + 719468;
  auto era = (z >= 0 ? z : z - 146096) / 146097;
  auto day_of_era = z - era * 146097;
  auto year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  auto day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  auto month_index = (5 * day_of_year + 2) / 153; // March is 0
  auto day = day_of_year - (153 * month_index + 2) / 5 + 1;
  auto month = month_index < 10 ? month_index + 3 : month_index - 9;
  auto year = year_of_era + era * 400 + (month <= 2 ? 1 : 0);
  out.push_back('"');
  append_digits(out, year, 4);
  out.push_back('-');
  append_digits(out, month, 2);
  out.push_back('-');
  append_digits(out, day, 2);
  out.push_back('T');
  append_digits(out, in_day / 3600, 2);
  out.push_back(':');
  append_digits(out, in_day / 60 % 60, 2);
  out.push_back(':');
  append_digits(out, in_day % 60, 2);
  if (nanos != 0) {
    out.push_back('.');
    if (nanos % 1000000 == 0)
      append_digits(out, nanos / 1000000, 3);
    else if (nanos % 1000 == 0)
      append_digits(out, nanos / 1000, 6);
    else
      append_digits(out, nanos, 9);
  }
  out += "Z\"";
}

void object_writer::timestamp(std::string_view name, bool present,
                              const google::protobuf::Timestamp& t) {
  if (present)
    append_rfc3339(field(name), t.seconds(), t.nanos());
}

void append_value(std::string& out, const google::protobuf::Value& v);

void append_struct(std::string& out, const google::protobuf::Struct& s) {
  object_writer o{out};
  // Keys in order, so that one saga always reads the same byte for byte (a
  // protobuf map's order changes with each copy). A value of no kind is
  // left out, as the mapping does.
  std::vector<
      const google::protobuf::Map<std::string, google::protobuf::Value>::value_type*>
      fields;
  fields.reserve(s.fields().size());
  for (const auto& field : s.fields())
    if (field.second.kind_case() != google::protobuf::Value::KIND_NOT_SET)
      fields.push_back(&field);
  std::sort(fields.begin(), fields.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  for (const auto* field : fields)
    append_value(o.key(field->first), field->second);
}

void append_value(std::string& out, const google::protobuf::Value& v) {
  using google::protobuf::Value;
  switch (v.kind_case()) {
  case Value::kNumberValue: {
    // JSON has no NaN or infinity; protobuf's mapping refuses them too.
    auto d = v.number_value();
    if (!std::isfinite(d)) {
      out += "null";
      break;
    }
    char buf[32];
    auto end = std::to_chars(buf, buf + sizeof buf, d).ptr;
    out.append(buf, end);
    break;
  }
  case Value::kStringValue:
    append_json_string(out, v.string_value());
    break;
  case Value::kBoolValue:
    out += v.bool_value() ? "true" : "false";
    break;
  case Value::kStructValue:
    append_struct(out, v.struct_value());
    break;
  case Value::kListValue: {
    out.push_back('[');
    bool first = true;
    for (const auto& item : v.list_value().values()) {
      if (item.kind_case() == Value::KIND_NOT_SET)
        continue;
      if (!first)
        out.push_back(',');
      first = false;
      append_value(out, item);
    }
    out.push_back(']');
    break;
  }
  default:
    out += "null";
  }
}

// `[item,item,...]`, each written by `append_item`.
template <class Items, class AppendItem>
void append_array(std::string& out, const Items& items, AppendItem append_item) {
  out.push_back('[');
  bool first = true;
  for (const auto& item : items) {
    if (!first)
      out.push_back(',');
    first = false;
    append_item(out, item);
  }
  out.push_back(']');
}

void append_step(std::string& out, const v1::Step& s) {
  object_writer o{out};
  o.string("name", s.name());
  o.enumeration(
      "state", s.state(), [](int v) { return v1::StepState_Name(v); },
      v1::StepState_IsValid(s.state()));
  o.number("attempts", s.attempts());
  o.timestamp("startTime", s.has_start_time(), s.start_time());
  o.timestamp("endTime", s.has_end_time(), s.end_time());
  o.string("request", s.request());
  o.string("reply", s.reply());
  o.string("error", s.error());
  o.number("compensationAttempts", s.compensation_attempts());
  o.timestamp("compensateTime", s.has_compensate_time(), s.compensate_time());
  o.string("compensationError", s.compensation_error());
}

void append_saga(std::string& out, const v1::Saga& s) {
  object_writer o{out};
  o.string("id", s.id());
  o.string("sagaType", s.saga_type());
  o.number("version", s.version());
  o.string("idempotencyKey", s.idempotency_key());
  o.string("correlationId", s.correlation_id());
  o.enumeration(
      "state", s.state(), [](int v) { return v1::SagaState_Name(v); },
      v1::SagaState_IsValid(s.state()));
  o.string("reason", s.reason());
  o.boolean("cancelRequested", s.cancel_requested());
  if (s.has_input())
    append_struct(o.field("input"), s.input());
  o.string("inputText", s.input_text());
  o.string("currentStep", s.current_step());
  o.timestamp("createTime", s.has_create_time(), s.create_time());
  o.timestamp("updateTime", s.has_update_time(), s.update_time());
  o.timestamp("deadline", s.has_deadline(), s.deadline());
  o.timestamp("endTime", s.has_end_time(), s.end_time());
  append_array(o.field("steps"), s.steps(), append_step);
}

void append_summary(std::string& out, const v1::SagaSummary& s) {
  object_writer o{out};
  o.string("id", s.id());
  o.string("sagaType", s.saga_type());
  o.enumeration(
      "state", s.state(), [](int v) { return v1::SagaState_Name(v); },
      v1::SagaState_IsValid(s.state()));
  o.string("currentStep", s.current_step());
  o.timestamp("createTime", s.has_create_time(), s.create_time());
  o.timestamp("updateTime", s.has_update_time(), s.update_time());
}

} // namespace

std::string json_of(const v1::Saga& saga) {
  std::string out;
  out.reserve(1024 + 256 * static_cast<size_t>(saga.steps_size()));
  append_saga(out, saga);
  return out;
}

std::string json_of(const v1::StartSagaResponse& response) {
  std::string out;
  out.reserve(1024 + 256 * static_cast<size_t>(response.saga().steps_size()));
  {
    object_writer o{out};
    if (response.has_saga())
      append_saga(o.field("saga"), response.saga());
    o.boolean("created", response.created());
  }
  return out;
}

std::string json_of(const v1::ListSagasResponse& response) {
  std::string out;
  out.reserve(64 + 192 * static_cast<size_t>(response.sagas_size()));
  {
    object_writer o{out};
    append_array(o.field("sagas"), response.sagas(), append_summary);
    o.string("nextPageToken", response.next_page_token());
  }
  return out;
}

std::string json_of(const google::protobuf::Struct& object) {
  std::string out;
  append_struct(out, object);
  return out;
}

std::string json_of(const google::protobuf::Message& message) {
  return to_json(message);
}

} // namespace troupe::gateways
