// A grid whose managers are spread over an io_pool (one io_context per thread): connections land on
// different threads, and calls and streams made from coroutines on every thread, to links on any
// thread, all get their own answers. CI runs this under ThreadSanitizer (net-mt).
#include <cogrid/io_pool.hpp>
#include <cogrid/stream.hpp>
#include <cogrid/testing.hpp>
#include <cogrid/unary.hpp>

#include "test_types.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/execution/context.hpp>
#include <asio/query.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include <time.h>

using namespace cogrid;
using cogrid_test::test_request;
using cogrid_test::test_response;

namespace {

const unary<test_request, test_response> plain_echo{handler_id{60}};
const unary<test_request, test_response> coro_echo{handler_id{61}};
const bidi_stream<test_request, test_response> echo_each{handler_id{62}, stream_capacity{2, 2}};

test_response answer(const test_request& r) { return {r.Num, r.String, "from " + r.String}; }

asio::awaitable<test_response> coro_answer(test_request r) { co_return answer(r); }

stream_generator<test_response> echo_all(stream_input<test_request> in) {
  while (auto r = co_await in.next()) {
    test_response out = answer(*r); // named: GCC 12 and braced temporaries in co_yield
    co_yield out;
  }
}

struct tally {
  std::atomic<int> calls_ok{0}, streams_ok{0}, wrong{0}, failed{0};
};

// One caller: unary calls (both kinds of handler) and streams, to every link of node `self`.
asio::awaitable<void> caller(testing::grid& g, std::size_t self, int id, std::shared_ptr<tally> t) {
  for (int n = 0; n < 100; ++n) {
    const std::size_t to = (self + 1 + static_cast<std::size_t>(n) % (g.size() - 1)) % g.size();
    auto link = g.link(self, to);
    const test_request req{n, std::to_string(id) + "/" + std::to_string(n)};
    result<test_response> r; // no co_await inside ?: (GCC 12 miscompiles it)
    if (n % 2) r = co_await plain_echo.call(*link, req);
    else r = co_await coro_echo.call(*link, req);
    if (!r) t->failed.fetch_add(1);
    else if (r->OrgNum != n || r->OrgString != req.String || r->Embedded != "from " + req.String) t->wrong.fetch_add(1);
    else t->calls_ok.fetch_add(1);
    if (n % 20 != 0) continue;
    auto s = co_await echo_each.open(*link);
    if (!s) {
      t->failed.fetch_add(1);
      continue;
    }
    bool good = true;
    for (int k = 0; k < 5 && good; ++k) {
      const test_request one{k, req.String + "/" + std::to_string(k)};
      const result<void> sent = co_await s->send(one);
      const result<test_response> back = co_await s->next();
      good = sent && back && back->OrgNum == k && back->OrgString == one.String;
    }
    (void)s->close_send();
    const result<test_response> end = co_await s->next();
    if (good && end == errc::end_of_stream) t->streams_ok.fetch_add(1);
    else t->wrong.fetch_add(1);
  }
}

} // namespace

TEST_CASE("a grid on an io_pool of two threads: connections on both threads, calls and streams from both") {
  io_pool pool(2);
  testing::grid g(pool.executors(), 3);
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(plain_echo.serve(g.node(i), answer));
    REQUIRE(coro_echo.serve(g.node(i), coro_answer));
    REQUIRE(echo_each.serve(g.node(i), echo_all));
  }

  // Each node's two connections are on different threads' io_contexts.
  for (std::size_t i = 0; i < g.size(); ++i) {
    std::set<asio::execution_context*> homes;
    for (auto& c : g.node(i).connections()) homes.insert(&asio::query(c->get_executor(), asio::execution::context));
    CHECK(homes.size() == 2);
    for (std::size_t k = 0; k < pool.size(); ++k) CHECK(homes.count(&pool.context(k)) == 1);
  }

  g.start();
  auto t = std::make_shared<tally>();
  constexpr int callers_per_thread = 6;
  std::promise<void> finished;
  std::atomic<int> left{static_cast<int>(pool.size()) * callers_per_thread};
  auto shut = [&]() -> asio::awaitable<void> {
    co_await g.shutdown();
    finished.set_value();
  };
  auto run = [&]() -> asio::awaitable<void> {
    const result<void> up = co_await g.wait_all_connected();
    CHECK(up);
    for (std::size_t k = 0; k < pool.size(); ++k)
      for (int c = 0; c < callers_per_thread; ++c) {
        const int id = static_cast<int>(k) * callers_per_thread + c;
        asio::co_spawn(pool.executor(k), caller(g, static_cast<std::size_t>(id) % g.size(), id, t), [&](std::exception_ptr e) {
          if (e) t->failed.fetch_add(1000);
          if (left.fetch_sub(1) == 1) asio::co_spawn(pool.executor(0), shut(), asio::detached); // the last caller ended
        });
      }
  };
  asio::co_spawn(pool.executor(0), run(), [&](std::exception_ptr e) {
    if (e) t->failed.fetch_add(100000);
  });
  pool.start();
  const bool in_time = finished.get_future().wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  pool.finish();
  if (!in_time) pool.stop();
  pool.join();
  REQUIRE(in_time);
  CHECK(t->wrong == 0);
  CHECK(t->failed == 0);
  CHECK(t->calls_ok == static_cast<int>(pool.size()) * callers_per_thread * 100);
  CHECK(t->streams_ok == static_cast<int>(pool.size()) * callers_per_thread * 5);
}

namespace {

// The CPU time the pool thread of `ex` has used so far (read on that thread).
std::chrono::nanoseconds thread_cpu(asio::any_io_executor ex) {
  std::promise<std::chrono::nanoseconds> p;
  asio::post(ex, [&p] {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    p.set_value(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  });
  return p.get_future().get();
}

// The CPU time the pool thread of `ex` uses while this thread sleeps for `d`.
std::chrono::nanoseconds cpu_over(asio::any_io_executor ex, std::chrono::milliseconds d) {
  const auto before = thread_cpu(ex);
  std::this_thread::sleep_for(d);
  return thread_cpu(ex) - before;
}

} // namespace

TEST_CASE("an io_pool thread polls for its idle-spin window after the grid's activity, then sleeps") {
  using namespace std::chrono_literals;
  // A long window, so that the spinning shows in the thread's CPU time: it uses CPU while the window
  // lasts, none once it has passed, and finish() still lets the thread return.
  io_pool pool(1, std::chrono::microseconds(400ms));
  pool.start();
  CHECK(cpu_over(pool.executor(0), 150ms) < 30ms); // no activity yet: asleep
  asio::post(pool.executor(0), [] { detail::idle_spin::activity(); });
  CHECK(cpu_over(pool.executor(0), 200ms) >= 40ms); // polling (a fraction of the 200 ms even on a loaded machine)
  std::this_thread::sleep_for(500ms);               // the window has passed with no activity
  CHECK(cpu_over(pool.executor(0), 200ms) < 30ms);
  pool.finish();
  pool.join();

  // Off threads io_pool did not start, activity() does nothing; a pool with more threads than cores
  // never spins.
  detail::idle_spin::activity();
  io_pool crowded(std::max(1u, std::thread::hardware_concurrency()) + 1, std::chrono::microseconds(400ms));
  crowded.start();
  asio::post(crowded.executor(0), [] { detail::idle_spin::activity(); });
  CHECK(cpu_over(crowded.executor(0), 200ms) < 30ms);
  crowded.finish();
  crowded.join();
}
