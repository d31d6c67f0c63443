#include <troupe/gateways/kafka_gateway.hpp>

#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include "consumer_lag.hpp"
#include "event_delivery.hpp"

namespace troupe {

namespace {

using namespace std::chrono_literals;

using kafka_delivered_atom = caf::atom_constant<caf::atom("kfkdone")>;
using kafka_expire_atom = caf::atom_constant<caf::atom("kfkexpire")>;
using kafka_dispatch_atom = caf::atom_constant<caf::atom("kfkdisp")>;

constexpr const char* properties_key = "events.kafka.properties";

// Short, so a stop request or a consumer's answer waits little for the loop.
constexpr int poll_ms = 100;

std::string trim(std::string s) {
  auto first = s.find_first_not_of(" \t");
  auto last = s.find_last_not_of(" \t");
  return first == std::string::npos ? std::string{} : s.substr(first, last - first + 1);
}

std::chrono::milliseconds millis(const config& cfg, const std::string& key) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(cfg.get_duration(key));
}

std::string kafka_error_text(rd_kafka_resp_err_t err) {
  return std::string{"kafka: "} + rd_kafka_err2name(err) + ": " + rd_kafka_err2str(err);
}

void log_to_spdlog(const rd_kafka_t* rk, int level, const char* facility,
                   const char* text) {
  auto name = rk != nullptr ? rd_kafka_name(rk) : "kafka";
  // syslog levels: librdkafka reports lost connections as errors (3), which
  // it retries on its own, so only its warnings and worse reach warn.
  if (level <= 4)
    spdlog::warn("{} {}: {}", name, facility, text);
  else if (level <= 6)
    spdlog::info("{} {}: {}", name, facility, text);
  else
    spdlog::debug("{} {}: {}", name, facility, text);
}

void log_error(rd_kafka_t* rk, int err, const char* reason, void*) {
  spdlog::warn("{}: {}: {}", rd_kafka_name(rk),
               rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err)), reason);
}

struct conf_deleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using conf_ptr = std::unique_ptr<rd_kafka_conf_t, conf_deleter>;

void set_property(rd_kafka_conf_t* conf, const std::string& name,
                  const std::string& value, const std::string& key) {
  char err[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof(err)) !=
      RD_KAFKA_CONF_OK)
    throw config_error(key, key + ": " + err);
}

// The user's properties come between the basics and what the gateway's
// guarantees rest on, so they can tune anything except those.
using property_list = std::vector<std::pair<std::string, std::string>>;

conf_ptr make_conf(const kafka_settings& s, const property_list& defaults,
                   const property_list& enforced) {
  conf_ptr conf{rd_kafka_conf_new()};
  set_property(conf.get(), "bootstrap.servers", s.bootstrap_servers,
               "events.kafka.bootstrap_servers");
  set_property(conf.get(), "client.id", s.client_id, "events.kafka.client_id");
  for (auto& [name, value] : defaults)
    set_property(conf.get(), name, value, properties_key);
  for (auto& [name, value] : s.properties)
    set_property(conf.get(), name, value, properties_key);
  for (auto& [name, value] : enforced)
    set_property(conf.get(), name, value, properties_key);
  rd_kafka_conf_set_log_cb(conf.get(), log_to_spdlog);
  rd_kafka_conf_set_error_cb(conf.get(), log_error);
  return conf;
}

property_list producer_properties(const kafka_settings& s) {
  return {{"enable.idempotence", "true"},
          {"acks", "all"},
          {"message.timeout.ms", std::to_string(s.delivery_timeout.count())}};
}

property_list consumer_properties(const std::string& group) {
  return {{"group.id", group},
          {"enable.auto.offset.store", "false"},
          {"enable.auto.commit", "true"}};
}

rd_kafka_t* new_client(rd_kafka_type_t type, conf_ptr conf) {
  char err[512];
  auto* rk = rd_kafka_new(type, conf.get(), err, sizeof(err));
  if (rk == nullptr)
    throw config_error(properties_key,
                       std::string{"cannot create a Kafka client: "} + err);
  conf.release(); // rd_kafka_new owns it now
  return rk;
}

// --- publisher --------------------------------------------------------------

/// Delivery reports of one poll: ticket and error ("" when acknowledged).
using delivery_reports = std::vector<std::pair<uint64_t, std::string>>;

