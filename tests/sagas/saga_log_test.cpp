// The saga log's records and keys (sagas/src/saga_log.cpp) and the owner
// choice (owner_of in sagas/src/saga_manager.cpp).

#include "saga_log.hpp"

#include <map>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include <troupe/sagas/saga_manager.hpp>

namespace {

using troupe::saga_snapshot;
using troupe::saga_status;
using troupe::step_status;
namespace slog = troupe::saga_log;

struct system_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
};

saga_snapshot sample() {
  saga_snapshot s;
  s.id = "0000018f00000001.n1";
  s.type = "order";
  s.version = 3;
  s.idempotency_key = "k-1";
  s.correlation_id = "corr";
  s.input = std::string{"\x00\x01\xffinput", 8};
  s.status = saga_status::running;
  s.created_ns = 1000;
  s.updated_ns = 2000;
  s.deadline_ns = 3000;
  for (auto name : {"reserve", "charge"}) {
    troupe::step_record r;
    r.name = name;
    s.steps.push_back(r);
  }
  s.steps[0].status = step_status::succeeded;
  s.steps[0].attempts = 2;
  s.steps[0].reply = "reply-bytes";
  return s;
}

} // namespace

TEST_CASE("a snapshot record round-trips") {
  system_fixture f;
  auto s = sample();
  std::string error;
  auto rec = slog::decode(f.sys, slog::encode_snapshot(f.sys, s), error);
  REQUIRE(rec);
  REQUIRE(rec->snapshot);
  CHECK_FALSE(rec->change);
  CHECK(caf::deep_to_string(*rec->snapshot) == caf::deep_to_string(s));
}

TEST_CASE("an event record round-trips") {
  system_fixture f;
  slog::event e;
  e.kind = slog::event_kind::compensation_requested;
  e.step = "charge";
  e.attempt = 4;
  e.at_ns = 77;
  e.data = "cancelled";
  e.cancel = true;
  std::string error;
  auto rec = slog::decode(f.sys, slog::encode_event(f.sys, e), error);
  REQUIRE(rec);
  REQUIRE(rec->change);
  CHECK_FALSE(rec->snapshot);
  CHECK(caf::deep_to_string(*rec->change) == caf::deep_to_string(e));
}

TEST_CASE("a record with one flipped byte fails its checksum") {
  system_fixture f;
  auto bytes = slog::encode_snapshot(f.sys, sample());
  REQUIRE(bytes.size() > 10);
  for (size_t at : {size_t{6}, bytes.size() / 2, bytes.size() - 1}) {
    auto bad = bytes;
    bad[at] = static_cast<char>(bad[at] ^ 0x20);
    std::string error;
    CHECK_FALSE(slog::decode(f.sys, bad, error));
    CHECK(error == "checksum mismatch");
  }
  // A flipped byte in the checksum itself is caught the same way.
  auto bad = bytes;
  bad[3] = static_cast<char>(bad[3] ^ 0x01);
  std::string error;
  CHECK_FALSE(slog::decode(f.sys, bad, error));
  CHECK(error == "checksum mismatch");
}

TEST_CASE("a record of another format version is rejected") {
  system_fixture f;
  auto bytes = slog::encode_event(f.sys, slog::event{});
  bytes[1] = static_cast<char>(slog::format_version + 1);
  std::string error;
  CHECK_FALSE(slog::decode(f.sys, bytes, error));
  CHECK(error.find("version") != std::string::npos);
}

TEST_CASE("a truncated record or an unknown record kind is rejected") {
  system_fixture f;
  std::string error;
  CHECK_FALSE(slog::decode(f.sys, std::string{"S\x01", 2}, error));
  CHECK(error.find("too short") != std::string::npos);
  auto bytes = slog::encode_snapshot(f.sys, sample());
  bytes[0] = 'X';
  CHECK_FALSE(slog::decode(f.sys, bytes, error));
  CHECK(error == "unknown record kind");
  // A valid checksum over a body that is not a snapshot.
  auto event_bytes = slog::encode_event(f.sys, slog::event{});
  event_bytes[0] = 'S';
  CHECK_FALSE(slog::decode(f.sys, event_bytes, error));
  CHECK(error == "snapshot does not decode");
}

TEST_CASE("applying an event that names an unknown step reports an error") {
  auto s = sample();
  auto before = caf::deep_to_string(s);
  slog::event e;
  e.kind = slog::event_kind::step_succeeded;
  e.step = "no_such_step";
  std::string error;
  CHECK_FALSE(slog::apply(s, e, error));
  CHECK(error.find("no_such_step") != std::string::npos);
  // Nothing but the update time changed.
  s.updated_ns = sample().updated_ns;
  CHECK(caf::deep_to_string(s) == before);
}

