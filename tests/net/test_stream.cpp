#include <cogrid/stream.hpp>

#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/testing.hpp>
#include <cogrid/unary.hpp>

#include "net_util.hpp"
#include "grid_helpers.hpp"
#include "test_types.hpp"

#include <asio/experimental/awaitable_operators.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>

using namespace cogrid;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;
using cogrid_test::busy_until;
using cogrid_test::bytes;
using cogrid_test::echo_fn;
using cogrid_test::echo_gen;
using cogrid_test::idle;
using cogrid_test::test_request;
using cogrid_test::test_response;
using cogrid_test::text;

namespace {


// grid-node's test streams: 78 "echo" echoes each request; 79 sends N responses "resp-<i>".
const bidi_stream_raw echo_stream{handler_id{78}, "echo"};
const server_stream_raw count_stream{handler_id{79}, 1};
const unary_raw echo_call{handler_id{78}};


stream_generator<payload> count_gen(payload n) {
  const int count = std::stoi(text(n));
  for (int i = 0; i < count; ++i) {
    payload p = bytes("resp-" + std::to_string(i));
    co_yield std::move(p);
  }
  if (text(n) == "3") throw std::runtime_error("three is an error");
}


void serve_test_handlers(testing::grid& g) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(echo_stream.serve(g.node(i), echo_gen));
    REQUIRE(count_stream.serve(g.node(i), count_gen));
    REQUIRE(echo_call.serve(g.node(i), echo_fn{}));
  }
}

// Reads every response of `s` (as text, into `got`) until next() gives none; returns why: the stream's
// final result (errc::end_of_stream after a clean end).
template <class Req>
asio::awaitable<error> drain(client_stream<Req, payload>& s, std::vector<std::string>& got) {
  for (;;) {
    auto r = co_await s.next();
    if (!r) co_return r.error();
    got.push_back(text(*r));
  }
}

// A stream without input takes no requests: its client_stream offers no send() (or, where a send()
// compiles, it is refused with errc::stream_closed).
template <class S>
asio::awaitable<void> check_refuses_requests(S& s) {
  if constexpr (requires(S& one_way, const payload& p) { one_way.send(p); }) {
    const payload x = bytes("x");
    auto refused = co_await s.send(x);
    CHECK(refused.error().code == errc::stream_closed);
  }
  co_return;
}

// After a test: no mux left open on any connection, in either direction.
asio::awaitable<void> assert_no_active(testing::grid& g) {
  auto check = [&] { return idle(g); };
  CHECK(co_await eventually(check));
}

// Counts what stream handlers saw.
struct observed {
  std::atomic<int> started{0}, cancelled{0}, finished{0};
};

asio::awaitable<void> wait_long() { co_await sleep_for(10s); }

// A handler that sends `first` responses, then waits (10 s) or keeps sending (when `forever`).
struct blocking_fn {
  std::shared_ptr<observed> seen;
  bool forever = false;
  stream_generator<payload> operator()(payload p) const { return run(seen, forever, std::move(p)); }
  static stream_generator<payload> run(std::shared_ptr<observed> seen, bool forever, payload p) {
    seen->started.fetch_add(1);
    try {
      payload first = p;
      co_yield std::move(first);
      if (forever)
        for (int i = 0;; ++i) {
          payload next = bytes(std::to_string(i));
          co_yield std::move(next);
        }
      co_await wait_long();
    } catch (const std::system_error& e) {
      if (e.code() == asio::error::operation_aborted) seen->cancelled.fetch_add(1);
      throw;
    }
    seen->finished.fetch_add(1);
  }
};

// With input: reads one request, echoes it, then waits (10 s).
struct blocking_input_fn {
  std::shared_ptr<observed> seen;
  stream_generator<payload> operator()(payload, stream_input<payload> in) const { return run(seen, std::move(in)); }
  static stream_generator<payload> run(std::shared_ptr<observed> seen, stream_input<payload> in) {
    seen->started.fetch_add(1);
    try {
      auto r = co_await in.next();
      // A cancelled stream's next() no longer throws: it says so, and the handler ends as a cancelled one.
      if (r == asio::error::operation_aborted) throw std::system_error(r.error().code);
      if (r) co_yield std::move(*r);
      co_await wait_long();
    } catch (const std::system_error& e) {
      if (e.code() == asio::error::operation_aborted) seen->cancelled.fetch_add(1);
      throw;
    }
    seen->finished.fetch_add(1);
  }
};

