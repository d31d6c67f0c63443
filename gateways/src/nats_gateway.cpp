#include <troupe/gateways/nats_gateway.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include "consumer_lag.hpp"
#include "event_delivery.hpp"

#include <troupe/runtime/detail/pem_material.hpp>
#include <troupe/runtime/errors.hpp>

namespace troupe {

namespace {

using headers_list = std::vector<std::pair<std::string, std::string>>;

using nats_in_atom = caf::atom_constant<caf::atom("natsin")>;
using nats_reply_atom = caf::atom_constant<caf::atom("natsreply")>;
using nats_retry_atom = caf::atom_constant<caf::atom("natsretry")>;
using nats_expire_atom = caf::atom_constant<caf::atom("natsexpire")>;
using nats_acked_atom = caf::atom_constant<caf::atom("natsacked")>;

// JetStream dedupes on this header; core messages carry it too, so a
// consumer's inbox sees the same event id whichever way the event came.
constexpr const char* msg_id_header = "Nats-Msg-Id";
// NATS has no message key; it travels as a header and is taken off again.
constexpr const char* key_header = "Troupe-Event-Key";

int64_t to_ms(std::chrono::milliseconds d) {
  return static_cast<int64_t>(d.count());
}

std::string status_text(natsStatus s) {
  std::string out = natsStatus_GetText(s);
  // The thread's last error says more (which server, which API), when set.
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0' && out != last) {
    out += ": ";
    out += last;
  }
  return out;
}

std::string js_failure(natsStatus s, jsErrCode code) {
  auto out = "nats: " + status_text(s);
  if (code != 0)
    out += " (JetStream error " + std::to_string(static_cast<int>(code)) + ")";
  return out;
}

/// One connection and its JetStream context, closed on destruction.
struct connection {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;

  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() {
    if (js != nullptr)
      jsCtx_Destroy(js);
    if (nc != nullptr) {
      natsConnection_Close(nc);
      natsConnection_Destroy(nc);
    }
  }

  bool connected() const {
    return nc != nullptr && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
  }
};

// Its presence makes a first connect to an unreachable server return at once
// and go on trying in the background, instead of blocking the caller.
void on_connected(natsConnection*, void*) {}

std::unique_ptr<connection> open_connection(const nats_settings& s, std::string& error,
                                            jsPubAckHandler on_ack = nullptr,
                                            void* ack_closure = nullptr) {
  natsOptions* raw = nullptr;
  if (auto st = natsOptions_Create(&raw); st != NATS_OK) {
    error = "nats: cannot create options: " + status_text(st);
    return nullptr;
  }
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> opts{raw, natsOptions_Destroy};
  natsStatus st = NATS_OK;
  std::string step;
  auto apply = [&](const char* what, natsStatus result) {
    if (st == NATS_OK && result != NATS_OK) {
      st = result;
      step = what;
    }
  };
  std::vector<const char*> urls;
  for (auto& u : s.servers)
    urls.push_back(u.c_str());
  apply("servers",
        natsOptions_SetServers(raw, urls.data(), static_cast<int>(urls.size())));
  apply("name", natsOptions_SetName(raw, s.client_name.c_str()));
  apply("timeout", natsOptions_SetTimeout(raw, to_ms(s.connect_timeout)));
  apply("reconnects", natsOptions_SetMaxReconnect(raw, -1));
  apply("reconnect wait", natsOptions_SetReconnectWait(raw, to_ms(s.reconnect_wait)));
  apply("retry", natsOptions_SetRetryOnFailedConnect(raw, true, on_connected, nullptr));
  // A request in flight when the link drops fails now rather than at its
  // deadline: the relay then retries sooner.
  apply("fail requests", natsOptions_SetFailRequestsOnDisconnect(raw, true));
  if (!s.user.empty())
    apply("user", natsOptions_SetUserInfo(raw, s.user.c_str(), s.password.c_str()));
  if (!s.token.empty())
    apply("token", natsOptions_SetToken(raw, s.token.c_str()));
  if (!s.tls_ca_file.empty() || !s.tls_cert_file.empty()) {
    try {
      apply("tls", natsOptions_SetSecure(raw, true));
      if (!s.tls_ca_file.empty()) {
        auto ca = detail::pem_material(s.tls_ca_file, "events.nats.tls.ca_file");
        apply("tls ca", natsOptions_SetCATrustedCertificates(raw, ca.c_str()));
      }
      if (!s.tls_cert_file.empty()) {
        auto cert = detail::pem_material(s.tls_cert_file, "events.nats.tls.cert_file");
        auto key = detail::pem_material(s.tls_key_file, "events.nats.tls.key_file");
        apply("tls certificate",
              natsOptions_SetCertificatesChain(raw, cert.c_str(), key.c_str()));
      }
    } catch (const std::exception& e) {
      error = std::string{"nats: "} + e.what();
      return nullptr;
    }
  }
  if (st != NATS_OK) {
    error = "nats: cannot set " + step + ": " + status_text(st);
    return nullptr;
  }
  auto conn = std::make_unique<connection>();
  st = natsConnection_Connect(&conn->nc, raw);
  if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
    error = "nats: cannot connect: " + status_text(st);
    conn->nc = nullptr;
    return nullptr;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = to_ms(s.publish_timeout);
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.AckHandlerClosure = ack_closure;
  if (st = natsConnection_JetStream(&conn->js, conn->nc, &jo); st != NATS_OK) {
    error = "nats: no JetStream context: " + status_text(st);
    return nullptr;
  }
  return conn;
}

/// Creates the configured streams that do not exist yet; "" when all exist.
std::string ensure_streams(connection& c, const nats_settings& s) {
  for (auto& stream : s.streams) {
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    auto st = js_GetStreamInfo(&info, c.js, stream.name.c_str(), nullptr, &code);
    if (st == NATS_OK) {
      jsStreamInfo_Destroy(info);
      continue;
    }
    if (st != NATS_NOT_FOUND)
      return "nats: cannot look up stream " + stream.name + ": " + js_failure(st, code);
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    std::vector<const char*> subjects;
    for (auto& subj : stream.subjects)
      subjects.push_back(subj.c_str());
    cfg.Name = stream.name.c_str();
    cfg.Subjects = subjects.data();
    cfg.SubjectsLen = static_cast<int>(subjects.size());
    cfg.Storage = js_FileStorage;
    st = js_AddStream(&info, c.js, &cfg, nullptr, &code);
    if (st != NATS_OK)
      return "nats: cannot create stream " + stream.name + ": " + js_failure(st, code);
    jsStreamInfo_Destroy(info);
  }
  return {};
}

headers_list headers_of(natsMsg* msg) {
  headers_list out;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK)
    return out;
  for (int i = 0; i < count; ++i) {
    const char** values = nullptr;
    int n = 0;
    if (natsMsgHeader_Values(msg, keys[i], &values, &n) != NATS_OK)
      continue;
    for (int j = 0; j < n; ++j)
      out.emplace_back(keys[i], values[j]);
    free(static_cast<void*>(values));
  }
  free(static_cast<void*>(keys));
  // NATS keeps headers in a map: sorting makes their order at least stable.
  std::stable_sort(out.begin(), out.end(),
                   [](auto& x, auto& y) { return x.first < y.first; });
  return out;
}

