#pragma once

// Events on the wire: CAF's binary format of the catalog-registered C++
// type, one format for every destination, named by the content type header.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/execution_unit.hpp>

namespace troupe {

/// The content type of every event troupe publishes.
constexpr const char* caf_binary_content_type = "application/x-troupe-caf";

template <class Event>
std::string encode_event(const Event& event) {
  std::vector<char> buf;
  caf::binary_serializer sink{static_cast<caf::execution_unit*>(nullptr), buf};
  if (auto err = sink(const_cast<Event&>(event)))
    throw std::runtime_error("troupe: cannot encode an event");
  return std::string{buf.begin(), buf.end()};
}

/// Empty when the bytes are not a whole `Event` (a poison message).
template <class Event>
std::optional<Event> decode_event(std::string_view bytes) {
  Event event{};
  caf::binary_deserializer source{static_cast<caf::execution_unit*>(nullptr),
                                  bytes.data(), bytes.size()};
  if (source(event) || source.remaining() != 0)
    return std::nullopt;
  return event;
}

} // namespace troupe

namespace troupe::detail {

/// Reads the `caf::meta::type_name` an `inspect` overload declares, so an
/// event's type header is the name its `inspect` gives it.
struct type_name_probe {
  using result_type = void;
  static constexpr bool reads_state = true;
  static constexpr bool writes_state = false;
  const char* name = nullptr;
  template <class... Ts>
  void operator()(Ts&&... xs) {
    (take(xs), ...);
  }
  void take(const caf::meta::type_name_t& x) {
    if (name == nullptr)
      name = x.value;
  }
  template <class T>
  void take(const T&) {}
};

} // namespace troupe::detail

namespace troupe {

template <class Event>
std::string event_type_name() {
  detail::type_name_probe probe;
  Event probe_value{};
  inspect(probe, probe_value);
  return probe.name != nullptr ? probe.name : "";
}

} // namespace troupe