using kafka_publisher_actor =
    publisher_actor::extend<caf::reacts_to<kafka_delivered_atom, delivery_reports>,
                            caf::reacts_to<kafka_expire_atom, uint64_t>>;

// The producer and its poll thread. Delivery reports run on that thread and
// only send messages, so no response promise is ever touched off the actor.
struct producer_core {
  rd_kafka_t* rk = nullptr;
  caf::weak_actor_ptr owner;
  std::atomic<bool> stopping{false};
  std::thread poller;

  // Poll thread only: reports collected during one rd_kafka_poll, sent as one
  // message, so a busy producer costs one actor message per poll, not per record.
  delivery_reports pending_reports;

  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    auto* self = static_cast<producer_core*>(opaque);
    auto ticket = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(msg->_private));
    self->pending_reports.emplace_back(ticket, msg->err ? kafka_error_text(msg->err)
                                                        : std::string{});
  }

  void send_reports() {
    if (pending_reports.empty())
      return;
    auto reports = std::exchange(pending_reports, {});
    if (auto who = owner.lock())
      caf::anon_send(caf::actor_cast<kafka_publisher_actor>(who),
                     kafka_delivered_atom::value, std::move(reports));
  }

  void start(caf::weak_actor_ptr who) {
    owner = std::move(who);
    poller = std::thread{[this] {
      while (!stopping.load()) {
        rd_kafka_poll(rk, poll_ms);
        send_reports();
      }
      // Whatever is still unacknowledged fails at its caller, whose relay
      // retries it; waiting for it here would hold up the node's stop.
      rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_poll(rk, 0);
      send_reports();
      rd_kafka_destroy(rk);
      rk = nullptr;
    }};
  }

  ~producer_core() {
    stopping = true;
    if (poller.joinable())
      poller.join(); // within one poll_ms
    else if (rk != nullptr)
      rd_kafka_destroy(rk);
  }
};

std::shared_ptr<producer_core> make_producer(const kafka_settings& settings) {
  auto core = std::make_shared<producer_core>();
  auto conf = make_conf(settings, {}, producer_properties(settings));
  rd_kafka_conf_set_opaque(conf.get(), core.get());
  rd_kafka_conf_set_dr_msg_cb(conf.get(), producer_core::on_delivery);
  core->rk = new_client(RD_KAFKA_PRODUCER, std::move(conf));
  return core;
}

struct publish_call {
  std::vector<std::string> results;
  std::vector<std::string> keys;
  size_t pending = 0;
  caf::typed_response_promise<std::vector<std::string>> rp;
};

struct publisher_state {
  static inline const char* name = "kafka_publisher";
  publisher_state() = default;
  std::shared_ptr<producer_core> core;
  kafka_settings settings;
  uint64_t next_call = 1;
  uint64_t next_ticket = 1;
  std::map<uint64_t, publish_call> calls;
  std::map<uint64_t, std::pair<uint64_t, size_t>> tickets; ///< -> call, index
};

// The publisher contract: per key, nothing after a failure is acknowledged.
std::vector<std::string> apply_key_order(publish_call& c) {
  hold_back_after_failures(
      c.results, [&](size_t i) -> const std::string& { return c.keys[i]; }, "kafka");
  return std::move(c.results);
}

void finish_call(kafka_publisher_actor::stateful_pointer<publisher_state> self,
                 uint64_t id) {
  auto it = self->state.calls.find(id);
  if (it == self->state.calls.end())
    return;
  auto call = std::move(it->second);
  self->state.calls.erase(it);
  call.rp.deliver(apply_key_order(call));
}

rd_kafka_resp_err_t produce(rd_kafka_t* rk, const outbound_event& ev, uint64_t ticket) {
  auto* hdrs = rd_kafka_headers_new(ev.headers.size() + 1);
  for (auto& [name, value] : ev.headers)
    rd_kafka_header_add(hdrs, name.data(), static_cast<ssize_t>(name.size()),
                        value.data(), static_cast<ssize_t>(value.size()));
  rd_kafka_header_add(hdrs, kafka_message_id_header, -1, ev.id.data(),
                      static_cast<ssize_t>(ev.id.size()));
  // An empty key is a null key, so such events spread over the partitions.
  const void* key = ev.key.empty() ? nullptr : ev.key.data();
  auto err = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(ev.destination.c_str()), RD_KAFKA_V_KEY(key, ev.key.size()),
      RD_KAFKA_V_VALUE(const_cast<char*>(ev.payload.data()), ev.payload.size()),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
      RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(ticket))),
      RD_KAFKA_V_END);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    rd_kafka_headers_destroy(hdrs); // on success the message owns them
  return err;
}

