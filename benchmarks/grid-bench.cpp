// grid-bench: calls and streams between N grid nodes in one process on loopback, after MinIO's
// BenchmarkRequests / BenchmarkStream (grid-protocol.md §5).
//
//   grid-bench --mode MODE --servers N --callers C --payload BYTES --seconds S [--threads T] [--shared-context]
//              [--tls] [--json] [--prometheus FILE]
//
// Modes: unary (echo of a random payload), unary-rpc (typed {Num, String} -> typed response),
// stream-responses (a fresh stream per op, 10 responses of the payload size, out capacity 1),
// stream-request (10 requests then EOF), stream-twoway (10 echoes, each message counted), mesh (the N
// nodes connect and stay idle: connect time and memory per connection only), soak (memory: --calls unary
// calls, then --streams streams of 10 responses, then 100 echoes of 1 MiB; RSS after each phase, with
// freed heap returned first (malloc_trim); exits 1 when RSS grew by more than --max-growth-mb).
//
// T threads run T io_contexts (cogrid::io_pool), every node's connections spread over them
// (manager(executors, ...)); each of the C callers is a coroutine on one of them that picks, per op, a
// random link (source node, destination node) whose connection runs on its own thread, as application
// code on a thread-per-core node does. With --shared-context the T threads run one io_context instead and
// callers pick any link. ops/s are real operations per second (MinIO's vops/s multiplies by the number of
// servers; this does not).
// Allocations are counted in replaced malloc, calloc, realloc and the aligned allocators; socket writes and messages come from the
// connections' statistics; latencies go into a log-linear histogram (no allocation per op).
#include <cogrid/cogrid.hpp>

#include "../tests/net/test_types.hpp"
#include "../tests/net/tls_util.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/thread_pool.hpp>

#include <optional>

#include <algorithm>
#include <numeric>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <malloc.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {
// One counter per thread (on its own cache line), so that counting does not make the threads contend.
struct alignas(64) alloc_counter {
  std::atomic<long> n{0};
};
alloc_counter g_alloc_counters[64];
std::atomic<unsigned> g_alloc_next{0};
thread_local alloc_counter* t_alloc_counter = nullptr;

inline void count_alloc() noexcept {
  alloc_counter* c = t_alloc_counter;
  if (!c) c = t_alloc_counter = &g_alloc_counters[g_alloc_next.fetch_add(1, std::memory_order_relaxed) % 64];
  c->n.fetch_add(1, std::memory_order_relaxed);
}

long allocs_so_far() noexcept {
  long sum = 0;
  for (const auto& c : g_alloc_counters) sum += c.n.load(std::memory_order_relaxed);
  return sum;
}
} // namespace

// Every heap allocation is counted where it happens, in malloc and its siblings (glibc's own entry points
// do the work): operator new, and Asio's recycled blocks and coroutine frames, which it takes with
// std::aligned_alloc when its per-thread cache of two blocks is empty, are all counted.
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) {
  count_alloc();
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  count_alloc();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  count_alloc();
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t align, std::size_t n) {
  count_alloc();
  return __libc_memalign(align, n);
}
void* memalign(std::size_t align, std::size_t n) {
  count_alloc();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  count_alloc();
  void* p = __libc_memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
} // extern "C"

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct config {
  std::string mode = "unary";
  std::size_t servers = 2, callers = 32, payload = 512;
  double seconds = 5;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  bool shared_context = false; // one io_context run by all threads, instead of one per thread
  bool tls = false, json = false;
  std::uint64_t calls = 1'000'000, streams = 100'000; // soak
  double max_growth_mb = 10;
  bool payload_set = false; // bulk: 32 MiB unless --payload says otherwise
  std::size_t piece_bytes = cogrid::connection_options{}.piece_bytes;               // bulk
  std::size_t piece_window_bytes = cogrid::connection_options{}.piece_window_bytes; // bulk
  std::uint64_t file_bytes = std::uint64_t{1} << 30;                                 // bulk-file
  std::string prometheus_file; // the call and stream modes: node 0's Prometheus exposition, taken as the run ends
};

// Log-linear latency histogram: 16 sub-buckets per power of two of nanoseconds (about 6 % resolution).
struct histogram {
  std::array<std::uint64_t, 64 * 16> counts{};
  void add(std::chrono::nanoseconds d) {
    const std::uint64_t ns = static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 1));
    const int e = 63 - __builtin_clzll(ns);
    const int sub = e >= 4 ? static_cast<int>((ns >> (e - 4)) & 15) : static_cast<int>(ns & 15);
    ++counts[static_cast<std::size_t>(e * 16 + sub)];
  }
  void merge(const histogram& o) {
    for (std::size_t i = 0; i < counts.size(); ++i) counts[i] += o.counts[i];
  }
  double percentile_us(double q) const {
    std::uint64_t total = 0;
    for (auto c : counts) total += c;
    if (total == 0) return 0;
    const auto want = std::min(total - 1, static_cast<std::uint64_t>(q * static_cast<double>(total)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      seen += counts[i];
      if (seen > want) {
        const int e = static_cast<int>(i / 16), sub = static_cast<int>(i % 16);
        const double lo = e >= 4 ? std::ldexp(16.0 + sub, e - 4) : sub;
        const double width = e >= 4 ? std::ldexp(1.0, e - 4) : 1;
        return (lo + width / 2) / 1000.0;
      }
    }
    return 0;
  }
};

double rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  return 0;
}

// MinIO's typed benchmark messages (maps keyed by field name).
using bench_request = cogrid_test::test_request;
using bench_response = cogrid_test::test_response;

const cogrid::unary_raw echo{cogrid::handler_id{78}};
const cogrid::unary<bench_request, bench_response> rpc{cogrid::handler_id{79}};
const cogrid::server_stream_raw responses_stream{cogrid::handler_id{78}, "some-subroute", 1};
const cogrid::bidi_stream<cogrid::payload, cogrid::payload> request_stream{cogrid::handler_id{79}, "some-subroute", {1, 1}};
const cogrid::bidi_stream<cogrid::payload, cogrid::payload> twoway_stream{cogrid::handler_id{77}, "some-subroute", {1, 1}};

struct echo_fn {
  cogrid::payload operator()(cogrid::payload p) const { return p; }
};
struct rpc_fn {
  bench_response operator()(bench_request r) const { return {r.Num, r.String, "embedded"}; }
};