// A grid where only the stream rules under test decide liveness: connection pings relaxed.
testing::grid::configure_fn relaxed_links(std::chrono::milliseconds stream_ping, std::chrono::milliseconds pong_timeout,
                                          std::chrono::milliseconds ping_timeout) {
  return [=](std::size_t, manager_options& o) {
    o.connection.ping_interval = 1s;
    o.connection.pong_timeout = 30s;
    o.connection.write_timeout = 10s;
    o.connection.stream_ping_interval = stream_ping;
    o.connection.stream_pong_timeout = pong_timeout;
    o.connection.stream_ping_timeout = ping_timeout;
  };
}

} // namespace

TEST_SUITE_BEGIN("stream");

asio::awaitable<void> st_roundtrip(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  serve_test_handlers(g);
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto& c = *g.link(0, 1);
  payload none;
  auto s = co_await echo_stream.open(c, none);
  REQUIRE(s);
  for (int i = 0; i < 10; ++i) {
    const std::string want = "echo-" + std::to_string(i);
    auto sent = co_await s->send(bytes(want));
    CHECK(sent);
    auto r = co_await s->next();
    REQUIRE(r);
    CHECK(text(*r) == want);
  }
  // Nil and empty requests come back as they went.
  const payload nil;
  auto sent_nil = co_await s->send(nil);
  CHECK(sent_nil);
  auto rn = co_await s->next();
  REQUIRE(rn);
  CHECK_FALSE(rn->has_value());
  const payload empty = std::vector<std::byte>();
  auto sent_empty = co_await s->send(empty);
  CHECK(sent_empty);
  auto re = co_await s->next();
  REQUIRE(re);
  REQUIRE(re->has_value());
  CHECK((*re)->empty());
  // Closing the input ends the handler's loop, and with it the stream.
  CHECK(s->close_send());
  auto end = co_await s->next();
  CHECK(end == errc::end_of_stream);
  CHECK(s->close_send()); // idempotent
  auto late = co_await s->send(bytes("late"));
  CHECK(late.error().code == errc::stream_closed);

  // A stream without input: N responses, then the end.
  auto n = co_await count_stream.open(*g.link(1, 0), bytes("5"));
  REQUIRE(n);
  std::vector<std::string> got;
  const error n_end = co_await drain(*n, got);
  CHECK(got == std::vector<std::string>{"resp-0", "resp-1", "resp-2", "resp-3", "resp-4"});
  CHECK(n_end == errc::end_of_stream);
  // It takes no requests.
  co_await check_refuses_requests(*n);

  // A handler that throws after some responses: every response first, then its text.
  auto e = co_await count_stream.open(c, bytes("3"));
  REQUIRE(e);
  got.clear();
  const error e_end = co_await drain(*e, got);
  CHECK(got.size() == 3);
  CHECK(e_end.code == errc::remote_error);
  CHECK(e_end.text == "three is an error");
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("round trip: 10 echoes, nil and empty, close_send, responses then EOF, handler errors") { run_async(st_roundtrip); }

namespace {
// A bidirectional handler that answers its initial payload's count of responses and returns without
// reading its input.
stream_generator<payload> early_return_gen(payload n, stream_input<payload>) {
  const int count = std::stoi(text(n));
  for (int i = 0; i < count; ++i) {
    payload p = bytes("early-" + std::to_string(i));
    co_yield std::move(p);
  }
}
} // namespace

asio::awaitable<void> st_clean_end(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  serve_test_handlers(g);
  const bidi_stream_raw early{handler_id{66}, stream_capacity{1, 4}};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(early.serve(g.node(i), early_return_gen));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  // One-way, read as it comes: every response, then end_of_stream, and end_of_stream again after that.
  auto s = co_await count_stream.open(*g.link(0, 1), bytes("4"));
  REQUIRE(s);
  for (int i = 0; i < 4; ++i) {
    auto r = co_await s->next();
    REQUIRE(r);
    CHECK(text(*r) == "resp-" + std::to_string(i));
  }
  for (int i = 0; i < 3; ++i) {
    auto end = co_await s->next();
    CHECK_FALSE(end);
    CHECK(end.error().code == errc::end_of_stream);
  }
  // Bidirectional, the handler returns while the caller's side is still open, and is read late (the
  // responses and the end are all buffered): every response first, then end_of_stream.
  const payload three = bytes("3");
  auto b = co_await early.open(*g.link(1, 0), three);
  REQUIRE(b);
  co_await sleep_for(100ms);
  for (int i = 0; i < 3; ++i) {
    auto r = co_await b->next();
    REQUIRE(r);
    CHECK(text(*r) == "early-" + std::to_string(i));
  }
  auto b_end = co_await b->next();
  CHECK(b_end == errc::end_of_stream);
  auto b_again = co_await b->next();
  CHECK(b_again == errc::end_of_stream);
  // Requests after the end are refused; closing our side is still fine.
  auto late = co_await b->send(three);
  CHECK(late.error().code == errc::stream_closed);
  CHECK(b->close_send());
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("a clean end: next() gives end_of_stream after every response, and keeps giving it") { run_async(st_clean_end); }

asio::awaitable<void> st_unknown(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  REQUIRE(echo_stream.serve(g.node(0), echo_gen)); // node 1 serves no stream
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  payload none;
  auto s = co_await echo_stream.open(*g.link(0, 1), none);
  REQUIRE(!s);
  CHECK(s.error().code == errc::unknown_handler);
  CHECK(s.error().text.rfind("Invalid Handler for type: 4e00", 0) == 0);
  auto t = co_await count_stream.open(*g.link(0, 1), bytes("1"));
  CHECK(t.error().code == errc::unknown_handler);
  CHECK(t.error().text == "Invalid Handler for type: 79");
  // Registration errors.
  CHECK(echo_stream.serve(g.node(0), echo_gen) == errc::handler_exists);
  CHECK(server_stream_raw{handler_id{0}}.serve(g.node(0), count_gen) == errc::invalid_handler);
  CHECK(server_stream_raw(handler_id{70}, 0u).serve(g.node(0), count_gen) == errc::invalid_value);
  CHECK(bidi_stream_raw(handler_id{71}, stream_capacity{0, 1}).serve(g.node(0), echo_gen) == errc::invalid_value);
  // A unary handler and a stream handler may share an id: they are separate registries (as in MinIO).
  CHECK(echo_call.serve(g.node(0), echo_fn{}));
  // Opening on a connection that is down fails at once: after shutdown, with that reason.
  co_await g.shutdown();
  auto d = co_await echo_stream.open(*g.link(0, 1), none);
  CHECK(d.error().code == errc::shutdown);
}
TEST_CASE("unknown stream handler or subroute, registration errors, opening while disconnected") { run_async(st_unknown); }

asio::awaitable<void> st_capacity_mismatch(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  const bidi_stream_raw served{handler_id{65}, stream_capacity{1, 1}};
  const bidi_stream_raw caller{handler_id{65}, stream_capacity{2, 1}};
  REQUIRE(served.serve(g.node(0), echo_gen));
  REQUIRE(echo_call.serve(g.node(0), echo_fn{}));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto c = g.link(1, 0);
  const auto session = c->session_id();
  const payload none;
  auto s = co_await caller.open(*c, none);
  REQUIRE_FALSE(s);
  CHECK(s.error().code == errc::capacity_mismatch);
  CHECK(s.error().text.find("in 2, out 1") != std::string::npos); // the caller's
  CHECK(s.error().text.find("in 1, out 1") != std::string::npos); // the handler's
  // The stream is gone on both sides; the connection stays up and serves calls and matching streams.
  co_await assert_no_active(g);
  auto r = co_await echo_call.call(*c, bytes("after"));
  REQUIRE(r);
  CHECK(text(*r) == "after");
  auto ok = co_await served.open(*c, none);
  REQUIRE(ok);
  auto sent = co_await ok->send(bytes("matching"));
  CHECK(sent);
  auto echoed = co_await ok->next();
  REQUIRE(echoed);
  CHECK(text(*echoed) == "matching");
  ok->cancel();
  CHECK(c->state() == connection_state::connected);
  CHECK(c->session_id() == session);
  CHECK(c->stats().reconnects == 0);
  CHECK(g.link(0, 1)->stats().reconnects == 0);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("a capacity mismatch between caller and handler fails the open, not the connection") {
  run_async(st_capacity_mismatch);
}

asio::awaitable<void> st_cancel(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  auto seen = std::make_shared<observed>();
  const server_stream_raw oneway{handler_id{60}, 1};
  const server_stream_raw flood{handler_id{61}, 1};
  const bidi_stream_raw twoway{handler_id{62}, stream_capacity{1, 1}};
  for (std::size_t i = 0; i < 2; ++i) {
    REQUIRE(oneway.serve(g.node(i), blocking_fn{seen, false}));
    REQUIRE(flood.serve(g.node(i), blocking_fn{seen, true}));
    REQUIRE(twoway.serve(g.node(i), blocking_input_fn{seen}));
  }
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto& c = *g.link(0, 1);

  // Unbuffered (no input): the handler waits; the caller cancels.
  {
    auto s = co_await oneway.open(c, bytes("first"));
    REQUIRE(s);
    auto r = co_await s->next();
    CHECK(text(r.value()) == "first");
    s->cancel();
    auto end = co_await s->next();
    CHECK_FALSE(end);
    CHECK(end.error().code == asio::error::operation_aborted);
    auto one = [&] { return seen->cancelled.load() == 1; };
    CHECK(co_await eventually(one));
  }
  // Buffered (input capacity 1), cancelled through the awaiting coroutine's cancellation slot.
  {
    const payload none;
    auto s = co_await twoway.open(c, none);
    REQUIRE(s);
    auto sent = co_await s->send(bytes("req"));
    CHECK(sent);
    CHECK(text((co_await s->next()).value()) == "req");
    asio::steady_timer t(ex, 50ms);
    auto race = s->next() || t.async_wait(asio::use_awaitable);
    auto v = co_await std::move(race);
    CHECK(v.index() == 1);
    auto end = co_await s->next();
    CHECK(end.error().code == asio::error::operation_aborted);
    auto two = [&] { return seen->cancelled.load() == 2; };
    CHECK(co_await eventually(two));
  }
  // A full queue (the caller stops reading while the handler keeps sending): dropping the stream object
  // still cancels the handler, which is blocked waiting for a credit.
  {
    auto s = co_await flood.open(c, bytes("first"));
    REQUIRE(s);
    CHECK(text((co_await s->next()).value()) == "first");
    co_await sleep_for(100ms);
    CHECK(seen->cancelled.load() == 2);
  }
  auto three = [&] { return seen->cancelled.load() == 3; };
  CHECK(co_await eventually(three));
  CHECK(seen->finished.load() == 0);
  auto counted = [&] { return g.link(1, 0)->stats().calls_cancelled == 3; };
  CHECK(co_await eventually(counted));
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("cancel: unbuffered, buffered through the cancellation slot, full queue by dropping the stream") {
  run_async(st_cancel);
}

asio::awaitable<void> st_deadline(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  auto seen = std::make_shared<observed>();
  const server_stream_raw oneway{handler_id{60}, 1};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(oneway.serve(g.node(i), blocking_fn{seen, false}));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  const auto t0 = std::chrono::steady_clock::now();
  const stream_options short_life{100ms};
  auto s = co_await oneway.open(*g.link(0, 1), bytes("first"), short_life);
  REQUIRE(s);
  CHECK(text((co_await s->next()).value()) == "first");
  auto end = co_await s->next();
  CHECK_FALSE(end);
  CHECK(end.error().code == errc::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  auto handler_saw_it = [&] { return seen->cancelled.load() == 1; };
  CHECK(co_await eventually(handler_saw_it)); // the server's own deadline cancelled the handler
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("a deadline bounds the stream on both sides") { run_async(st_deadline); }

asio::awaitable<void> st_out_congestion(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  serve_test_handlers(g);
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto& c = *g.link(0, 1);
  auto s = co_await count_stream.open(c, bytes("100"));
  REQUIRE(s);
  // The handler is blocked on its credit: 100 single requests on the same connection all complete.
  for (int i = 0; i < 100; ++i) {
    const std::string want = "call-" + std::to_string(i);
    auto r = co_await echo_call.call(c, bytes(want));
    REQUIRE(r);
    CHECK(text(*r) == want);
  }
  CHECK(c.stats().streams_out == 1);
  int n = 0;
  error end;
  for (;;) {
    auto r = co_await s->next();
    if (!r) {
      end = r.error();
      break;
    }
    CHECK(text(*r) == "resp-" + std::to_string(n));
    ++n;
  }
  CHECK(n == 100);
  CHECK(end == errc::end_of_stream);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("server out-congestion: 100 responses at capacity 1 while 100 unary calls interleave") {
  run_async(st_out_congestion);
}

// Waits for the gate to open, then reads every request, checks their order, and answers with the count
// once the caller closed its side (a failure of the input, cancellation included, ends the handler).
struct gated_fn {
  std::shared_ptr<asio::steady_timer> gate;
  stream_generator<payload> operator()(payload, stream_input<payload> in) const { return run(gate, std::move(in)); }
  static asio::awaitable<void> wait_gate(std::shared_ptr<asio::steady_timer> gate) {
    try {
      co_await gate->async_wait(asio::use_awaitable);
    } catch (const std::system_error&) { // opened
    }
  }
  static stream_generator<payload> run(std::shared_ptr<asio::steady_timer> gate, stream_input<payload> in) {
    co_await wait_gate(gate);
    int n = 0;
    for (;;) {
      auto r = co_await in.next();
      if (!r) {
        if (r.error() != errc::end_of_stream) throw cogrid::exception(r.error());
        break;
      }
      if (text(*r) != "req-" + std::to_string(n)) throw std::runtime_error("out of order: " + text(*r));
      ++n;
    }
    payload count = bytes(std::to_string(n));
    co_yield std::move(count);
  }
};

asio::awaitable<void> send_all(client_stream<payload, payload>& s, int n, std::shared_ptr<std::atomic<int>> sent) {
  for (int i = 0; i < n; ++i) {
    auto r = co_await s.send(bytes("req-" + std::to_string(i)));
    if (!r) co_return;
    sent->fetch_add(1);
  }
  (void)s.close_send();
}

asio::awaitable<void> st_in_congestion(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  auto gate = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  const bidi_stream_raw gated{handler_id{63}, stream_capacity{5, 1}};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(gated.serve(g.node(i), gated_fn{gate}));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  const payload none;
  auto s = co_await gated.open(*g.link(0, 1), none);
  REQUIRE(s);
  auto sent = std::make_shared<std::atomic<int>>(0);
  asio::co_spawn(ex, send_all(*s, 100, sent), asio::detached);
  // The handler reads nothing yet: the caller may send its 5 credits and no more.
  auto five = [&] { return sent->load() == 5; };
  CHECK(co_await eventually(five));
  co_await sleep_for(100ms);
  CHECK(sent->load() == 5);
  gate->cancel();
  auto r = co_await s->next();
  REQUIRE(r);
  CHECK(text(*r) == "100");
  CHECK(sent->load() == 100);
  auto end = co_await s->next();
  CHECK(end == errc::end_of_stream);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("server in-congestion: capacity 5, 100 requests while the handler is blocked") { run_async(st_in_congestion); }

struct typed_stream_fn {
  static stream_generator<test_response> run(call_context ctx, test_request p, stream_input<test_request> in) {
    while (auto r = co_await in.next()) {
      test_response out{r->Num, r->String, p.String + "@" + ctx.conn->local()};
      co_yield std::move(out);
    }
  }
  stream_generator<test_response> operator()(call_context ctx, test_request p, stream_input<test_request> in) const {
    return run(std::move(ctx), std::move(p), std::move(in));
  }
};

asio::awaitable<void> st_typed(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  const bidi_stream<test_request, test_response, test_request> typed_stream{handler_id{78}, join_route({"subroute", "1"})};
  const bidi_stream<test_request, test_response, test_request> other_route{handler_id{78}, "subroute"};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(typed_stream.serve(g.node(i), typed_stream_fn{}));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  const test_request init{0, "init"};
  auto s = co_await typed_stream.open(*g.link(1, 0), init);
  REQUIRE(s);
  for (int i = 0; i < 10; ++i) {
    const test_request q{i, "s" + std::to_string(i)};
    auto sent = co_await s->send(q);
    CHECK(sent);
    auto r = co_await s->next();
    REQUIRE(r);
    CHECK(r->OrgNum == i);
    CHECK(r->OrgString == q.String);
    CHECK(r->Embedded == "init@" + g.host(0));
  }
  CHECK(s->close_send());
  auto end = co_await s->next();
  CHECK(end == errc::end_of_stream);
  // The parent route is another handler: not registered.
  auto o = co_await other_route.open(*g.link(1, 0), init);
  CHECK(o.error().code == errc::unknown_handler);
  // A response that does not decode as the declared type ends the stream with bad_payload.
  const bidi_stream<test_request, std::vector<int>, test_request> wrong{handler_id{78}, join_route({"subroute", "1"})};
  auto w = co_await wrong.open(*g.link(1, 0), init);
  REQUIRE(w);
  const test_request q{1, "x"};
  auto sent = co_await w->send(q);
  CHECK(sent);
  auto bad = co_await w->next();
  CHECK_FALSE(bad);
  CHECK(bad.error().code == errc::bad_payload);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("typed streams over nested subroutes") { run_async(st_typed); }

asio::awaitable<void> st_no_ping(asio::any_io_executor ex) {
  testing::grid g(ex, 2, relaxed_links(50ms, 400ms, 600ms));
  auto seen = std::make_shared<observed>();
  const server_stream_raw oneway{handler_id{60}, 1};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(oneway.serve(g.node(i), blocking_fn{seen, false}));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto c = g.link(0, 1);
  const auto session = c->session_id();
  auto s = co_await oneway.open(*c, bytes("first"));
  REQUIRE(s);
  CHECK(text((co_await s->next()).value()) == "first");
  // Node 1 stops handling what node 0 sends: no pings reach the handler's side, no pongs come back.
  g.block_inbound(1, 0, true);
  auto end = co_await s->next();
  CHECK_FALSE(end);
  CHECK(end.error().code == errc::disconnected);
  auto server_gave_up = [&] { return seen->cancelled.load() == 1; };
  CHECK(co_await eventually(server_gave_up));
  g.block_inbound(1, 0, false);
  CHECK(c->session_id() == session); // the connection itself was never dropped
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("no ping: both sides end the stream, the connection stays") { run_async(st_no_ping); }

asio::awaitable<void> st_ping_while_blocked(asio::any_io_executor ex) {
  testing::grid g(ex, 2, relaxed_links(50ms, 300ms, 500ms));
  auto gate = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  const bidi_stream_raw gated{handler_id{63}, stream_capacity{5, 1}};
  for (std::size_t i = 0; i < 2; ++i) {
    REQUIRE(gated.serve(g.node(i), gated_fn{gate}));
    REQUIRE(count_stream.serve(g.node(i), count_gen));
  }
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  // The caller does not read for 4 pong timeouts: pings keep the stream alive (MinIO #19743).
  auto s = co_await count_stream.open(*g.link(0, 1), bytes("5"));
  REQUIRE(s);
  co_await sleep_for(1200ms);
  int n = 0;
  error end;
  for (;;) {
    auto r = co_await s->next();
    if (!r) {
      end = r.error();
      break;
    }
    CHECK(text(*r) == "resp-" + std::to_string(n++));
  }
  CHECK(n == 5);
  CHECK(end == errc::end_of_stream);
  // The handler does not read for 2 server timeouts: the caller's pings keep it alive too.
  const payload none;
  auto t = co_await gated.open(*g.link(0, 1), none);
  REQUIRE(t);
  auto sent = co_await t->send(bytes("req-0"));
  CHECK(sent);
  co_await sleep_for(1000ms);
  gate->cancel();
  CHECK(t->close_send());
  CHECK(text((co_await t->next()).value()) == "1");
  auto t_end = co_await t->next();
  CHECK(t_end == errc::end_of_stream);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("pings keep running while the consumer or the handler is blocked") { run_async(st_ping_while_blocked); }

asio::awaitable<void> st_burst(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  const server_stream_raw wide{handler_id{64}, 8};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(wide.serve(g.node(i), count_gen));
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  // A fast burst then EOF, read late: every response arrives before the end (MinIO #21122).
  auto s = co_await wide.open(*g.link(0, 1), bytes("1000"));
  REQUIRE(s);
  co_await sleep_for(100ms);
  int n = 0;
  error end;
  for (;;) {
    auto r = co_await s->next();
    if (!r) {
      end = r.error();
      break;
    }
    if (text(*r) != "resp-" + std::to_string(n)) break;
    ++n;
  }
  CHECK(n == 1000);
  CHECK(end == errc::end_of_stream);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("a burst of responses then EOF delivers every response before the end") { run_async(st_burst); }

asio::awaitable<void> one_stream(std::shared_ptr<connection> c, int i, std::shared_ptr<std::atomic<int>> ok) {
  const payload none;
  auto s = co_await echo_stream.open(*c, none);
  if (!s) co_return;
  const std::string want = "stream-" + std::to_string(i);
  auto sent = co_await s->send(bytes(want));
  if (!sent) co_return;
  auto r = co_await s->next();
  if (!r || text(*r) != want) co_return;
  (void)s->close_send();
  auto end = co_await s->next();
  if (!(end == errc::end_of_stream)) co_return;
  ok->fetch_add(1);
}

asio::awaitable<void> st_many(asio::any_io_executor ex) {
  testing::grid g(ex, 2, relaxed_links(1s, 30s, 60s));
  serve_test_handlers(g);
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  constexpr int n = 1000;
  auto ok = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < n; ++i) asio::co_spawn(ex, one_stream(g.link(i % 2, 1 - i % 2), i, ok), asio::detached);
  auto all = [&] { return ok->load() == n; };
  CHECK(co_await eventually(all, 30s));
  CHECK(ok->load() == n);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("1,000 concurrent streams (two io threads)") { run_async(st_many, std::chrono::seconds(60), 2); }

namespace {
struct unary_then_flag {
  std::shared_ptr<connection> c;
  std::shared_ptr<std::atomic<int>> done; // 1: the call succeeded, 2: it failed
};
asio::awaitable<void> call_and_flag(unary_then_flag u) {
  auto r = co_await echo_call.call(*u.c, bytes("ping"));
  u.done->store(r && text(*r) == "ping" ? 1 : 2);
}

// A caller's coroutine that goes on computing after next() returned a waiting response (and, with it, a
// credit that woke the connection's writer) must not hold the connection: a unary call on the same
// connection, from the other thread, completes meanwhile. (The hand-off to the writer's strand used to
// be queued as a continuation on the computing thread's private queue, blocking the connection's
// reader, writer and timers until the computation returned.)
asio::awaitable<void> st_busy_consumer(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  serve_test_handlers(g);
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto s = co_await count_stream.open(*g.link(0, 1), bytes("3"));
  REQUIRE(s);
  auto first = co_await s->next(); // the credit for the second response goes out from here
  REQUIRE(first);
  CHECK(text(*first) == "resp-0");
  auto done = std::make_shared<std::atomic<int>>(0);
  asio::co_spawn(ex, call_and_flag(unary_then_flag{g.link(0, 1), done}), asio::detached);
  // Keep this thread busy (as user code may) until the call completes on the other one, or give up.
  busy_until([&] { return done->load() != 0; });
  CHECK(done->load() == 1);
  for (int i = 1; i < 3; ++i) {
    auto r = co_await s->next();
    REQUIRE(r);
    CHECK(text(*r) == "resp-" + std::to_string(i));
  }
  auto end = co_await s->next();
  CHECK_FALSE(end);
  CHECK(end.error().code == errc::remote_error);
  co_await assert_no_active(g);
  co_await g.shutdown();
}
} // namespace

TEST_CASE("a consumer that computes after next() does not hold the connection (two io threads)") {
  run_async(st_busy_consumer, std::chrono::seconds(30), 2);
}

asio::awaitable<void> st_disconnect(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  auto seen = std::make_shared<observed>();
  const bidi_stream_raw twoway{handler_id{62}, stream_capacity{1, 1}};
  for (std::size_t i = 0; i < 2; ++i) REQUIRE(twoway.serve(g.node(i), blocking_input_fn{seen}));
  serve_test_handlers(g);
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  const payload none;
  auto s = co_await twoway.open(*g.link(0, 1), none);
  REQUIRE(s);
  auto sent = co_await s->send(bytes("a"));
  CHECK(sent);
  CHECK(text((co_await s->next()).value()) == "a");
  g.kill(1, 0);
  auto end = co_await s->next();
  CHECK_FALSE(end);
  CHECK(end.error().code == errc::disconnected);
  auto handler_stopped = [&] { return seen->cancelled.load() == 1; };
  CHECK(co_await eventually(handler_stopped));
  auto back = co_await g.wait_all_connected();
  REQUIRE(back);
  auto again = co_await echo_stream.open(*g.link(0, 1), none);
  REQUIRE(again);
  auto sent_again = co_await again->send(bytes("b"));
  CHECK(sent_again);
  CHECK(text((co_await again->next()).value()) == "b");
  again->cancel();
  co_await assert_no_active(g);
  co_await g.shutdown();
}
TEST_CASE("a connection that dies mid-stream ends both sides; streams work after the reconnect") {
  run_async(st_disconnect);
}

namespace {

// Stands in for a misbehaving peer: records what arrives and lets the test send raw stream messages.
struct recorder final : message_sink {
  struct item {
    std::uint64_t mux;
    std::uint32_t seq;
    op_code op;
    msg_flags flags;
    std::string text;
  };
  std::mutex mu;
  std::vector<item> got;
  std::function<void(connection&, const message&)> react;

  void on_message(connection& c, const message& m) override {
    {
      std::lock_guard lk(mu);
      got.push_back({m.mux_id, m.seq, m.op, m.flags, m.payload ? text(payload(std::vector<std::byte>(m.payload->begin(), m.payload->end()))) : ""});
    }
    if (react) react(c, m);
  }
  void on_session_end(connection&, std::uint64_t, std::error_code) override {}

  std::optional<item> find(std::uint64_t mux, op_code op) {
    std::lock_guard lk(mu);
    for (auto& i : got)
      if (i.mux == mux && i.op == op) return i;
    return std::nullopt;
  }
};

message raw(std::uint64_t mux, std::uint32_t seq, op_code op, msg_flags flags = msg_flags::none) {
  message m;
  m.mux_id = mux;
  m.seq = seq;
  m.op = op;
  m.flags = flags;
  return m;
}

} // namespace

asio::awaitable<void> st_hostile_caller(asio::any_io_executor ex) {
  testing::grid g(ex, 3);
  auto seen = std::make_shared<observed>();
  auto gate = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  const bidi_stream_raw gated{handler_id{63}, stream_capacity{1, 1}};
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(gated.serve(g.node(i), gated_fn{gate}));
    REQUIRE(echo_stream.serve(g.node(i), echo_gen));
  }
  recorder rogue;
  g.node(0).set_sink(&rogue); // node 0 speaks raw messages
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  auto c = g.link(0, 1);
  const auto session = c->session_id();

  // Two requests on one credit while the handler is blocked: "handler blocked", the stream closes.
  message open = raw(1000, 0, op_code::connect_mux);
  open.handler = handler_id{63};
  REQUIRE(c->send(open));
  auto acked = [&] { return rogue.find(1000, op_code::ack_mux).has_value(); };
  REQUIRE(co_await eventually(acked));
  CHECK(rogue.find(1000, op_code::ack_mux)->seq == 0);
  REQUIRE(c->send(raw(1000, 1, op_code::mux_client_msg)));
  REQUIRE(c->send(raw(1000, 2, op_code::mux_client_msg)));
  auto told = [&] { return rogue.find(1000, op_code::disconnect_client_mux).has_value(); };
  REQUIRE(co_await eventually(told));
  auto d = *rogue.find(1000, op_code::disconnect_client_mux);
  CHECK(has(d.flags, msg_flags::payload_is_err));
  CHECK(d.text == "handler blocked");

  // A wrong sequence number.
  open.mux_id = 1001;
  REQUIRE(c->send(open));
  REQUIRE(c->send(raw(1001, 5, op_code::mux_client_msg)));
  auto told2 = [&] { return rogue.find(1001, op_code::disconnect_client_mux).has_value(); };
  REQUIRE(co_await eventually(told2));
  CHECK(rogue.find(1001, op_code::disconnect_client_mux)->text == "receive sequence number mismatch. want 1, got 5");

  // Stateless streams are refused; data for an unknown mux is answered with a disconnect; a ping for an
  // unknown mux gets a "not found" pong.
  message stateless = raw(1002, 0, op_code::connect_mux, msg_flags::stateless);
  stateless.handler = handler_id{63};
  REQUIRE(c->send(stateless));
  REQUIRE(c->send(raw(1003, 1, op_code::mux_client_msg)));
  REQUIRE(c->send(raw(1004, 1, op_code::ping)));
  auto answered = [&] {
    return rogue.find(1002, op_code::mux_connect_error) && rogue.find(1003, op_code::disconnect_client_mux) &&
           rogue.find(1004, op_code::pong);
  };
  REQUIRE(co_await eventually(answered));
  CHECK(rogue.find(1002, op_code::mux_connect_error)->text.find("Stateless streams not supported") != std::string::npos);

  // The connection and everyone else are unaffected.
  CHECK(c->session_id() == session);
  CHECK(c->state() == connection_state::connected);
  auto closed = [&] { return g.link(1, 0)->stats().streams_in == 0; };
  CHECK(co_await eventually(closed));
  CHECK(g.link(1, 0)->stats().stream_errors == 2);
  const payload none;
  auto s = co_await echo_stream.open(*g.link(2, 1), none);
  REQUIRE(s);
  auto sent = co_await s->send(bytes("still serving"));
  CHECK(sent);
  CHECK(text((co_await s->next()).value()) == "still serving");
  s->cancel();
  gate->cancel();
  co_await g.shutdown();
}
TEST_CASE("a caller that breaks credit or sequence rules loses its stream, not the connection") {
  run_async(st_hostile_caller);
}

asio::awaitable<void> st_hostile_server(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  recorder rogue;
  // Node 1 acknowledges and then sends responses without waiting for credits (or with a bad number).
  rogue.react = [](connection& c, const message& m) {
    if (m.op != op_code::connect_mux) return;
    if (m.handler == handler_id{61}) {
      (void)cogrid::detail::connection_access::send(c, raw(m.mux_id, 5, op_code::ack_mux), true, cogrid::detail::handoff::fresh);
      return;
    }
    (void)cogrid::detail::connection_access::send(c, raw(m.mux_id, 0, op_code::ack_mux), true, cogrid::detail::handoff::fresh);
    for (std::uint32_t i = 1; i <= 3; ++i) {
      message r = raw(m.mux_id, i, op_code::mux_server_msg);
      const std::string body = "r" + std::to_string(i);
      r.payload = std::as_bytes(std::span(body.data(), body.size()));
      (void)cogrid::detail::connection_access::send(c, r, true, cogrid::detail::handoff::fresh);
    }
  };
  g.node(1).set_sink(&rogue);
  g.start();
  auto up = co_await g.wait_all_connected();
  REQUIRE(up);
  const server_stream_raw s60{handler_id{60}, 1};
  const payload none;
  auto s = co_await s60.open(*g.link(0, 1), none);
  REQUIRE(s);
  // The first response fits the one credit; the second breaks the rule and ends the stream.
  std::vector<std::string> got;
  const error end = co_await drain(*s, got);
  CHECK(got == std::vector<std::string>{"r1"});
  CHECK(end.code == errc::credit_violation);
  CHECK(end.code == condition::protocol_violation);
  auto cancelled = [&] { return rogue.find(1, op_code::disconnect_server_mux).has_value(); };
  CHECK(co_await eventually(cancelled)); // the handler is told to stop
  // An acknowledgement with the wrong number.
  const server_stream_raw s61{handler_id{61}, 1};
  auto t = co_await s61.open(*g.link(0, 1), none);
  CHECK(t.error().code == errc::out_of_sequence);
  CHECK(g.link(0, 1)->state() == connection_state::connected);
  CHECK(g.link(0, 1)->stats().stream_errors == 2);
  CHECK(g.link(0, 1)->stats().streams_out == 0);
  co_await g.shutdown();
}
TEST_CASE("a handler's side that ignores credits or numbering ends the stream with a clear error") {
  run_async(st_hostile_server);
}

TEST_SUITE_END();