// An idempotent producer that hit a fatal error (a broken sequence, say)
// fails everything from then on; a fresh one starts a new producer id. The
// old one's unacknowledged events fail at their callers, who retry them.
void replace_if_fatal(kafka_publisher_actor::stateful_pointer<publisher_state> self) {
  auto& st = self->state;
  char reason[512];
  auto err = rd_kafka_fatal_error(st.core->rk, reason, sizeof(reason));
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
    return;
  spdlog::error("kafka publisher: fatal producer error {} ({}); starting a new producer",
                rd_kafka_err2name(err), reason);
  try {
    auto fresh = make_producer(st.settings);
    fresh->start(caf::weak_actor_ptr{self->ctrl()});
    st.core = std::move(fresh);
  } catch (const config_error& e) {
    spdlog::error("kafka publisher: cannot start a new producer: {}", e.what());
  }
}

kafka_publisher_actor::behavior_type
kafka_publisher(kafka_publisher_actor::stateful_pointer<publisher_state> self,
                std::shared_ptr<producer_core> core, kafka_settings settings) {
  self->state.core = std::move(core);
  self->state.settings = std::move(settings);
  self->state.core->start(caf::weak_actor_ptr{self->ctrl()});
  return {
      [=](publish_atom,
          std::vector<outbound_event>& events) -> caf::result<std::vector<std::string>> {
        auto& st = self->state;
        replace_if_fatal(self);
        auto id = st.next_call++;
        publish_call call;
        call.results.assign(events.size(), "kafka: no delivery report in time");
        call.keys.reserve(events.size());
        for (size_t i = 0; i < events.size(); ++i) {
          call.keys.push_back(events[i].key);
          auto ticket = st.next_ticket++;
          auto err = produce(st.core->rk, events[i], ticket);
          if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            call.results[i] = kafka_error_text(err);
            continue;
          }
          st.tickets.emplace(ticket, std::make_pair(id, i));
          ++call.pending;
        }
        if (call.pending == 0)
          return apply_key_order(call);
        call.rp = self->make_response_promise<std::vector<std::string>>();
        auto rp = call.rp;
        st.calls.emplace(id, std::move(call));
        // librdkafka reports every message by message.timeout.ms; this only
        // guards the caller against a report that never comes.
        self->delayed_send(self, st.settings.delivery_timeout + 2s,
                           kafka_expire_atom::value, id);
        return rp;
      },
      [=](kafka_delivered_atom, delivery_reports& reports) {
        auto& st = self->state;
        for (auto& [ticket, error] : reports) {
          auto t = st.tickets.find(ticket);
          if (t == st.tickets.end())
            continue; // its call expired
          auto [id, index] = t->second;
          st.tickets.erase(t);
          auto c = st.calls.find(id);
          if (c == st.calls.end())
            continue;
          c->second.results[index] = std::move(error);
          if (--c->second.pending == 0)
            finish_call(self, id);
        }
      },
      [=](kafka_expire_atom, uint64_t id) {
        auto& st = self->state;
        if (st.calls.count(id) == 0)
          return;
        for (auto t = st.tickets.begin(); t != st.tickets.end();)
          t = t->second.first == id ? st.tickets.erase(t) : std::next(t);
        finish_call(self, id);
      },
  };
}

// --- subscription -----------------------------------------------------------

using kafka_dispatch_actor = caf::typed_actor<
    caf::reacts_to<kafka_dispatch_atom, uint64_t, std::vector<delivered_event>>>;

// Consumer answers, handed from the dispatcher actor to the poll thread.
struct answer_box {
  std::mutex mtx;
  std::vector<std::pair<uint64_t, size_t>> answers; ///< ticket, records handled
  rd_kafka_t* rk = nullptr;                         ///< to wake the poll; null once gone