// 10 responses of the initial payload's size, each starting with its index.
cogrid::stream_generator<cogrid::payload> ten_responses(cogrid::payload p) {
  cogrid::payload out = std::move(p);
  for (int i = 0; i < 10; ++i) {
    if (out && !out->empty()) (*out)[0] = static_cast<std::byte>(i);
    co_yield out;
  }
}

cogrid::stream_generator<cogrid::payload> count_requests(cogrid::stream_input<cogrid::payload> in) {
  // Named, not `while (co_await in.next())`: GCC 12 miscompiles a co_await whose result is a
  // non-trivial temporary used directly as a loop condition (it executes ud2).
  for (auto r = co_await in.next(); r; r = co_await in.next()) {
  }
}

cogrid::stream_generator<cogrid::payload> echo_each(cogrid::stream_input<cogrid::payload> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

struct link_ref {
  std::size_t src, dst;
};

struct shared_state {
  config cfg;
  std::vector<std::unique_ptr<cogrid::manager>> nodes;
  std::vector<std::string> hosts;
  asio::any_io_executor disk;                         // bulk-file: the pool for blocking file calls
  std::vector<asio::any_io_executor> execs;           // where callers run: one per pool thread (or the shared context)
  std::vector<std::vector<link_ref>> links_by_thread; // the links whose connection runs on each pool thread
  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<std::uint64_t> ops{0}, errors{0};
  std::atomic<int> callers_done{0};
  std::mutex hist_mu;
  histogram hist;
  std::string first_error;
};

// Counts a stream's responses until its end: true while it goes on; at the end `got` is how many came,
// or -1 (with `err`) when the stream did not end cleanly. Called in the loop of the caller's own
// coroutine (a coroutine of the benchmark's own would add a frame per stream that is not cogrid's).
template <class R>
bool count_response(const R& r, int& got, std::string& err) {
  if (r) {
    ++got;
    return true;
  }
  if (r.error() != cogrid::errc::end_of_stream) {
    err = r.error().message();
    got = -1;
  }
  return false;
}

// One operation of a stream mode from `c`; returns how many ops it counts for (0 on failure). The unary
// modes are called inline by `caller`: a coroutine of the benchmark's own per call would add a frame
// (an allocation) per operation that is not cogrid's.
asio::awaitable<int> one_op(shared_state& st, cogrid::connection& c, const cogrid::payload& body, std::string& err) {
  const std::string& mode = st.cfg.mode;
  if (mode == "stream-responses") {
    auto s = co_await responses_stream.open(c, body);
    if (!s) {
      err = s.error().message();
      co_return 0;
    }
    int got = 0;
    for (auto r = co_await s->next(); count_response(r, got, err); r = co_await s->next()) {
    }
    co_return got == 10 ? 10 : 0;
  }
  if (mode == "stream-request") {
    auto s = co_await request_stream.open(c);
    if (!s) {
      err = s.error().message();
      co_return 0;
    }
    for (int i = 0; i < 10; ++i)
      if (auto sent = co_await s->send(body); !sent) {
        err = sent.error().message();
        co_return 0;
      }
    (void)s->close_send();
    int got = 0;
    for (auto r = co_await s->next(); count_response(r, got, err); r = co_await s->next()) {
    }
    co_return got == 0 ? 10 : 0;
  }
  // stream-twoway
  auto s = co_await twoway_stream.open(c);
  if (!s) {
    err = s.error().message();
    co_return 0;
  }
  for (int i = 0; i < 10; ++i) {
    if (auto sent = co_await s->send(body); !sent) {
      err = sent.error().message();
      co_return 0;
    }
    auto r = co_await s->next();
    if (!r) {
      err = r.error().message();
      co_return 0;
    }
  }
  (void)s->close_send();
  int got = 0;
  for (auto r = co_await s->next(); count_response(r, got, err); r = co_await s->next()) {
  }
  co_return got == 0 ? 20 : 0;
}

asio::awaitable<void> caller(shared_state& st, std::size_t index, std::size_t thread) {
  std::minstd_rand rng(static_cast<unsigned>(index * 7919 + 17));
  cogrid::payload body(std::vector<std::byte>(st.cfg.payload));
  for (auto& b : *body) b = static_cast<std::byte>(rng());
  histogram h;
  std::uint64_t local_ops = 0;
  std::string err;
  const std::vector<link_ref>& mine = st.links_by_thread[thread];
  const bool unary_mode = st.cfg.mode == "unary", rpc_mode = st.cfg.mode == "unary-rpc";
  while (!st.stop.load(std::memory_order_relaxed)) {
    const link_ref l = mine[rng() % mine.size()];
    auto c = st.nodes[l.src]->connection(st.hosts[l.dst]);
    const auto t0 = clock_type::now();
    const auto n_arg = static_cast<std::int64_t>(rng());
    int k = 0;
    if (unary_mode) {
      auto r = co_await echo.call(*c, body);
      if (!r) err = r.error().message();
      k = r && r->has_value() && (*r)->size() == body->size() ? 1 : 0;
    } else if (rpc_mode) {
      const bench_request req{n_arg, "hello"};
      auto r = co_await rpc.call(*c, req);
      if (!r) err = r.error().message();
      k = r && r->OrgNum == n_arg ? 1 : 0;
    } else {
      k = co_await one_op(st, *c, body, err);
    }
    const auto t1 = clock_type::now();
    if (!st.measuring.load(std::memory_order_relaxed)) continue;
    if (k == 0) {
      if (st.errors.fetch_add(1) == 0) {
        std::lock_guard lk(st.hist_mu);
        st.first_error = err;
      }
      continue;
    }
    h.add(t1 - t0);
    st.ops.fetch_add(static_cast<std::uint64_t>(k), std::memory_order_relaxed);
    local_ops += static_cast<std::uint64_t>(k);
  }
  {
    std::lock_guard lk(st.hist_mu);
    st.hist.merge(h);
  }
  st.callers_done.fetch_add(1);
}

struct totals {
  std::uint64_t writes = 0, messages = 0, reconnects = 0, dial_failures = 0;
  std::string last_error;
};
totals connection_totals(shared_state& st) {
  totals t;
  for (auto& m : st.nodes)
    for (auto& c : m->connections()) {
      const auto s = c->stats();
      t.writes += s.socket_writes;
      t.messages += s.messages_out;
      t.reconnects += s.reconnects;
      t.dial_failures += s.dial_failures;
      if (!s.last_error.empty()) t.last_error = s.last_error;
    }
  return t;
}

asio::awaitable<void> sleep_for(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// Soak: `st.cfg.callers` callers share one budget of operations (`left`); each takes one at a time.
asio::awaitable<void> soak_caller(shared_state& st, std::shared_ptr<std::atomic<std::int64_t>> left, std::size_t index,
                                  std::size_t payload, bool streams) {
  std::minstd_rand rng(static_cast<unsigned>(index * 31 + 7));
  cogrid::payload body(std::vector<std::byte>(payload, std::byte{0x5a}));
  const std::size_t n = st.nodes.size();
  while (left->fetch_sub(1) > 0) {
    const std::size_t src = rng() % n;
    std::size_t dst = rng() % (n - 1);
    if (dst >= src) ++dst;
    auto c = st.nodes[src]->connection(st.hosts[dst]);
    bool ok = false;
    if (streams) {
      auto s = co_await responses_stream.open(*c, body);
      std::string err;
      int got = 0;
      if (s)
        for (auto r = co_await s->next(); count_response(r, got, err); r = co_await s->next()) {
        }
      ok = s && got == 10;
    } else {
      auto r = co_await echo.call(*c, body);
      ok = r && r->has_value() && (*r)->size() == payload;
    }
    (ok ? st.ops : st.errors).fetch_add(1);
  }
  st.callers_done.fetch_add(1);
}

// RSS with the heap's free memory handed back to the system first (what is still held, not what glibc kept).
double live_rss_mb() {
  malloc_trim(0);
  return rss_mb();
}

struct soak_phase {
  const char* name;
  const char* key;
  std::uint64_t count;
  std::size_t payload, callers;
  bool streams;
};

asio::awaitable<int> soak(shared_state& st) {
  const config& cfg = st.cfg;
  // glibc raises its mmap threshold each time it frees a large mmapped block, so after the first 1 MiB
  // buffers later ones come from the thread arenas, where they fragment and RSS after the 1 MiB phase
  // varied from +1 to +13 MB between identical runs. A fixed threshold keeps large buffers mmapped (given
  // back when freed), so the figure is what cogrid holds rather than where glibc put its arenas.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  for (auto& m : st.nodes) m->start();
  for (auto& m : st.nodes)
    for (auto& c : m->connections())
      if (auto r = co_await c->wait_for_connect(); !r) co_return 2;
  const soak_phase phases[] = {{"warm-up", "warmup", 20'000, cfg.payload, cfg.callers, false},
                          {"unary calls", "calls", cfg.calls, cfg.payload, cfg.callers, false},
                          {"streams", "streams", cfg.streams, cfg.payload, cfg.callers, true},
                          {"1 MiB echoes", "large", 100, 1u << 20, 4, false},
                          // Buffers grown for the large messages are released at the next small ones.
                          {"small again", "after_large", 10'000, cfg.payload, cfg.callers, false}};
  double rss_base = 0, worst = 0;
  std::string report;
  for (const auto& p : phases) {
    const bool first = &p == &phases[0];
    auto left = std::make_shared<std::atomic<std::int64_t>>(static_cast<std::int64_t>(p.count));
    st.callers_done = 0;
    const auto ops0 = st.ops.load();
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < p.callers; ++i)
      asio::co_spawn(st.execs[i % st.execs.size()], soak_caller(st, left, i, p.payload, p.streams), asio::detached);
    while (st.callers_done.load() != static_cast<int>(p.callers)) co_await sleep_for(5ms);
    co_await sleep_for(100ms); // buffers of the last messages released
    const double rss = live_rss_mb();
    const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (first) rss_base = rss;
    worst = std::max(worst, rss - rss_base);
    std::fprintf(stderr, "  %-13s %9llu ok in %6.2f s, RSS %.1f MB (%+.1f MB since warm-up)\n", p.name,
                 static_cast<unsigned long long>(st.ops.load() - ops0), secs, rss, rss - rss_base);
    char buf[160];
    std::snprintf(buf, sizeof buf, "\"rss_after_%s_mb\": %.1f, ", p.key, rss);
    report += buf;
  }
  for (auto& m : st.nodes) co_await m->shutdown();
  const bool ok = st.errors.load() == 0 && worst <= cfg.max_growth_mb;
  std::printf("soak: %llu unary calls, %llu streams, 100 x 1 MiB: RSS growth at most %.1f MB (bound %.1f MB), %llu errors: %s\n",
              static_cast<unsigned long long>(cfg.calls), static_cast<unsigned long long>(cfg.streams), worst,
              cfg.max_growth_mb, static_cast<unsigned long long>(st.errors.load()), ok ? "PASS" : "FAIL");
  if (cfg.json)
    std::printf("{\"mode\": \"soak\", \"servers\": %zu, \"callers\": %zu, \"payload\": %zu, \"calls\": %llu, \"streams\": %llu, "
                "%s\"rss_growth_mb\": %.1f, \"errors\": %llu}\n",
                cfg.servers, cfg.callers, cfg.payload, static_cast<unsigned long long>(cfg.calls),
                static_cast<unsigned long long>(cfg.streams), report.c_str(), worst, static_cast<unsigned long long>(st.errors.load()));
  co_return ok ? 0 : 1;
}

// ---- bulk: large echoes on one link, beside a plain-TCP echo of the same size, with small calls probing
// the link meanwhile.

// A plain TCP echo on 127.0.0.1, one connection, one payload outstanding: the client writes `size` bytes,
// the server reads them all and writes them back, the client reads them all; repeated for `seconds`.
// What the kernel costs for the bulk mode's traffic with no framing, CRC or copies of ours. The client and
// the server each have a thread of their own (blocking calls), or with `one_thread` they take turns on one
// thread (non-blocking calls: the writing end fills the socket as far as it takes, the reading end drains
// it), the CPU that cogrid has with one io thread for both nodes. Returns bytes moved per second (both
// directions), or a negative value when a socket call failed.
double tcp_echo_floor(std::size_t size, double seconds, bool one_thread) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 1) != 0 ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
    if (lfd >= 0) ::close(lfd);
    return -1;
  }
  auto read_all = [](int fd, std::byte* p, std::size_t n) {
    while (n) {
      const ssize_t k = ::read(fd, p, n);
      if (k <= 0) return false;
      p += k;
      n -= static_cast<std::size_t>(k);
    }
    return true;
  };
  auto write_all = [](int fd, const std::byte* p, std::size_t n) {
    while (n) {
      const ssize_t k = ::write(fd, p, n);
      if (k <= 0) return false;
      p += k;
      n -= static_cast<std::size_t>(k);
    }
    return true;
  };
  // One end writes `n` bytes to the other, both non-blocking, on this thread: what the socket takes, then
  // what the other end can read, until all arrived (on loopback a write's bytes can be read at once).
  auto pass = [](int from, const std::byte* out, int to, std::byte* in, std::size_t n) {
    std::size_t sent = 0, got = 0;
    while (got < n) {
      if (sent < n) {
        const ssize_t k = ::write(from, out + sent, n - sent);
        if (k > 0) sent += static_cast<std::size_t>(k);
        else if (k < 0 && errno != EAGAIN) return false;
      }
      const ssize_t k = ::read(to, in + got, n - got);
      if (k > 0) got += static_cast<std::size_t>(k);
      else if (k == 0 || errno != EAGAIN) return false;
    }
    return true;
  };
  std::thread server;
  int sfd = -1;
  if (!one_thread) {
    server = std::thread([&] {
      const int fd = ::accept(lfd, nullptr, nullptr);
      if (fd < 0) return;
      std::vector<std::byte> buf(size);
      while (read_all(fd, buf.data(), size) && write_all(fd, buf.data(), size)) {
      }
      ::close(fd);
    });
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  double rate = -1;
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::vector<std::byte> out(size, std::byte{0x5a}), in(size), buf(one_thread ? size : 0);
    if (one_thread) { // connected already (the listen backlog): the server's end is accepted here
      sfd = ::accept(lfd, nullptr, nullptr);
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      if (sfd >= 0) ::fcntl(sfd, F_SETFL, ::fcntl(sfd, F_GETFL) | O_NONBLOCK);
    }
    auto echo = [&] {
      if (!one_thread) return write_all(fd, out.data(), size) && read_all(fd, in.data(), size);
      return sfd >= 0 && pass(fd, out.data(), sfd, buf.data(), size) && pass(sfd, buf.data(), fd, in.data(), size);
    };
    std::uint64_t moved = 0;
    bool ok = echo(); // warm-up
    const auto t0 = clock_type::now();
    const auto end = t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
    while (ok && clock_type::now() < end) {
      ok = echo();
      if (ok) moved += 2 * size;
    }
    if (ok) rate = static_cast<double>(moved) / std::chrono::duration<double>(clock_type::now() - t0).count();
  }
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR), ::close(fd);
  if (sfd >= 0) ::close(sfd);
  if (server.joinable()) server.join();
  ::close(lfd);
  return rate;
}

