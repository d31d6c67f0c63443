#include <troupe/runtime/supervisor.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/metrics.hpp>

// A restarting supervisor built from CAF 0.17's primitives (CAF 0.17 has
// none): children are linked, exits are trapped, and every decision is taken
// in the exit handler.
//
// Life of a failure:
//   1. A child's exit_msg arrives and its policy asks for a restart.
//   2. The budget is checked (restarts within `window`); over budget, the
//      supervisor shuts down (step 5) with errc::restart_budget_exceeded.
//   3. The affected set is chosen by strategy. Live siblings in it are asked to
//      stop with user_shutdown and marked `stopping` (their exits are expected,
//      not failures); the set is marked `pending`.
//   4. A restart round is armed: a delayed (restart_child_atom, generation) to
//      self after the backoff. When it fires with the current generation and no
//      child is still stopping, every pending child starts again in start order.
//      Any later failure bumps the generation and re-arms the round, so a stale
//      timer does nothing and concurrent failures are restarted together.
//   5. Shutdown (budget exceeded, or an exit from a non-child such as the
//      parent): children stop one at a time in reverse start order, then the
//      supervisor quits with the reason. A child that ignores user_shutdown is
//      killed after `shutdown_grace`.

namespace troupe {

namespace {

/// Internal: a child asked to stop has not stopped within the grace period.
using stop_timeout_atom = caf::atom_constant<caf::atom("stoptmo")>;

/// How long a child may take to honour user_shutdown before it is killed.
constexpr auto shutdown_grace = std::chrono::milliseconds{5000};

struct child_slot {
  child_spec spec;
  caf::actor handle;     ///< the current instance; null while down
  bool stopping = false; ///< asked to stop by us: its exit is expected
  bool pending = false;  ///< waits to be started in the next restart round
};

using child_slots = std::vector<child_slot>;

struct supervisor_state {
  static const char* name;

  std::string sup_name;
  supervisor_settings settings;
  /// Shared with the termination functor, which outlives this state.
  std::shared_ptr<child_slots> children;
  /// Times of the restarts within the window, oldest first.
  std::deque<caf::actor_clock::time_point> restarts;
  /// Identifies the armed restart round; stale timers carry older values.
  uint64_t generation = 0;
  /// The backoff of the armed round has elapsed.
  bool restart_due = false;
  bool shutting_down = false;
  caf::error shutdown_reason;
};

const char* supervisor_state::name = "supervisor";

using supervisor_actor = caf::stateful_actor<supervisor_state>;

const char* to_string(restart_policy p) {
  switch (p) {
  case restart_policy::permanent:
    return "permanent";
  case restart_policy::transient:
    return "transient";
  case restart_policy::temporary:
    return "temporary";
  }
  return "unknown";
}

bool is_normal_exit(const caf::error& reason) {
  return reason == caf::exit_reason::normal || reason == caf::exit_reason::user_shutdown;
}

bool wants_restart(restart_policy policy, const caf::error& reason) {
  switch (policy) {
  case restart_policy::permanent:
    return true;
  case restart_policy::transient:
    return !is_normal_exit(reason);
  case restart_policy::temporary:
    return false;
  }
  return false;
}

/// initial * 2^recent, capped at max.
std::chrono::milliseconds backoff_for(const supervisor_settings& s, size_t recent) {
  auto delay = s.initial_backoff;
  for (size_t i = 0; i < recent && delay < s.max_backoff; ++i)
    delay *= 2;
  return std::min(delay, s.max_backoff);
}

class supervisor_logic {
public:
  explicit supervisor_logic(supervisor_actor* self)
      : self_(self) {}

  supervisor_state& st() { return self_->state; }
  child_slots& slots() { return *st().children; }

  /// Starts every child in order (at spawn time).
  void start_all() {
    std::vector<std::pair<size_t, caf::error>> failed;
    for (size_t i = 0; i < slots().size(); ++i)
      if (auto err = start(i))
        failed.emplace_back(i, std::move(err));
    for (auto& [i, err] : failed)
      if (!st().shutting_down)
        on_failure(i, err);
  }

