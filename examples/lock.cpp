// lock: a distributed lock service (dlock.hpp, in the manner of MinIO's dsync) on a grid of 5 nodes on
// loopback. Four clients on four nodes contend for one resource; each round a client holds it for 20 ms
// and checks that nobody else does. Then the holder's node disappears without unlocking: the servers
// drop its lock once it is no longer refreshed, and a client on another node gets it.
//   lock [--rounds N]     exit status 0 when mutual exclusion held throughout
#include "dlock.hpp"

#include <cogrid/testing.hpp>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>

#include <cstdio>
#include <cstring>
#include <memory>

namespace {

using namespace std::chrono_literals;
using clock_type = dlock::clock;

struct shared_state {
  int holder = -1, violations = 0, acquired = 0;
  clock_type::time_point start = clock_type::now();
  double ms() const { return std::chrono::duration<double, std::milli>(clock_type::now() - start).count(); }
};

std::vector<std::shared_ptr<cogrid::connection>> peers_of(cogrid::testing::grid& g, std::size_t i) {
  std::vector<std::shared_ptr<cogrid::connection>> out;
  for (std::size_t j = 0; j < g.size(); ++j)
    if (j != i) out.push_back(g.link(i, j));
  return out;
}

asio::awaitable<void> contend(cogrid::testing::grid& g, std::vector<std::unique_ptr<dlock::server>>& servers, int me,
                              int rounds, std::shared_ptr<shared_state> st) {
  dlock::mutex m(*servers[me], peers_of(g, me), "resource-A");
  asio::steady_timer hold(co_await asio::this_coro::executor);
  for (int r = 0; r < rounds; ++r) {
    if (!co_await m.lock(5s)) continue;
    if (st->holder != -1) ++st->violations; // somebody else holds it too: the lock failed
    st->holder = me;
    ++st->acquired;
    std::printf("%8.1f ms  client on node %d holds resource-A\n", st->ms(), me);
    hold.expires_after(20ms);
    co_await hold.async_wait(asio::use_awaitable);
    st->holder = -1;
    co_await m.unlock();
    hold.expires_after(10ms); // give the others a chance before trying again
    co_await hold.async_wait(asio::use_awaitable);
  }
}

asio::awaitable<int> run(cogrid::testing::grid& g, std::vector<std::unique_ptr<dlock::server>>& servers, int rounds) {
  g.start();
  co_await g.wait_all_connected();
  auto st = std::make_shared<shared_state>();
  using namespace asio::experimental::awaitable_operators;
  co_await (contend(g, servers, 0, rounds, st) && contend(g, servers, 1, rounds, st) &&
            contend(g, servers, 2, rounds, st) && contend(g, servers, 3, rounds, st));
  std::printf("contention: %d acquisitions, %d violations of mutual exclusion\n", st->acquired, st->violations);

  dlock::mutex doomed(*servers[4], peers_of(g, 4), "resource-B");
  const bool got = co_await doomed.lock(1s);
  std::printf("%8.1f ms  node 4 holds resource-B (%s); node 4 now disappears without unlocking\n", st->ms(), got ? "yes" : "no");
  co_await g.node(4).shutdown(); // its refreshes stop with it
  dlock::mutex next(*servers[0], peers_of(g, 0), "resource-B");
  const auto asked = clock_type::now();
  const bool taken = co_await next.lock(5s);
  std::printf("%8.1f ms  node 0 %s resource-B after %.0f ms\n", st->ms(), taken ? "holds" : "did not get",
              std::chrono::duration<double, std::milli>(clock_type::now() - asked).count());
  if (taken) co_await next.unlock();
  co_await g.shutdown();
  co_return st->violations == 0 && st->acquired == 4 * rounds && got && taken ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  const int rounds = argc == 3 && std::strcmp(argv[1], "--rounds") == 0 ? std::atoi(argv[2]) : 5;
  asio::io_context io;
  cogrid::testing::grid g(io.get_executor(), 5); // loopback, ports chosen by the OS, short test timeouts
  std::vector<std::unique_ptr<dlock::server>> servers;
  for (std::size_t i = 0; i < g.size(); ++i) {
    servers.push_back(std::make_unique<dlock::server>(500ms)); // a lock not refreshed for 500 ms is dropped
    if (!servers.back()->serve(g.node(i))) return 1;
  }
  int status = 1;
  asio::co_spawn(io, run(g, servers, rounds), [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  io.run();
  return status;
}