  void put(uint64_t ticket, size_t handled) {
    std::lock_guard<std::mutex> guard{mtx};
    answers.emplace_back(ticket, handled);
    if (rk != nullptr)
      rd_kafka_yield(rk);
  }
  std::vector<std::pair<uint64_t, size_t>> take() {
    std::lock_guard<std::mutex> guard{mtx};
    return std::exchange(answers, {});
  }
};

// Asks the consumer on the poll thread's behalf: requests and their answers
// belong on an actor, the poll thread only sends.
kafka_dispatch_actor::behavior_type dispatcher(kafka_dispatch_actor::pointer self,
                                               event_subscriber consumer,
                                               std::shared_ptr<answer_box> box,
                                               std::chrono::milliseconds timeout) {
  return {
      [=](kafka_dispatch_atom, uint64_t ticket, std::vector<delivered_event>& records) {
        gateways::deliver_events(
            self, consumer, timeout, std::move(records),
            [=](size_t handled, const caf::error&) { box->put(ticket, handled); });
      },
  };
}

} // namespace

struct kafka_subscription::impl {
  kafka_settings settings;
  std::string topic;
  rd_kafka_t* rk = nullptr;
  std::shared_ptr<answer_box> box = std::make_shared<answer_box>();
  kafka_dispatch_actor dispatch;
  std::thread poller;
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> acked{0};

  // Poll thread only. A partition's state lives from its assignment to its
  // revocation; its generation tells a late answer from a current one.
  struct partition_state {
    uint64_t generation = 0;
    prometheus::Gauge* lag = nullptr;
    bool busy = false; ///< the buffer's front records are with the consumer
    bool paused = false;
    std::deque<delivered_event> buffer;
    std::optional<std::chrono::steady_clock::time_point> retry_at;
  };
  struct handed_over {
    int32_t partition;
    uint64_t generation;
    std::vector<int64_t> offsets;
  };
  std::string group;
  size_t batch_size = 1; ///< records per delivery
  std::map<int32_t, partition_state> partitions;
  std::map<uint64_t, handed_over> tickets;
  std::chrono::steady_clock::time_point lag_reported;
  uint64_t next_ticket = 1;
  uint64_t next_generation = 1;

  ~impl() {
    if (rk != nullptr)
      rd_kafka_destroy(rk);
  }

  void set_paused(int32_t partition, partition_state& ps, bool pause) {
    if (ps.paused == pause)
      return;
    auto* list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic.c_str(), partition);
    if (pause)
      rd_kafka_pause_partitions(rk, list);
    else
      rd_kafka_resume_partitions(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    ps.paused = pause;
  }

  void hand_over(int32_t partition, partition_state& ps) {
    if (ps.buffer.empty()) {
      ps.busy = false;
      set_paused(partition, ps, false);
      return;
    }
    ps.busy = true;
    auto ticket = next_ticket++;
    auto n = std::min(batch_size, ps.buffer.size());
    std::vector<delivered_event> records{ps.buffer.begin(),
                                         ps.buffer.begin() + static_cast<long>(n)};
    auto& handed = tickets[ticket] = {partition, ps.generation, {}};
    for (auto& d : records)
      handed.offsets.push_back(static_cast<int64_t>(d.offset));
    caf::anon_send(dispatch, kafka_dispatch_atom::value, ticket, std::move(records));
  }