struct bulk_state {
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bytes{0}, echoes{0}, errors{0}, small_errors{0};
  std::atomic<int> running{0};
  histogram small; // latencies of the small calls made during the bulk echoes
  std::string first_error;
};

// Echoes of cfg.payload bytes back to back on `c`, one outstanding. Each request is moved into its call
// (no copy) and the echo becomes the next request, as a program that forwards data does.
asio::awaitable<void> bulk_echoes(shared_state& st, bulk_state& b, cogrid::connection& c) {
  const std::size_t size = st.cfg.payload;
  auto fresh = [size] {
    std::vector<std::byte> v(size);
    for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<std::byte>(i * 131 + (i >> 12));
    return cogrid::payload(std::move(v));
  };
  cogrid::payload body = fresh();
  const std::byte first = size ? (*body)[0] : std::byte{}, last = size ? (*body)[size - 1] : std::byte{};
  const cogrid::call_options opt{std::chrono::seconds(60)};
  while (!b.stop.load()) {
    auto r = co_await echo.call(c, std::move(body), opt);
    const bool ok = r && r->has_value() && (*r)->size() == size && (size == 0 || ((**r)[0] == first && (**r)[size - 1] == last));
    if (!ok) {
      if (b.errors.fetch_add(1) == 0) b.first_error = r ? std::string("wrong echo") : r.error().message();
      body = fresh();
      co_await sleep_for(10ms);
      continue;
    }
    body = std::move(*r);
    b.echoes.fetch_add(1);
    b.bytes.fetch_add(2 * size);
  }
  b.running.fetch_sub(1);
}

