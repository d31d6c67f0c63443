#include <troupe/outbox/outbox_sequence.hpp>

#include <cstdio>
#include <future>

#include <troupe/runtime/store.hpp>

namespace troupe {

namespace {

constexpr const char* epoch_key = "outbox/epoch";

std::string big_endian(uint64_t x) {
  std::string out;
  for (int i = 7; i >= 0; --i)
    out.push_back(static_cast<char>((x >> (8 * i)) & 0xff));
  return out;
}

uint64_t from_big_endian(const std::string& s) {
  uint64_t x = 0;
  for (unsigned char c : s)
    x = (x << 8) | c;
  return x;
}

} // namespace

std::shared_ptr<outbox_sequence> outbox_sequence::open(store& db, std::string node) {
  uint64_t epoch = 1;
  if (auto stored = db.get(store_column::state, epoch_key))
    epoch = from_big_endian(*stored) + 1;
  if (epoch >= (uint64_t{1} << 32))
    throw store_error("outbox: the event sequence's epochs are exhausted");
  write_batch batch;
  batch.put(store_column::state, epoch_key, big_endian(epoch));
  std::promise<std::string> done;
  auto result = done.get_future();
  db.commit(std::move(batch), [&done](const std::string& err) { done.set_value(err); });
  if (auto err = result.get(); !err.empty())
    throw store_error("outbox: cannot persist the event sequence: " + err);
  return std::shared_ptr<outbox_sequence>(new outbox_sequence(epoch, std::move(node)));
}

std::string outbox_sequence::message_id(uint64_t seq) const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(seq));
  return node_ + ":" + hex;
}

} // namespace troupe