std::string payload_of(natsMsg* msg) {
  auto data = natsMsg_GetData(msg);
  auto len = natsMsg_GetDataLength(msg);
  return data == nullptr ? std::string{} : std::string(data, static_cast<size_t>(len));
}

/// Takes the id and key headers off: the event as it was published.
outbound_event event_of(const std::string& subject, headers_list headers,
                        std::string payload) {
  outbound_event ev;
  ev.destination = subject;
  ev.payload = std::move(payload);
  for (auto& [k, v] : headers) {
    if (k == msg_id_header)
      ev.id = v;
    else if (k == key_header)
      ev.key = v;
    else
      ev.headers.emplace_back(std::move(k), std::move(v));
  }
  return ev;
}

// -- callbacks: they run on nats.c's threads and only send messages ----------

struct callback_target {
  caf::weak_actor_ptr actor;
};

void forward_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* target = static_cast<callback_target*>(closure);
  if (auto strong = target->actor.lock()) {
    auto reply = natsMsg_GetReply(msg);
    caf::anon_send(caf::actor_cast<caf::actor>(strong), nats_in_atom::value,
                   std::string{natsMsg_GetSubject(msg)},
                   std::string{reply == nullptr ? "" : reply}, headers_of(msg),
                   payload_of(msg));
  }
  natsMsg_Destroy(msg);
}

void forward_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* target = static_cast<callback_target*>(closure);
  if (auto strong = target->actor.lock())
    caf::anon_send(caf::actor_cast<caf::actor>(strong), nats_reply_atom::value,
                   std::string{natsMsg_GetSubject(msg)}, natsMsg_IsNoResponders(msg),
                   headers_of(msg), payload_of(msg));
  natsMsg_Destroy(msg);
}

// nats.c calls this once the handler can no longer run: only then may the
// closure go.
void free_target(void* closure) {
  delete static_cast<callback_target*>(closure);
}

/// An asynchronous subscription whose messages go to `self`; nullptr and
/// `error` set when it cannot be made.
natsSubscription* subscribe_to(connection& c, caf::local_actor* self,
                               const std::string& subject, const std::string& group,
                               natsMsgHandler handler, std::string& error) {
  auto* target = new callback_target{caf::actor_cast<caf::weak_actor_ptr>(self->ctrl())};
  natsSubscription* sub = nullptr;
  auto st = group.empty()
                ? natsConnection_Subscribe(&sub, c.nc, subject.c_str(), handler, target)
                : natsConnection_QueueSubscribe(&sub, c.nc, subject.c_str(),
                                                group.c_str(), handler, target);
  if (st != NATS_OK) {
    delete target;
    error = "nats: cannot subscribe to " + subject + ": " + status_text(st);
    return nullptr;
  }
  natsSubscription_SetOnCompleteCB(sub, free_target, target);
  return sub;
}

void close_subscription(natsSubscription*& sub) {
  if (sub == nullptr)
    return;
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  sub = nullptr;
}

// -- publisher ----------------------------------------------------------------

// JetStream acknowledgements of asynchronous publishes arrive on a nats.c
// thread: the handler only reads the message's id and the outcome and sends
// them to the publisher actor.
using nats_publisher_actor =
    publisher_actor::extend<caf::reacts_to<nats_acked_atom, std::string, std::string>,
                            caf::reacts_to<nats_expire_atom, uint64_t>>;

struct ack_target {
  caf::weak_actor_ptr owner;
};

void on_publish_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  const char* id = nullptr;
  natsMsgHeader_Get(msg, msg_id_header, &id);
  std::string error;
  if (pa == nullptr) {
    error =
        pae != nullptr ? js_failure(pae->Err, pae->ErrCode) : "nats: no acknowledgement";
    if (pae != nullptr && pae->ErrText != nullptr)
      error += std::string{": "} + pae->ErrText;
  }
  if (auto who = static_cast<ack_target*>(closure)->owner.lock())
    caf::anon_send(caf::actor_cast<nats_publisher_actor>(who), nats_acked_atom::value,
                   std::string{id != nullptr ? id : ""}, std::move(error));
  natsMsg_Destroy(msg);
}

struct nats_publish_call {
  std::vector<outbound_event> events;
  std::vector<std::string> results;
  size_t pending = 0;
  caf::typed_response_promise<std::vector<std::string>> rp;
};

/// One event of a call: (call, position).
using call_slot = std::pair<uint64_t, size_t>;

struct publisher_state {
  static inline const char* name = "nats_publisher";
  publisher_state() = default;
  nats_settings settings;
  // Declared before the connection, so it outlives the handler's last call.
  std::unique_ptr<ack_target> target = std::make_unique<ack_target>();
  std::unique_ptr<connection> conn;
  bool streams_ready = false;
  uint64_t next_call = 1;
  std::map<uint64_t, nats_publish_call> calls;
  // Event id -> its slot, for JetStream publishes waiting for their ack.
  std::map<std::string, std::deque<call_slot>> waiting;
  // Per key, the events not yet acknowledged, the first one sent: a key's
  // next event goes out once the one before it is stored, so a failure never
  // lets a later event of its key into the stream ahead of it.
  std::map<std::string, std::deque<call_slot>> key_lines;
  // Per key, the event that failed last and until when the key stays shut:
  // calls the relay sent before it heard of the failure may still bring
  // later events of the key, which must not reach the stream before the
  // failed one is sent again.
  std::map<std::string, std::pair<std::string, std::chrono::steady_clock::time_point>>
      fences;

  void fence(const outbound_event& ev) {
    if (!ev.key.empty())
      fences[ev.key] = {ev.id,
                        std::chrono::steady_clock::now() + settings.publish_timeout};
  }