// A 64-byte call every 5 ms on the same link, its latency recorded.
asio::awaitable<void> small_probe(bulk_state& b, cogrid::connection& c) {
  cogrid::payload body(std::vector<std::byte>(64, std::byte{7}));
  asio::steady_timer t(co_await asio::this_coro::executor);
  auto next = clock_type::now();
  while (!b.stop.load()) {
    const auto t0 = clock_type::now();
    auto r = co_await echo.call(c, body);
    if (r && r->has_value() && (*r)->size() == 64) b.small.add(clock_type::now() - t0);
    else b.small_errors.fetch_add(1);
    next += 5ms;
    if (next < clock_type::now()) next = clock_type::now();
    t.expires_at(next);
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  b.running.fetch_sub(1);
}

asio::awaitable<int> bulk(shared_state& st) {
  const config& cfg = st.cfg;
  // The floor first, with the nodes not started yet (nothing else runs), on a thread of its own; with one
  // io thread, also the floor on one thread.
  std::atomic<bool> floor_done{false};
  double floor_rate = -1, floor1_rate = -1;
  const bool floor1 = cfg.threads == 1 && !cfg.shared_context;
  std::thread floor_thread([&] {
    floor_rate = tcp_echo_floor(cfg.payload, cfg.seconds, false);
    if (floor1) floor1_rate = tcp_echo_floor(cfg.payload, cfg.seconds, true);
    floor_done = true;
  });
  while (!floor_done.load()) co_await sleep_for(10ms);
  floor_thread.join();

  for (auto& m : st.nodes) m->start();
  auto c = st.nodes[0]->connection(st.hosts[1]);
  if (auto r = co_await c->wait_for_connect(); !r) {
    std::fprintf(stderr, "error: not connected: %s\n", r.error().message().c_str());
    co_return 2;
  }
  const double rss0 = live_rss_mb();
  // One echo first, not counted, as the floor has one: the first payload at each end is put together in
  // fresh memory, faulted in piece by piece (some milliseconds of page zeroing on the reader's thread), a
  // cost a link pays once. Its time is reported on its own.
  const auto w0 = clock_type::now();
  cogrid::payload warm(std::vector<std::byte>(cfg.payload, std::byte{1}));
  const cogrid::call_options warm_opt{std::chrono::seconds(60)};
  auto warmed = co_await echo.call(*c, std::move(warm), warm_opt);
  if (!warmed || !warmed->has_value() || (*warmed)->size() != cfg.payload) {
    std::fprintf(stderr, "error: the warm-up echo failed: %s\n", warmed ? "wrong echo" : warmed.error().message().c_str());
    co_return 2;
  }
  const double warmup_ms = std::chrono::duration<double, std::milli>(clock_type::now() - w0).count();
  { const auto done = std::move(warmed); } // its buffer goes: the echoes below make their own
  const auto s0 = c->stats();
  bulk_state b;
  b.running = 2;
  const auto t0 = clock_type::now();
  asio::co_spawn(st.execs[0], bulk_echoes(st, b, *c), asio::detached);
  asio::co_spawn(st.execs[0], small_probe(b, *c), asio::detached);
  const auto end = t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(cfg.seconds));
  double peak_rss = rss0;
  while (clock_type::now() < end) {
    co_await sleep_for(std::min<clock_type::duration>(100ms, end - clock_type::now()));
    peak_rss = std::max(peak_rss, rss_mb());
  }
  const std::uint64_t bytes = b.bytes.load();
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  b.stop = true;
  while (b.running.load() != 0) co_await sleep_for(1ms);
  co_await sleep_for(150ms); // the last ping's answer
  const auto s1 = c->stats();
  const auto sr = st.nodes[1]->connection(st.hosts[0])->stats();
  for (auto& m : st.nodes) co_await m->shutdown();

  const double rate = static_cast<double>(bytes) / secs, gib = 1024.0 * 1024 * 1024;
  const std::uint64_t pings = (s1.pings_sent - s0.pings_sent) + sr.pings_sent;
  const std::uint64_t pongs = (s1.pongs_received - s0.pongs_received) + sr.pongs_received;
  const std::uint64_t missed = pings > pongs ? pings - pongs : 0;
  const std::uint64_t reconnects = (s1.reconnects - s0.reconnects) + sr.reconnects;
  const double p50 = b.small.percentile_us(0.50), p99 = b.small.percentile_us(0.99), pmax = b.small.percentile_us(1.0);
  std::printf("bulk: %zu B echoes, %u threads%s: %.3f GiB/s (%llu echoes in %.2f s), plain TCP echo %.3f GiB/s (%.0f %%); "
              "small calls p50 %.1f us, p99 %.1f us, max %.1f us (%llu failed); pings %llu, missed %llu, slowest pong %.1f ms; "
              "reconnects %llu; %llu errors; peak RSS +%.1f MB; warm-up echo %.1f ms (not counted)\n",
              cfg.payload, cfg.threads, cfg.shared_context ? " (one shared io_context)" : "", rate / gib,
              static_cast<unsigned long long>(b.echoes.load()), secs, floor_rate / gib,
              floor_rate > 0 ? 100.0 * rate / floor_rate : 0.0, p50, p99, pmax,
              static_cast<unsigned long long>(b.small_errors.load()), static_cast<unsigned long long>(pings),
              static_cast<unsigned long long>(missed),
              static_cast<double>(std::max(s1.max_ping_rtt, sr.max_ping_rtt).count()) / 1000.0,
              static_cast<unsigned long long>(reconnects), static_cast<unsigned long long>(b.errors.load()), peak_rss - rss0,
              warmup_ms);
  if (floor1)
    std::printf("plain TCP echo on one thread %.3f GiB/s: cogrid at %.0f %% of it\n", floor1_rate / gib,
                floor1_rate > 0 ? 100.0 * rate / floor1_rate : 0.0);
  if (b.errors.load()) std::printf("first error: %s\n", b.first_error.c_str());
  char floor1_json[128] = "";
  if (floor1)
    std::snprintf(floor1_json, sizeof floor1_json, ", \"floor_one_thread_bytes_per_sec\": %.0f, \"ratio_to_one_thread_floor\": %.3f",
                  floor1_rate, floor1_rate > 0 ? rate / floor1_rate : 0.0);
  if (cfg.json)
    std::printf("{\"mode\": \"bulk\", \"payload\": %zu, \"piece_bytes\": %zu, \"piece_window_bytes\": %zu, \"threads\": %u, "
                "\"shared_context\": %s, \"seconds\": %.3f, "
                "\"echoes\": %llu, \"bytes_per_sec\": %.0f, \"floor_bytes_per_sec\": %.0f, \"ratio_to_floor\": %.3f, "
                "\"small_calls\": %llu, \"small_p50_us\": %.1f, \"small_p99_us\": %.1f, \"small_max_us\": %.1f, \"small_errors\": %llu, "
                "\"pings\": %llu, \"pings_missed\": %llu, \"max_ping_rtt_ms\": %.1f, \"reconnects\": %llu, \"errors\": %llu, "
                "\"peak_rss_growth_mb\": %.1f, \"warmup_echo_ms\": %.1f%s}\n",
                cfg.payload, cfg.piece_bytes, cfg.piece_window_bytes, cfg.threads, cfg.shared_context ? "true" : "false", secs,
                static_cast<unsigned long long>(b.echoes.load()), rate, floor_rate, floor_rate > 0 ? rate / floor_rate : 0.0,
                static_cast<unsigned long long>(std::accumulate(b.small.counts.begin(), b.small.counts.end(), std::uint64_t{0})),
                p50, p99, pmax, static_cast<unsigned long long>(b.small_errors.load()),
                static_cast<unsigned long long>(pings), static_cast<unsigned long long>(missed),
                static_cast<double>(std::max(s1.max_ping_rtt, sr.max_ping_rtt).count()) / 1000.0,
                static_cast<unsigned long long>(reconnects), static_cast<unsigned long long>(b.errors.load()), peak_rss - rss0,
                warmup_ms, floor1_json);
  co_return b.errors.load() || b.echoes.load() == 0 || floor_rate < 0 || (floor1 && floor1_rate < 0) ? 1 : 0;
}

