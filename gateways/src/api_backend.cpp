#include <troupe/gateways/api_backend.hpp>

#include <array>
#include <cctype>
#include <deque>
#include <mutex>
#include <unordered_map>

#include <caf/all.hpp>
#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include <troupe/runtime/metrics.hpp>
#include <troupe/runtime/readiness.hpp>
#include <troupe/sagas/saga_manager.hpp>

#include "saga_rendering.hpp"

namespace troupe::gateways {

namespace v1 = api::v1;
using clock = std::chrono::system_clock;

namespace {

// CAF 0.17 builds a state from the actor pointer when it can, and an
// aggregate whose first member is a caf::actor (or a bool) can: the
// constructor keeps it from doing so.
struct bridge_state {
  bridge_state() = default;
  caf::actor manager; ///< the saga manager the registry named last
};
using bridge_actor = caf::stateful_actor<bridge_state>;

// Work for the bridge actor: a closure run on its thread. Local only.
struct bridge_job {
  std::function<void(bridge_actor*)> run;
};

} // namespace
} // namespace troupe::gateways

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::gateways::bridge_job)

namespace troupe::gateways {

namespace {

enum class api_method : uint8_t { start, get, list, cancel, watch, invoke };
constexpr std::array<const char*, 6> method_names{"StartSaga",  "GetSaga",   "ListSagas",
                                                  "CancelSaga", "WatchSaga", "Invoke"};

// Requests by method and outcome; the counters are created on first use and
// kept, because a label lookup per request costs a lock and a hash.
class request_metrics {
public:
  request_metrics() {
    family_ = &prometheus::BuildCounter()
                   .Name("troupe_gateway_requests_total")
                   .Help("API requests through the gateways by method and outcome")
                   .Register(metrics::instance().registry());
    seconds_ = &prometheus::BuildHistogram()
                    .Name("troupe_gateway_request_seconds")
                    .Help("Time from a request's arrival to its answer")
                    .Register(metrics::instance().registry());
    for (size_t m = 0; m < method_names.size(); ++m)
      latency_[m] = &seconds_->Add({{"method", method_names[m]}},
                                   prometheus::Histogram::BucketBoundaries{
                                       0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  }

  void count(api_method m, api_code code, clock::time_point since) {
    auto mi = static_cast<size_t>(m);
    auto ci = static_cast<size_t>(code);
    auto* c = counters_[mi][ci].load(std::memory_order_acquire);
    if (c == nullptr) {
      std::lock_guard<std::mutex> guard{mtx_};
      c = &family_->Add({{"method", method_names[mi]}, {"code", to_string(code)}});
      counters_[mi][ci].store(c, std::memory_order_release);
    }
    c->Increment();
    latency_[mi]->Observe(std::chrono::duration<double>(clock::now() - since).count());
  }

private:
  std::mutex mtx_;
  prometheus::Family<prometheus::Counter>* family_;
  prometheus::Family<prometheus::Histogram>* seconds_;
  std::array<std::array<std::atomic<prometheus::Counter*>, 17>, 6> counters_{};
  std::array<prometheus::Histogram*, 6> latency_{};
};

request_metrics& gateway_metrics() {
  static request_metrics instance;
  return instance;
}

bool is_hex(std::string_view s) {
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c)) ||
        std::isupper(static_cast<unsigned char>(c)))
      return false;
  return true;
}

// The host part of "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555" or "127.0.0.1:5555".
std::string host_of(const std::string& peer) {
  std::string_view p{peer};
  if (p.rfind("ipv4:", 0) == 0 || p.rfind("ipv6:", 0) == 0)
    p.remove_prefix(5);
  auto colon = p.rfind(':');
  if (colon != std::string_view::npos && p.find(']') == std::string_view::npos &&
      p.find(':') != colon)
    return std::string{p}; // a bare IPv6 address without port
  if (colon != std::string_view::npos)
    p = p.substr(0, colon);
  return std::string{p};
}

api_status cancelled_status() {
  return api_status::failure(api_code::cancelled, "the client cancelled the request");
}

api_status invalid(std::string message) {
  return api_status::failure(api_code::invalid_argument, std::move(message));
}

// Reads the input of a start or invoke into a fresh message of the
// prototype's type, from JSON (a Struct) or a packed Any.
api_status read_input(const google::protobuf::Message& prototype, bool has_json,
                      const google::protobuf::Struct& json, bool has_packed,
                      const google::protobuf::Any& packed,
                      std::unique_ptr<google::protobuf::Message>& out) {
  out.reset(prototype.New());
  const auto& full_name = prototype.GetDescriptor()->full_name();
  if (has_packed) {
    auto slash = packed.type_url().rfind('/');
    auto named = slash == std::string::npos ? packed.type_url()
                                            : packed.type_url().substr(slash + 1);
    if (named != full_name)
      return invalid("the input must be a " + full_name + ", not " +
                     (named.empty() ? std::string{"an untyped Any"} : named));
    if (!out->ParseFromString(packed.value()))
      return invalid("the packed input is not a valid " + full_name);
    return {};
  }
  if (!has_json)
    return invalid("the input is missing (json or packed)");
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(json, &text).ok())
    return invalid("the input is not a JSON object");
  auto st = from_json(text, *out);
  if (!st.ok())
    st.message = "input: " + st.message;
  return st;
}