  void on_record(rd_kafka_message_t* msg) {
    auto it = partitions.find(msg->partition);
    if (it == partitions.end())
      return; // fetched before a revocation
    auto& ps = it->second;
    delivered_event d;
    d.topic = topic;
    d.offset = static_cast<uint64_t>(msg->offset);
    d.event.destination = topic;
    if (msg->key != nullptr)
      d.event.key.assign(static_cast<const char*>(msg->key), msg->key_len);
    if (msg->payload != nullptr)
      d.event.payload.assign(static_cast<const char*>(msg->payload), msg->len);
    rd_kafka_headers_t* hdrs = nullptr;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
                         RD_KAFKA_RESP_ERR_NO_ERROR;
           ++i) {
        std::string v = value != nullptr
                            ? std::string{static_cast<const char*>(value), size}
                            : std::string{};
        if (std::strcmp(name, kafka_message_id_header) == 0)
          d.event.id = std::move(v);
        else
          d.event.headers.emplace_back(name, std::move(v));
      }
    }
    if (d.event.id.empty())
      d.event.id = topic + "/" + std::to_string(msg->partition) + "/" +
                   std::to_string(msg->offset);
    ps.buffer.push_back(std::move(d));
    if (ps.buffer.size() >= settings.max_buffered)
      set_paused(msg->partition, ps, true);
    if (!ps.busy)
      hand_over(msg->partition, ps);
  }

  void on_answer(uint64_t ticket, size_t handled) {
    auto t = tickets.find(ticket);
    if (t == tickets.end())
      return;
    auto info = t->second;
    tickets.erase(t);
    auto it = partitions.find(info.partition);
    // Revoked since: the new owner starts at the committed offset, which
    // this record never passed, so it is delivered again there.
    if (it == partitions.end() || it->second.generation != info.generation)
      return;
    auto& ps = it->second;
    handled = std::min(handled, info.offsets.size());
    if (handled > 0) {
      auto* list = rd_kafka_topic_partition_list_new(1);
      rd_kafka_topic_partition_list_add(list, topic.c_str(), info.partition)->offset =
          info.offsets[handled - 1] + 1;
      if (auto err = rd_kafka_offsets_store(rk, list); err != RD_KAFKA_RESP_ERR_NO_ERROR)
        spdlog::warn("kafka: cannot store the offset of {}/{}: {}", topic, info.partition,
                     rd_kafka_err2str(err));
      rd_kafka_topic_partition_list_destroy(list);
      acked += handled;
      ps.buffer.erase(ps.buffer.begin(), ps.buffer.begin() + static_cast<long>(handled));
    }
    if (handled < info.offsets.size()) {
      // The rest goes again, the first record not handled leading.
      ps.retry_at = std::chrono::steady_clock::now() + settings.redeliver_delay;
      return;
    }
    hand_over(info.partition, ps);
  }

  // The high watermark is librdkafka's cached one (no broker round trip);
  // the group's position is the first record not acknowledged yet.
  void report_lag() {
    auto now = std::chrono::steady_clock::now();
    if (now - lag_reported < std::chrono::seconds(1))
      return;
    lag_reported = now;
    for (auto& [partition, ps] : partitions) {
      int64_t low = 0;
      int64_t high = 0;
      if (rd_kafka_get_watermark_offsets(rk, topic.c_str(), partition, &low, &high) !=
              RD_KAFKA_RESP_ERR_NO_ERROR ||
          high < 0)
        continue;
      int64_t position = -1;
      if (!ps.buffer.empty()) {
        position = static_cast<int64_t>(ps.buffer.front().offset);
      } else {
        auto* list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, topic.c_str(), partition);
        if (rd_kafka_position(rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR)
          position = list->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(list);
      }
      if (position < 0)
        continue;
      if (ps.lag == nullptr)
        ps.lag = &consumer_lag("kafka", topic, group, std::to_string(partition));
      ps.lag->Set(static_cast<double>(high > position ? high - position : 0));
    }
  }

  void forget_lag(partition_state& ps) {
    if (ps.lag != nullptr)
      forget_consumer_lag(*ps.lag);
    ps.lag = nullptr;
  }

  void retry_due() {
    auto now = std::chrono::steady_clock::now();
    for (auto& [partition, ps] : partitions)
      if (ps.retry_at && *ps.retry_at <= now) {
        ps.retry_at.reset();
        hand_over(partition, ps);
      }
  }

  void drain_answers() {
    for (auto [ticket, handled] : box->take())
      on_answer(ticket, handled);
  }

  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t* list, void* opaque) {
    auto* self = static_cast<impl*>(opaque);
    bool cooperative = std::strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      for (int i = 0; i < list->cnt; ++i) {
        auto& ps = self->partitions[list->elems[i].partition];
        self->forget_lag(ps);
        ps = partition_state{};
        ps.generation = self->next_generation++;
      }
      if (cooperative) {
        if (auto* e = rd_kafka_incremental_assign(rk, list))
          rd_kafka_error_destroy(e);
      } else {
        rd_kafka_assign(rk, list);
      }
      return;
    }
    // Revoked (or a rebalance error): commit what was acknowledged so the
    // next owner resumes right after it; what is in flight is forgotten.
    self->drain_answers();
    auto committed = rd_kafka_commit(rk, nullptr, 0);
    if (committed != RD_KAFKA_RESP_ERR_NO_ERROR &&
        committed != RD_KAFKA_RESP_ERR__NO_OFFSET)
      spdlog::warn("kafka: cannot commit offsets of {} on revocation: {}", self->topic,
                   rd_kafka_err2str(committed));
    for (int i = 0; i < list->cnt; ++i) {
      auto it = self->partitions.find(list->elems[i].partition);
      if (it == self->partitions.end())
        continue;
      self->set_paused(it->first, it->second, false);
      self->forget_lag(it->second);
      self->partitions.erase(it);
    }
    if (cooperative) {
      if (auto* e = rd_kafka_incremental_unassign(rk, list))
        rd_kafka_error_destroy(e);
    } else {
      for (auto& [partition, ps] : self->partitions)
        self->forget_lag(ps);
      self->partitions.clear();
      rd_kafka_assign(rk, nullptr);
    }
  }

  void run() {
    while (!stopping.load()) {
      drain_answers();
      retry_due();
      report_lag();
      auto* msg = rd_kafka_consumer_poll(rk, poll_ms);
      if (msg == nullptr)
        continue;
      if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        on_record(msg);
      else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        spdlog::warn("kafka: consumer of {}: {}", topic, rd_kafka_message_errstr(msg));
      rd_kafka_message_destroy(msg);
    }
    drain_answers();
    {
      std::lock_guard<std::mutex> guard{box->mtx};
      box->rk = nullptr;
    }
    // Leaves the group; the revocation on the way commits what was
    // acknowledged.
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    rk = nullptr;
    for (auto& [partition, ps] : partitions)
      forget_lag(ps);
  }
};