// -- bulk-file: a file larger than the window sent through cogrid::bulk_upload to a handler that writes
// it to another file; memory must stay within two windows.

struct file_meta {
  std::string path; // where the handler writes
  MSGPACK_DEFINE_MAP(path)
};
struct file_result {
  std::uint64_t bytes = 0, hash = 0; // what the handler received, and the XXH3-64 of it
  MSGPACK_DEFINE_MAP(bytes, hash)
};
const cogrid::bulk_upload<file_meta, file_result> file_upload{cogrid::handler_id{83}};

// The handler: each chunk hashed and written to the file with pwrite on the disk pool.
struct file_install {
  asio::any_io_executor disk;
  cogrid::stream_generator<file_result> operator()(file_meta m, cogrid::bulk_input in) const { return run(disk, std::move(m), std::move(in)); }
  static cogrid::stream_generator<file_result> run(asio::any_io_executor disk, file_meta m, cogrid::bulk_input in) {
    auto out = co_await cogrid::file_sink::create(disk, m.path);
    if (!out) throw cogrid::exception(out.error());
    XXH3_state_t h;
    XXH3_64bits_reset(&h);
    while (auto c = co_await in.next()) {
      XXH3_64bits_update(&h, c->data(), c->size());
      auto w = co_await out->write(*c);
      if (!w) throw cogrid::exception(w.error());
    }
    if (!in.complete()) co_return;
    file_result done{in.bytes_received(), XXH3_64bits_digest(&h)}; // named: GCC 12 and temporaries in co_yield
    co_yield done;
  }
};

