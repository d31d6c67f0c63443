#include <troupe/outbox/outbox_row.hpp>

#include <chrono>

#include <troupe/outbox/event_codec.hpp>

namespace troupe {

std::string outbox_row_key(uint64_t sequence) {
  std::string key{outbox_key_prefix};
  for (int i = 7; i >= 0; --i)
    key.push_back(static_cast<char>((sequence >> (8 * i)) & 0xff));
  return key;
}

std::string encode_outbox_row(const outbox_row& row) {
  return encode_event(row);
}

std::optional<outbox_row> decode_outbox_row(std::string_view bytes) {
  return decode_event<outbox_row>(bytes);
}

int64_t unix_millis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace troupe