  /// Whether `ev` must wait for an earlier failed event of its key.
  bool fenced(const outbound_event& ev) {
    auto f = fences.find(ev.key);
    if (f == fences.end())
      return false;
    if (f->second.first == ev.id ||
        std::chrono::steady_clock::now() >= f->second.second) {
      fences.erase(f);
      return false;
    }
    return true;
  }

  /// "" when publishing can start, else why not.
  std::string ready() {
    if (!conn) {
      std::string error;
      conn = open_connection(settings, error, on_publish_ack, target.get());
      if (!conn)
        return error;
    }
    if (!conn->connected())
      return "nats: not connected";
    if (settings.jetstream && !streams_ready) {
      if (auto error = ensure_streams(*conn, settings); !error.empty())
        return error;
      streams_ready = true;
    }
    return {};
  }

  /// Builds the message of `ev`; nullptr with `error` set when it cannot.
  natsMsg* message_of(const outbound_event& ev, std::string& error) {
    natsMsg* raw = nullptr;
    auto st = natsMsg_Create(&raw, ev.destination.c_str(), nullptr, ev.payload.data(),
                             static_cast<int>(ev.payload.size()));
    if (st != NATS_OK) {
      error =
          "nats: cannot build a message for " + ev.destination + ": " + status_text(st);
      return nullptr;
    }
    for (auto& [k, v] : ev.headers)
      if (st = natsMsgHeader_Add(raw, k.c_str(), v.c_str()); st != NATS_OK) {
        error = "nats: header '" + k + "' rejected: " + status_text(st);
        natsMsg_Destroy(raw);
        return nullptr;
      }
    if (!ev.key.empty())
      natsMsgHeader_Set(raw, key_header, ev.key.c_str());
    // JetStream dedupes on it within the stream's duplicate window.
    natsMsgHeader_Set(raw, msg_id_header, ev.id.c_str());
    return raw;
  }

  /// Core NATS: "" once the server has the message (one flush per call).
  std::string publish_core(const outbound_event& ev) {
    std::string error;
    auto* raw = message_of(ev, error);
    if (raw == nullptr)
      return error;
    auto st = natsConnection_PublishMsg(conn->nc, raw);
    natsMsg_Destroy(raw);
    return st == NATS_OK ? std::string{} : "nats: " + status_text(st);
  }

  /// JetStream: hands the message to nats.c, whose acknowledgement comes
  /// back as a message; "" when it was sent.
  std::string publish_async(const outbound_event& ev) {
    std::string error;
    auto* raw = message_of(ev, error);
    if (raw == nullptr)
      return error;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = to_ms(settings.publish_timeout);
    auto st = js_PublishMsgAsync(conn->js, &raw, &po);
    if (st != NATS_OK) {
      natsMsg_Destroy(raw); // still ours when the call failed
      return "nats: " + status_text(st);
    }
    return {};
  }
};

using publisher_pointer = nats_publisher_actor::stateful_pointer<publisher_state>;

// The publisher contract: per key, nothing after a failure is acknowledged.
std::vector<std::string> apply_key_order(nats_publish_call& call) {
  hold_back_after_failures(
      call.results, [&](size_t i) -> const std::string& { return call.events[i].key; },
      "nats");
  return std::move(call.results);
}

void finish_call(publisher_pointer self, uint64_t id) {
  auto it = self->state.calls.find(id);
  if (it == self->state.calls.end())
    return;
  auto call = std::move(it->second);
  self->state.calls.erase(it);
  call.rp.deliver(apply_key_order(call));
}

/// Records the outcome of `slot`; finishes its call when it was the last.
void settle(publisher_pointer self, call_slot slot, std::string error) {
  auto c = self->state.calls.find(slot.first);
  if (c == self->state.calls.end())
    return;
  c->second.results[slot.second] = std::move(error);
  if (--c->second.pending == 0)
    finish_call(self, slot.first);
}

/// Sends the event in `slot` asynchronously; false (and settled) if it
/// could not be sent.
bool send_slot(publisher_pointer self, call_slot slot) {
  auto& st = self->state;
  auto& ev = st.calls.at(slot.first).events[slot.second];
  std::string error = st.conn->connected() ? st.publish_async(ev) : "nats: not connected";
  if (!error.empty()) {
    st.fence(ev);
    settle(self, slot, std::move(error));
    return false;
  }
  st.waiting[ev.id].push_back(slot);
  return true;
}

/// Sends the first event of `key`'s line; when it cannot be sent, the rest
/// of the line fails behind it.
void send_line_front(publisher_pointer self, const std::string& key) {
  auto& st = self->state;
  auto line = st.key_lines.find(key);
  if (line == st.key_lines.end())
    return;
  if (!line->second.empty() && send_slot(self, line->second.front()))
    return;
  auto rest = std::move(line->second);
  st.key_lines.erase(line);
  for (size_t i = 1; i < rest.size(); ++i)
    settle(self, rest[i], "nats: not published: an earlier event of its key failed");
}