// Writes `n` bytes of a pattern to `path` (4 MiB at a time); returns their XXH3-64, or nothing on error.
std::optional<std::uint64_t> write_source_file(const std::string& path, std::uint64_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return std::nullopt;
  std::vector<std::byte> buf(4u << 20);
  XXH3_state_t h;
  XXH3_64bits_reset(&h);
  std::uint64_t at = 0;
  bool ok = true;
  while (ok && at < n) {
    const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), n - at));
    for (std::size_t i = 0; i < k; i += 8) {
      const std::uint64_t v = (at + i) * 0x9e3779b97f4a7c15ull;
      std::memcpy(buf.data() + i, &v, std::min<std::size_t>(8, k - i));
    }
    XXH3_64bits_update(&h, buf.data(), k);
    for (std::size_t off = 0; ok && off < k;) {
      const ssize_t w = ::write(fd, buf.data() + off, k - off);
      ok = w > 0;
      if (ok) off += static_cast<std::size_t>(w);
    }
    at += k;
  }
  ok = ::close(fd) == 0 && ok;
  if (!ok) return std::nullopt;
  return XXH3_64bits_digest(&h);
}

// The highest live RSS (heap memory glibc kept but nobody holds handed back first, as the soak measures)
// while `done` is false, sampled every 10 ms.
asio::awaitable<void> sample_peak_rss(std::atomic<bool>& done, std::atomic<double>& peak) {
  while (!done.load()) {
    const double now = live_rss_mb();
    if (now > peak.load()) peak.store(now);
    co_await sleep_for(10ms);
  }
}

asio::awaitable<int> bulk_file(shared_state& st) {
  const asio::any_io_executor disk = st.disk;
  const config& cfg = st.cfg;
  const cogrid::bulk_options bo = file_upload.options();
  char tmpl[] = "/tmp/grid-bench-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  if (!dir) {
    std::fprintf(stderr, "error: cannot make a temporary directory: %s\n", std::strerror(errno));
    co_return 2;
  }
  const std::string src_path = std::string(dir) + "/source", dst_path = std::string(dir) + "/copy";
  auto cleanup = [&] {
    ::unlink(src_path.c_str());
    ::unlink(dst_path.c_str());
    ::rmdir(dir);
  };
  const auto want = write_source_file(src_path, cfg.file_bytes);
  if (!want) {
    std::fprintf(stderr, "error: cannot write %s: %s\n", src_path.c_str(), std::strerror(errno));
    cleanup();
    co_return 2;
  }
  for (auto& m : st.nodes) m->start();
  auto c = st.nodes[0]->connection(st.hosts[1]);
  if (auto r = co_await c->wait_for_connect(); !r) {
    std::fprintf(stderr, "error: not connected: %s\n", r.error().message().c_str());
    cleanup();
    co_return 2;
  }
  auto src = co_await cogrid::file_source::open(disk, src_path);
  if (!src) {
    std::fprintf(stderr, "error: %s\n", src.error().message().c_str());
    cleanup();
    co_return 2;
  }
  co_await sleep_for(100ms);
  const double rss0 = live_rss_mb();
  // RSS sampled every 10 ms while the file goes (from another coroutine: the upload is one co_await).
  std::atomic<bool> done{false};
  std::atomic<double> peak{rss0};
  asio::co_spawn(st.execs[0], sample_peak_rss(done, peak), asio::detached);
  const auto t0 = clock_type::now();
  file_meta meta;
  meta.path = dst_path;
  cogrid::stream_options sopt;
  sopt.timeout = std::chrono::seconds(600);
  auto r = co_await file_upload.send(*c, meta, *src, sopt); // named arguments: GCC 12 mishandles temporaries in co_await
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  done = true;
  co_await sleep_for(20ms);
  struct stat sb{};
  const bool size_ok = ::stat(dst_path.c_str(), &sb) == 0 && static_cast<std::uint64_t>(sb.st_size) == cfg.file_bytes;
  cleanup();
  for (auto& m : st.nodes) co_await m->shutdown();

  // Each node may hold two windows (the sender's queue and the batch being written; the receiver's
  // buffered chunks and the one being handled); both nodes live in this process.
  const double growth = peak.load() - rss0, bound = 2 * 2.0 * static_cast<double>(bo.window_bytes) / (1024.0 * 1024.0);
  const bool ok = r && r->bytes == cfg.file_bytes && r->hash == *want && size_ok;
  const double mib = static_cast<double>(cfg.file_bytes) / (1024.0 * 1024.0);
  if (!cfg.json) {
    std::printf("bulk-file: %.0f MiB file to file through bulk_upload (chunks %zu KiB, window %zu KiB), %u threads: %.2f s, %.0f MiB/s; "
                "%s; peak live RSS +%.1f MB (bound: two windows per node, %.1f MB: %s)\n",
                mib, bo.chunk_bytes >> 10, bo.window_bytes >> 10, cfg.threads, secs, mib / secs,
                ok ? "copy equal (size and XXH3)" : (r ? "copy DIFFERS" : ("failed: " + r.error().message()).c_str()), growth, bound,
                growth <= bound ? "held" : "EXCEEDED");
  } else {
    std::printf("{\"mode\": \"bulk-file\", \"file_bytes\": %llu, \"chunk_bytes\": %zu, \"window_bytes\": %zu, \"threads\": %u, "
                "\"seconds\": %.3f, \"mib_per_sec\": %.1f, \"copy_equal\": %s, \"peak_rss_growth_mb\": %.1f, \"rss_bound_mb\": %.1f}\n",
                static_cast<unsigned long long>(cfg.file_bytes), bo.chunk_bytes, bo.window_bytes, cfg.threads, secs, mib / secs,
                ok ? "true" : "false", growth, bound);
  }
  if (!r) std::fprintf(stderr, "error: %s\n", r.error().message().c_str());
  co_return ok && growth <= bound ? 0 : 1;
}