kafka_subscription::kafka_subscription(std::unique_ptr<impl> p)
    : impl_(std::move(p)) {}

kafka_subscription::~kafka_subscription() {
  stop();
}

void kafka_subscription::stop() {
  if (!impl_->poller.joinable())
    return;
  impl_->stopping = true;
  {
    std::lock_guard<std::mutex> guard{impl_->box->mtx};
    if (impl_->box->rk != nullptr)
      rd_kafka_yield(impl_->box->rk);
  }
  impl_->poller.join();
  caf::anon_send_exit(impl_->dispatch, caf::exit_reason::user_shutdown);
}

uint64_t kafka_subscription::acknowledged() const {
  return impl_->acked.load();
}

std::unique_ptr<kafka_subscription> subscribe_kafka(caf::actor_system& sys,
                                                    kafka_settings settings,
                                                    std::string topic, std::string group,
                                                    event_subscriber consumer) {
  auto p = std::make_unique<kafka_subscription::impl>();
  p->batch_size = consumer.batch_size();
  // A group without committed offsets reads the topic from its start, as
  // the embedded broker does, unless the properties say otherwise.
  auto conf = make_conf(settings, {{"auto.offset.reset", "earliest"}},
                        consumer_properties(group));
  rd_kafka_conf_set_opaque(conf.get(), p.get());
  rd_kafka_conf_set_rebalance_cb(conf.get(), kafka_subscription::impl::on_rebalance);
  p->settings = settings;
  p->topic = topic;
  p->group = group;
  p->rk = new_client(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(p->rk);
  auto* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), RD_KAFKA_PARTITION_UA);
  auto err = rd_kafka_subscribe(p->rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw config_error(properties_key, "cannot subscribe to Kafka topic '" + topic +
                                           "': " + rd_kafka_err2str(err));
  p->box->rk = p->rk;
  p->dispatch =
      sys.spawn(dispatcher, std::move(consumer), p->box, settings.consumer_timeout);
  auto* raw = p.get();
  p->poller = std::thread{[raw] { raw->run(); }};
  return std::make_unique<kafka_subscription>(std::move(p));
}

// --- configuration ----------------------------------------------------------

