#include <cogrid/unary.hpp>

#include <cogrid/testing.hpp>

#include "net_util.hpp"
#include "grid_helpers.hpp"
#include "test_types.hpp"

#include <asio/experimental/awaitable_operators.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace cogrid;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;
using cogrid_test::busy_until;
using cogrid_test::bytes;
using cogrid_test::echo_fn;
using cogrid_test::test_request;
using cogrid_test::test_response;
using cogrid_test::text;

namespace {

// MinIO's test handlers: 78 echoes, 79 fails with "test error: <payload>".
const unary_raw echo{handler_id{78}};
const unary_raw fail{handler_id{79}};


struct fail_fn {
  result<payload> operator()(payload p) const { return remote_error("test error: " + text(p)); }
};

void serve_test_handlers(testing::grid& g) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(echo.serve(g.node(i), echo_fn{}));
    REQUIRE(fail.serve(g.node(i), fail_fn{}));
  }
}

// After a test: no call left open on any connection, in either direction.
asio::awaitable<void> assert_no_active(testing::grid& g) {
  auto idle = [&] {
    for (std::size_t i = 0; i < g.size(); ++i)
      for (auto& c : g.node(i).connections())
        if (c->stats().calls_out != 0 || c->stats().calls_in != 0) return false;
    return true;
  };
  CHECK(co_await eventually(idle));
}

} // namespace

TEST_SUITE_BEGIN("unary");