asio::awaitable<int> run(shared_state& st) {
  if (st.cfg.mode == "soak") co_return co_await soak(st);
  if (st.cfg.mode == "bulk") co_return co_await bulk(st);
  if (st.cfg.mode == "bulk-file") co_return co_await bulk_file(st);
  const config& cfg = st.cfg;
  const double rss0 = rss_mb();
  const auto t_connect = clock_type::now();
  for (auto& m : st.nodes) m->start();
  for (auto& m : st.nodes)
    for (auto& c : m->connections())
      if (auto r = co_await c->wait_for_connect(); !r) {
        std::fprintf(stderr, "error: not connected: %s\n", r.error().message().c_str());
        co_return 2;
      }
  const double connect_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t_connect).count();
  const std::size_t links = cfg.servers * (cfg.servers - 1) / 2;
  co_await sleep_for(200ms); // let handshakes' buffers settle
  const double idle_conn_kb = (rss_mb() - rss0) * 1024.0 / static_cast<double>(links);
  std::fprintf(stderr, "%zu nodes, %zu connections up in %.1f ms; %.1f KiB RSS per connection (both ends)\n",
               cfg.servers, links, connect_ms, idle_conn_kb);

  std::uint64_t ops = 0;
  double secs = 0, allocs_per_op = 0, writes_per_msg = 0, rss_growth = 0;
  if (cfg.mode != "mesh") {
    for (std::size_t i = 0; i < cfg.callers; ++i) {
      const std::size_t t = i % st.links_by_thread.size();
      asio::co_spawn(st.execs[t % st.execs.size()], caller(st, i, t), asio::detached);
    }
    co_await sleep_for(std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(std::min(1.0, cfg.seconds / 5))));
    const totals w0 = connection_totals(st);
    const long a0 = allocs_so_far();
    const double rss_start = rss_mb();
    const auto t0 = clock_type::now();
    st.measuring = true;
    const auto end = t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(cfg.seconds));
    std::uint64_t last = 0;
    while (clock_type::now() < end) {
      co_await sleep_for(std::min<clock_type::duration>(1s, end - clock_type::now()));
      const std::uint64_t now_ops = st.ops.load();
      std::fprintf(stderr, "  %6.1f s  %10.0f ops/s\n", std::chrono::duration<double>(clock_type::now() - t0).count(),
                   static_cast<double>(now_ops - last) / 1.0);
      last = now_ops;
    }
    st.measuring = false;
    secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    ops = st.ops.load();
    const long a1 = allocs_so_far();
    const totals w1 = connection_totals(st);
    rss_growth = rss_mb() - rss_start;
    st.stop = true;
    while (st.callers_done.load() != static_cast<int>(cfg.callers)) co_await sleep_for(1ms);
    allocs_per_op = ops ? static_cast<double>(a1 - a0) / static_cast<double>(ops) : 0;
    writes_per_msg = w1.messages > w0.messages ? static_cast<double>(w1.writes - w0.writes) / static_cast<double>(w1.messages - w0.messages) : 0;
  } else {
    co_await sleep_for(std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(cfg.seconds)));
  }
  if (!cfg.prometheus_file.empty()) { // taken while the callers may still be at work: a node under load
    const std::string text = st.nodes[0]->prometheus();
    if (FILE* f = std::fopen(cfg.prometheus_file.c_str(), "wb")) {
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
    } else {
      std::fprintf(stderr, "cannot write %s\n", cfg.prometheus_file.c_str());
      st.errors.fetch_add(1);
    }
  }
  const totals lt = connection_totals(st);
  if (lt.reconnects || lt.dial_failures)
    std::fprintf(stderr, "links: %llu reconnects, %llu failed dials (last error: %s)\n",
                 static_cast<unsigned long long>(lt.reconnects), static_cast<unsigned long long>(lt.dial_failures),
                 lt.last_error.c_str());
  for (auto& m : st.nodes) co_await m->shutdown();

  const double ops_per_sec = secs > 0 ? static_cast<double>(ops) / secs : 0;
  const double p50 = st.hist.percentile_us(0.50), p99 = st.hist.percentile_us(0.99);
  std::printf("%s: %zu servers, %zu callers, %zu B, %u threads%s%s: %.0f ops/s, p50 %.1f us, p99 %.1f us, "
              "%.2f allocs/op, %.3f writes/msg, %llu errors, RSS %.1f MB (+%.1f MB while measuring), "
              "connect %.1f ms, %.1f KiB/connection\n",
              cfg.mode.c_str(), cfg.servers, cfg.callers, cfg.payload, cfg.threads, cfg.shared_context ? " (one shared io_context)" : "",
              cfg.tls ? ", TLS" : "", ops_per_sec,
              p50, p99, allocs_per_op, writes_per_msg, static_cast<unsigned long long>(st.errors.load()), rss_mb(),
              rss_growth, connect_ms, idle_conn_kb);
  if (st.errors.load()) std::printf("first error: %s\n", st.first_error.c_str());
  if (cfg.json)
    std::printf("{\"mode\": \"%s\", \"servers\": %zu, \"callers\": %zu, \"payload\": %zu, \"threads\": %u, \"shared_context\": %s, \"tls\": %s, "
                "\"ops\": %llu, \"seconds\": %.3f, \"ops_per_sec\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
                "\"allocs_per_op\": %.3f, \"writes_per_msg\": %.4f, \"rss_mb\": %.1f, \"rss_growth_mb\": %.1f, "
                "\"connect_ms\": %.1f, \"idle_conn_kb\": %.1f, \"errors\": %llu}\n",
                cfg.mode.c_str(), cfg.servers, cfg.callers, cfg.payload, cfg.threads, cfg.shared_context ? "true" : "false",
                cfg.tls ? "true" : "false",
                static_cast<unsigned long long>(ops), secs, ops_per_sec, p50, p99, allocs_per_op, writes_per_msg, rss_mb(),
                rss_growth, connect_ms, idle_conn_kb, static_cast<unsigned long long>(st.errors.load()));
  co_return st.errors.load() && ops == 0 && cfg.mode != "mesh" ? 1 : 0;
}