nats_publisher_actor::behavior_type nats_publisher(publisher_pointer self,
                                                   nats_settings settings) {
  self->state.settings = std::move(settings);
  self->state.target->owner = caf::weak_actor_ptr{self->ctrl()};
  return {
      [=](publish_atom,
          std::vector<outbound_event>& events) -> caf::result<std::vector<std::string>> {
        auto& st = self->state;
        nats_publish_call call;
        call.results.assign(events.size(), std::string{});
        call.events = std::move(events);
        // Blocking here is fine: the actor is detached, this is its thread.
        auto down = st.ready();
        if (!down.empty()) {
          for (auto& r : call.results)
            r = down;
          return apply_key_order(call);
        }
        if (!st.settings.jetstream) {
          // Core NATS: the server has a message once a flush returns, so a
          // call needs one flush, not one per event.
          std::set<std::string> failed_keys;
          for (size_t i = 0; i < call.events.size(); ++i) {
            auto& ev = call.events[i];
            if (failed_keys.count(ev.key) > 0)
              continue;
            if (auto error = st.publish_core(ev); !error.empty()) {
              call.results[i] = error;
              failed_keys.insert(ev.key);
            }
          }
          auto flushed = natsConnection_FlushTimeout(st.conn->nc,
                                                     to_ms(st.settings.publish_timeout));
          if (flushed != NATS_OK)
            for (auto& r : call.results)
              if (r.empty())
                r = "nats: " + status_text(flushed);
          return apply_key_order(call);
        }
        auto id = st.next_call++;
        call.pending = call.events.size();
        for (auto& r : call.results)
          r = "nats: no acknowledgement in time";
        call.rp = self->make_response_promise<std::vector<std::string>>();
        auto rp = call.rp;
        auto count = call.events.size();
        std::vector<std::string> keys;
        keys.reserve(count);
        for (auto& ev : call.events)
          keys.push_back(ev.key);
        st.calls.emplace(id, std::move(call));
        // nats.c fails an unacknowledged publish after MaxWait; this only
        // guards the caller against an acknowledgement that never comes.
        self->delayed_send(self, st.settings.publish_timeout + std::chrono::seconds(2),
                           nats_expire_atom::value, id);
        for (size_t i = 0; i < count && st.calls.count(id) > 0; ++i) {
          // Events without a key have no order to keep: each goes at once.
          if (keys[i].empty()) {
            send_slot(self, {id, i});
            continue;
          }
          if (st.fenced(st.calls.at(id).events[i])) {
            settle(self, {id, i},
                   "nats: not published: an earlier event of its key failed");
            continue;
          }
          auto& line = st.key_lines[keys[i]];
          line.emplace_back(id, i);
          if (line.size() == 1)
            send_line_front(self, keys[i]);
        }
        return rp;
      },
      [=](nats_acked_atom, const std::string& event_id, std::string& error) {
        auto& st = self->state;
        auto w = st.waiting.find(event_id);
        if (w == st.waiting.end() || w->second.empty())
          return; // its call expired
        auto slot = w->second.front();
        w->second.pop_front();
        if (w->second.empty())
          st.waiting.erase(w);
        auto c = st.calls.find(slot.first);
        if (c == st.calls.end())
          return;
        auto key = c->second.events[slot.second].key;
        bool failed = !error.empty();
        if (failed)
          st.fence(c->second.events[slot.second]);
        settle(self, slot, std::move(error));
        if (key.empty())
          return;
        auto line = st.key_lines.find(key);
        if (line == st.key_lines.end() || line->second.empty() ||
            line->second.front() != slot)
          return;
        line->second.pop_front();
        if (failed) {
          // Nothing behind a failed event of its key may be stored before it.
          auto rest = std::move(line->second);
          st.key_lines.erase(line);
          for (auto& behind : rest)
            settle(self, behind,
                   "nats: not published: an earlier event of its key failed");
          return;
        }
        send_line_front(self, key);
      },
      [=](nats_expire_atom, uint64_t id) {
        auto& st = self->state;
        if (st.calls.count(id) == 0)
          return;
        for (auto w = st.waiting.begin(); w != st.waiting.end();) {
          auto& q = w->second;
          q.erase(std::remove_if(q.begin(), q.end(),
                                 [&](const call_slot& slot) { return slot.first == id; }),
                  q.end());
          w = q.empty() ? st.waiting.erase(w) : std::next(w);
        }
        std::vector<std::string> moved;
        for (auto line = st.key_lines.begin(); line != st.key_lines.end();) {
          auto& q = line->second;
          bool front_gone = !q.empty() && q.front().first == id;
          q.erase(std::remove_if(q.begin(), q.end(),
                                 [&](const call_slot& slot) { return slot.first == id; }),
                  q.end());
          if (q.empty()) {
            line = st.key_lines.erase(line);
            continue;
          }
          if (front_gone)
            moved.push_back(line->first);
          ++line;
        }
        finish_call(self, id);
        for (auto& key : moved)
          send_line_front(self, key);
      },
  };
}

// -- readiness, shared by the subscribing actors --------------------------------

using nats_subscription_impl = nats_subscription_actor::extend<
    caf::reacts_to<nats_in_atom, std::string, std::string, headers_list, std::string>,
    caf::reacts_to<nats_retry_atom>, caf::reacts_to<nats_ready_atom, bool>>;

struct readiness {
  bool ready = false;
  std::string error = "nats: not subscribed yet";
  std::vector<caf::typed_response_promise<caf::ok_atom>> waiting;

  template <class Self>
  caf::result<caf::ok_atom> ask(Self* self) {
    if (ready)
      return caf::ok_atom::value;
    auto rp = self->template make_response_promise<caf::ok_atom>();
    waiting.push_back(rp);
    return rp;
  }
  void set() {
    ready = true;
    for (auto& rp : waiting)
      rp.deliver(caf::ok_atom::value);
    waiting.clear();
  }
};

/// Sets `ready` once a flush came back: the server then has the
/// subscription, so nothing published from now on is missed. Blocks the
/// calling (detached) actor for at most connect_timeout.
void confirm_subscribed(connection& c, const nats_settings& s, readiness& r) {
  if (!r.ready && c.connected() &&
      natsConnection_FlushTimeout(c.nc, to_ms(s.connect_timeout)) == NATS_OK)
    r.set();
}

/// The actor ends with the one it delivers to: without it, it has no use.
template <class Self, class Handle>
void end_with(Self* self, const Handle& target) {
  self->monitor(target);
  // Normal, not the target's reason: whoever links to this actor (the event
  // bus) must not go down with a consumer it no longer serves.
  self->set_down_handler([=](caf::down_msg&) { self->quit(caf::exit_reason::normal); });
}

// -- core subscriber ------------------------------------------------------------

struct subscriber_state {
  static inline const char* name = "nats_subscriber";
  subscriber_state() = default;
  ~subscriber_state() {
    close_subscription(sub);
    conn.reset();
  }
  nats_settings settings;
  std::unique_ptr<connection> conn;
  natsSubscription* sub = nullptr;
  event_subscriber consumer;
  std::deque<delivered_event> queue;
  uint64_t next_offset = 0;
  bool busy = false;
  readiness ready;
};

using subscriber_pointer = nats_subscription_impl::stateful_pointer<subscriber_state>;

void deliver_next(subscriber_pointer self) {
  auto& st = self->state;
  if (st.busy || st.queue.empty())
    return;
  st.busy = true;
  auto n = std::min(st.consumer.batch_size(), st.queue.size());
  gateways::deliver_events(
      self, st.consumer, st.settings.deliver_timeout,
      {st.queue.begin(), st.queue.begin() + static_cast<long>(n)},
      [=](size_t handled, const caf::error& err) {
        auto& st = self->state;
        st.queue.erase(st.queue.begin(), st.queue.begin() + static_cast<long>(handled));
        if (handled == n) {
          st.busy = false;
          deliver_next(self);
          return;
        }
        spdlog::warn("nats subscriber: delivery on {} failed, again in {}ms: {}",
                     st.queue.front().topic, st.settings.redeliver_delay.count(),
                     describe(err));
        self->delayed_send(self, st.settings.redeliver_delay, nats_retry_atom::value);
      });
}

