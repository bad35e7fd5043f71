// cogrid/metrics.hpp — what a node measures about its calls: per-handler counters and latency
// histograms, a per-call trace hook, and the Prometheus text exposition of all of it.
#ifndef COGRID_METRICS_HPP
#define COGRID_METRICS_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/message.hpp>
#include <cogrid/stats.hpp>
#include <cogrid/subroute.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

namespace cogrid {

/// Unary call or stream.
enum class call_kind : std::uint8_t { unary, stream };
/// Whether this node served the call (its handler ran here) or made it.
enum class call_side : std::uint8_t { served, called };

inline const char* to_string(call_kind k) noexcept { return k == call_kind::unary ? "unary" : "stream"; }
inline const char* to_string(call_side s) noexcept { return s == call_side::served ? "served" : "called"; }

/// Call durations in fixed buckets (upper bounds in microseconds, the last one +Inf), as Prometheus
/// histograms are kept: cumulative counts are derived when rendering.
struct latency_histogram {
  /// The buckets' upper bounds in microseconds, ascending; a last, +Inf bucket follows them.
  static constexpr std::array<std::uint64_t, 18> bounds_us = {25,    50,     100,    250,    500,     1000,
                                                              2500,  5000,   10000,  25000,  50000,   100000,
                                                              250000, 500000, 1000000, 2500000, 5000000, 10000000};
  /// Calls per bucket: `counts[i]` took at most `bounds_us[i]` (and more than the bound before it);
  /// the last element counts the rest.
  std::array<std::uint64_t, bounds_us.size() + 1> counts{};
  std::uint64_t count = 0;          ///< calls recorded: the sum of `counts`
  std::chrono::microseconds sum{0}; ///< total duration of the calls recorded, each in whole microseconds

  /// The q-quantile (0..1) in microseconds, interpolated linearly within its bucket; 0 with no calls.
  /// Values in the +Inf bucket report the last bound.
  double quantile(double q) const noexcept {
    if (count == 0) return 0;
    const double rank = q * static_cast<double>(count);
    double seen = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      const double next = seen + static_cast<double>(counts[i]);
      if (next >= rank && counts[i] > 0) {
        if (i == bounds_us.size()) return static_cast<double>(bounds_us.back());
        const double lo = i == 0 ? 0.0 : static_cast<double>(bounds_us[i - 1]);
        const double hi = static_cast<double>(bounds_us[i]);
        return lo + (hi - lo) * (rank - seen) / static_cast<double>(counts[i]);
      }
      seen = next;
    }
    return static_cast<double>(bounds_us.back());
  }
};

/// A snapshot of one handler's counters on one side (served here, or called from here). Subroutes of a
/// handler are counted apart; calls this node made are counted per handler id and subroute.
struct handler_stats {
  handler_id handler{}; ///< the handler's id
  /// The subroute's name when this node registered it, else its id in hex; empty for none.
  std::string subroute;
  call_kind kind = call_kind::unary;  ///< unary calls or streams
  call_side side = call_side::served; ///< served here or called from here
  std::uint64_t calls = 0;     ///< started
  std::uint64_t errors = 0;    ///< ended with an error (remote error, timeout, cancelled, disconnected, ...)
  std::int64_t in_flight = 0;  ///< started and not ended
  std::uint64_t bytes_in = 0;  ///< payload bytes received (requests served, responses of calls made)
  std::uint64_t bytes_out = 0; ///< payload bytes sent
  latency_histogram latency;   ///< durations of the calls that ended
  /// The median duration in microseconds (`latency.quantile(0.50)`).
  double p50_us() const noexcept { return latency.quantile(0.50); }
  /// The 99th percentile duration in microseconds (`latency.quantile(0.99)`).
  double p99_us() const noexcept { return latency.quantile(0.99); }
};

/// One finished call or stream, as the trace hook sees it. The views are valid during the hook only.
struct call_trace {
  handler_id handler{};                 ///< the handler's id
  std::optional<subroute_id> subroute;  ///< the call's subroute; empty for none
  std::string_view peer;  ///< the remote node's host string
  call_kind kind = call_kind::unary;    ///< unary call or stream
  call_side side = call_side::served;   ///< served here or called from here
  std::chrono::nanoseconds duration{0}; ///< from the call's start to its end, on the steady clock
  std::error_code status; ///< empty on success; the call's error otherwise
  /// Payload bytes received (requests served, responses of calls made).
  std::size_t bytes_in = 0, bytes_out = 0; ///< payload bytes sent
};

