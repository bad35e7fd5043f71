// cluster-demo: a 3-node grid on loopback under a mix of unary calls, streams and a distributed lock
// (dlock.hpp), with a live table of every connection. Halfway through, node 2's connections are killed
// and come back. Ends by itself with a summary.
//   cluster-demo [--seconds N] [--metrics PORT]   (--metrics: Prometheus text of node i on PORT+i; 0 = any)
// Exit status 0 when calls succeeded, the lock never had two holders and every link came back.
#include "dlock.hpp"

#include <cogrid/testing.hpp>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>

#include <cstdio>
#include <cstring>
#include <unistd.h>

namespace {
using namespace std::chrono_literals;
const cogrid::unary_raw echo{cogrid::handler_id{1}};
const cogrid::server_stream_raw ticks{cogrid::handler_id{2}, 4};

asio::awaitable<void> sleep(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// --metrics: answers every HTTP request on `acc` with the node's Prometheus text.
asio::awaitable<void> serve_metrics(cogrid::manager& m, asio::ip::tcp::acceptor acc) {
  for (;;) {
    auto sock = co_await acc.async_accept(asio::use_awaitable);
    char req[1024];
    co_await sock.async_read_some(asio::buffer(req), asio::use_awaitable);
    const std::string body = m.prometheus();
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    co_await asio::async_write(sock, std::array{asio::buffer(head), asio::buffer(body)}, asio::use_awaitable);
  }
}

struct totals {
  bool stop = false;
  long calls = 0, failed = 0, responses = 0, locks = 0, overlaps = 0;
  int holder = -1;
};

cogrid::stream_generator<cogrid::payload> tick_gen(cogrid::payload p) {
  for (int i = 0; i < 10; ++i) co_yield p;
}

asio::awaitable<void> caller(cogrid::testing::grid& g, std::shared_ptr<totals> t, unsigned seed) {
  std::minstd_rand rng(seed);
  while (!t->stop) {
    const std::size_t a = rng() % 3, b = (a + 1 + rng() % 2) % 3;
    const cogrid::payload p = std::vector<std::byte>(64);
    if (rng() % 8 == 0) { // a stream of 10 responses now and then
      auto s = co_await ticks.open(*g.link(a, b), p);
      bool clean = false;
      if (s)
        for (;;) {
          auto r = co_await s->next();
          if (!r) {
            clean = r.error() == cogrid::errc::end_of_stream;
            break;
          }
          ++t->responses;
        }
      ++(clean ? t->calls : t->failed);
    } else {
      const cogrid::call_options opt{500ms}; // named: GCC 12 and braced temporaries in co_await
      auto r = co_await echo.call(*g.link(a, b), p, opt);
      ++(r ? t->calls : t->failed);
      if (!r) co_await sleep(20ms); // the link is down: let it come back
    }
  }
}

asio::awaitable<void> locker(cogrid::testing::grid& g, std::vector<std::unique_ptr<dlock::server>>& servers, int me,
                             std::shared_ptr<totals> t) {
  std::vector<std::shared_ptr<cogrid::connection>> peers;
  for (int j = 0; j < 3; ++j)
    if (j != me) peers.push_back(g.link(me, j));
  dlock::mutex m(*servers[me], peers, "demo-lock");
  while (!t->stop) {
    if (!co_await m.lock(1s)) continue;
    t->overlaps += t->holder != -1;
    t->holder = me;
    ++t->locks;
    co_await sleep(30ms);
    t->holder = -1;
    co_await m.unlock();
  }
}

void draw(cogrid::testing::grid& g, std::vector<cogrid::connection_stats>& last, double dt, bool tty, double now, const totals& t) {
  std::printf(tty ? "\x1b[H\x1b[2J" : "\n");
  std::printf("cogrid cluster-demo  t=%.1fs  calls %ld ok / %ld failed  stream responses %ld  locks %ld (overlaps %ld)\n",
              now, t.calls, t.failed, t.responses, t.locks, t.overlaps);
  std::printf("%-7s %-10s %8s %10s %10s %10s %10s %5s %7s\n", "link", "state", "rtt us", "calls/s out", "calls/s in",
              "KiB out", "KiB in", "recon", "streams");
  std::size_t k = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 3; ++j) {
      if (i == j) continue;
      const auto s = g.link(i, j)->stats();
      if (last.size() <= k) last.push_back(s);
      const auto& p = last[k];
      std::printf("%zu -> %zu  %-10s %8lld %10.0f %10.0f %10.1f %10.1f %5llu %7zu\n", i, j, cogrid::to_string(s.state),
                  static_cast<long long>(s.last_ping_rtt.count()), (s.calls_made - p.calls_made) / dt,
                  (s.calls_served - p.calls_served) / dt, s.bytes_out / 1024.0, s.bytes_in / 1024.0,
                  static_cast<unsigned long long>(s.reconnects), s.streams_out + s.streams_in);
      last[k++] = s;
    }
  std::fflush(stdout);
}

asio::awaitable<int> run(cogrid::testing::grid& g, std::vector<std::unique_ptr<dlock::server>>& servers, int seconds) {
  g.start();
  co_await g.wait_all_connected();
  auto t = std::make_shared<totals>();
  for (unsigned i = 0; i < 16; ++i) asio::co_spawn(co_await asio::this_coro::executor, caller(g, t, i + 1), asio::detached);
  for (int i = 0; i < 3; ++i) asio::co_spawn(co_await asio::this_coro::executor, locker(g, servers, i, t), asio::detached);
  const bool tty = ::isatty(1);
  const auto start = dlock::clock::now();
  const std::chrono::milliseconds step = tty ? 250ms : 1000ms;
  std::vector<cogrid::connection_stats> last;
  bool killed = false;
  for (auto now = 0.0; now < seconds; now = std::chrono::duration<double>(dlock::clock::now() - start).count()) {
    if (!killed && now >= seconds / 2.0) {
      killed = true;
      for (std::size_t j = 0; j < 2; ++j) g.kill(2, j); // node 2's links die; the dialers reconnect
      std::printf("\n*** %.1fs: killed node 2's connections\n", now);
    }
    co_await sleep(step);
    draw(g, last, std::chrono::duration<double>(step).count(), tty, now, *t);
  }
  t->stop = true;
  co_await sleep(1s); // let the workers finish their last call
  long reconnects = 0, up = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (auto& c : g.node(i).connections())
      reconnects += static_cast<long>(c->stats().reconnects), up += c->state() == cogrid::connection_state::connected;
  std::printf("\nsummary: %ld calls and streams ok, %ld failed (while links were down), %ld stream responses, "
              "%ld lock holds with %ld overlaps, %ld reconnects\n", t->calls, t->failed, t->responses, t->locks,
              t->overlaps, reconnects);
  co_await g.shutdown();
  co_return t->calls > 0 && t->locks > 0 && t->overlaps == 0 && up == 6 && reconnects >= 2 ? 0 : 1;
}
} // namespace