int usage() {
  std::fprintf(stderr, "usage: grid-bench --mode unary|unary-rpc|stream-responses|stream-request|stream-twoway|mesh|soak|bulk|bulk-file\n"
                       "                  [--servers N] [--callers C] [--payload BYTES] [--seconds S] [--threads T] [--shared-context]\n"
                       "                  [--tls] [--json] [--prometheus FILE: node 0's exposition as the run ends]\n"
                       "                  soak: [--calls N] [--streams N] [--max-growth-mb MB]\n"
                       "                  bulk: [--piece-bytes BYTES] [--piece-window BYTES]\n"
                       "                  bulk-file: [--file-bytes BYTES]\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--mode") cfg.mode = val();
    else if (k == "--servers") cfg.servers = std::strtoul(val(), nullptr, 10);
    else if (k == "--callers") cfg.callers = std::strtoul(val(), nullptr, 10);
    else if (k == "--payload") {
      cfg.payload = std::strtoul(val(), nullptr, 10);
      cfg.payload_set = true;
    }
    else if (k == "--seconds") cfg.seconds = std::strtod(val(), nullptr);
    else if (k == "--threads") cfg.threads = static_cast<unsigned>(std::strtoul(val(), nullptr, 10));
    else if (k == "--shared-context") cfg.shared_context = true;
    else if (k == "--tls") cfg.tls = true;
    else if (k == "--json") cfg.json = true;
    else if (k == "--calls") cfg.calls = std::strtoull(val(), nullptr, 10);
    else if (k == "--streams") cfg.streams = std::strtoull(val(), nullptr, 10);
    else if (k == "--max-growth-mb") cfg.max_growth_mb = std::strtod(val(), nullptr);
    else if (k == "--piece-bytes") cfg.piece_bytes = std::strtoul(val(), nullptr, 10);
    else if (k == "--piece-window") cfg.piece_window_bytes = std::strtoul(val(), nullptr, 10);
    else if (k == "--file-bytes") cfg.file_bytes = std::strtoull(val(), nullptr, 10);
    else if (k == "--prometheus") cfg.prometheus_file = val();
    else return usage();
  }
  const std::vector<std::string> modes{"unary", "unary-rpc", "stream-responses", "stream-request", "stream-twoway", "mesh", "soak", "bulk", "bulk-file"};
  if (std::find(modes.begin(), modes.end(), cfg.mode) == modes.end() || cfg.servers < 2 || cfg.servers > 64 ||
      cfg.callers < 1 || cfg.threads < 1 || cfg.seconds <= 0)
    return usage();

  // Thread per core (the pool) unless --shared-context: then one io_context run by every thread.
  std::optional<cogrid::io_pool> pool;
  std::optional<asio::io_context> shared_io;
  if (cfg.mode == "bulk") {
    cfg.servers = 2; // one link
    if (!cfg.payload_set) cfg.payload = 32u << 20;
  }
  if (cfg.mode == "bulk-file") cfg.servers = 2;
  shared_state st;
  st.cfg = cfg;
  std::optional<asio::thread_pool> disk_pool; // bulk-file: blocking file calls, off the io threads
  if (cfg.mode == "bulk-file") {
    disk_pool.emplace(2);
    st.disk = disk_pool->get_executor();
  }
  if (cfg.shared_context) {
    shared_io.emplace(static_cast<int>(cfg.threads));
    st.execs.push_back(shared_io->get_executor());
  } else {
    pool.emplace(cfg.threads);
    st.execs = pool->executors();
  }
  const std::size_t n_exec = st.execs.size();
  // The links of each executor, by manager's placement: node s's connection to its k-th remote runs on
  // executor (k + s) % n.
  st.links_by_thread.resize(n_exec);
  for (std::size_t s = 0; s < cfg.servers; ++s)
    for (std::size_t d = 0; d < cfg.servers; ++d)
      if (d != s) st.links_by_thread[((d < s ? d : d - 1) + s) % n_exec].push_back({s, d});
  std::shared_ptr<cogrid::ssl_context> server_tls, client_tls;
  if (cfg.tls) {
    const auto cert = cogrid_test::make_test_cert("localhost");
    server_tls = cogrid::make_server_tls_context(cert.cert_pem, cert.key_pem);
    client_tls = cogrid::make_client_tls_context(cert.cert_pem);
  }
  std::vector<asio::ip::tcp::acceptor> acceptors;
  for (std::size_t i = 0; i < cfg.servers; ++i) {
    asio::ip::tcp::acceptor a(st.execs[0], asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    st.hosts.push_back(std::string(cfg.tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(a.local_endpoint().port()));
    acceptors.push_back(std::move(a));
  }
  for (std::size_t i = 0; i < cfg.servers; ++i) {
    cogrid::manager_options o;
    o.local = st.hosts[i];
    o.hosts = st.hosts;
    o.auth = cogrid::static_token_auth("grid-bench");
    o.connection.reconnect_min = 10ms; // MinIO's pacing otherwise; only the first dial is sped up
    o.connection.reconnect_max = 20ms;
    if (cfg.mode == "bulk") {
      o.connection.ping_interval = 100ms; // so that a short run sees pings (pong timeout: the default)
      o.connection.piece_bytes = cfg.piece_bytes;
      o.connection.piece_window_bytes = cfg.piece_window_bytes;
    }
    o.tls_client = client_tls;
    o.tls_server = server_tls;
    st.nodes.push_back(std::make_unique<cogrid::manager>(st.execs, std::move(o)));
    auto& m = *st.nodes.back();
    if (!echo.serve(m, echo_fn{}) || !rpc.serve(m, rpc_fn{}) || !responses_stream.serve(m, ten_responses) ||
        !request_stream.serve(m, count_requests) || !twoway_stream.serve(m, echo_each))
      return 2;
    if (cfg.mode == "bulk-file" && !file_upload.serve(m, file_install{st.disk})) return 2;
    m.listen(std::move(acceptors[i]));
  }
  int status = 2;
  asio::co_spawn(st.execs[0], run(st), [&](std::exception_ptr e, int s) {
    status = e ? 2 : s;
    if (e) try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::fprintf(stderr, "error: %s\n", ex.what());
      }
    if (pool) pool->finish();
  });
  if (pool) {
    pool->start();
    pool->join();
  } else {
    std::vector<std::thread> threads;
    for (unsigned i = 1; i < cfg.threads; ++i) threads.emplace_back([&] { shared_io->run(); });
    shared_io->run();
    for (auto& t : threads) t.join();
  }
  return status;
}