/// Called once per finished call and stream, on both sides, on whatever thread finished it; must not
/// block (it may run inside a connection's reader, which waits for it). Unset (the default): no trace is built and nothing is timed for it.
using trace_hook = std::function<void(const call_trace&)>;

namespace detail {

/// Which of a counter's per-thread shards this thread updates (threads take turns at first use). Not
/// inlined: clang 16 may keep a thread_local's address across a co_await (see pool.hpp).
[[gnu::noinline]] inline unsigned metrics_shard_index() noexcept {
  static std::atomic<unsigned> next{0};
  thread_local const unsigned index = next.fetch_add(1, std::memory_order_relaxed);
  return index;
}

/// The live counters behind a `handler_stats`: relaxed atomics, in per-thread shards on cache lines of
/// their own, so that threads counting calls of the same handler do not trade cache lines; a snapshot
/// sums the shards.
struct handler_metrics {
  static constexpr std::size_t shards = 8;
  struct alignas(64) shard {
    std::atomic<std::uint64_t> calls{0}, errors{0}, bytes_in{0}, bytes_out{0}, sum_us{0};
    std::atomic<std::int64_t> in_flight{0};
    std::array<std::atomic<std::uint64_t>, latency_histogram::bounds_us.size() + 1> buckets{};
  };

  handler_id handler{};
  std::optional<subroute_id> sub;
  std::string route;
  call_kind kind = call_kind::unary;
  call_side side = call_side::served;
  handler_metrics* next_sub = nullptr; // the registry's lock-free chain of called subroutes of one handler id
  std::array<shard, shards> per_thread{};

  shard& local() noexcept { return per_thread[metrics_shard_index() % shards]; }

  void begin() noexcept {
    shard& s = local();
    s.calls.fetch_add(1, std::memory_order_relaxed);
    s.in_flight.fetch_add(1, std::memory_order_relaxed);
  }
  void end(std::chrono::nanoseconds d, bool failed, std::size_t in, std::size_t out) noexcept {
    const auto us = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
    std::size_t b = 0;
    while (b < latency_histogram::bounds_us.size() && us > latency_histogram::bounds_us[b]) ++b;
    shard& s = local();
    s.buckets[b].fetch_add(1, std::memory_order_relaxed);
    s.sum_us.fetch_add(us, std::memory_order_relaxed);
    if (failed) s.errors.fetch_add(1, std::memory_order_relaxed);
    if (in) s.bytes_in.fetch_add(in, std::memory_order_relaxed);
    if (out) s.bytes_out.fetch_add(out, std::memory_order_relaxed);
    s.in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  handler_stats snapshot() const {
    handler_stats st;
    st.handler = handler;
    st.subroute = route.empty() && sub ? sub->to_hex() : route;
    st.kind = kind;
    st.side = side;
    for (const shard& s : per_thread) {
      st.calls += s.calls.load(std::memory_order_relaxed);
      st.errors += s.errors.load(std::memory_order_relaxed);
      st.in_flight += s.in_flight.load(std::memory_order_relaxed);
      st.bytes_in += s.bytes_in.load(std::memory_order_relaxed);
      st.bytes_out += s.bytes_out.load(std::memory_order_relaxed);
      for (std::size_t i = 0; i < s.buckets.size(); ++i) st.latency.counts[i] += s.buckets[i].load(std::memory_order_relaxed);
      st.latency.sum += std::chrono::microseconds(s.sum_us.load(std::memory_order_relaxed));
    }
    for (auto c : st.latency.counts) st.latency.count += c;
    return st;
  }
};

/// Every handler_metrics of a manager. Entries live as long as the registry; those of calls made to
/// handlers without a subroute are found without a lock.
class metrics_registry {
public:
  /// The counters of a handler this node serves (made at registration).
  handler_metrics& served(call_kind k, handler_id h, const std::optional<subroute_id>& sub, std::string_view route) {
    std::lock_guard lk(mu_);
    handler_metrics& m = make(k, call_side::served, h, sub);
    m.route = std::string(route);
    return m;
  }

