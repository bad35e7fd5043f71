// stream: typed streams between two nodes in one process on loopback. A one-way stream (one request, a
// stream of responses) counts from one number to another; a bidirectional stream answers each number it
// is sent with the running sum so far. Exits 0 when every answer is right.
#include <cogrid/cogrid.hpp>
#include <cogrid/testing.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include <cstdint>
#include <cstdio>

struct range {
  std::int64_t From = 0, To = 0;
  MSGPACK_DEFINE_MAP(From, To)
};
struct number {
  std::int64_t Value = 0;
  MSGPACK_DEFINE_MAP(Value)
};

// Declared the same on every node: handler id, types, and how many messages each direction buffers.
inline const cogrid::server_stream<range, number> count_up{cogrid::handler_id{2}, 4};
inline const cogrid::bidi_stream<number, number> running_sum{cogrid::handler_id{3}, cogrid::stream_capacity{4, 4}};

// One request in, responses out: co_yield waits while the caller has no credit left.
cogrid::stream_generator<number> count(range r) {
  for (std::int64_t v = r.From; v <= r.To; ++v) {
    const number n{v}; // named: GCC 12 destroys a braced temporary inside co_yield twice
    co_yield n;
  }
}

// Requests in, responses out, until the caller closes its side (next() gives end_of_stream).
cogrid::stream_generator<number> sum(cogrid::stream_input<number> in) {
  number total;
  while (auto r = co_await in.next()) {
    total.Value += r->Value;
    co_yield total;
  }
}

asio::awaitable<int> use(cogrid::connection& c) {
  int wrong = 0;
  const range r{1, 5};
  auto counter = co_await count_up.open(c, r);
  if (!counter) co_return std::printf("open failed: %s\n", counter.error().message().c_str()), 1;
  std::int64_t expect = 1;
  for (;;) {
    auto n = co_await counter->next();
    if (!n) { // the end of the stream, or why it failed
      if (n.error() != cogrid::errc::end_of_stream) co_return std::printf("count: %s\n", n.error().message().c_str()), 1;
      break;
    }
    std::printf("count: %lld\n", static_cast<long long>(n->Value));
    wrong += n->Value != expect++;
  }
  wrong += expect != 6;

  auto adder = co_await running_sum.open(c);
  if (!adder) co_return std::printf("open failed: %s\n", adder.error().message().c_str()), 1;
  std::int64_t want = 0;
  for (std::int64_t v : {10, 20, 30, 40}) {
    const number n{v};
    if (auto sent = co_await adder->send(n); !sent) co_return std::printf("send: %s\n", sent.error().message().c_str()), 1;
    auto total = co_await adder->next();
    if (!total) co_return std::printf("sum: %s\n", total.error().message().c_str()), 1;
    std::printf("running sum after %lld: %lld\n", static_cast<long long>(v), static_cast<long long>(total->Value));
    wrong += total->Value != (want += v);
  }
  (void)adder->close_send();
  auto end = co_await adder->next();
  wrong += end.error() != cogrid::errc::end_of_stream;
  co_return wrong == 0 ? 0 : 1;
}

asio::awaitable<int> run(cogrid::testing::grid& g) {
  int status = 1;
  if (auto up = co_await g.wait_all_connected(); up) status = co_await use(*g.link(0, 1));
  co_await g.shutdown();
  co_return status;
}

int main() {
  asio::io_context io;
  cogrid::testing::grid g(io.get_executor(), 2); // two nodes on loopback ports the OS picks
  for (std::size_t i = 0; i < g.size(); ++i)
    if (!count_up.serve(g.node(i), count) || !running_sum.serve(g.node(i), sum)) return 1;
  g.start();
  int status = 1;
  asio::co_spawn(io, run(g), [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  io.run();
  return status;
}
