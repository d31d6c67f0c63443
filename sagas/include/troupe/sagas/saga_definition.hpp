#pragma once

// Saga definitions: a named, versioned business process of typed steps, each
// beside its compensation. The data flow is checked when the definition
// compiles: a step's request builder takes the saga input and replies of
// steps before it, a compensation sees its own step's reply, and a request
// the named service does not handle is an error.
//
//   return troupe::saga<order>("order_processing", 1)
//       .step("reserve", troupe::via<inventory_actor>("inventory"),
//             [](const order& o) { return reserve_stock{o.sku, o.quantity}; },
//             troupe::compensate([](const stock_reserved& r) {
//               return release_stock{r.reservation_id};
//             }))
//       .step("charge", troupe::via<payment_actor>("payment"),
//             [](const order& o, const stock_reserved& r) { return charge_card{...}; })
//       .deadline(30s);

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/duration.hpp>
#include <caf/error.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/replies_to.hpp>

#include <troupe/actors/retry_schedule.hpp>
#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/service.hpp>
#include <troupe/runtime/store.hpp>
#include <troupe/sagas/saga_state.hpp>

namespace troupe {

/// The service a step calls: its registry name and its typed interface.
template <class Handle>
struct via_service {
  std::string name;
};

/// `troupe::via<inventory_actor>("inventory")`.
template <class Handle>
via_service<Handle> via(std::string name) {
  return {std::move(name)};
}

namespace detail {

/// The answer of a step call: the reply's bytes, or the error.
using step_done = std::function<void(std::string reply, caf::error err)>;

/// One typed request to one service, erased to what an instance needs.
struct step_call {
  std::string service;
  std::function<std::vector<std::string>(caf::actor_system&)> interface;
  /// Builds the request from the instance's data; throws when recorded data
  /// cannot be decoded. The message holds exactly the typed request.
  std::function<caf::message(caf::actor_system&, const saga_snapshot&)> build;
  /// Sends a built request and reports the answer.
  std::function<void(caf::event_based_actor*, const caf::actor& target, call_context,
                     caf::duration timeout, caf::message request, step_done done)>
      send;
};

} // namespace detail

/// One step of a definition, type-erased.
struct step_definition {
  std::string name;
  detail::step_call action;
  std::optional<detail::step_call> compensation;
  std::chrono::nanoseconds timeout{0}; ///< per attempt; 0 = sagas.step_timeout
  std::optional<resilience::retry_settings> retry; ///< none = the node's default
  std::function<std::string(caf::actor_system&, const std::string&)> describe_reply;
};

/// A saga type: ordered groups of steps (a group of more than one runs in
/// parallel), an overall deadline, and how to read its input.
struct saga_definition {
  std::string type;
  uint32_t version = 1;
  std::chrono::nanoseconds deadline{0}; ///< 0 = sagas.deadline
  std::vector<std::vector<step_definition>> groups;
  /// True when `bytes` decode as the saga's input type.
  std::function<bool(caf::actor_system&, const std::string& bytes)> input_is_valid;
  std::function<std::string(caf::actor_system&, const std::string& bytes)> describe_input;
  /// Adds what an instance's end also writes (e.g. an `order_completed`
  /// event through an outbox transaction) to the batch that records the
  /// end, so both are durable together or neither is. Called with the ended
  /// instance each time that batch is built.
  std::function<void(caf::actor_system&, const saga_snapshot& ended, write_batch& batch)>
      on_end;

  /// Every step, in definition order.
  std::vector<const step_definition*> steps() const;
};

/// Encodes a value in CAF's binary format (what the saga log stores).
template <class T>
std::string encode(caf::actor_system& sys, const T& value) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto err = sink(const_cast<T&>(value));
  if (err)
    throw std::runtime_error("cannot encode a value: " + sys.render(err));
  return {buf.begin(), buf.end()};
}

/// Decodes a value encoded by `encode`; nothing when the bytes do not fit.
template <class T>
std::optional<T> decode(caf::actor_system& sys, const std::string& bytes) {
  T value{};
  caf::binary_deserializer source{sys, bytes.data(), bytes.size()};
  if (auto err = source(value))
    return std::nullopt;
  if (source.remaining() != 0)
    return std::nullopt;
  return value;
}