asio::awaitable<void> roundtrip(asio::any_io_executor ex) {
  // The 1 MiB echo below goes in pieces; a loaded machine (suites in parallel) must not trip the test
  // intervals' 200 ms pong timeout meanwhile.
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) { o.connection.pong_timeout = 5s; });
  serve_test_handlers(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto& c = *g.link(0, 1);
  auto r = co_await echo.call(c, bytes("hello"));
  REQUIRE(r);
  CHECK(text(*r) == "hello");
  // Errors carry the remote's text.
  auto e = co_await fail.call(c, bytes("hello"));
  REQUIRE(!r.error());
  REQUIRE(!e);
  CHECK(e.error().code == errc::remote_error);
  CHECK(e.error().text == "test error: hello");
  CHECK(e.error().code == condition::call_failed);
  // 1 MiB echo and a 1 KiB error.
  std::string big(1 << 20, 'x');
  for (std::size_t k = 0; k < big.size(); ++k) big[k] = static_cast<char>('a' + k % 26);
  auto rb = co_await echo.call(c, bytes(big));
  REQUIRE_MESSAGE(rb, (rb ? std::string() : rb.error().message()));
  CHECK(text(*rb) == big);
  const std::string kib(1024, 'e');
  auto eb = co_await fail.call(c, bytes(kib));
  CHECK(eb.error().text == "test error: " + kib);
  // Nil and empty stay apart.
  auto rn = co_await echo.call(c, std::nullopt);
  REQUIRE(rn);
  CHECK_FALSE(rn->has_value());
  const payload empty = std::vector<std::byte>{}; // named: no braced temporary inside co_await (GCC 12)
  auto re = co_await echo.call(c, empty);
  REQUIRE(re);
  REQUIRE(re->has_value());
  CHECK((*re)->empty());
  // value() throws the remote's text for code that prefers exceptions.
  try {
    (void)(co_await fail.call(c, bytes("x"))).value();
    FAIL("expected cogrid::exception");
  } catch (const cogrid::exception& ex) {
    CHECK(std::string(ex.what()).find("test error: x") != std::string::npos);
    CHECK(ex.code() == errc::remote_error);
  }
  // The bound form, from the other side.
  auto rb2 = co_await echo.on(*g.link(1, 0)).call(bytes("back"));
  CHECK(text(rb2.value()) == "back");
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("echo, error, 1 MiB echo, 1 KiB error, nil and empty payloads") { run_async(roundtrip); }

asio::awaitable<void> not_ready(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  REQUIRE(echo.serve(g.node(0), echo_fn{})); // node 1 serves nothing
  // Calling before anything is connected fails at once.
  auto d = co_await echo.call(*g.link(0, 1), bytes("x"));
  CHECK(d.error().code == errc::disconnected);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto r = co_await echo.call(*g.link(0, 1), bytes("x"));
  REQUIRE(!r);
  CHECK(r.error().code == errc::unknown_handler);
  CHECK(r.error().text == "Invalid Handler for type: 78");
  const unary_raw sub_echo{handler_id{78}, "no/such/route"};
  auto rs = co_await sub_echo.call(*g.link(1, 0), bytes("x"));
  CHECK(rs.error().code == errc::unknown_handler);
  CHECK(rs.error().text.rfind("Invalid Handler for type: 4e00", 0) == 0);
  // Duplicate registration is refused; id 0 is invalid.
  CHECK(echo.serve(g.node(0), echo_fn{}) == errc::handler_exists);
  CHECK(unary_raw{handler_id{0}}.serve(g.node(0), echo_fn{}) == errc::invalid_handler);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("unregistered remote handler or subroute: a clear error, never a hang") { run_async(not_ready); }

struct typed_fn {
  test_response operator()(const call_context& ctx, test_request r) const {
    return {r.Num, r.String, "from " + ctx.conn->local()};
  }
};

asio::awaitable<void> typed(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  const unary<test_request, test_response> rpc{handler_id{79}};
  const unary<test_request, test_response> rpc_sub{handler_id{79}, join_route({"subroute", "1"})};
  const unary<test_request, test_response> rpc_sub2{handler_id{79}, "subroute"};
  for (std::size_t i = 0; i < 2; ++i) {
    REQUIRE(rpc.serve(g.node(i), typed_fn{}));
    REQUIRE(rpc_sub.serve(g.node(i), [](test_request r) -> asio::awaitable<test_response> {
      co_return test_response{r.Num * 2, r.String + "/1", ""};
    }));
    REQUIRE(rpc_sub2.serve(g.node(i), [](test_request r) -> result<test_response> {
      if (r.Num < 0) return remote_error("negative");
      return test_response{r.Num, r.String, "sub"};
    }));
  }
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto& c = *g.link(0, 1);
  // Requests are named variables: GCC 12 destroys a braced temporary inside a co_await expression twice.
  const test_request q1{42, "hello"}, q2{21, "x"}, q3{7, "y"}, q4{-1, "y"}, q5{1, "z"};
  auto r = co_await rpc.call(c, q1);
  REQUIRE(r);
  CHECK(r->OrgNum == 42);
  CHECK(r->OrgString == "hello");
  CHECK(r->Embedded == "from " + g.host(1));
  auto r1 = co_await rpc_sub.call(c, q2);
  CHECK(r1.value().OrgNum == 42);
  CHECK(r1->OrgString == "x/1");
  auto r2 = co_await rpc_sub2.call(c, q3);
  CHECK(r2.value().Embedded == "sub");
  auto r3 = co_await rpc_sub2.call(c, q4);
  CHECK(r3.error().text == "negative");
  // A response that does not decode as the declared type.
  const unary<test_request, std::vector<int>> wrong{handler_id{79}};
  auto rw = co_await wrong.call(c, q5);
  CHECK(rw.error().code == errc::bad_payload);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("typed round trip, subroutes and nested subroutes, typed errors") { run_async(typed); }

struct slow_fn {
  std::shared_ptr<std::atomic<int>> cancelled;
  std::shared_ptr<std::atomic<int>> started;
  asio::awaitable<payload> operator()(payload p) const { return run(cancelled, started, std::move(p)); }
  static asio::awaitable<payload> run(std::shared_ptr<std::atomic<int>> cancelled, std::shared_ptr<std::atomic<int>> started, payload p) {
    started->fetch_add(1);
    try {
      co_await sleep_for(std::chrono::milliseconds(text(p) == "slow" ? 2000 : 1));
    } catch (const std::system_error& e) {
      if (e.code() == asio::error::operation_aborted) cancelled->fetch_add(1);
      throw;
    }
    co_return p;
  }
};

const unary_raw slow{handler_id{50}};

// Two started nodes both serving `slow`, and the counts of its handlers started and cancelled.
struct slow_grid {
  explicit slow_grid(asio::any_io_executor ex) : g(std::move(ex), 2) {
    for (std::size_t i = 0; i < 2; ++i) REQUIRE(slow.serve(g.node(i), slow_fn{cancelled, started}));
    g.start();
  }
  testing::grid g;
  std::shared_ptr<std::atomic<int>> cancelled = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> started = std::make_shared<std::atomic<int>>(0);
};

asio::awaitable<void> deadlines(asio::any_io_executor ex) {
  slow_grid sg(ex);
  testing::grid& g = sg.g;
  auto cancelled = sg.cancelled, started = sg.started;
  REQUIRE(co_await g.wait_all_connected());
  auto c = g.link(0, 1);
  const auto session = c->session_id();

  // A deadline shorter than the handler: the caller gets timeout, the server cancels the handler.
  auto t0 = std::chrono::steady_clock::now();
  const call_options short_deadline{50ms}; // named: no braced temporary inside co_await (GCC 12)
  auto r = co_await slow.call(*c, bytes("slow"), short_deadline);
  CHECK(r.error().code == errc::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  auto one_cancelled = [&] { return cancelled->load() == 1; };
  CHECK(co_await eventually(one_cancelled));

  // The caller cancels (call || timer): the handler sees the cancellation.
  asio::steady_timer t(ex, 30ms);
  auto v = co_await (slow.call(*c, bytes("slow")) || t.async_wait(asio::use_awaitable));
  CHECK(v.index() == 1);
  auto two_cancelled = [&] { return cancelled->load() == 2; };
  CHECK(co_await eventually(two_cancelled));
  auto counted = [&] { return g.link(1, 0)->stats().calls_cancelled >= 1; };
  CHECK(co_await eventually(counted));

  // Two concurrent calls on one connection: one times out, the other completes; the link stays up.
  auto slow_call = slow.call(*c, bytes("slow"), call_options{50ms});
  auto fast_call = slow.call(*c, bytes("fast"), call_options{5s});
  auto both = co_await (std::move(slow_call) && std::move(fast_call));
  CHECK(std::get<0>(both).error().code == errc::timeout);
  CHECK(text(std::get<1>(both).value()) == "fast");
  CHECK(c->session_id() == session);
  CHECK(c->state() == connection_state::connected);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("deadlines and cancellation reach the handler and spare other calls and the connection") { run_async(deadlines); }

// A peer that sends a second request with the id of a call whose handler still runs (ids are never
// reused by a correct peer): the second is ignored and counted, and the first stays tracked, so the
// peer's cancellation still reaches it. (The table used to replace the first, which then ran on
// uncancellable while the duplicate ran too.)
asio::awaitable<void> duplicate_mux(asio::any_io_executor ex) {
  slow_grid sg(ex);
  testing::grid& g = sg.g;
  auto cancelled = sg.cancelled, started = sg.started;
  REQUIRE(co_await g.wait_all_connected());
  auto c = g.link(0, 1);
  auto served = g.link(1, 0);
  const std::uint64_t unhandled_before = served->stats().unhandled;
  const std::string body = "slow";
  message req;
  req.mux_id = std::uint64_t{1} << 40; // far above the ids node 0's own calls use
  req.op = op_code::request;
  req.handler = handler_id{50};
  req.flags = msg_flags::eof;
  req.deadline_ms = 60000;
  req.payload = std::as_bytes(std::span(body));
  REQUIRE(c->send(req));
  auto first_started = [&] { return started->load() == 1; };
  REQUIRE(co_await eventually(first_started));
  REQUIRE(c->send(req)); // the same id again
  auto counted = [&] { return served->stats().unhandled == unhandled_before + 1; };
  CHECK(co_await eventually(counted));
  CHECK(served->stats().calls_in == 1);
  message stop;
  stop.mux_id = req.mux_id;
  stop.op = op_code::disconnect_server_mux;
  REQUIRE(c->send(stop));
  auto stopped = [&] { return cancelled->load() == 1 && served->stats().calls_in == 0; };
  CHECK(co_await eventually(stopped)); // the first handler, still tracked, was cancelled
  CHECK(started->load() == 1);         // and the duplicate never ran
  co_await g.shutdown();
}
TEST_CASE("a second request for a mux still running is ignored; the first stays cancellable") { run_async(duplicate_mux); }

asio::awaitable<void> one_call(const unary_raw& u, std::shared_ptr<connection> c, int i, std::shared_ptr<std::atomic<int>> ok) {
  const std::string want = "call-" + std::to_string(i);
  auto r = co_await u.call(*c, bytes(want));
  if (r && text(*r) == want) ok->fetch_add(1);
}

asio::awaitable<void> many_calls(asio::any_io_executor ex) {
  // A burst of 10,000 calls keeps the one io thread busy for a while: liveness limits of MinIO's order
  // (not the tests' 200 ms) so that the link is not dropped as unresponsive while it works.
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) {
    o.connection.ping_interval = 1s;
    o.connection.pong_timeout = 20s;
    o.connection.write_timeout = 10s;
  });
  serve_test_handlers(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  constexpr int n = 10000;
  auto ok = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < n; ++i) asio::co_spawn(ex, one_call(echo, g.link(i % 2, 1 - i % 2), i, ok), asio::detached);
  auto all = [&] { return ok->load() == n; };
  CHECK(co_await eventually(all, 30s));
  CHECK(ok->load() == n);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("10,000 concurrent calls are all answered with their own response") { run_async(many_calls, std::chrono::seconds(60)); }

asio::awaitable<void> disconnect_during_call(asio::any_io_executor ex) {
  slow_grid sg(ex);
  testing::grid& g = sg.g;
  auto cancelled = sg.cancelled, started = sg.started;
  REQUIRE(co_await g.wait_all_connected());
  auto c = g.link(0, 1);
  asio::steady_timer kill_timer(ex, 50ms);
  auto killer = [](asio::steady_timer& t, testing::grid& grid) -> asio::awaitable<void> {
    co_await t.async_wait(asio::use_awaitable);
    grid.kill(1, 0);
  };
  auto r = co_await (slow.call(*c, bytes("slow")) && killer(kill_timer, g)); // && with a void side: the call's result
  CHECK(r.error().code == errc::disconnected);
  auto handler_stopped = [&] { return cancelled->load() == 1; };
  CHECK(co_await eventually(handler_stopped)); // the server's handler was cancelled too
  REQUIRE(co_await g.wait_all_connected());
  auto again = co_await slow.call(*c, bytes("fast"));
  CHECK(text(again.value()) == "fast");
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("a connection that dies mid-call fails the call with disconnected, and the next call works") {
  run_async(disconnect_during_call);
}

struct blocking_fn { // a plain-function handler that holds its io thread
  std::shared_ptr<std::atomic<int>> running;
  payload operator()(payload p) const {
    running->fetch_add(1);
    std::this_thread::sleep_for(text(p) == "block" ? 150ms : 0ms);
    running->fetch_sub(1);
    return p;
  }
};

struct context_fn { // a plain-function handler that reports what it knows of its call
  result<payload> operator()(const call_context& ctx, payload p) const {
    if (text(p) == "throw") throw std::runtime_error("thrown by a plain function");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(ctx.deadline - std::chrono::steady_clock::now());
    return bytes(ctx.conn->remote() + " " + std::to_string(static_cast<unsigned>(ctx.handler)) + " " +
                 (left > 1s && left <= 5s ? "deadline-ok" : "deadline-wrong:" + std::to_string(left.count())));
  }
};

asio::awaitable<void> timed_call(const unary_raw& u, std::shared_ptr<connection> c, std::chrono::milliseconds timeout,
                                 std::shared_ptr<std::vector<int>> order) {
  const call_options opt{timeout}; // named: no braced temporary inside co_await (GCC 12)
  auto r = co_await u.call(*c, bytes("slow"), opt);
  order->push_back(r || r.error().code != errc::timeout ? -1 : static_cast<int>(timeout.count()));
}

asio::awaitable<void> plain_functions(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) { o.connection.pong_timeout = 5s; });
  auto running = std::make_shared<std::atomic<int>>(0);
  const unary_raw block{handler_id{60}};
  const unary_raw ctx{handler_id{61}, "ctx/route"};
  auto cancelled = std::make_shared<std::atomic<int>>(0);
  auto started = std::make_shared<std::atomic<int>>(0);
  for (std::size_t i = 0; i < 2; ++i) {
    REQUIRE(block.serve(g.node(i), blocking_fn{running}));
    REQUIRE(ctx.serve(g.node(i), context_fn{}));
    REQUIRE(slow.serve(g.node(i), slow_fn{cancelled, started}));
  }
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto c = g.link(0, 1);

  // The handler sees its connection, handler id and deadline; a throw reaches the caller as its text.
  const call_options five_seconds{5s}; // named: no braced temporary inside co_await (GCC 12)
  auto r = co_await ctx.call(*c, bytes("who"), five_seconds);
  CHECK(text(r.value()) == g.host(0) + " 61 deadline-ok");
  auto thrown = co_await ctx.call(*c, bytes("throw"));
  CHECK(thrown.error().code == errc::remote_error);
  CHECK(thrown.error().text == "thrown by a plain function");

  // A plain function cannot be cancelled: when it returns after the caller's deadline, its response is
  // dropped and counted as late; the caller has its timeout.
  const auto late_before = g.link(1, 0)->stats().late_responses;
  const call_options thirty_ms{30ms};
  auto late = co_await block.call(*c, bytes("block"), thirty_ms);
  CHECK(late.error().code == errc::timeout);
  auto counted_late = [&] { return g.link(1, 0)->stats().late_responses == late_before + 1; };
  CHECK(co_await eventually(counted_late));
  auto quick = co_await block.call(*c, bytes("quick"));
  CHECK(text(quick.value()) == "quick");

  // Deadlines out of order (one timer per connection, kept for the earliest): each call times out at its
  // own deadline, earliest first, while a long one stays pending.
  auto order = std::make_shared<std::vector<int>>();
  asio::co_spawn(ex, timed_call(slow, c, 600ms, order), asio::detached);
  asio::co_spawn(ex, timed_call(slow, c, 60ms, order), asio::detached);
  asio::co_spawn(ex, timed_call(slow, c, 300ms, order), asio::detached); // placed walking from the head
  asio::co_spawn(ex, timed_call(slow, c, 550ms, order), asio::detached); // placed walking from the tail
  asio::co_spawn(ex, timed_call(slow, c, 30s, order), asio::detached); // answered (2 s handler)
  auto timed_out = [&] { return order->size() == 4; };
  CHECK(co_await eventually(timed_out, 5s));
  CHECK(*order == std::vector<int>{60, 300, 550, 600});
  auto answered = [&] { return order->size() == 5; };
  CHECK(co_await eventually(answered, 5s));
  CHECK(order->back() == -1); // the 30 s call got its response
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("plain-function handlers; call deadlines out of order") { run_async(plain_functions); }

TEST_SUITE_END();

// A call made while the manager shuts down (after the connection has cancelled its deadline timer, before
// the session is gone) is refused and arms nothing: a timer left waiting would keep io_context::run()
// going for the call's whole timeout (an hour here) after everything else has ended.
namespace {

// co_spawn runs a new coroutine inline, inside the spawning code, up to its first suspension: a call made
// there is initiated from user code that goes on running. Its hand-off to the connection's writer must be
// an ordinary post that the other thread takes, not a continuation queued behind the busy user code
// (which held the connection's strand: its reader, writer and timers).
struct flag_call {
  std::shared_ptr<connection> c;
  std::shared_ptr<std::atomic<int>> done; // 1: the call succeeded, 2: it failed
};
asio::awaitable<void> call_then_flag(flag_call f) {
  payload body = bytes("spawned");
  auto r = co_await echo.call(*f.c, body);
  f.done->store(r && text(*r) == "spawned" ? 1 : 2);
}

asio::awaitable<void> spawn_inline_then_compute(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  serve_test_handlers(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  co_await sleep_for(20ms); // the writers park
  for (int round = 0; round < 3; ++round) {
    auto done = std::make_shared<std::atomic<int>>(0);
    asio::co_spawn(ex, call_then_flag(flag_call{g.link(0, 1), done}), asio::detached); // runs inline
    busy_until([&] { return done->load() != 0; });
    CHECK(done->load() == 1);
    co_await sleep_for(20ms);
  }
  co_await assert_no_active(g);
  co_await g.shutdown();
}
} // namespace
TEST_CASE("a call spawned inline by code that keeps computing completes on the other thread") {
  run_async(spawn_inline_then_compute, std::chrono::seconds(60), 2);
}

namespace {
// A caller on a strand is resumed by our hand-off inside the strand's invoker, which runs the strand's
// other ready handlers (user code) before it returns. The next call that caller makes must not queue its
// hand-off to the connection's writer as a continuation behind them.
struct counting_echo {
  std::shared_ptr<std::atomic<int>> served;
  payload operator()(payload p) const {
    served->fetch_add(1);
    return p;
  }
};
const unary_raw counted{handler_id{52}};

struct strand_case {
  std::shared_ptr<connection> c;
  asio::any_io_executor strand;
  std::shared_ptr<std::atomic<int>> served;     // requests node 1 has handled
  std::shared_ptr<std::atomic<bool>> sent_while; // the second request left while the strand computed
  std::shared_ptr<std::atomic<int>> done;       // 1: both calls answered
};
// Queued on the strand behind the first call's response: runs right after the caller suspends in its
// second call, and computes until that call's request has reached node 1 (or gives up).
struct compute_fn {
  strand_case k;
  void operator()() const {
    k.sent_while->store(busy_until([&] { return k.served->load() == 2; }));
  }
};
// Runs on the strand while the caller waits for its first response: holds the strand until that
// response has been handed over (queued on the strand), then queues the computation behind it.
struct hold_fn {
  strand_case k;
  void operator()() const {
    busy_until([&] { return k.c->stats().calls_out == 0; });
    std::this_thread::sleep_for(20ms); // the hand-off follows the call's completion at once
    asio::post(k.strand, compute_fn{k});
  }
};
asio::awaitable<void> two_calls_on_strand(strand_case k) {
  asio::post(k.strand, hold_fn{k}); // runs once this coroutine suspends in its first call
  payload first = bytes("first"), second = bytes("second");
  auto a = co_await counted.call(*k.c, first);
  auto b = co_await counted.call(*k.c, second);
  k.done->store(a && b && text(*a) == "first" && text(*b) == "second" ? 1 : 2);
}
asio::awaitable<void> strand_caller(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  auto served = std::make_shared<std::atomic<int>>(0);
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(counted.serve(g.node(i), counting_echo{served}));
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  co_await sleep_for(20ms); // the writers park
  strand_case k{g.link(0, 1), asio::make_strand(ex), served, std::make_shared<std::atomic<bool>>(false),
                std::make_shared<std::atomic<int>>(0)};
  asio::co_spawn(k.strand, two_calls_on_strand(k), asio::detached);
  auto finished = [&] { return k.done->load() != 0; };
  CHECK(co_await eventually(finished, 30s));
  CHECK(k.done->load() == 1);
  CHECK(k.sent_while->load());
  co_await g.shutdown();
}
} // namespace
TEST_CASE("a caller on a strand: its next call is sent while the strand's other handlers compute") {
  run_async(strand_caller, std::chrono::seconds(60), 2);
}

namespace {
struct shutdown_then_flag {
  testing::grid* g;
  std::shared_ptr<std::atomic<bool>> done;
};
asio::awaitable<void> shut_and_flag(shutdown_then_flag s) {
  co_await s.g->shutdown();
  s.done->store(true);
}

asio::awaitable<void> call_during_shutdown(asio::any_io_executor ex, std::shared_ptr<std::atomic<int>> outcome,
                                          std::shared_ptr<connection>* kept) {
  testing::grid g(ex, 2);
  serve_test_handlers(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  std::shared_ptr<connection> c = g.link(0, 1);
  *kept = c; // as a user may: the connection outlives the manager's shutdown (and its deadline timer with it)
  auto shut = std::make_shared<std::atomic<bool>>(false);
  asio::co_spawn(ex, shut_and_flag(shutdown_then_flag{&g, shut}), asio::detached); // on the other thread
  // Call the moment the connection starts stopping (this thread spins; the other runs the shutdown).
  REQUIRE(busy_until([&] { return cogrid::detail::connection_access::stopping(*c); }));
  call_options hour;
  hour.timeout = std::chrono::hours(1);
  payload body = bytes("late");
  auto r = co_await echo.call(*c, body, hour);
  REQUIRE_FALSE(r);
  outcome->store(r.error().code == errc::shutdown ? 1 : r.error().code == errc::disconnected ? 2 : 3);
  auto shut_down = [&] { return shut->load(); };
  CHECK(co_await eventually(shut_down));
  auto after = co_await echo.call(*c, body); // once shut down: refused, with the reason
  CHECK(after.error().code == errc::shutdown);
}
} // namespace

// One round: true when the late call was refused (shutdown) or found the session gone (disconnected), and
// io_context::run() then ran out of work.
static void shutdown_round() {
  asio::io_context io;
  auto outcome = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<connection> kept;
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, call_during_shutdown(io.get_executor(), outcome, &kept), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  std::thread other([&] { io.run_for(10s); });
  io.run_for(10s);
  other.join();
  REQUIRE(done);
  if (error) std::rethrow_exception(error);
  CHECK(outcome->load() != 3); // shutdown (the usual case), or disconnected once the session had ended
  CHECK(io.stopped());         // run() ran out of work: no deadline timer left armed
}

TEST_CASE("a call made during shutdown is refused and leaves nothing for io_context::run() to wait on") {
  for (int round = 0; round < 4; ++round) shutdown_round(); // the window is short: a few rounds to hit it
}