nats_subscription_impl::behavior_type
nats_subscriber(subscriber_pointer self, nats_settings settings, std::string subject,
                std::string group, event_subscriber consumer) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.consumer = std::move(consumer);
  std::string error;
  st.conn = open_connection(st.settings, error);
  if (st.conn)
    st.sub = subscribe_to(*st.conn, self, subject, group, forward_message, error);
  if (st.sub == nullptr) {
    spdlog::error("nats subscriber on {}: {}", subject, error);
    st.ready.error = error;
  } else {
    confirm_subscribed(*st.conn, st.settings, st.ready);
  }
  end_with(self, st.consumer.handle());
  return {
      [=](nats_ready_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.sub == nullptr)
          return make_error(errc::service_unavailable, st.ready.error);
        // Not confirmed at start (the server was away): perhaps it is now.
        confirm_subscribed(*st.conn, st.settings, st.ready);
        return st.ready.ask(self);
      },
      [=](nats_ready_atom, bool) { self->state.ready.set(); },
      [=](nats_in_atom, std::string& subj, std::string&, headers_list& headers,
          std::string& payload) {
        auto& st = self->state;
        // Messages flowing prove the subscription is live.
        st.ready.set();
        delivered_event d;
        d.topic = subj;
        d.offset = st.next_offset++;
        d.event = event_of(subj, std::move(headers), std::move(payload));
        st.queue.push_back(std::move(d));
        deliver_next(self);
      },
      [=](nats_retry_atom) {
        self->state.busy = false;
        deliver_next(self);
      },
  };
}

// -- JetStream pull consumer ------------------------------------------------------

/// What the fetch thread and its actor share.
struct pull_shared {
  caf::actor_system* sys = nullptr;
  nats_settings settings;
  std::string stream;
  std::string durable;
  std::string subject;
  event_subscriber consumer;
  caf::weak_actor_ptr owner;
  prometheus::Gauge* lag = nullptr; ///< pull thread only
  std::mutex mtx;
  std::condition_variable cv;
  bool stopping = false;

  bool stopped() {
    std::lock_guard<std::mutex> guard{mtx};
    return stopping;
  }
  /// Waits `d` or until stopped; true when stopped.
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, d, [&] { return stopping; });
  }
  void stop() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      stopping = true;
    }
    cv.notify_all();
  }
  void announce_ready() {
    if (auto strong = owner.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), nats_ready_atom::value, true);
  }
};

natsSubscription* pull_subscribe(pull_shared& sh, connection& c, std::string& error) {
  if (sh.settings.jetstream)
    if (error = ensure_streams(c, sh.settings); !error.empty())
      return nullptr;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = sh.stream.c_str();
  so.Config.Durable = sh.durable.c_str();
  so.Config.AckPolicy = js_AckExplicit;
  so.Config.AckWait =
      std::chrono::duration_cast<std::chrono::nanoseconds>(sh.settings.ack_wait).count();
  natsSubscription* sub = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  auto st = js_PullSubscribe(&sub, c.js, sh.subject.c_str(), sh.durable.c_str(), nullptr,
                             &so, &code);
  if (st != NATS_OK) {
    error = "nats: cannot pull from " + sh.stream + "/" + sh.durable + ": " +
            js_failure(st, code);
    return nullptr;
  }
  return sub;
}

/// Sets the durable's lag: what JetStream still holds for it.
void report_lag(pull_shared& sh, uint64_t pending) {
  if (sh.lag == nullptr)
    sh.lag = &consumer_lag("nats", sh.subject, sh.durable, "");
  sh.lag->Set(static_cast<double>(pending));
}

/// `pending`: JetStream's count of messages after this one not delivered yet.
delivered_event delivery_of(natsMsg* msg, uint64_t& pending) {
  delivered_event d;
  d.topic = natsMsg_GetSubject(msg);
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    d.offset = meta->Sequence.Stream;
    pending = meta->NumPending;
    jsMsgMetaData_Destroy(meta);
  }
  d.event = event_of(d.topic, headers_of(msg), payload_of(msg));
  return d;
}

/// Delivers `msgs` (one delivery's worth) and waits for the answer; acks
/// what the consumer handled and naks the rest. True when it handled all.
bool deliver_pulled(pull_shared& sh, caf::scoped_actor& self, natsMsg** msgs, size_t n) {
  std::vector<delivered_event> events;
  std::vector<uint64_t> pending(n, 0);
  for (size_t i = 0; i < n; ++i)
    events.push_back(delivery_of(msgs[i], pending[i]));
  caf::error why;
  auto handled = gateways::deliver_events_waiting(
      self, sh.consumer, sh.settings.deliver_timeout, std::move(events), why);
  for (size_t i = 0; i < n; ++i) {
    if (i < handled)
      natsMsg_Ack(msgs[i], nullptr);
    else
      natsMsg_Nak(msgs[i], nullptr);
  }
  if (handled > 0)
    report_lag(sh, pending[handled - 1]);
  if (handled == n)
    return true;
  // Read again only here: the failure path, not every delivery, pays for it.
  uint64_t ignored = 0;
  auto failed = delivery_of(msgs[handled], ignored);
  spdlog::warn("nats pull consumer {}: {} at {} not acknowledged: {}", sh.durable,
               failed.topic, failed.offset, describe(why));
  return false;
}

void pull_loop(std::shared_ptr<pull_shared> sh) {
  std::unique_ptr<connection> conn;
  natsSubscription* sub = nullptr;
  caf::scoped_actor self{*sh->sys};
  std::string last_error;
  auto report = [&](const std::string& error) {
    // Once per distinct problem: the loop retries every reconnect_wait.
    if (error != last_error)
      spdlog::warn("nats pull consumer {}: {}", sh->durable, error);
    last_error = error;
  };
  while (!sh->stopped()) {
    std::string error;
    if (!conn && !(conn = open_connection(sh->settings, error))) {
      report(error);
      sh->pause(sh->settings.reconnect_wait);
      continue;
    }
    if (sub == nullptr) {
      if (!conn->connected() || !(sub = pull_subscribe(*sh, *conn, error))) {
        report(error.empty() ? "nats: not connected" : error);
        sh->pause(sh->settings.reconnect_wait);
        continue;
      }
      last_error.clear();
      sh->announce_ready();
    }
    natsMsgList list{nullptr, 0};
    jsErrCode code = static_cast<jsErrCode>(0);
    auto st =
        natsSubscription_Fetch(&list, sub, static_cast<int>(sh->settings.fetch_batch),
                               to_ms(sh->settings.fetch_wait), &code);
    if (st == NATS_TIMEOUT) {
      report_lag(*sh, 0); // nothing came within the wait: nothing is pending
      continue;
    }
    if (st != NATS_OK) {
      report(js_failure(st, code));
      sh->pause(sh->settings.reconnect_wait);
      continue;
    }
    bool failed = false;
    auto count = static_cast<size_t>(list.Count);
    for (size_t i = 0; i < count;) {
      auto n = std::min(sh->consumer.batch_size(), count - i);
      // After a failure the rest goes back too, so nothing overtakes the
      // failed message when JetStream redelivers.
      if (failed || sh->stopped()) {
        natsMsg_Nak(list.Msgs[i], nullptr);
        failed = true;
        n = 1;
      } else if (!deliver_pulled(*sh, self, list.Msgs + i, n)) {
        failed = true;
      }
      i += n;
    }
    natsMsgList_Destroy(&list);
    if (failed)
      sh->pause(sh->settings.redeliver_delay);
  }
  // Destroy, not unsubscribe: unsubscribing would delete the durable
  // consumer and with it the position.
  if (sub != nullptr)
    natsSubscription_Destroy(sub);
  if (sh->lag != nullptr)
    forget_consumer_lag(*sh->lag);
}