namespace detail {

template <class T, class... Ts>
constexpr size_t count_of = (size_t{0} + ... + (std::is_same_v<T, Ts> ? 1 : 0));

template <class T, class... Ts>
constexpr size_t index_of() {
  size_t i = 0;
  size_t found = sizeof...(Ts);
  ((std::is_same_v<T, Ts> ? (found = i, ++i) : ++i), ...);
  return found;
}

// The reply a typed service answers `Request` with, if it handles it.
template <class Sig, class Request>
struct signature_reply {
  static constexpr bool found = false;
  using type = void;
};

template <class Request, class Reply>
struct signature_reply<caf::typed_mpi<caf::detail::type_list<call_context, Request>,
                                      caf::output_tuple<Reply>>,
                       Request> {
  static constexpr bool found = true;
  using type = Reply;
};

template <class Handle, class Request>
struct reply_of {
  static constexpr bool found = false;
  using type = void;
};

template <class Request, class Sig, class... Sigs>
struct reply_of<caf::typed_actor<Sig, Sigs...>, Request> {
  using here = signature_reply<Sig, Request>;
  using rest = reply_of<caf::typed_actor<Sigs...>, Request>;
  static constexpr bool found = here::found || rest::found;
  using type = std::conditional_t<here::found, typename here::type, typename rest::type>;
};

template <class F>
using builder_args = typename handler_traits<F>::args;

template <class T>
const T& decoded(caf::actor_system& sys, const std::string& bytes, std::optional<T>& slot,
                 const char* what) {
  slot = decode<T>(sys, bytes);
  if (!slot)
    throw std::runtime_error(std::string{"cannot decode the recorded "} + what);
  return *slot;
}

inline const step_record& recorded_step(const saga_snapshot& s, const std::string& name) {
  for (auto& st : s.steps)
    if (st.name == name)
      return st;
  throw std::runtime_error("the log has no step named '" + name + "'");
}

// Fetches one builder argument: the saga input, or the reply of the step that
// produced that type.
template <class Input, class Arg>
struct argument_source {
  std::string step; // empty for the input
  const Arg& fetch(caf::actor_system& sys, const saga_snapshot& s,
                   std::optional<Arg>& slot) const {
    if (step.empty())
      return decoded(sys, s.input, slot, "saga input");
    auto& rec = recorded_step(s, step);
    if (rec.reply.empty() && outcome_unknown(rec)) {
      // A compensation of a step that may have run but has no recorded reply:
      // the service finds what to undo by the step's idempotency key.
      slot.emplace();
      return *slot;
    }
    return decoded(sys, rec.reply, slot, "step reply");
  }
};

template <class Handle, class Request, class Reply>
step_call
make_call(std::string service,
          std::function<caf::message(caf::actor_system&, const saga_snapshot&)> build) {
  step_call call;
  call.service = std::move(service);
  call.interface = [](caf::actor_system& sys) {
    auto names = sys.message_types<Handle>();
    return std::vector<std::string>(names.begin(), names.end());
  };
  call.build = std::move(build);
  call.send = [](caf::event_based_actor* self, const caf::actor& target, call_context ctx,
                 caf::duration timeout, caf::message request, step_done done) {
    auto typed = caf::actor_cast<Handle>(target);
    self->request(typed, timeout, std::move(ctx), request.get_as<Request>(0))
        .then(
            [self, done](const Reply& reply) {
              std::string bytes;
              try {
                bytes = encode(self->system(), reply);
              } catch (const std::exception& e) {
                done({}, make_error(errc::internal, e.what()));
                return;
              }
              done(std::move(bytes), caf::error{});
            },
            [done](caf::error& err) { done({}, std::move(err)); });
  };
  return call;
}

// Builds a request builder over the snapshot from a typed lambda whose
// parameters are resolved to the input or to earlier steps' replies.
template <class Input, class Build, class... Args>
std::function<caf::message(caf::actor_system&, const saga_snapshot&)>
erase_builder(Build build, std::vector<std::string> sources, std::tuple<Args...>*) {
  return [build, sources](caf::actor_system& sys, const saga_snapshot& s) {
    std::tuple<std::optional<Args>...> slots;
    return [&]<size_t... I>(std::index_sequence<I...>) {
      return caf::make_message(build(
          argument_source<Input, Args>{sources[I]}.fetch(sys, s, std::get<I>(slots))...));
    }
    (std::index_sequence_for<Args...>{});
  };
}

} // namespace detail

/// A step's compensation: a request to the step's own service (or to
/// `target`), built from the saga input and/or the step's own reply.
///
/// A compensating saga also compensates a step whose outcome is unknown (sent,
/// no answer recorded that says it was not applied: `outcome_unknown`). Its
/// builder then sees a default-constructed reply, and the service must find
/// what to undo by the step's idempotency key (`compensated_step_key`), treat
/// a key it never applied as a no-op, and refuse that key if the step's
/// request arrives after its compensation.
template <class Handle, class Build>
struct compensation_spec {
  std::optional<via_service<Handle>> target;
  Build build;
};

template <class Build>
compensation_spec<void, Build> compensate(Build build) {
  return {std::nullopt, std::move(build)};
}

