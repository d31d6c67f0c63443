#include "saga_log.hpp"

#include <boost/crc.hpp>
#include <caf/all.hpp>

#include <algorithm>

namespace troupe::saga_log {

namespace {

uint32_t crc_of(std::string_view body) {
  boost::crc_32_type crc;
  crc.process_bytes(body.data(), body.size());
  return crc.checksum();
}

template <class T>
std::string encode_record(caf::actor_system& sys, char kind, const T& value) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  if (auto err = sink(const_cast<T&>(value)))
    throw std::runtime_error("cannot encode a saga log record: " + sys.render(err));
  std::string out;
  out.reserve(buf.size() + 6);
  out.push_back(kind);
  out.push_back(static_cast<char>(format_version));
  auto crc = crc_of({buf.data(), buf.size()});
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  out.append(buf.begin(), buf.end());
  return out;
}

template <class T>
std::optional<T> decode_body(caf::actor_system& sys, std::string_view body) {
  T value{};
  caf::binary_deserializer source{sys, body.data(), body.size()};
  if (source(value) || source.remaining() != 0)
    return std::nullopt;
  return value;
}

step_record* find_step(saga_snapshot& s, const std::string& name) {
  for (auto& st : s.steps)
    if (st.name == name)
      return &st;
  return nullptr;
}

} // namespace

std::string instance_prefix(const std::string& id) {
  return std::string{all_instances_prefix} + id + "/";
}

std::string record_key(const std::string& id, uint64_t seq) {
  auto key = instance_prefix(id);
  for (int i = 7; i >= 0; --i)
    key.push_back(static_cast<char>((seq >> (8 * i)) & 0xff));
  return key;
}

bool parse_record_key(std::string_view key, std::string& id, uint64_t& seq) {
  auto p = all_instances_prefix.size();
  if (key.size() < p + 10 || key.substr(0, p) != all_instances_prefix)
    return false;
  if (key[key.size() - 9] != '/')
    return false;
  id.assign(key.substr(p, key.size() - 9 - p));
  seq = 0;
  for (size_t i = key.size() - 8; i < key.size(); ++i)
    seq = (seq << 8) | static_cast<uint8_t>(key[i]);
  return !id.empty();
}

std::string encode_snapshot(caf::actor_system& sys, const saga_snapshot& s) {
  return encode_record(sys, 'S', s);
}

std::string encode_event(caf::actor_system& sys, const event& e) {
  return encode_record(sys, 'E', e);
}

std::optional<record> decode(caf::actor_system& sys, std::string_view bytes,
                             std::string& error) {
  if (bytes.size() < 6) {
    error = "record too short (" + std::to_string(bytes.size()) + " bytes)";
    return std::nullopt;
  }
  char kind = bytes[0];
  auto version = static_cast<uint8_t>(bytes[1]);
  if (version != format_version) {
    error = "unknown record format version " + std::to_string(version);
    return std::nullopt;
  }
  uint32_t crc = 0;
  for (int i = 0; i < 4; ++i)
    crc |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[2 + i])) << (8 * i);
  auto body = bytes.substr(6);
  if (crc_of(body) != crc) {
    error = "checksum mismatch";
    return std::nullopt;
  }
  record r;
  if (kind == 'S') {
    r.snapshot = decode_body<saga_snapshot>(sys, body);
    if (!r.snapshot) {
      error = "snapshot does not decode";
      return std::nullopt;
    }
  } else if (kind == 'E') {
    r.change = decode_body<event>(sys, body);
    if (!r.change) {
      error = "event does not decode";
      return std::nullopt;
    }
  } else {
    error = "unknown record kind";
    return std::nullopt;
  }
  return r;
}

bool apply(saga_snapshot& s, const event& e, std::string& error) {
  s.updated_ns = e.at_ns;
  step_record* st = nullptr;
  if (e.kind != event_kind::ended && e.kind != event_kind::compensation_requested) {
    st = find_step(s, e.step);
    if (st == nullptr) {
      error = "event names unknown step '" + e.step + "'";
      return false;
    }
  }
  switch (e.kind) {
  case event_kind::step_succeeded:
    st->status = step_status::succeeded;
    st->attempts = e.attempt;
    st->reply = e.data;
    st->error.clear();
    st->ended_ns = e.at_ns;
    break;
  case event_kind::step_attempt_failed:
    st->status = step_status::running;
    st->attempts = e.attempt;
    st->error = e.data;
    break;
  case event_kind::step_failed:
    st->status = step_status::failed;
    st->attempts = e.attempt;
    st->error = e.data;
    st->ended_ns = e.at_ns;
    if (s.status == saga_status::running) {
      s.status = saga_status::compensating;
      s.reason = "step " + e.step + " failed: " + e.data;
    }
    break;
  case event_kind::step_outcome_unknown:
    if (st->status == step_status::succeeded)
      break; // its success is recorded: it is compensated with its reply
    st->status = step_status::failed;
    st->attempts = std::max(st->attempts, e.attempt);
    st->error = std::string{outcome_unknown_prefix} + e.data;
    st->ended_ns = e.at_ns;
    if (s.status == saga_status::running) {
      s.status = saga_status::compensating;
      s.reason = "step " + e.step + " failed: " + e.data;
    }
    break;
  case event_kind::compensation_succeeded:
    st->status = step_status::compensated;
    st->compensation_attempts = e.attempt;
    st->compensation_error.clear();
    st->compensated_ns = e.at_ns;
    break;
  case event_kind::compensation_attempt_failed:
    st->compensation_attempts = e.attempt;
    st->compensation_error = e.data;
    break;
  case event_kind::compensation_gave_up:
    st->status = step_status::compensation_failed;
    st->compensation_attempts = e.attempt;
    st->compensation_error = e.data;
    st->compensated_ns = e.at_ns;
    break;
  case event_kind::compensation_requested:
    if (s.status == saga_status::running) {
      s.status = saga_status::compensating;
      s.reason = e.data;
      s.cancel_requested = e.cancel;
    }
    break;
  case event_kind::ended:
    s.status = e.status;
    s.ended_ns = e.at_ns;
    break;
  }
  return true;
}

} // namespace troupe::saga_log