struct pull_state {
  static inline const char* name = "nats_pull_consumer";
  pull_state() = default;
  ~pull_state() {
    if (shared)
      shared->stop();
    if (thread.joinable())
      thread.join();
  }
  std::shared_ptr<pull_shared> shared;
  std::thread thread;
  readiness ready;
};

nats_subscription_impl::behavior_type
nats_pull_consumer(nats_subscription_impl::stateful_pointer<pull_state> self,
                   std::shared_ptr<pull_shared> shared) {
  shared->owner = caf::actor_cast<caf::weak_actor_ptr>(self->ctrl());
  self->state.shared = shared;
  self->state.thread = std::thread{pull_loop, shared};
  end_with(self, shared->consumer.handle());
  return {
      [=](nats_ready_atom) -> caf::result<caf::ok_atom> {
        return self->state.ready.ask(self);
      },
      [=](nats_ready_atom, bool) { self->state.ready.set(); },
      [=](nats_in_atom, std::string&, std::string&, headers_list&, std::string&) {},
      [=](nats_retry_atom) {},
  };
}

// -- troupe -> NATS requests ------------------------------------------------------

using requester_impl = nats_requester_actor::extend<
    caf::reacts_to<nats_reply_atom, std::string, bool, headers_list, std::string>,
    caf::reacts_to<nats_expire_atom, uint64_t>>;

/// The code of an error reply: what the responder classified it as, where
/// it tells the requester more than "refused".
errc reply_error_code(const std::string& code) {
  if (code == to_string(errc::timeout))
    return errc::timeout;
  if (code == to_string(errc::service_unavailable))
    return errc::service_unavailable;
  return errc::rejected;
}

/// The time a request's handler gets: what its requester waits (troupe's
/// requesters say so in a header), else `fallback`.
caf::timespan request_deadline(const headers_list& headers,
                               std::chrono::milliseconds fallback) {
  constexpr int64_t longest_ms = 3600 * 1000;
  for (auto& [k, v] : headers) {
    if (k != event_headers::deadline_ms)
      continue;
    int64_t ms = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
    if (ec == std::errc{} && end == v.data() + v.size() && ms > 0 && ms <= longest_ms)
      return std::chrono::milliseconds(ms);
  }
  return fallback;
}

struct requester_state {
  static inline const char* name = "nats_requester";
  requester_state() = default;
  ~requester_state() {
    close_subscription(sub);
    conn.reset();
  }
  nats_settings settings;
  std::unique_ptr<connection> conn;
  natsSubscription* sub = nullptr;
  std::string error;
  std::string inbox; ///< replies come to inbox + "." + request number
  uint64_t next_id = 0;
  std::map<uint64_t, std::pair<std::string, caf::typed_response_promise<std::string>>>
      pending;
};

requester_impl::behavior_type
nats_requester(requester_impl::stateful_pointer<requester_state> self,
               nats_settings settings) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.conn = open_connection(st.settings, st.error);
  if (st.conn) {
    natsInbox* inbox = nullptr;
    if (natsInbox_Create(&inbox) == NATS_OK) {
      st.inbox = inbox;
      natsInbox_Destroy(inbox);
      // One subscription for all replies: a request costs one publish.
      st.sub = subscribe_to(*st.conn, self, st.inbox + ".*", {}, forward_reply, st.error);
    } else {
      st.error = "nats: cannot create an inbox";
    }
  }
  if (st.sub == nullptr)
    spdlog::error("nats requester: {}", st.error);
  return {
      [=](nats_request_atom, const std::string& subject, const std::string& payload,
          caf::timespan deadline) -> caf::result<std::string> {
        auto& st = self->state;
        if (st.sub == nullptr)
          return make_error(errc::service_unavailable, st.error);
        if (!st.conn->connected())
          return make_error(errc::service_unavailable, "nats: not connected");
        auto id = st.next_id++;
        auto reply = st.inbox + "." + std::to_string(id);
        // The responder gives its handler the time this request waits.
        natsMsg* msg = nullptr;
        auto rc = natsMsg_Create(&msg, subject.c_str(), reply.c_str(), payload.data(),
                                 static_cast<int>(payload.size()));
        if (rc == NATS_OK) {
          auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline).count();
          rc = natsMsgHeader_Set(msg, event_headers::deadline_ms,
                                 std::to_string(std::max<int64_t>(ms, 1)).c_str());
        }
        if (rc == NATS_OK)
          rc = natsConnection_PublishMsg(st.conn->nc, msg);
        natsMsg_Destroy(msg);
        if (rc != NATS_OK)
          return make_error(errc::service_unavailable, "nats: " + status_text(rc));
        auto rp = self->make_response_promise<std::string>();
        st.pending.emplace(id, std::make_pair(subject, rp));
        self->delayed_send(self, deadline, nats_expire_atom::value, id);
        return rp;
      },
      [=](nats_reply_atom, const std::string& subject, bool no_responders,
          headers_list& headers, std::string& payload) {
        auto& st = self->state;
        auto dot = subject.rfind('.');
        if (dot == std::string::npos)
          return;
        uint64_t id = 0;
        try {
          id = std::stoull(subject.substr(dot + 1));
        } catch (const std::exception&) {
          return; // not one of ours
        }
        auto it = st.pending.find(id);
        if (it == st.pending.end())
          return; // answered after its deadline
        auto& rp = it->second.second;
        if (no_responders) {
          rp.deliver(make_error(errc::service_unavailable,
                                "nats: no responder on " + it->second.first));
        } else {
          std::string error;
          std::string code;
          for (auto& [k, v] : headers) {
            if (k == event_headers::error)
              error = v;
            else if (k == event_headers::error_code)
              code = v;
          }
          if (error.empty())
            rp.deliver(std::move(payload));
          else
            rp.deliver(make_error(reply_error_code(code), error));
        }
        st.pending.erase(it);
      },
      [=](nats_expire_atom, uint64_t id) {
        auto& st = self->state;
        auto it = st.pending.find(id);
        if (it == st.pending.end())
          return;
        it->second.second.deliver(
            make_error(errc::timeout, "nats: no reply from " + it->second.first));
        st.pending.erase(it);
      },
  };
}

