// The cost of troupe's resilience chain: a no-op service called directly and
// through a guard with the full chain (breaker + bulkhead + timeout + retry,
// all passing), plus the guard's bare hop, and what a rejection costs while
// the breaker is open. Every figure is printed beside its baseline with the
// ratio, all measured in one run on one actor system.
//
//   resilience_bench            full run (~1 minute on 2 cores)
//   resilience_bench --quick    small sizes (< 15 s)
//   resilience_bench --reps 5   repetitions per measurement (default 3)
//   resilience_bench --threads 2  scheduler threads (default 2)
//
// Measurements (each: one warm-up at a quarter of the size, then `reps`
// repetitions with the variants interleaved; the table shows the best
// repetition, i.e. the highest rate, and that repetition's percentiles):
//   sequential  one call outstanding; every round trip timed with
//               steady_clock -> p50 / p99 latency, added latency in ns
//   pipelined   64 calls outstanding -> throughput (calls/s), with callers
//               that give every request a timeout (as troupe::call does) and
//               with callers that do not (the bare cost of the hop)
// Variants (the service is a no-op written with troupe::serve, as troupe
// services are; the "raw" rows repeat direct and full chain against a bare
// CAF handler, the cheapest possible target):
//   direct      caller -> service
//   hop only    caller -> guard with every policy off -> service
//   full chain  caller -> guard (breaker, bulkhead 64/1024, timeout 2s,
//               retry 3 attempts) -> service
//   rejected    caller -> guard whose breaker is open (answers circuit_open)

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include <troupe/actors/guard.hpp>
#include <troupe/runtime/call_context.hpp>
#include <troupe/runtime/errors.hpp>
#include <troupe/runtime/message_catalog.hpp>
#include <troupe/runtime/service.hpp>

namespace bench {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
namespace res = troupe::resilience;

struct noop_req {
  int64_t seq = 0;
};

struct noop_rep {
  int64_t seq = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, noop_req& x) {
  return f(caf::meta::type_name("noop_req"), x.seq);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, noop_rep& x) {
  return f(caf::meta::type_name("noop_rep"), x.seq);
}

using noop_actor = troupe::service<troupe::handles<noop_req, noop_rep>>;

/// The no-op service as troupe services are written (troupe::serve: the
/// call's context is made current and the message counted and timed).
noop_actor::behavior_type served_noop(noop_actor::pointer self, int64_t) {
  return troupe::serve(self, [](const noop_req& r) -> noop_rep { return {r.seq}; });
}

/// The no-op service as a bare CAF handler: the cheapest possible target.
noop_actor::behavior_type raw_noop(noop_actor::pointer, int64_t) {
  return {
      [](troupe::drain_atom) { return troupe::drained_atom::value; },
      [](const troupe::call_context&, const noop_req& r) { return noop_rep{r.seq}; },
  };
}

using run_atom = caf::atom_constant<caf::atom("run")>;

/// What one run of the driver produced.
struct run_result {
  double seconds = 0;
  int64_t calls = 0;
  int64_t errors = 0;
  std::vector<int64_t> latencies_ns; ///< sequential runs only
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_result& x) {
  return f(caf::meta::type_name("run_result"), x.seconds, x.calls, x.errors,
           x.latencies_ns);
}

struct driver_state {
  static inline const char* name = "bench_driver";
  noop_actor target;
  int64_t total = 0;
  int64_t sent = 0;
  int64_t done = 0;
  bool sample = false;
  bool timeout = true;
  run_result result;
  clock_type::time_point started;
  caf::response_promise rp;
  troupe::call_context ctx;
};

void issue(caf::stateful_actor<driver_state>* self);

void on_done(caf::stateful_actor<driver_state>* self, clock_type::time_point sent_at,
             bool ok) {
  auto& st = self->state;
  if (!ok)
    ++st.result.errors;
  if (st.sample)
    st.result.latencies_ns.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - sent_at)
            .count());
  if (++st.done == st.total) {
    st.result.seconds =
        std::chrono::duration<double>(clock_type::now() - st.started).count();
    st.result.calls = st.total;
    st.rp.deliver(std::move(st.result));
    return;
  }
  issue(self);
}

void issue(caf::stateful_actor<driver_state>* self) {
  auto& st = self->state;
  if (st.sent == st.total)
    return;
  auto seq = st.sent++;
  auto sent_at = clock_type::now();
  // With a timeout, as troupe::call sends every call: CAF then sets and
  // cancels a timer on its clock thread per call.
  self->request(st.target, st.timeout ? caf::duration{10s} : caf::infinite, st.ctx,
                noop_req{seq})
      .then([self, sent_at](const noop_rep&) { on_done(self, sent_at, true); },
            [self, sent_at](caf::error&) { on_done(self, sent_at, false); });
}