void set_struct_from(const google::protobuf::Message& m, google::protobuf::Struct& out) {
  auto text = to_json(m);
  google::protobuf::util::JsonParseOptions opts;
  if (!google::protobuf::util::JsonStringToMessage(text, &out, opts).ok())
    out.Clear();
}

// A bounded map of what the backend renders again and again; the oldest
// entry goes first when it is full. Entries live for `ttl`; a zero ttl
// keeps nothing, the largest one keeps entries until they are pushed out.
template <class Value>
class bounded_cache {
public:
  static constexpr size_t capacity = 4096;
  static constexpr auto forever = std::chrono::nanoseconds::max();

  explicit bounded_cache(std::chrono::nanoseconds ttl)
      : ttl_(ttl) {}

  std::shared_ptr<const Value> find(const std::string& key) {
    if (ttl_.count() == 0)
      return nullptr;
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = by_key_.find(key);
    if (i == by_key_.end())
      return nullptr;
    if (ttl_ != forever && std::chrono::steady_clock::now() >= i->second.expires) {
      by_key_.erase(i);
      return nullptr;
    }
    return i->second.value;
  }

  void insert(const std::string& key, const Value& value) {
    if (ttl_.count() == 0)
      return;
    entry e{std::make_shared<const Value>(value),
            ttl_ == forever ? std::chrono::steady_clock::time_point::max()
                            : std::chrono::steady_clock::now() + ttl_};
    std::lock_guard<std::mutex> guard{mtx_};
    auto [at, fresh] = by_key_.try_emplace(key, e);
    if (!fresh) {
      at->second = std::move(e);
      return;
    }
    order_.push_back(key);
    if (order_.size() > capacity) {
      by_key_.erase(order_.front());
      order_.pop_front();
    }
  }

private:
  struct entry {
    std::shared_ptr<const Value> value;
    std::chrono::steady_clock::time_point expires;
  };
  std::chrono::nanoseconds ttl_;
  std::mutex mtx_;
  std::unordered_map<std::string, entry> by_key_;
  std::deque<std::string> order_;
};

bool ended(const v1::Saga& s) {
  auto status = from_api(s.state());
  return status && is_end_state(*status);
}

bool matches_invocable(const std::vector<std::string>& rules, const std::string& service,
                       const std::string& method) {
  for (const auto& r : rules)
    if (r == service + "/" + method || r == service + "/*")
      return true;
  return false;
}

} // namespace