// -- NATS requests -> troupe ------------------------------------------------------

struct responder_state {
  static inline const char* name = "nats_responder";
  responder_state() = default;
  ~responder_state() {
    close_subscription(sub);
    conn.reset();
  }
  nats_settings settings;
  std::unique_ptr<connection> conn;
  natsSubscription* sub = nullptr;
  nats_handler_actor handler;
  readiness ready;

  void reply(const std::string& to, const std::string& payload, const std::string& error,
             const std::string& code) {
    natsMsg* msg = nullptr;
    if (natsMsg_Create(&msg, to.c_str(), nullptr, payload.data(),
                       static_cast<int>(payload.size())) != NATS_OK)
      return;
    if (!error.empty()) {
      natsMsgHeader_Set(msg, event_headers::error, error.c_str());
      natsMsgHeader_Set(msg, event_headers::error_code, code.c_str());
    }
    if (auto st = natsConnection_PublishMsg(conn->nc, msg); st != NATS_OK)
      spdlog::warn("nats responder: cannot reply to {}: {}", to, status_text(st));
    natsMsg_Destroy(msg);
  }
};

using responder_pointer = nats_subscription_impl::stateful_pointer<responder_state>;

nats_subscription_impl::behavior_type
nats_responder(responder_pointer self, nats_settings settings, std::string subject,
               std::string group, nats_handler_actor handler) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.handler = std::move(handler);
  std::string error;
  st.conn = open_connection(st.settings, error);
  if (st.conn)
    st.sub = subscribe_to(*st.conn, self, subject, group, forward_message, error);
  if (st.sub == nullptr) {
    spdlog::error("nats responder on {}: {}", subject, error);
    st.ready.error = error;
  } else {
    confirm_subscribed(*st.conn, st.settings, st.ready);
  }
  end_with(self, st.handler);
  return {
      [=](nats_ready_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.sub == nullptr)
          return make_error(errc::service_unavailable, st.ready.error);
        // Not confirmed at start (the server was away): perhaps it is now.
        confirm_subscribed(*st.conn, st.settings, st.ready);
        return st.ready.ask(self);
      },
      [=](nats_ready_atom, bool) { self->state.ready.set(); },
      [=](nats_in_atom, const std::string& subj, const std::string& reply_to,
          headers_list& headers, const std::string& payload) {
        auto& st = self->state;
        st.ready.set();
        if (reply_to.empty())
          return; // a plain message, not a request: nobody to answer
        self->request(st.handler, request_deadline(headers, st.settings.deliver_timeout),
                      nats_serve_atom::value, subj, payload)
            .then(
                [=](const std::string& answer) {
                  self->state.reply(reply_to, answer, {}, {});
                },
                [=](caf::error& err) {
                  self->state.reply(reply_to, {}, describe(err),
                                    to_string(classify(err)));
                });
      },
      [=](nats_retry_atom) {},
  };
}

std::chrono::milliseconds millis(const config& cfg, const std::string& key) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(cfg.get_duration(key));
}

std::vector<std::string> split_spaces(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    auto start = s.find_first_not_of(" \t", i);
    if (start == std::string::npos)
      break;
    auto end = s.find_first_of(" \t", start);
    if (end == std::string::npos)
      end = s.size();
    out.push_back(s.substr(start, end - start));
    i = end;
  }
  return out;
}

bool valid_server_url(const std::string& url) {
  for (const char* scheme : {"nats://", "tls://"}) {
    std::string prefix{scheme};
    if (url.compare(0, prefix.size(), prefix) == 0)
      return url.size() > prefix.size();
  }
  return false;
}

} // namespace

void declare_nats_config(config_schema& s) {
  using namespace std::chrono_literals;
  if (s.find("events.nats.servers") != nullptr)
    return;
  s.declare("events.nats.servers", value_kind::string_list)
      .default_value("[nats://127.0.0.1:4222]")
      .describe("NATS server URLs (nats://host:port or tls://host:port); nats.c "
                "connects to one and fails over and reconnects among them.");
  s.declare("events.nats.client_name", value_kind::string)
      .default_value("troupe")
      .describe("Connection name the NATS server shows for this node.");
  s.declare("events.nats.tls.ca_file", value_kind::string)
      .describe("PEM CA bundle that verifies the NATS server (a path or the PEM text); "
                "turns TLS on.");
  s.declare("events.nats.tls.cert_file", value_kind::string)
      .describe("PEM client certificate presented to the NATS server; turns TLS on.");
  s.declare("events.nats.tls.key_file", value_kind::string)
      .secret()
      .describe("PEM private key of events.nats.tls.cert_file (a path or the PEM text).");
  s.declare("events.nats.user", value_kind::string)
      .describe("User name for NATS authentication, with events.nats.password.");
  s.declare("events.nats.password", value_kind::string)
      .secret()
      .describe("Password of events.nats.user (use ${file:...} or ${env:...}); never "
                "printed.");
  s.declare("events.nats.token", value_kind::string)
      .secret()
      .describe("Authentication token, instead of user and password; never printed.");
  s.declare("events.nats.jetstream", value_kind::boolean)
      .default_value("true")
      .describe("Publish through JetStream (stored, deduplicated on the event id); "
                "false: core NATS, at most once.");
  s.declare("events.nats.streams", value_kind::string_list)
      .default_value("[]")
      .describe("JetStream streams created when missing, as \"NAME=subject subject\" "
                "(\"ORDERS=orders.>\").");
  s.declare("events.nats.connect_timeout", value_kind::duration)
      .default_value("2s")
      .min(1ms)
      .max(5min)
      .describe("How long one connection attempt to a NATS server may take.");
  s.declare("events.nats.reconnect_wait", value_kind::duration)
      .default_value("500ms")
      .min(1ms)
      .max(5min)
      .describe("Wait between two reconnection attempts to the same server.");
  s.declare("events.nats.publish_timeout", value_kind::duration)
      .default_value("5s")
      .min(1ms)
      .max(1h)
      .describe("How long a publish waits for JetStream's acknowledgement.");
  s.declare("events.nats.deliver_timeout", value_kind::duration)
      .default_value("10s")
      .min(1ms)
      .max(1h)
      .describe("How long a consumer or request handler may take to answer.");
  s.declare("events.nats.redeliver_delay", value_kind::duration)
      .default_value("200ms")
      .min(1ms)
      .max(1h)
      .describe("Wait before a message a consumer failed is delivered again.");
  s.declare("events.nats.fetch_wait", value_kind::duration)
      .default_value("500ms")
      .min(1ms)
      .max(1min)
      .describe("How long one fetch of a pull consumer waits for messages.");
  s.declare("events.nats.fetch_batch", value_kind::integer)
      .default_value("64")
      .min(1)
      .max(10000)
      .describe("Messages a pull consumer fetches at once.");
  s.declare("events.nats.ack_wait", value_kind::duration)
      .default_value("30s")
      .min(1ms)
      .max(24h)
      .describe("After how long JetStream redelivers a message nobody acknowledged.");
}