/// Runs `total` calls with `window` outstanding and answers with a run_result.
caf::behavior driver(caf::stateful_actor<driver_state>* self, noop_actor target) {
  self->state.target = target;
  self->state.ctx.correlation_id = "bench";
  return {
      [self](run_atom, int64_t total, int64_t window, bool sample, bool timeout) {
        auto& st = self->state;
        st.timeout = timeout;
        st.total = total;
        st.sent = 0;
        st.done = 0;
        st.sample = sample;
        st.result = run_result{};
        if (sample)
          st.result.latencies_ns.reserve(static_cast<size_t>(total));
        st.rp = self->make_response_promise();
        st.started = clock_type::now();
        for (int64_t i = 0; i < window && i < total; ++i)
          issue(self);
        return st.rp;
      },
  };
}

struct variant {
  const char* name;
  noop_actor handle;
  caf::actor driver;
};

run_result measure(caf::scoped_actor& self, const variant& v, int64_t calls,
                   int64_t window, bool sample, bool timeout = true) {
  run_result out;
  self->request(v.driver, caf::infinite, run_atom::value, calls, window, sample, timeout)
      .receive([&](run_result& r) { out = std::move(r); },
               [&](caf::error& err) {
                 std::fprintf(stderr, "%s: %s\n", v.name, troupe::describe(err).c_str());
                 std::exit(1);
               });
  return out;
}

int64_t percentile(std::vector<int64_t> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  return v[i];
}

struct best {
  double rate = 0;
  int64_t p50 = 0;
  int64_t p99 = 0;
  int64_t errors = 0;
};

void keep_best(best& b, const run_result& r) {
  auto rate = static_cast<double>(r.calls) / r.seconds;
  if (rate > b.rate) {
    b.rate = rate;
    b.p50 = percentile(r.latencies_ns, 0.50);
    b.p99 = percentile(r.latencies_ns, 0.99);
    b.errors = r.errors;
  }
}

res::resilience_policy full_chain() {
  res::resilience_policy p;
  p.dependency = "bench-full";
  p.timeout = 2s;
  p.bulkhead = {true, 64, 1024};
  p.breaker.enabled = true;
  p.breaker.window = res::window_kind::count;
  p.breaker.window_size = 100;
  p.breaker.minimum_calls = 20;
  p.retry.max_attempts = 3;
  p.retry.backoff = {res::backoff_strategy::exponential_full_jitter, 10ms, 1s, 2.0};
  p.fallback_on.clear();
  return p;
}

res::resilience_policy hop_only() {
  res::resilience_policy p;
  p.dependency = "bench-hop";
  p.timeout = 2s;
  p.bulkhead.enabled = false;
  p.breaker.enabled = false;
  p.retry.max_attempts = 1;
  p.fallback_on.clear();
  return p;
}