void declare_kafka_config(config_schema& s) {
  using namespace std::chrono_literals;
  if (s.find("events.kafka.bootstrap_servers") != nullptr)
    return;
  s.declare("events.kafka.bootstrap_servers", value_kind::string)
      .describe("Kafka brokers to bootstrap from, \"host:port,host:port\"; needed "
                "when a route names kafka.");
  s.declare(properties_key, value_kind::string_list)
      .default_value("[]")
      .describe("librdkafka properties as \"name=value\" (security.protocol=SASL_SSL, "
                "ssl.ca.location=..., sasl.mechanism=...), for producer and consumers.");
  s.declare("events.kafka.client_id", value_kind::string)
      .default_value("troupe")
      .describe("The client.id the cluster sees in its logs and quotas.");
  s.declare("events.kafka.sasl_username", value_kind::string)
      .describe("SASL user name (sasl.username).");
  s.declare("events.kafka.sasl_password", value_kind::string)
      .secret()
      .describe("SASL password (sasl.password); use ${env:...} or ${file:...}; never "
                "printed.");
  s.declare("events.kafka.ssl_key_password", value_kind::string)
      .secret()
      .describe("Password of the client's TLS key (ssl.key.password); never printed.");
  s.declare("events.kafka.delivery_timeout", value_kind::duration)
      .default_value("5s")
      .min(1ms)
      .max(1h)
      .describe("An event the cluster has not acknowledged within this fails and the "
                "relay retries it; keep it below events.relay.publish_timeout.");
  s.declare("events.kafka.consumer_timeout", value_kind::duration)
      .default_value("10s")
      .min(1ms)
      .max(1h)
      .describe("A consumer that does not answer a record within this gets it again.");
  s.declare("events.kafka.redeliver_delay", value_kind::duration)
      .default_value("200ms")
      .min(0ms)
      .max(1h)
      .describe("Wait before a record a consumer refused is handed to it again.");
  s.declare("events.kafka.max_buffered", value_kind::integer)
      .default_value("1000")
      .min(1)
      .max(1000000)
      .describe("Records a subscription holds per partition before it pauses fetching.");
}

kafka_settings kafka_settings_from(const config& cfg) {
  kafka_settings out;
  out.bootstrap_servers = trim(cfg.get_string_or_empty("events.kafka.bootstrap_servers"));
  if (out.bootstrap_servers.empty())
    throw config_error("events.kafka.bootstrap_servers",
                       "is empty; give the Kafka brokers as \"host:port,host:port\"");
  out.client_id = cfg.get_string("events.kafka.client_id");
  for (auto& entry : cfg.get_list(properties_key)) {
    auto eq = entry.find('=');
    auto name = trim(entry.substr(0, eq));
    if (eq == std::string::npos || name.empty())
      throw config_error(properties_key, "'" + entry +
                                             "' is not \"name=value\" (e.g. "
                                             "security.protocol=SASL_SSL)");
    out.properties.emplace_back(std::move(name), trim(entry.substr(eq + 1)));
  }
  // Checked one by one so an error names the key it came from.
  conf_ptr conf{rd_kafka_conf_new()};
  set_property(conf.get(), "bootstrap.servers", out.bootstrap_servers,
               "events.kafka.bootstrap_servers");
  set_property(conf.get(), "client.id", out.client_id, "events.kafka.client_id");
  for (auto& [name, value] : out.properties)
    set_property(conf.get(), name, value, properties_key);
  auto add_optional = [&](const char* key, const char* property) {
    auto value = cfg.get_string_or_empty(key);
    if (value.empty())
      return;
    set_property(conf.get(), property, value, key);
    out.properties.emplace_back(property, std::move(value));
  };
  add_optional("events.kafka.sasl_username", "sasl.username");
  add_optional("events.kafka.sasl_password", "sasl.password");
  add_optional("events.kafka.ssl_key_password", "ssl.key.password");
  out.delivery_timeout = millis(cfg, "events.kafka.delivery_timeout");
  out.consumer_timeout = millis(cfg, "events.kafka.consumer_timeout");
  out.redeliver_delay = millis(cfg, "events.kafka.redeliver_delay");
  out.max_buffered = static_cast<uint32_t>(cfg.get_int("events.kafka.max_buffered"));
  return out;
}

publisher_actor spawn_kafka_publisher(caf::actor_system& sys, kafka_settings settings) {
  auto core = make_producer(settings);
  return sys.spawn(kafka_publisher, std::move(core), std::move(settings));
}

} // namespace troupe