template <class Handle, class Build>
compensation_spec<Handle, Build> compensate(via_service<Handle> target, Build build) {
  return {std::move(target), std::move(build)};
}

/// The idempotency key of the step a compensation undoes: a compensation is
/// sent with its step's key followed by "/compensate". Empty when `ctx` is
/// not a compensation's.
inline std::string compensated_step_key(const call_context& ctx) {
  static constexpr std::string_view suffix = "/compensate";
  const auto& key = ctx.idempotency_key;
  if (key.size() <= suffix.size() ||
      std::string_view{key}.substr(key.size() - suffix.size()) != suffix)
    return {};
  return key.substr(0, key.size() - suffix.size());
}

/// A step's timeout per attempt: `troupe::step_timeout(2s)`.
struct step_timeout {
  std::chrono::nanoseconds value;
};

/// A step's retries: `troupe::step_retry{3, 100ms}` (attempts in total, first
/// backoff; exponential with full jitter), or full settings.
struct step_retry {
  resilience::retry_settings settings;
  step_retry(uint32_t max_attempts, std::chrono::nanoseconds initial_backoff) {
    settings.max_attempts = max_attempts;
    settings.backoff.initial = initial_backoff;
  }
  explicit step_retry(resilience::retry_settings s)
      : settings(std::move(s)) {}
};

/// A step before it is placed in a saga: its name, service, request builder
/// and options. `troupe::step(...)` makes one for `parallel(...)`.
template <class Handle, class Build, class... Options>
struct step_spec {
  std::string name;
  via_service<Handle> target;
  Build build;
  std::tuple<Options...> options;
};

template <class Handle, class Build, class... Options>
step_spec<Handle, Build, Options...> step(std::string name, via_service<Handle> target,
                                          Build build, Options... options) {
  return {std::move(name), std::move(target), std::move(build),
          std::make_tuple(std::move(options)...)};
}

namespace detail {

template <class T>
struct is_compensation : std::false_type {};
template <class H, class B>
struct is_compensation<compensation_spec<H, B>> : std::true_type {};

template <class Input, class Handle, class Build>
struct step_types {
  using args = builder_args<Build>;
  static_assert(std::tuple_size_v<args> >= 1 &&
                    std::is_same_v<std::tuple_element_t<0, args>, Input>,
                "troupe saga: a step's request builder takes the saga input first, "
                "then replies of earlier steps");
  using request = std::decay_t<typename handler_traits<Build>::result>;
  using reply_lookup = reply_of<Handle, request>;
  static_assert(reply_lookup::found,
                "troupe saga: the step's service does not handle the request its "
                "builder returns (no troupe::handles<Request, Reply> in its interface)");
  using reply = typename reply_lookup::type;
};

// Checks that every builder parameter after the input is the reply of exactly
// one earlier step, and names the step each comes from.
template <class Input, class... Known, class... Args>
std::vector<std::string> sources_for(const std::vector<std::string>& known_names,
                                     std::tuple<Input, Args...>*) {
  static_assert(((count_of<Args, Known...> >= 1) && ...),
                "troupe saga: a request builder takes a parameter that is not the reply "
                "of any earlier step");
  static_assert(((count_of<Args, Known...> <= 1) && ...),
                "troupe saga: a request builder parameter is ambiguous: two earlier "
                "steps reply with that type");
  return {std::string{}, known_names[index_of<Args, Known...>()]...};
}

template <class Input, class Reply, class... Args>
std::vector<std::string> compensation_sources(const std::string& own_step,
                                              std::tuple<Args...>*) {
  static_assert(sizeof...(Args) >= 1, "troupe saga: a compensation takes the saga "
                                      "input and/or its own step's reply");
  static_assert(((std::is_same_v<Args, Input> || std::is_same_v<Args, Reply>)&&...),
                "troupe saga: a compensation takes the saga input and/or its own "
                "step's reply, nothing else");
  return {(std::is_same_v<Args, Input> ? std::string{} : own_step)...};
}

} // namespace detail

/// A definition under construction; `Known...` are the reply types of the
/// steps added so far, which later request builders may take.
template <class Input, class... Known>
class saga_builder {
public:
  saga_builder(std::shared_ptr<saga_definition> def, std::vector<std::string> known)
      : def_(std::move(def))
      , known_(std::move(known)) {}

  /// Adds a step that runs after every step before it.
  template <class Handle, class Build, class... Options>
  auto step(std::string name, via_service<Handle> target, Build build,
            Options... options) && {
    return std::move(*this).parallel(troupe::step(
        std::move(name), std::move(target), std::move(build), std::move(options)...));
  }