std::string correlation_from(std::string_view traceparent, std::string_view request_id) {
  // version "-" trace-id(32 hex) "-" parent-id(16 hex) "-" flags(2 hex)
  if (traceparent.size() >= 55 && traceparent[2] == '-' && traceparent[35] == '-' &&
      traceparent[52] == '-') {
    auto version = traceparent.substr(0, 2);
    auto trace = traceparent.substr(3, 32);
    auto parent = traceparent.substr(36, 16);
    if (is_hex(version) && version != "ff" && is_hex(trace) && is_hex(parent) &&
        trace != std::string(32, '0') && parent != std::string(16, '0'))
      return std::string{trace};
  }
  if (!request_id.empty() && request_id.size() <= 128) {
    bool sane = true;
    for (char c : request_id)
      sane = sane && c > 0x20 && c < 0x7f;
    if (sane)
      return std::string{request_id};
  }
  return new_correlation_id();
}

std::string to_json(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(msg, &out, opts).ok())
    return "{}";
  return out;
}

api_status from_json(std::string_view json, google::protobuf::Message& msg) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece{json.data(), json.size()}, &msg, opts);
  if (st.ok())
    return {};
  std::string why{st.message()};
  return invalid(why.empty() ? "invalid JSON for " + msg.GetDescriptor()->full_name()
                             : why);
}

// --- the backend ------------------------------------------------------------

struct api_backend::impl : std::enable_shared_from_this<impl> {
  caf::actor_system& sys;
  std::shared_ptr<const api_catalog> catalog;
  gateway_settings settings;
  authenticator auth;
  access_policy access;
  client_rate_limiter limiter;
  // Requests spread over a few bridges so that replies are rendered on
  // every scheduler thread, not queued behind one actor.
  std::vector<caf::actor> bridges;
  std::atomic<size_t> next_bridge{0};
  // A saga's input in its JSON mapping: it never changes, and mapping it
  // (binary to JSON text to Struct) costs more than the rest of a rendering.
  mutable bounded_cache<google::protobuf::Struct> inputs{
      bounded_cache<google::protobuf::Struct>::forever};
  // Sagas read in an end state: they no longer change, and clients poll them.
  mutable bounded_cache<v1::Saga> ended_sagas{settings.ended_cache_ttl};

  impl(caf::actor_system& sys, std::shared_ptr<const api_catalog> catalog,
       gateway_settings s)
      : sys(sys)
      , catalog(std::move(catalog))
      , settings(std::move(s))
      , auth(settings.auth)
      , access(settings.access, settings.auth.enabled)
      , limiter(settings.rate_per_client, settings.rate_burst) {}

  // Checks everything a request must pass before it reaches an actor.
  api_status admit(const request_info& info, api_action action, const std::string& target,
                   bool needs_ready) {
    caller who;
    auto st = auth.authenticate(info.authorization, who);
    if (!st.ok())
      return st;
    if (limiter.enabled()) {
      st = limiter.acquire(who.subject.empty() ? host_of(info.peer) : who.subject);
      if (!st.ok())
        return st;
    }
    st = access.check(who, action, target);
    if (!st.ok())
      return st;
    if (needs_ready && !node_is_ready()) {
      auto refusal = api_status::failure(api_code::unavailable,
                                         "node " + settings.node_name +
                                             " is not ready (starting, draining or cut "
                                             "off from the cluster)");
      refusal.details = "troupe.service_unavailable";
      refusal.retry_after = std::chrono::seconds{2};
      return refusal;
    }
    return {};
  }

  std::chrono::nanoseconds timeout_of(const request_info& info) const {
    return info.timeout.count() > 0 ? info.timeout : settings.default_timeout;
  }