  /// The counters of calls this node makes to `h` (and `sub`), made on first use. Found without a lock
  /// once made (entries are never removed: a chain per handler id, published with release stores).
  handler_metrics& called(call_kind k, handler_id h, const std::optional<subroute_id>& sub) {
    const auto i = static_cast<std::uint8_t>(h);
    const int ki = k == call_kind::unary ? 0 : 1;
    auto& slot = sub ? subs_[ki][i] : plain_[ki][i];
    for (handler_metrics* m = slot.load(std::memory_order_acquire); m; m = sub ? m->next_sub : nullptr)
      if (!sub || m->sub->bytes == sub->bytes) return *m;
    std::lock_guard lk(mu_);
    bool fresh = false;
    handler_metrics& m = make(k, call_side::called, h, sub, &fresh);
    if (!fresh) return m; // another thread made it meanwhile
    if (sub) // name it after our own registration of the same route, if any
      if (auto it = all_.find(key{k, call_side::served, i, sub->bytes}); it != all_.end()) m.route = it->second->route;
    if (sub) m.next_sub = slot.load(std::memory_order_relaxed);
    slot.store(&m, std::memory_order_release);
    return m;
  }

  std::vector<handler_stats> snapshot() const {
    std::lock_guard lk(mu_);
    std::vector<handler_stats> out;
    out.reserve(all_.size());
    for (const auto& [k, m] : all_) out.push_back(m->snapshot());
    return out;
  }

private:
  using key = std::tuple<call_kind, call_side, std::uint8_t, std::array<std::byte, 32>>;
  handler_metrics& make(call_kind k, call_side s, handler_id h, const std::optional<subroute_id>& sub, bool* fresh = nullptr) {
    const key kk{k, s, static_cast<std::uint8_t>(h), sub ? sub->bytes : std::array<std::byte, 32>{}};
    auto& p = all_[kk];
    if (!p) {
      if (fresh) *fresh = true;
      p = std::make_unique<handler_metrics>();
      p->handler = h;
      p->sub = sub;
      p->kind = k;
      p->side = s;
    }
    return *p;
  }

  mutable std::mutex mu_;
  std::map<key, std::unique_ptr<handler_metrics>> all_;
  std::array<std::array<std::atomic<handler_metrics*>, 256>, 2> plain_{}; // called, no subroute: by kind, id
  std::array<std::array<std::atomic<handler_metrics*>, 256>, 2> subs_{};  // called subroutes: chain heads
};

/// A call in progress on one side: counts it at once, records its end once (duration, status, sizes)
/// in the counters and, when set, the trace hook.
struct call_meter {
  handler_metrics* m = nullptr;
  std::chrono::steady_clock::time_point started{};
  void begin(handler_metrics& hm) noexcept {
    m = &hm;
    started = std::chrono::steady_clock::now();
    hm.begin();
  }
  void end(const trace_hook& hook, std::string_view peer, std::error_code status, std::size_t in, std::size_t out) {
    if (!m) return;
    handler_metrics& hm = *std::exchange(m, nullptr);
    const auto d = std::chrono::steady_clock::now() - started;
    hm.end(d, static_cast<bool>(status), in, out);
    if (hook) {
      call_trace t;
      t.handler = hm.handler;
      t.subroute = hm.sub;
      t.peer = peer;
      t.kind = hm.kind;
      t.side = hm.side;
      t.duration = d;
      t.status = status;
      t.bytes_in = in;
      t.bytes_out = out;
      hook(t);
    }
  }
};

} // namespace detail

/// Renders connection and handler statistics in the Prometheus text exposition format (version 0.0.4),
/// every series labelled `node="<node>"`: `cogrid_connection_*` per remote (state, connects, reconnects,
/// messages, bytes, socket writes, queue, open calls and streams, RTT) and `cogrid_handler_*` per handler
/// and side (calls, errors, in flight, bytes, and a `_duration_seconds` histogram).
COGRID_DECL std::string render_prometheus(std::string_view node, const std::vector<connection_stats>& connections,
                                          const std::vector<handler_stats>& handlers);

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/metrics.ipp>
#endif

#endif // COGRID_METRICS_HPP