TEST_CASE("applying events moves steps and the saga through their states") {
  auto s = sample();
  std::string error;
  slog::event ok;
  ok.kind = slog::event_kind::step_succeeded;
  ok.step = "charge";
  ok.attempt = 1;
  ok.data = "charged";
  ok.at_ns = 5000;
  REQUIRE(slog::apply(s, ok, error));
  CHECK(s.steps[1].status == step_status::succeeded);
  CHECK(s.steps[1].reply == "charged");
  CHECK(s.updated_ns == 5000);

  slog::event req;
  req.kind = slog::event_kind::compensation_requested;
  req.data = "cancelled";
  req.cancel = true;
  REQUIRE(slog::apply(s, req, error));
  CHECK(s.status == saga_status::compensating);
  CHECK(s.cancel_requested);
  CHECK(s.reason == "cancelled");

  slog::event undone;
  undone.kind = slog::event_kind::compensation_succeeded;
  undone.step = "charge";
  undone.attempt = 2;
  REQUIRE(slog::apply(s, undone, error));
  CHECK(s.steps[1].status == step_status::compensated);
  CHECK(s.steps[1].compensation_attempts == 2);

  slog::event end;
  end.kind = slog::event_kind::ended;
  end.status = saga_status::cancelled;
  end.at_ns = 9000;
  REQUIRE(slog::apply(s, end, error));
  CHECK(s.status == saga_status::cancelled);
  CHECK(s.ended_ns == 9000);
}

TEST_CASE("a failed step turns a running saga to compensating with the step's error") {
  auto s = sample();
  slog::event e;
  e.kind = slog::event_kind::step_failed;
  e.step = "charge";
  e.attempt = 3;
  e.data = "card declined";
  std::string error;
  REQUIRE(slog::apply(s, e, error));
  CHECK(s.status == saga_status::compensating);
  CHECK(s.reason == "step charge failed: card declined");
  CHECK(s.steps[1].status == step_status::failed);
  CHECK(s.steps[1].attempts == 3);
}

TEST_CASE("a step whose outcome is unknown fails the saga like a failed step and is "
          "marked for compensation; a recorded success is kept") {
  auto s = sample();
  slog::event e;
  e.kind = slog::event_kind::step_outcome_unknown;
  e.step = "charge";
  e.attempt = 3;
  e.data = "timeout";
  std::string error;
  REQUIRE(slog::apply(s, e, error));
  CHECK(s.status == saga_status::compensating);
  CHECK(s.reason == "step charge failed: timeout");
  CHECK(s.steps[1].status == step_status::failed);
  CHECK(troupe::outcome_unknown(s.steps[1]));
  CHECK(s.steps[1].attempts == 3);
  // An answer that arrived first wins: the step is compensated with its reply.
  auto done = sample();
  done.steps[0].status = step_status::succeeded;
  e.step = done.steps[0].name;
  REQUIRE(slog::apply(done, e, error));
  CHECK(done.steps[0].status == step_status::succeeded);
  CHECK_FALSE(troupe::outcome_unknown(done.steps[0]));
}

TEST_CASE("record keys group an instance's records in sequence order") {
  auto a1 = slog::record_key("abc.n1", 1);
  auto a256 = slog::record_key("abc.n1", 256);
  CHECK(a1 < a256);
  CHECK(a1.rfind(slog::instance_prefix("abc.n1"), 0) == 0);
  CHECK(a1.size() == slog::instance_prefix("abc.n1").size() + 8);
  std::string id;
  uint64_t seq = 0;
  REQUIRE(slog::parse_record_key(a256, id, seq));
  CHECK(id == "abc.n1");
  CHECK(seq == 256);
  auto big = slog::record_key("x", 0x0102030405060708ull);
  REQUIRE(slog::parse_record_key(big, id, seq));
  CHECK(seq == 0x0102030405060708ull);
  CHECK_FALSE(slog::parse_record_key("i/short", id, seq));
  CHECK_FALSE(slog::parse_record_key("x/abc.n1/12345678", id, seq));
}

TEST_CASE("owner_of picks the same owner for a key whatever the order of the owners") {
  std::vector<std::string> owners{"troupe-0", "troupe-1", "troupe-2"};
  std::vector<std::string> shuffled{"troupe-2", "troupe-0", "troupe-1"};
  for (int i = 0; i < 200; ++i) {
    auto key = "order-" + std::to_string(i);
    auto owner = troupe::owner_of(key, owners);
    CHECK(owner == troupe::owner_of(key, owners));
    CHECK(owner == troupe::owner_of(key, shuffled));
  }
  CHECK(troupe::owner_of("k", {}).empty());
  CHECK(troupe::owner_of("k", {"only"}) == "only");
}

TEST_CASE("owner_of spreads keys over the owners and moves only a removed owner's keys") {
  std::vector<std::string> owners{"troupe-0", "troupe-1", "troupe-2", "troupe-3"};
  std::map<std::string, int> counts;
  std::map<std::string, std::string> before;
  const int keys = 4000;
  for (int i = 0; i < keys; ++i) {
    auto key = "saga-key-" + std::to_string(i);
    before[key] = troupe::owner_of(key, owners);
    ++counts[before[key]];
  }
  REQUIRE(counts.size() == owners.size());
  for (auto& [owner, n] : counts) {
    CAPTURE(owner);
    CHECK(n > keys / 4 * 7 / 10);
    CHECK(n < keys / 4 * 13 / 10);
  }
  std::vector<std::string> fewer{"troupe-0", "troupe-1", "troupe-3"};
  for (auto& [key, owner] : before) {
    auto now = troupe::owner_of(key, fewer);
    if (owner != "troupe-2")
      CHECK(now == owner);
    else
      CHECK(now != "troupe-2");
  }
}