int main(int argc, char** argv) {
  int seconds = 8, metrics_port = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--metrics")) metrics_port = std::atoi(argv[i + 1]);
  }
  asio::io_context io;
  cogrid::testing::grid g(io.get_executor(), 3); // loopback, ports chosen by the OS, 50 ms pings
  std::vector<std::unique_ptr<dlock::server>> servers;
  for (std::size_t i = 0; i < 3; ++i) {
    if (!echo.serve(g.node(i), [](cogrid::payload p) { return p; }) || !ticks.serve(g.node(i), tick_gen)) return 1;
    servers.push_back(std::make_unique<dlock::server>(500ms));
    if (!servers.back()->serve(g.node(i))) return 1;
    if (metrics_port < 0) continue;
    const auto port = static_cast<unsigned short>(metrics_port ? metrics_port + static_cast<int>(i) : 0);
    asio::ip::tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), port});
    std::printf("metrics of node %zu: http://127.0.0.1:%u/metrics\n", i, unsigned{acc.local_endpoint().port()});
    asio::co_spawn(io, serve_metrics(g.node(i), std::move(acc)), asio::detached);
  }
  int status = 2;
  asio::co_spawn(io, run(g, servers, seconds), [&](std::exception_ptr e, int s) { status = e ? 2 : s, io.stop(); });
  io.run(); // io.stop() above also ends --metrics
  return status;
}