  /// Adds a group of steps that run at the same time; later steps may take
  /// any of their replies.
  template <class... Specs>
  auto parallel(Specs... specs) && {
    std::vector<step_definition> group;
    (group.push_back(make_step(specs)), ...);
    def_->groups.push_back(std::move(group));
    auto known = known_;
    (known.push_back(specs.name), ...);
    return saga_builder<Input, Known..., typename step_reply<Specs>::type...>{
        std::move(def_), std::move(known)};
  }

  /// The overall deadline: past it, the saga compensates.
  saga_builder deadline(std::chrono::nanoseconds d) && {
    def_->deadline = d;
    return std::move(*this);
  }

  /// Writes into the batch recording an instance's end:
  /// `write(sys, input, ended, batch)`, with the saga's typed input.
  template <class Write>
  saga_builder on_end(Write write) && {
    def_->on_end = [write](caf::actor_system& sys, const saga_snapshot& ended,
                           write_batch& batch) {
      if (auto input = decode<Input>(sys, ended.input))
        write(sys, *input, ended, batch);
    };
    return std::move(*this);
  }

  /// The finished definition.
  std::shared_ptr<const saga_definition> build() && { return std::move(def_); }
  operator std::shared_ptr<const saga_definition>() && { return std::move(def_); }

private:
  template <class Spec>
  struct step_reply;
  template <class Handle, class Build, class... Options>
  struct step_reply<step_spec<Handle, Build, Options...>> {
    using type = typename detail::step_types<Input, Handle, Build>::reply;
  };

  template <class Handle, class Build, class... Options>
  step_definition make_step(const step_spec<Handle, Build, Options...>& spec) {
    using types = detail::step_types<Input, Handle, Build>;
    using args = typename types::args;
    step_definition def;
    def.name = spec.name;
    auto sources =
        detail::sources_for<Input, Known...>(known_, static_cast<args*>(nullptr));
    def.action =
        detail::make_call<Handle, typename types::request, typename types::reply>(
            spec.target.name, detail::erase_builder<Input>(spec.build, sources,
                                                           static_cast<args*>(nullptr)));
    def.describe_reply = [](caf::actor_system& sys, const std::string& bytes) {
      auto value = decode<typename types::reply>(sys, bytes);
      return value ? caf::deep_to_string(*value) : std::string{"<undecodable>"};
    };
    std::apply(
        [&](const auto&... option) {
          (apply_option<typename types::reply>(def, spec.name, spec.target, option), ...);
        },
        spec.options);
    return def;
  }

  template <class Reply, class Handle>
  void apply_option(step_definition& def, const std::string&, const via_service<Handle>&,
                    const step_timeout& t) {
    def.timeout = t.value;
  }

  template <class Reply, class Handle>
  void apply_option(step_definition& def, const std::string&, const via_service<Handle>&,
                    const step_retry& r) {
    def.retry = r.settings;
  }

  template <class Reply, class Handle, class CompHandle, class CompBuild>
  void apply_option(step_definition& def, const std::string& step_name,
                    const via_service<Handle>& step_target,
                    const compensation_spec<CompHandle, CompBuild>& comp) {
    using target_handle =
        std::conditional_t<std::is_void_v<CompHandle>, Handle, CompHandle>;
    using args = detail::builder_args<CompBuild>;
    using request = std::decay_t<typename detail::handler_traits<CompBuild>::result>;
    using lookup = detail::reply_of<target_handle, request>;
    static_assert(lookup::found,
                  "troupe saga: the compensation's service does not handle the request "
                  "its builder returns");
    auto sources = detail::compensation_sources<Input, Reply>(
        step_name, static_cast<args*>(nullptr));
    std::string service;
    if constexpr (std::is_void_v<CompHandle>)
      service = step_target.name;
    else
      service = comp.target->name;
    def.compensation = detail::make_call<target_handle, request, typename lookup::type>(
        std::move(service),
        detail::erase_builder<Input>(comp.build, sources, static_cast<args*>(nullptr)));
  }

  std::shared_ptr<saga_definition> def_;
  std::vector<std::string> known_;
};

/// Starts a definition for a saga whose input is `Input` (a catalog-registered
/// type): `troupe::saga<order>("order_processing", 1).step(...)...`.
template <class Input>
saga_builder<Input> saga(std::string type, uint32_t version = 1) {
  auto def = std::make_shared<saga_definition>();
  def->type = std::move(type);
  def->version = version;
  def->input_is_valid = [](caf::actor_system& sys, const std::string& bytes) {
    return decode<Input>(sys, bytes).has_value();
  };
  def->describe_input = [](caf::actor_system& sys, const std::string& bytes) {
    auto value = decode<Input>(sys, bytes);
    return value ? caf::deep_to_string(*value) : std::string{"<undecodable>"};
  };
  return saga_builder<Input>{std::move(def), {}};
}

} // namespace troupe