  call_context context_of(const request_info& info,
                          std::chrono::nanoseconds timeout) const {
    call_context ctx;
    ctx.correlation_id =
        info.correlation_id.empty() ? new_correlation_id() : info.correlation_id;
    ctx.deadline_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          (clock::now() + timeout).time_since_epoch())
                          .count();
    return ctx;
  }

  void post(std::function<void(bridge_actor*)> f) {
    auto i = next_bridge.fetch_add(1, std::memory_order_relaxed) % bridges.size();
    caf::anon_send(bridges[i], bridge_job{std::move(f)});
  }

  // Renders an instance with its input in the JSON mapping of its type.
  void render_saga(const saga_snapshot& s, v1::Saga& out) const {
    render(s, out);
    if (auto input = inputs.find(s.id)) {
      *out.mutable_input() = *input;
      return;
    }
    if (const auto* b = catalog->find_saga(s.type); b != nullptr && b->decode_input)
      if (auto input = b->decode_input(sys, s.input)) {
        set_struct_from(*input, *out.mutable_input());
        inputs.insert(s.id, out.input());
      }
  }

  // Sends `msg` to the saga manager (found through the registry, cached)
  // and hands the reply or error to `on_reply` / `on_error` on the bridge.
  template <class Reply, class Msg, class OnReply>
  void ask_manager(bridge_actor* self, std::chrono::nanoseconds timeout, call_context ctx,
                   Msg msg, OnReply on_reply,
                   std::function<void(const api_status&)> on_error) {
    auto send = [timeout, ctx, msg, on_reply, on_error](bridge_actor* self,
                                                        const caf::actor& manager) {
      self->request(manager, caf::duration{timeout}, ctx, msg)
          .then([on_reply](Reply& reply) mutable { on_reply(std::move(reply)); },
                [self, on_error](caf::error& err) {
                  if (classify(err) == errc::service_unavailable)
                    self->state.manager = nullptr;
                  on_error(api_status::from_error(err));
                });
    };
    auto& cached = self->state.manager;
    if (cached) {
      send(self, cached);
      return;
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min<std::chrono::nanoseconds>(timeout, std::chrono::seconds(2)));
    find_service<saga_manager_actor>(self, saga_manager_name, wait)
        .then(
            [self, send](const caf::actor& manager) {
              self->state.manager = manager;
              send(self, manager);
            },
            [on_error](caf::error& err) {
              auto st = api_status::from_error(err);
              if (st.code == api_code::unavailable)
                st.message = "no saga manager is reachable: " + st.message;
              on_error(st);
            });
  }

  // Sends `msg` to the saga manager with the request's deadline and context,
  // and answers `done` with `render(reply)` or the error; a request whose
  // client went away before the bridge got to it is answered CANCELLED.
  template <class Reply, class Msg, class Done, class Render>
  void forward(const request_info& info, Msg msg, Done done,
               std::shared_ptr<cancel_handle> cancel, Render render) {
    auto timeout = timeout_of(info);
    auto ctx = context_of(info, timeout);
    post([self_impl = shared_from_this(), timeout, ctx, msg = std::move(msg), done,
          cancel, render](bridge_actor* self) {
      if (cancel && cancel->cancelled())
        return done(cancelled_status(), {});
      self_impl->ask_manager<Reply>(
          self, timeout, ctx, msg,
          [self_impl, done, render](Reply reply) { done({}, render(*self_impl, reply)); },
          [done](const api_status& st) { done(st, {}); });
    });
  }
};

} // namespace troupe::gateways

