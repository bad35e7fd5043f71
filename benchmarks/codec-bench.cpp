// codec-bench: throughput and allocations of the grid wire codec (no I/O).
//   codec-bench [--payload BYTES] [--seconds S] [--json]
// Modes run in turn: encode (one message into a reused buffer), decode (one message), merge (50 messages
// into an OpMerged container), merged-read (for_each_message over that container). Figures are per grid
// message. Allocations are counted with a replaced global operator new.
#include <cogrid/message.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace {
std::atomic<long> g_allocs{0};
}

void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using clock_type = std::chrono::steady_clock;

struct figure {
  const char* mode;
  double msgs_per_sec;
  double ns_per_msg;
  double allocs_per_msg;
};

// Runs `batch()` (which handles `per_batch` messages) until `seconds` have passed.
template <class F>
figure measure(const char* mode, double seconds, long per_batch, F&& batch) {
  for (int i = 0; i < 100; ++i) batch(); // warm-up: buffers reach steady capacity
  const long a0 = g_allocs.load();
  long msgs = 0;
  const auto t0 = clock_type::now();
  auto t = t0;
  do {
    for (int i = 0; i < 1000; ++i) batch();
    msgs += 1000 * per_batch;
    t = clock_type::now();
  } while (std::chrono::duration<double>(t - t0).count() < seconds);
  const double secs = std::chrono::duration<double>(t - t0).count();
  return {mode, msgs / secs, secs * 1e9 / msgs, double(g_allocs.load() - a0) / msgs};
}

volatile std::size_t g_sink;

} // namespace

int main(int argc, char** argv) {
  std::size_t payload_size = 512;
  double seconds = 1.0;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--payload" && i + 1 < argc) payload_size = std::strtoul(argv[++i], nullptr, 10);
    else if (a == "--seconds" && i + 1 < argc) seconds = std::strtod(argv[++i], nullptr);
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr, "usage: codec-bench [--payload BYTES] [--seconds S] [--json]\n");
      return 2;
    }
  }

  using namespace cogrid;
  const std::vector<std::byte> payload(payload_size, std::byte{0x61});
  message m;
  m.mux_id = 123456;
  m.seq = 7;
  m.deadline_ms = 60000;
  m.handler = handler_id{78};
  m.op = op_code::request;
  m.flags = msg_flags::crc | msg_flags::eof;
  m.payload = std::span(payload);

  std::vector<std::byte> wire;
  if (encode_append(m, wire)) return 1;
  std::vector<std::byte> out;
  std::vector<std::byte> container;

  figure figs[4];
  figs[0] = measure("encode", seconds, 1, [&] {
    out.clear();
    (void)encode_append(m, out);
    g_sink = out.size();
  });
  figs[1] = measure("decode", seconds, 1, [&] {
    const auto d = decode(wire);
    g_sink = d->payload->size();
  });
  figs[2] = measure("merge", seconds, 50, [&] {
    merge_builder mb(container);
    for (int k = 0; k < 50; ++k) (void)mb.add(m);
    g_sink = mb.finish().size();
  });
  merge_builder mb(container);
  for (int k = 0; k < 50; ++k) (void)mb.add(m);
  const std::vector<std::byte> merged(mb.finish().begin(), mb.finish().end());
  figs[3] = measure("merged-read", seconds, 50, [&] {
    std::size_t n = 0;
    (void)for_each_message(merged, [&](const message& x) { n += x.payload->size(); });
    g_sink = n;
  });

  for (const figure& f : figs)
    std::printf("%-12s payload %zu B: %10.0f msgs/s  %7.1f ns/msg  %.3f allocs/msg\n", f.mode, payload_size,
                f.msgs_per_sec, f.ns_per_msg, f.allocs_per_msg);
  if (json) {
    std::printf("{\"payload\": %zu", payload_size);
    for (const figure& f : figs)
      std::printf(", \"%s_msgs_per_sec\": %.0f, \"%s_allocs_per_msg\": %.3f", f.mode, f.msgs_per_sec, f.mode, f.allocs_per_msg);
    std::printf("}\n");
  }
  return 0;
}