/// A guard whose breaker is open for an hour: tripped by one injected fault.
res::resilience_policy open_breaker() {
  auto p = full_chain();
  p.dependency = "bench-open";
  p.retry.max_attempts = 1;
  p.breaker.minimum_calls = 1;
  p.breaker.failure_rate_threshold = 0.0;
  p.breaker.wait_in_open = 1h;
  p.breaker.max_wait = 1h;
  p.faults.enabled = true;
  p.faults.error_probability = 1.0;
  p.faults.error = troupe::errc::internal;
  return p;
}

} // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  bool quick = false;
  int reps = 3;
  size_t threads = 2;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      quick = true;
    else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = static_cast<size_t>(std::max(1, std::atoi(argv[++i])));
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--reps N] [--threads N]\n", argv[0]);
      return 2;
    }
  }
  if (quick)
    reps = std::min(reps, 2);
  const int64_t seq_calls = quick ? 20'000 : 200'000;
  const int64_t pipe_calls = quick ? 100'000 : 1'000'000;
  const int64_t window = 64;

  caf::actor_system_config cfg;
  troupe::message_catalog catalog;
  catalog.add<noop_req>("bench.noop_req").add<noop_rep>("bench.noop_rep");
  troupe::resilience::add_messages(catalog);
  catalog.apply_to(cfg);
  cfg.add_message_type<run_result>("bench.run_result");
  cfg.set("scheduler.max-threads", threads);
  cfg.set("logger.console", caf::atom("none"));
  caf::actor_system sys{cfg};
  spdlog::set_level(spdlog::level::warn);

  auto service = sys.spawn(served_noop, int64_t{0});
  auto raw = sys.spawn(raw_noop, int64_t{0});
  auto chain = res::guard(sys, service, full_chain());
  auto hop = res::guard(sys, service, hop_only());
  auto open = res::guard(sys, service, open_breaker());
  auto raw_policy = full_chain();
  raw_policy.dependency = "bench-raw";
  auto raw_chain = res::guard(sys, raw, raw_policy);
  caf::scoped_actor self{sys};
  {
    // Trip `open`: one call fails by injection, the breaker opens for an hour.
    self->request(open, caf::duration{5s}, troupe::call_context{}, noop_req{})
        .receive([](noop_rep&) {}, [](caf::error&) {});
    self->request(res::admin_of(open), caf::duration{5s}, res::inject_faults_atom::value,
                  res::fault_settings{})
        .receive([](caf::ok_atom) {}, [](caf::error&) {});
  }
  // Rows 1-3 compare with row 0, row 5 with row 4.
  std::vector<variant> variants{
      {"direct", service, sys.spawn(driver, service)},
      {"hop only", hop, sys.spawn(driver, hop)},
      {"full chain", chain, sys.spawn(driver, chain)},
      {"rejected (open)", open, sys.spawn(driver, open)},
      {"raw: direct", raw, sys.spawn(driver, raw)},
      {"raw: full chain", raw_chain, sys.spawn(driver, raw_chain)},
  };
  auto base = [](size_t i) { return i < 4 ? size_t{0} : size_t{4}; };

  std::printf("resilience_bench: %s, %zu scheduler threads, %d repetitions, best shown\n",
              quick ? "quick" : "full", threads, reps);
  std::printf("service: a no-op built with troupe::serve; \"raw\": a bare CAF handler\n");
  std::vector<best> seq(variants.size()), pipe(variants.size()), bare(variants.size());
  for (auto& v : variants) { // warm-up
    measure(self, v, seq_calls / 4, 1, false);
    measure(self, v, pipe_calls / 4, window, false);
  }
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < variants.size(); ++i)
      keep_best(seq[i], measure(self, variants[i], seq_calls, 1, true));
    for (size_t i = 0; i < variants.size(); ++i)
      keep_best(pipe[i], measure(self, variants[i], pipe_calls, window, false));
    for (size_t i = 0; i < variants.size(); ++i)
      keep_best(bare[i], measure(self, variants[i], pipe_calls, window, false, false));
  }
  for (auto& v : variants) {
    // Guards end when unreferenced, but stop everything explicitly anyway.
    caf::anon_send_exit(v.driver, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(v.handle, caf::exit_reason::user_shutdown);
  }

  std::printf("\nsequential round trips (%" PRId64
              " calls, 1 outstanding, callers with timeout)\n",
              seq_calls);
  std::printf("  %-16s %10s %9s %9s %10s %10s %9s\n", "variant", "calls/s", "p50 ns",
              "p99 ns", "p50 added", "p99 added", "x direct");
  for (size_t i = 0; i < variants.size(); ++i) {
    auto& s = seq[i];
    auto& d = seq[base(i)];
    std::printf("  %-16s %10.0f %9" PRId64 " %9" PRId64 " %+10" PRId64 " %+10" PRId64
                " %9.2f\n",
                variants[i].name, s.rate, s.p50, s.p99, s.p50 - d.p50, s.p99 - d.p99,
                s.rate / d.rate);
  }
  std::printf("\npipelined throughput (%" PRId64 " calls, %" PRId64 " outstanding)\n",
              pipe_calls, window);
  std::printf("  %-16s %29s   %29s\n", "", "callers with timeout",
              "callers without timeout");
  std::printf("  %-16s %10s %10s %7s   %10s %10s %7s\n", "variant", "calls/s", "direct",
              "ratio", "calls/s", "direct", "ratio");
  for (size_t i = 0; i < variants.size(); ++i) {
    auto b = base(i);
    std::printf("  %-16s %10.0f %10.0f %7.2f   %10.0f %10.0f %7.2f\n", variants[i].name,
                pipe[i].rate, pipe[b].rate, pipe[i].rate / pipe[b].rate, bare[i].rate,
                bare[b].rate, bare[i].rate / bare[b].rate);
  }

  auto ratio = pipe[2].rate / pipe[0].rate;
  std::printf("\nsummary\n");
  std::printf("  full chain throughput: %.0f vs direct %.0f calls/s = %.2f x (goal >= "
              "0.60): %s\n",
              pipe[2].rate, pipe[0].rate, ratio, ratio >= 0.6 ? "met" : "NOT met");
  std::printf("  same, callers without timeouts: %.2f x; raw CAF target: %.2f x / %.2f x;"
              " the hop alone: %.2f x\n",
              bare[2].rate / bare[0].rate, pipe[5].rate / pipe[4].rate,
              bare[5].rate / bare[4].rate, pipe[1].rate / pipe[0].rate);
  std::printf("  full chain added latency: p50 %+" PRId64 " ns, p99 %+" PRId64
              " ns per call (direct p50 %" PRId64 " ns)\n",
              seq[2].p50 - seq[0].p50, seq[2].p99 - seq[0].p99, seq[0].p50);
  std::printf("  rejection while open: p50 %" PRId64
              " ns vs a call through the chain %" PRId64
              " ns = %.2f x; %.0f rejections/s vs %.0f calls/s = %.2f x\n",
              seq[3].p50, seq[2].p50,
              static_cast<double>(seq[3].p50) / static_cast<double>(seq[2].p50),
              pipe[3].rate, pipe[2].rate, pipe[3].rate / pipe[2].rate);
  int64_t errors = 0;
  for (size_t i = 0; i < variants.size(); ++i)
    if (i != 3)
      errors += seq[i].errors + pipe[i].errors + bare[i].errors;
  if (errors > 0 || seq[3].errors != seq_calls) {
    std::printf("  unexpected: %" PRId64 " errors from passing variants, %" PRId64
                " of %" PRId64 " calls rejected while open\n",
                errors, seq[3].errors, seq_calls);
    return 1;
  }
  return 0;
}