namespace troupe::gateways {

namespace {

// Runs `done` once with the outcome and counts it.
template <class Reply>
auto counted(api_method m, clock::time_point since, api_backend::reply_fn<Reply> done) {
  return [m, since, done = std::move(done)](const api_status& st, Reply reply) {
    gateway_metrics().count(m, st.code, since);
    done(st, std::move(reply));
  };
}

bool sane_id(const std::string& id) {
  if (id.empty() || id.size() > 256)
    return false;
  for (char c : id)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return false;
  return true;
}

// A saga as the API renders it (the reply of get and cancel).
constexpr auto saga_of = [](const auto& backend, const saga_snapshot& snapshot) {
  v1::Saga out;
  backend.render_saga(snapshot, out);
  if (ended(out))
    backend.ended_sagas.insert(out.id(), out);
  return out;
};

// The per-watch actor: subscribes to one instance, forwards every change,
// polls now and then so that a lost owner or a cancelled client is noticed.
using watch_tick_atom = caf::atom_constant<caf::atom("wtick")>;
using watch_failed_atom = caf::atom_constant<caf::atom("wfailed")>;

struct watch_state {
  watch_state() = default; // see bridge_state
  bool ended = false;
  uint32_t ticks = 0;
  int64_t seen_updated_ns = -1; ///< the newest change delivered
};

} // namespace

api_backend::api_backend(caf::actor_system& sys,
                         std::shared_ptr<const api_catalog> catalog,
                         gateway_settings settings)
    : impl_(std::make_shared<impl>(sys, std::move(catalog), std::move(settings))) {
  gateway_metrics();
  auto n = std::max<size_t>(2, sys.scheduler().num_workers());
  for (size_t i = 0; i < n; ++i)
    impl_->bridges.push_back(sys.spawn([](bridge_actor* self) -> caf::behavior {
      return {[self](bridge_job& job) { job.run(self); }};
    }));
}

api_backend::~api_backend() {
  for (auto& bridge : impl_->bridges)
    caf::anon_send_exit(bridge, caf::exit_reason::user_shutdown);
}

bool api_backend::ready() const {
  return node_is_ready();
}

const gateway_settings& api_backend::settings() const noexcept {
  return impl_->settings;
}

const api_catalog& api_backend::catalog() const noexcept {
  return *impl_->catalog;
}

void api_backend::start_saga(const request_info& info, const v1::StartSagaRequest& req,
                             reply_fn<v1::StartSagaResponse> done_,
                             std::shared_ptr<cancel_handle> cancel) {
  auto done = counted(api_method::start, clock::now(), std::move(done_));
  auto st = impl_->admit(info, api_action::start, req.saga_type(), true);
  if (!st.ok())
    return done(st, {});
  const auto* binding = impl_->catalog->find_saga(req.saga_type());
  if (binding == nullptr)
    return done(api_status::failure(api_code::not_found,
                                    req.saga_type().empty()
                                        ? std::string{"the saga type is missing"}
                                        : "unknown saga type '" + req.saga_type() + "'"),
                {});
  std::unique_ptr<google::protobuf::Message> input;
  st = read_input(*binding->input_prototype, req.has_json(), req.json(), req.has_packed(),
                  req.packed(), input);
  if (!st.ok())
    return done(st, {});
  troupe::start_saga cmd;
  cmd.type = req.saga_type();
  try {
    cmd.input = binding->encode_input(impl_->sys, *input);
  } catch (const std::exception& e) {
    return done(invalid(std::string{"input: "} + e.what()), {});
  }
  if (req.idempotency_key().size() > 256)
    return done(invalid("the idempotency key is longer than 256 bytes"), {});
  cmd.idempotency_key = req.idempotency_key();
  if (req.has_deadline()) {
    auto d = std::chrono::seconds{req.deadline().seconds()} +
             std::chrono::nanoseconds{req.deadline().nanos()};
    if (d <= std::chrono::nanoseconds::zero() || d > std::chrono::hours(24 * 365))
      return done(invalid("the deadline must be positive and at most a year"), {});
    cmd.deadline_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          (clock::now() + d).time_since_epoch())
                          .count();
  }
  impl_->forward<saga_started>(info, std::move(cmd), std::move(done), std::move(cancel),
                               [](const impl& backend, const saga_started& started) {
                                 v1::StartSagaResponse out;
                                 backend.render_saga(started.saga, *out.mutable_saga());
                                 out.set_created(started.created);
                                 return out;
                               });
}

void api_backend::get_saga(const request_info& info, const v1::GetSagaRequest& req,
                           reply_fn<v1::Saga> done_,
                           std::shared_ptr<cancel_handle> cancel) {
  auto done = counted(api_method::get, clock::now(), std::move(done_));
  auto st = impl_->admit(info, api_action::read, {}, false);
  if (!st.ok())
    return done(st, {});
  if (!sane_id(req.id()))
    return done(invalid("a saga id is 1 to 256 printable characters"), {});
  if (auto known = impl_->ended_sagas.find(req.id()))
    return done({}, *known);
  impl_->forward<saga_snapshot>(info, troupe::get_saga{req.id()}, std::move(done),
                                std::move(cancel), saga_of);
}

