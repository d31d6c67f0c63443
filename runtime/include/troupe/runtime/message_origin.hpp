#pragma once

namespace troupe {

/// True when the message `self` is handling was sent by an actor of this
/// node. Anonymous messages count as foreign: a peer's anonymous message
/// carries no sender, so it cannot be told apart from a local one, and
/// actors that serve only their node must not take it.
template <class Self>
bool sent_from_this_node(Self* self) {
  const auto& sender = self->current_sender();
  return sender != nullptr && sender->node() == self->node();
}

} // namespace troupe