  void on_exit(caf::exit_msg& em) {
    auto& cs = slots();
    auto it = std::find_if(cs.begin(), cs.end(), [&](const child_slot& c) {
      return c.handle && c.handle.address() == em.source;
    });
    if (it == cs.end()) {
      on_foreign_exit(em);
      return;
    }
    auto i = static_cast<size_t>(it - cs.begin());
    auto& slot = *it;
    slot.handle = nullptr;
    auto expected = slot.stopping;
    slot.stopping = false;
    if (st().shutting_down) {
      stop_next();
      return;
    }
    if (expected) {
      try_restart();
      return;
    }
    if (!wants_restart(slot.spec.restart, em.reason)) {
      spdlog::info("supervisor '{}': {} child '{}' ended ({}), not restarted",
                   st().sup_name, to_string(slot.spec.restart), slot.spec.name,
                   describe(em.reason));
      return;
    }
    on_failure(i, em.reason);
  }

  void on_restart_timer(uint64_t generation) {
    if (generation != st().generation || st().shutting_down)
      return; // stale: a later failure re-armed the round, or we are stopping
    st().restart_due = true;
    try_restart();
  }

  void on_stop_timeout(uint64_t index, caf::actor_id id) {
    if (index >= slots().size())
      return;
    auto& slot = slots()[index];
    if (slot.handle && slot.handle.id() == id && slot.stopping) {
      spdlog::warn(
          "supervisor '{}': child '{}' ignored user_shutdown for {} ms, killing it",
          st().sup_name, slot.spec.name, shutdown_grace.count());
      caf::anon_send_exit(slot.handle, caf::exit_reason::kill);
    }
  }

  caf::result<caf::actor> which_child(const std::string& name) {
    for (auto& slot : slots())
      if (slot.spec.name == name) {
        if (slot.handle && !slot.stopping)
          return slot.handle;
        return make_error(errc::not_found,
                          st().sup_name + ": child '" + name + "' is down");
      }
    return make_error(errc::not_found, st().sup_name + ": no child named '" + name + "'");
  }

private:
  /// Starts child `i` and links to it; an error if the factory failed.
  caf::error start(size_t i) {
    auto& slot = slots()[i];
    caf::actor child;
    try {
      child = slot.spec.start(self_->system());
    } catch (const std::exception& e) {
      return make_error(errc::internal,
                        "start of child '" + slot.spec.name + "' threw: " + e.what());
    } catch (...) {
      return make_error(errc::internal, "start of child '" + slot.spec.name + "' threw");
    }
    if (!child)
      return make_error(errc::internal,
                        "start of child '" + slot.spec.name + "' returned no actor");
    slot.handle = child;
    // Linking to an actor that already died delivers its exit_msg at once.
    self_->link_to(child);
    return caf::none;
  }

  /// Asks a live child to stop; its exit is expected, not a failure.
  void stop(size_t i) {
    auto& slot = slots()[i];
    if (!slot.handle || slot.stopping)
      return;
    slot.stopping = true;
    // Not self_->send_exit: an exit_msg makes its receiver unlink from the
    // message's source before handling it, so the child would die without
    // telling us. anon_send_exit names the child itself as the source.
    caf::anon_send_exit(slot.handle, caf::exit_reason::user_shutdown);
    self_->delayed_send(self_, shutdown_grace, stop_timeout_atom::value,
                        static_cast<uint64_t>(i), slot.handle.id());
  }

  /// Child `i` failed (or could not start) and its policy wants it back.
  void on_failure(size_t i, const caf::error& reason) {
    auto& s = st();
    auto& failed = slots()[i];
    auto now = self_->clock().now();
    while (!s.restarts.empty() && now - s.restarts.front() > s.settings.window)
      s.restarts.pop_front();
    if (s.restarts.size() >= s.settings.max_restarts) {
      auto err =
          make_error(errc::restart_budget_exceeded,
                     s.sup_name + ": child '" + failed.spec.name + "' failed too often");
      spdlog::error("supervisor '{}': child '{}' failed ({}); more than {} restarts "
                    "within {} ms, giving up",
                    s.sup_name, failed.spec.name, describe(reason),
                    s.settings.max_restarts, s.settings.window.count());
      begin_shutdown(std::move(err));
      return;
    }
    auto delay = backoff_for(s.settings, s.restarts.size());
    s.restarts.push_back(now);
    spdlog::warn("supervisor '{}': child '{}' failed ({}), restarting in {} ms",
                 s.sup_name, failed.spec.name, describe(reason), delay.count());
    auto& cs = slots();
    size_t first = i;
    size_t last = i + 1;
    switch (s.settings.strategy) {
    case restart_strategy::one_for_one:
      break;
    case restart_strategy::all_for_one:
      first = 0;
      last = cs.size();
      break;
    case restart_strategy::rest_for_one:
      last = cs.size();
      break;
    }
    failed.pending = true;
    for (auto j = first; j < last; ++j) {
      if (j == i)
        continue;
      auto& sib = cs[j];
      if (!sib.handle)
        continue; // down already: pending from an earlier round, or finished
      // A temporary sibling is stopped with the set but never restarted.
      sib.pending = sib.spec.restart != restart_policy::temporary;
      stop(j);
    }
    ++s.generation;
    s.restart_due = false;
    self_->delayed_send(self_, delay, restart_child_atom::value, s.generation);
  }