void api_backend::list_sagas(const request_info& info, const v1::ListSagasRequest& req,
                             reply_fn<v1::ListSagasResponse> done_,
                             std::shared_ptr<cancel_handle> cancel) {
  auto done = counted(api_method::list, clock::now(), std::move(done_));
  auto st = impl_->admit(info, api_action::read, {}, false);
  if (!st.ok())
    return done(st, {});
  troupe::list_sagas q;
  q.type = req.saga_type();
  if (!v1::SagaState_IsValid(req.state()))
    return done(invalid("unknown saga state " + std::to_string(req.state())), {});
  if (auto status = from_api(req.state()))
    q.status = to_string(*status);
  q.page_size = req.page_size() == 0 ? 50u : std::min(req.page_size(), 1000u);
  if (req.page_token().size() > 1024)
    return done(invalid("the page token is not one this API issued"), {});
  q.page_token = req.page_token();
  impl_->forward<saga_page>(info, std::move(q), std::move(done), std::move(cancel),
                            [](const impl&, const saga_page& page) {
                              v1::ListSagasResponse out;
                              for (const auto& summary : page.sagas)
                                render(summary, *out.add_sagas());
                              out.set_next_page_token(page.next_page_token);
                              return out;
                            });
}

void api_backend::cancel_saga(const request_info& info, const v1::CancelSagaRequest& req,
                              reply_fn<v1::Saga> done_,
                              std::shared_ptr<cancel_handle> cancel) {
  auto done = counted(api_method::cancel, clock::now(), std::move(done_));
  auto st = impl_->admit(info, api_action::cancel, {}, true);
  if (!st.ok())
    return done(st, {});
  if (!sane_id(req.id()))
    return done(invalid("a saga id is 1 to 256 printable characters"), {});
  impl_->forward<saga_snapshot>(info, troupe::cancel_saga{req.id()}, std::move(done),
                                std::move(cancel), saga_of);
}

void api_backend::watch_saga(const request_info& info, const v1::WatchSagaRequest& req,
                             std::function<void(const v1::Saga&)> on_change,
                             std::function<void(const api_status&)> on_end_,
                             std::shared_ptr<cancel_handle> cancel) {
  auto since = clock::now();
  auto on_end = [on_end_ = std::move(on_end_), since](const api_status& st) {
    gateway_metrics().count(api_method::watch, st.code, since);
    on_end_(st);
  };
  auto st = impl_->admit(info, api_action::read, {}, false);
  if (!st.ok())
    return on_end(st);
  if (!sane_id(req.id()))
    return on_end(invalid("a saga id is 1 to 256 printable characters"));
  if (!cancel)
    cancel = std::make_shared<cancel_handle>();
  // A watch lasts as long as the client wants it: its deadline, if any,
  // bounds the whole stream; each request inside gets the default timeout.
  auto stream_deadline =
      info.timeout.count() > 0
          ? std::optional{std::chrono::steady_clock::now() + info.timeout}
          : std::nullopt;
  auto ctx = impl_->context_of(info, impl_->settings.default_timeout);
  auto self_impl = impl_;
  impl_->sys.spawn([self_impl, id = req.id(), ctx, stream_deadline, on_change, on_end,
                    cancel](caf::stateful_actor<watch_state>* self) -> caf::behavior {
    auto finish = [self, on_end](const api_status& st) {
      if (self->state.ended)
        return;
      self->state.ended = true;
      on_end(st);
      self->quit();
    };
    auto deliver = [self, self_impl, on_change, finish](const saga_snapshot& s) {
      if (self->state.ended || s.updated_ns < self->state.seen_updated_ns)
        return;
      self->state.seen_updated_ns = s.updated_ns;
      v1::Saga out;
      self_impl->render_saga(s, out);
      on_change(out);
      if (is_end_state(s.status))
        finish({});
    };
    auto me = caf::actor_cast<caf::actor>(self);
    // Subscribing goes through the bridge's cached manager handle.
    self_impl->post([self_impl, me, id, ctx, finish, deliver](bridge_actor* bridge) {
      self_impl->ask_manager<watch_started>(
          bridge, self_impl->settings.default_timeout, ctx, troupe::watch_saga{id, me},
          [me](watch_started started) {
            caf::anon_send(me, std::move(started.saga), caf::ok_atom::value);
          },
          [me](const api_status& st) {
            caf::anon_send(me, watch_failed_atom::value, st.message,
                           static_cast<uint8_t>(st.code),
                           static_cast<int64_t>(st.retry_after.count()), st.details);
          });
    });
    self->delayed_send(self, std::chrono::milliseconds(100), watch_tick_atom::value);
    return {
        // The first snapshot, from the subscription's answer.
        [deliver](saga_snapshot& s, caf::ok_atom) { deliver(s); },
        // Every later change, from the instance.
        [deliver](saga_snapshot& s) { deliver(s); },
        [finish](watch_failed_atom, std::string& message, uint8_t code,
                 int64_t retry_after, std::string& details) {
          api_status st;
          st.code = static_cast<api_code>(code);
          st.message = std::move(message);
          st.retry_after = std::chrono::seconds{retry_after};
          st.details = std::move(details);
          finish(st);
        },
        [self, self_impl, id, ctx, finish, cancel, stream_deadline](watch_tick_atom) {
          if (cancel->cancelled())
            return finish(cancelled_status());
          if (stream_deadline && std::chrono::steady_clock::now() >= *stream_deadline)
            return finish(api_status::failure(api_code::deadline_exceeded,
                                              "the watch reached the client's deadline"));
          // Changes are pushed; a poll every few seconds notices an owner
          // that went away and a change lost with it.
          if (++self->state.ticks % 50 == 0) {
            auto me = caf::actor_cast<caf::actor>(self);
            self_impl->post([self_impl, me, id, ctx](bridge_actor* bridge) {
              self_impl->ask_manager<saga_snapshot>(
                  bridge, self_impl->settings.default_timeout, ctx, troupe::get_saga{id},
                  [me](saga_snapshot s) { caf::anon_send(me, std::move(s)); },
                  [me](const api_status& st) {
                    caf::anon_send(me, watch_failed_atom::value, st.message,
                                   static_cast<uint8_t>(st.code),
                                   static_cast<int64_t>(st.retry_after.count()),
                                   st.details);
                  });
            });
          }
          self->delayed_send(self, std::chrono::milliseconds(100),
                             watch_tick_atom::value);
        },
    };
  });
}