nats_settings nats_settings_from(const config& cfg) {
  nats_settings out;
  out.servers = cfg.get_list("events.nats.servers");
  if (out.servers.empty())
    throw config_error("events.nats.servers", "names no server");
  for (auto& url : out.servers)
    if (!valid_server_url(url))
      throw config_error("events.nats.servers",
                         "'" + url + "' is not nats://host:port or tls://host:port");
  out.client_name = cfg.get_string("events.nats.client_name");
  out.tls_ca_file = cfg.get_string_or_empty("events.nats.tls.ca_file");
  out.tls_cert_file = cfg.get_string_or_empty("events.nats.tls.cert_file");
  out.tls_key_file = cfg.get_string_or_empty("events.nats.tls.key_file");
  if (!out.tls_cert_file.empty() && out.tls_key_file.empty())
    throw config_error("events.nats.tls.key_file",
                       "events.nats.tls.key_file is required with "
                       "events.nats.tls.cert_file");
  if (out.tls_cert_file.empty() && !out.tls_key_file.empty())
    throw config_error("events.nats.tls.cert_file",
                       "events.nats.tls.key_file needs events.nats.tls.cert_file");
  out.user = cfg.get_string_or_empty("events.nats.user");
  out.password = cfg.get_string_or_empty("events.nats.password");
  out.token = cfg.get_string_or_empty("events.nats.token");
  if (!out.password.empty() && out.user.empty())
    throw config_error("events.nats.password", "is set without events.nats.user");
  if (!out.token.empty() && !out.user.empty())
    throw config_error("events.nats.token",
                       "is set together with events.nats.user: choose one");
  out.jetstream = cfg.get_bool("events.nats.jetstream");
  for (auto& entry : cfg.get_list("events.nats.streams")) {
    auto eq = entry.find('=');
    if (eq == std::string::npos)
      throw config_error("events.nats.streams",
                         "'" + entry +
                             "' is not \"NAME=subject subject\" (e.g. "
                             "ORDERS=orders.>)");
    nats_stream stream;
    auto names = split_spaces(entry.substr(0, eq));
    if (names.size() != 1 || names[0].find_first_of(".*>") != std::string::npos)
      throw config_error("events.nats.streams", "'" + entry +
                                                    "' needs one stream name without "
                                                    "'.', '*' or '>'");
    stream.name = names[0];
    stream.subjects = split_spaces(entry.substr(eq + 1));
    if (stream.subjects.empty())
      throw config_error("events.nats.streams", "'" + entry + "' names no subject");
    out.streams.push_back(std::move(stream));
  }
  if (!out.jetstream && !out.streams.empty())
    throw config_error("events.nats.streams", "needs events.nats.jetstream: true");
  out.connect_timeout = millis(cfg, "events.nats.connect_timeout");
  out.reconnect_wait = millis(cfg, "events.nats.reconnect_wait");
  out.publish_timeout = millis(cfg, "events.nats.publish_timeout");
  out.deliver_timeout = millis(cfg, "events.nats.deliver_timeout");
  out.redeliver_delay = millis(cfg, "events.nats.redeliver_delay");
  out.fetch_wait = millis(cfg, "events.nats.fetch_wait");
  out.fetch_batch = static_cast<uint32_t>(cfg.get_int("events.nats.fetch_batch"));
  out.ack_wait = millis(cfg, "events.nats.ack_wait");
  return out;
}

publisher_actor spawn_nats_publisher(caf::actor_system& sys, nats_settings settings) {
  return caf::actor_cast<publisher_actor>(
      sys.spawn<caf::detached>(nats_publisher, std::move(settings)));
}

nats_subscription_actor spawn_nats_subscriber(caf::actor_system& sys,
                                              nats_settings settings, std::string subject,
                                              std::string queue_group,
                                              event_subscriber consumer) {
  return caf::actor_cast<nats_subscription_actor>(
      sys.spawn<caf::detached>(nats_subscriber, std::move(settings), std::move(subject),
                               std::move(queue_group), std::move(consumer)));
}

nats_subscription_actor spawn_nats_pull_consumer(caf::actor_system& sys,
                                                 nats_settings settings,
                                                 std::string stream, std::string durable,
                                                 std::string subject,
                                                 event_subscriber consumer) {
  auto shared = std::make_shared<pull_shared>();
  shared->sys = &sys;
  shared->settings = std::move(settings);
  shared->stream = std::move(stream);
  shared->durable = std::move(durable);
  shared->subject = std::move(subject);
  shared->consumer = std::move(consumer);
  return caf::actor_cast<nats_subscription_actor>(
      sys.spawn<caf::detached>(nats_pull_consumer, std::move(shared)));
}

nats_requester_actor spawn_nats_requester(caf::actor_system& sys,
                                          nats_settings settings) {
  return caf::actor_cast<nats_requester_actor>(
      sys.spawn<caf::detached>(nats_requester, std::move(settings)));
}

nats_subscription_actor spawn_nats_responder(caf::actor_system& sys,
                                             nats_settings settings, std::string subject,
                                             std::string queue_group,
                                             nats_handler_actor handler) {
  return caf::actor_cast<nats_subscription_actor>(
      sys.spawn<caf::detached>(nats_responder, std::move(settings), std::move(subject),
                               std::move(queue_group), std::move(handler)));
}

} // namespace troupe