  /// Restarts every pending child in start order once the backoff elapsed and
  /// every sibling asked to stop has stopped.
  void try_restart() {
    auto& s = st();
    if (!s.restart_due)
      return;
    auto& cs = slots();
    if (std::any_of(cs.begin(), cs.end(), [](const child_slot& c) { return c.stopping; }))
      return;
    s.restart_due = false;
    std::vector<std::pair<size_t, caf::error>> failed;
    for (size_t i = 0; i < cs.size(); ++i) {
      if (!cs[i].pending)
        continue;
      cs[i].pending = false;
      metrics::instance().supervisor_restarts(s.sup_name, cs[i].spec.name).Increment();
      if (auto err = start(i)) {
        failed.emplace_back(i, std::move(err));
        continue;
      }
      spdlog::info("supervisor '{}': restarted child '{}'", s.sup_name, cs[i].spec.name);
    }
    for (auto& [i, err] : failed)
      if (!s.shutting_down)
        on_failure(i, err);
  }

  /// An exit from an actor that is not a child: the parent (or another linked
  /// actor) stopped or failed, or someone sent us an exit. Stop top-down.
  void on_foreign_exit(caf::exit_msg& em) {
    // Like CAF's default exit handler: a linked actor that ended normally does
    // not take us down.
    if (em.reason == caf::exit_reason::normal)
      return;
    if (st().shutting_down)
      return;
    begin_shutdown(std::move(em.reason));
  }

  void begin_shutdown(caf::error reason) {
    auto& s = st();
    s.shutting_down = true;
    s.shutdown_reason = std::move(reason);
    ++s.generation; // disarms any pending restart round
    for (auto& c : slots())
      c.pending = false;
    stop_next();
  }

  /// Stops the last live child; quits when none is left.
  void stop_next() {
    auto& cs = slots();
    for (auto i = cs.size(); i-- > 0;) {
      if (cs[i].handle) {
        stop(i); // no-op if already stopping; its exit calls stop_next again
        return;
      }
    }
    self_->quit(st().shutdown_reason);
  }

  supervisor_actor* self_;
};

caf::behavior supervisor_impl(supervisor_actor* self, std::string name,
                              supervisor_settings settings,
                              std::vector<child_spec> children) {
  auto& s = self->state;
  s.sup_name = std::move(name);
  s.settings = settings;
  s.children = std::make_shared<child_slots>();
  s.children->reserve(children.size());
  for (auto& spec : children)
    s.children->push_back(child_slot{std::move(spec), {}, false, false});
  // If the supervisor ends without its orderly shutdown (killed, unreachable,
  // a throwing handler), still stop what is left, in reverse start order. The
  // state is gone by then, hence the shared slot list.
  self->attach_functor([slots = s.children](const caf::error&) {
    for (auto i = slots->rbegin(); i != slots->rend(); ++i)
      if (i->handle)
        caf::anon_send_exit(i->handle, caf::exit_reason::user_shutdown);
    slots->clear();
  });
  auto logic = std::make_shared<supervisor_logic>(self);
  self->set_exit_handler([logic](caf::exit_msg& em) { logic->on_exit(em); });
  logic->start_all();
  return {
      [logic](which_child_atom, const std::string& child) {
        return logic->which_child(child);
      },
      [logic](restart_child_atom, uint64_t generation) {
        logic->on_restart_timer(generation);
      },
      [logic](stop_timeout_atom, uint64_t index, caf::actor_id id) {
        logic->on_stop_timeout(index, id);
      },
  };
}

} // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, std::string name,
                            supervisor_settings settings,
                            std::vector<child_spec> children) {
  return sys.spawn(supervisor_impl, std::move(name), settings, std::move(children));
}

child_spec supervisor_child(std::string name, supervisor_settings settings,
                            std::vector<child_spec> children, restart_policy restart) {
  auto sup_name = name;
  return child_spec{
      std::move(name),
      [sup_name = std::move(sup_name), settings,
       children = std::move(children)](caf::actor_system& sys) {
        return spawn_supervisor(sys, sup_name, settings, children);
      },
      restart,
  };
}

} // namespace troupe