void api_backend::invoke(const request_info& info, const v1::InvokeRequest& req,
                         reply_fn<v1::InvokeResponse> done_,
                         std::shared_ptr<cancel_handle> cancel) {
  auto done = counted(api_method::invoke, clock::now(), std::move(done_));
  auto target = req.service() + "/" + req.method();
  auto st = impl_->admit(info, api_action::invoke, target, true);
  if (!st.ok())
    return done(st, {});
  if (!matches_invocable(impl_->settings.invocable, req.service(), req.method()))
    return done(api_status::failure(api_code::permission_denied,
                                    target + " is not callable from outside "
                                             "(gateways.invocable does not list it)"),
                {});
  const auto* binding = impl_->catalog->find_call(req.service(), req.method());
  if (binding == nullptr)
    return done(api_status::failure(api_code::not_found,
                                    "no service exposes " + target + " to the gateways"),
                {});
  std::shared_ptr<google::protobuf::Message> request;
  {
    std::unique_ptr<google::protobuf::Message> parsed;
    st = read_input(*binding->request_prototype, req.has_json(), req.json(),
                    req.has_packed(), req.packed(), parsed);
    if (!st.ok())
      return done(st, {});
    request = std::move(parsed);
  }
  auto timeout = impl_->timeout_of(info);
  auto ctx = impl_->context_of(info, timeout);
  impl_->post([binding, timeout, ctx, request, done, cancel](bridge_actor* self) {
    if (cancel && cancel->cancelled())
      return done(cancelled_status(), {});
    try {
      binding->send(self, timeout, ctx, *request,
                    [done](const caf::error& err,
                           std::unique_ptr<google::protobuf::Message> reply) {
                      if (err || !reply)
                        return done(api_status::from_error(err), {});
                      v1::InvokeResponse out;
                      set_struct_from(*reply, *out.mutable_json());
                      done({}, std::move(out));
                    });
    } catch (const std::exception& e) {
      done(invalid(std::string{"input: "} + e.what()), {});
    }
  });
}

} // namespace troupe::gateways
