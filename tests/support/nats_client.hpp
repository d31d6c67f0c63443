#pragma once

// A plain nats.c connection for tests and benchmarks: the other side of a
// conversation with troupe's NATS gateway, or a raw baseline.

#include <cstdint>
#include <optional>
#include <string>

#include <nats/nats.h>

namespace troupe::test {

/// A connection and its JetStream context (`js_options` may be null); ok()
/// is false when the server did not take it.
struct nats_client {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;

  explicit nats_client(const std::string& url, jsOptions* js_options = nullptr) {
    natsOptions* opts = nullptr;
    natsOptions_Create(&opts);
    natsOptions_SetURL(opts, url.c_str());
    natsOptions_SetTimeout(opts, 1000);
    if (natsConnection_Connect(&nc, opts) != NATS_OK)
      nc = nullptr;
    natsOptions_Destroy(opts);
    if (nc != nullptr && natsConnection_JetStream(&js, nc, js_options) != NATS_OK)
      js = nullptr;
  }
  ~nats_client() {
    if (js != nullptr)
      jsCtx_Destroy(js);
    if (nc != nullptr) {
      natsConnection_Close(nc);
      natsConnection_Destroy(nc);
    }
  }
  nats_client(const nats_client&) = delete;
  nats_client& operator=(const nats_client&) = delete;

  bool ok() const { return js != nullptr; }

  /// Whether JetStream answers an API call (a started server may not yet).
  bool jetstream_answers() const {
    jsAccountInfo* info = nullptr;
    if (!ok() || js_GetAccountInfo(&info, js, nullptr, nullptr) != NATS_OK)
      return false;
    jsAccountInfo_Destroy(info);
    return true;
  }

  /// Messages `stream` holds; nullopt while it does not exist.
  std::optional<uint64_t> stored(const char* stream) const {
    jsStreamInfo* info = nullptr;
    if (!ok() || js_GetStreamInfo(&info, js, stream, nullptr, nullptr) != NATS_OK)
      return std::nullopt;
    auto n = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    return n;
  }

  /// Whether `consumer` of `stream` has had every message delivered and
  /// acknowledged; false while it does not exist.
  bool settled(const char* stream, const char* consumer) const {
    jsConsumerInfo* info = nullptr;
    if (!ok() ||
        js_GetConsumerInfo(&info, js, stream, consumer, nullptr, nullptr) != NATS_OK)
      return false;
    bool done = info->NumAckPending == 0 && info->NumPending == 0;
    jsConsumerInfo_Destroy(info);
    return done;
  }
};

} // namespace troupe::test
