// Large payloads: size limits told between nodes and checked by the sender, payloads cut into pieces
// with the link's small messages going between them, pieces put together again, and what a peer that
// breaks the piece rules gets (its call or stream ends, not the link).
#include <cogrid/stream.hpp>
#include <cogrid/unary.hpp>

#include <cogrid/testing.hpp>
#include <cogrid/tls.hpp>

#include "net_util.hpp"
#include "grid_helpers.hpp"
#include "test_types.hpp"
#include "tls_util.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

using namespace cogrid;
using namespace std::chrono_literals;
using cogrid_test::echo_fn;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;

namespace {

const unary_raw echo{handler_id{78}};
// Answers with as many bytes as the request's first 8 bytes say (little endian).
const unary_raw sized{handler_id{80}};
const bidi_stream<payload, payload> echo_stream{handler_id{81}, {4, 4}};

struct sized_fn {
  payload operator()(payload p) const {
    std::uint64_t n = 0;
    if (p && p->size() >= 8)
      for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>((*p)[static_cast<std::size_t>(i)]);
    return std::vector<std::byte>(static_cast<std::size_t>(n), std::byte{0x33});
  }
};

stream_generator<payload> echo_each(stream_input<payload> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

payload pattern(std::size_t n, unsigned seed = 1) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
  return v;
}

payload size_request(std::uint64_t n) {
  std::vector<std::byte> v(8);
  for (std::size_t i = 0; i < 8; ++i) v[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  return v;
}

void serve_all(testing::grid& g) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(echo.serve(g.node(i), echo_fn{}));
    REQUIRE(sized.serve(g.node(i), sized_fn{}));
    REQUIRE(echo_stream.serve(g.node(i), echo_each));
  }
}

// The tests' short ping intervals, with timeouts a loaded machine (a sanitizer build, suites run in
// parallel) does not trip over while large payloads are copied.
void patient(manager_options& o) {
  o.connection.pong_timeout = 5s;
  o.connection.write_timeout = 5s;
}

// Small echoes on `c` until `stop`, counted (a coroutine of its own: it holds what it uses).
asio::awaitable<void> small_calls(std::shared_ptr<connection> c, std::shared_ptr<std::atomic<bool>> stop,
                                  std::shared_ptr<std::atomic<int>> ok, std::shared_ptr<std::atomic<int>> bad) {
  const payload small = pattern(100);
  while (!stop->load()) {
    auto r = co_await echo.call(*c, small);
    (r && *r == small ? *ok : *bad) += 1;
  }
}

std::uint64_t reconnects(testing::grid& g) {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < g.size(); ++i)
    for (auto& c : g.node(i).connections()) n += c->stats().reconnects;
  return n;
}

} // namespace

TEST_SUITE_BEGIN("large");

TEST_CASE("the limits header is parsed and formatted") {
  using detail::grid_limits;
  const auto l = detail::parse_grid_limits(detail::format_grid_limits({64u << 20, 256u << 10}));
  REQUIRE(l);
  CHECK(l->max_message == (64u << 20));
  CHECK(l->piece == (256u << 10));
  const auto any_order = detail::parse_grid_limits(" piece=4096 ;message=100; future=7");
  REQUIRE(any_order);
  CHECK(any_order->max_message == 100);
  CHECK(any_order->piece == 4096);
  CHECK_FALSE(detail::parse_grid_limits(""));
  CHECK_FALSE(detail::parse_grid_limits("piece=4096"));     // no message limit
  CHECK_FALSE(detail::parse_grid_limits("message=12x"));    // not a number
  CHECK_FALSE(detail::parse_grid_limits("message=-1"));
  CHECK_FALSE(detail::parse_grid_limits("message"));
  CHECK_FALSE(detail::parse_grid_limits("message=99999999999999999999999")); // overflow
}

// Payloads around and across the piece size, both directions, calls and a stream; the contents and
// their order survive. Node 0 sends large data with the CRC trailer (large_payload_crc), node 1 without.
asio::awaitable<void> pieces_round_trip(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t i, manager_options& o) {
    patient(o);
    o.connection.piece_bytes = 4096;
    o.connection.large_payload_crc = i == 0;
  });
  serve_all(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  for (const std::size_t n : {std::size_t{0}, std::size_t{4095}, std::size_t{4096}, std::size_t{4097}, std::size_t{3 * 4096 + 7},
                              std::size_t{1} << 20}) {
    for (const auto& [from, to] : {std::pair{0, 1}, std::pair{1, 0}}) {
      const payload body = pattern(n, static_cast<unsigned>(n));
      auto r = co_await echo.call(*g.link(from, to), body);
      REQUIRE_MESSAGE(r, n, " ", (r ? std::string() : r.error().message()));
      REQUIRE(r->has_value());
      CHECK_MESSAGE(**r == *body, n);
    }
  }
  // A stream: large and small messages mixed keep their order.
  auto s = co_await echo_stream.open(*g.link(0, 1));
  REQUIRE(s);
  std::vector<payload> sent;
  for (unsigned i = 0; i < 12; ++i) sent.push_back(pattern(i % 3 == 0 ? 20000 + i : 10 + i, i));
  auto reader = [&]() -> asio::awaitable<std::size_t> {
    std::size_t got = 0;
    for (auto r = co_await s->next(); r; r = co_await s->next()) {
      if (got < sent.size()) CHECK_MESSAGE(*r == sent[got], got);
      ++got;
    }
    co_return got;
  };
  auto done = std::make_shared<std::atomic<std::size_t>>(~std::size_t{0});
  asio::co_spawn(ex, reader(), [done](std::exception_ptr, std::size_t n) { *done = n; });
  for (const auto& p : sent) {
    const result<void> ok = co_await s->send(p);
    REQUIRE(ok);
  }
  (void)s->close_send();
  auto all_back = [&] { return done->load() == sent.size(); };
  CHECK(co_await eventually(all_back));
  CHECK(reconnects(g) == 0);
  const auto st = g.link(0, 1)->stats();
  CHECK(st.refused_in == 0);
  co_await g.shutdown();
}
TEST_CASE("payloads around and across the piece size survive, in order, both ways") { run_async(pieces_round_trip); }

// Node 0 takes at most 1 MiB; node 1 the default 64 MiB.
asio::awaitable<void> refused_locally(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t i, manager_options& o) {
    patient(o);
    if (i == 0) o.connection.max_message_bytes = 1u << 20;
  });
  serve_all(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto& to0 = *g.link(1, 0);
  auto& to1 = *g.link(0, 1);
  // Calls keep going on the link meanwhile.
  auto stop = std::make_shared<std::atomic<bool>>(false);
  auto ok = std::make_shared<std::atomic<int>>(0), bad = std::make_shared<std::atomic<int>>(0);
  asio::co_spawn(ex, small_calls(g.link(0, 1), stop, ok, bad), asio::detached);
  const auto before = to0.stats();
  // To node 0, over its limit: refused here, at once, naming the size and the limit.
  const payload big = pattern((1u << 20) + 1);
  auto r = co_await echo.call(to0, big);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::payload_too_large);
  CHECK(r.error().message().find("1048577") != std::string::npos);
  CHECK(r.error().message().find("1048576") != std::string::npos);
  const auto after = to0.stats();
  CHECK(after.bytes_out - before.bytes_out < 1000); // nothing of it was sent
  // Exactly at the limit: goes through (in pieces).
  const payload at_limit = pattern(1u << 20);
  auto r2 = co_await echo.call(to0, at_limit);
  REQUIRE(r2);
  CHECK(**r2 == *at_limit);
  // A stream message over the limit: refused at send, the stream goes on.
  auto s = co_await echo_stream.open(to0);
  REQUIRE(s);
  const result<void> sent = co_await s->send(big);
  REQUIRE_FALSE(sent);
  CHECK(sent.error().code == errc::payload_too_large);
  const payload hello = pattern(5);
  REQUIRE(co_await s->send(hello));
  auto back = co_await s->next();
  REQUIRE(back);
  CHECK(*back == hello);
  (void)s->close_send();
  // A handler on node 1 whose response is over node 0's limit: that call fails with a remote error.
  const payload ask = size_request((1u << 20) + 10);
  auto r3 = co_await sized.call(to1, ask);
  REQUIRE_FALSE(r3);
  CHECK(r3.error().code == errc::remote_error);
  CHECK(r3.error().message().find("over the limit") != std::string::npos);
  // Within the limit, the same handler answers.
  const payload ask_ok = size_request(1000);
  auto r4 = co_await sized.call(to1, ask_ok);
  REQUIRE(r4);
  CHECK((*r4)->size() == 1000);
  stop->store(true);
  co_await sleep_for(20ms);
  CHECK(ok->load() > 0);
  CHECK(bad->load() == 0);
  CHECK(reconnects(g) == 0);
  co_await g.shutdown();
}
TEST_CASE("a payload over the peer's limit is refused locally; the link and its other calls go on") { run_async(refused_locally); }

// A small call started while a 64 MiB echo is under way finishes first.
asio::awaitable<void> no_head_of_line(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) { patient(o); });
  serve_all(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto& c = *g.link(0, 1);
  auto big_done = std::make_shared<std::atomic<bool>>(false);
  auto big_ok = std::make_shared<std::atomic<bool>>(false);
  const payload big = pattern(64u << 20);
  const auto before = c.stats().bytes_out;
  auto big_call = [&c, &big, big_done, big_ok]() -> asio::awaitable<void> {
    const call_options opt{60s};
    auto r = co_await echo.call(c, big, opt);
    *big_ok = r && r->has_value() && (*r)->size() == big->size() && **r == *big;
    *big_done = true;
  };
  asio::co_spawn(ex, big_call(), asio::detached);
  // Once its first pieces left, a small call.
  auto started = [&] { return c.stats().bytes_out - before > (1u << 20); };
  REQUIRE(co_await eventually(started, 30s));
  CHECK_FALSE(big_done->load());
  const payload small = pattern(64);
  auto r = co_await echo.call(c, small);
  REQUIRE(r);
  CHECK(*r == small);
  CHECK_FALSE(big_done->load()); // the small call did not wait for the transfer
  auto finished = [&] { return big_done->load(); };
  REQUIRE(co_await eventually(finished, 60s));
  CHECK(big_ok->load());
  CHECK(reconnects(g) == 0);
  co_await g.shutdown();
}
TEST_CASE("a small call started during a 64 MiB transfer completes before it") { run_async(no_head_of_line); }

// A peer that breaks the piece rules: raw messages sent with connection::send, as a hostile or broken
// node would. The call they belong to ends; the link and other calls go on. Node 0 cuts nothing itself
// (piece_bytes 0), so that what it is told to send goes as it is.
// With pieces of `p` bytes and a message limit of 16 pieces; over TLS (no message has a CRC trailer there)
// or plain TCP.
asio::awaitable<void> broken_pieces_of(asio::any_io_executor ex, std::size_t p, bool tls) {
  const auto cert = cogrid_test::make_test_cert();
  auto server = make_server_tls_context(cert.cert_pem, cert.key_pem);
  auto client = make_client_tls_context(cert.cert_pem);
  testing::grid g(ex, 2, [&](std::size_t i, manager_options& o) {
    patient(o);
    o.connection.piece_bytes = i == 0 ? 0 : p;
    o.connection.max_message_bytes = 16 * p;
    if (tls) {
      for (auto& h : o.hosts) h.replace(0, 4, "https");
      o.local.replace(0, 4, "https");
      o.tls_client = client;
      o.tls_server = server;
    }
  });
  serve_all(g);
  g.start();
  const std::string scheme = tls ? "https" : "http";
  const std::string h0 = scheme + g.host(0).substr(4), h1 = scheme + g.host(1).substr(4);
  const std::shared_ptr<connection> c01 = g.node(0).connection(h1), c10 = g.node(1).connection(h0);
  REQUIRE(c01);
  REQUIRE(c10);
  REQUIRE(co_await c01->wait_for_connect());
  REQUIRE(co_await c10->wait_for_connect());
  auto& c = *c01;
  auto& remote = *c10;
  const auto late_before = c.stats().late_responses;
  auto piece = [](std::uint64_t mux, std::size_t n, bool more) {
    auto body = std::make_shared<std::vector<std::byte>>(n, std::byte{1});
    message m;
    m.mux_id = mux;
    m.handler = handler_id{78};
    m.op = op_code::request;
    m.flags = msg_flags::eof | (more ? msg_flags::more : msg_flags::none);
    return std::pair{m, body};
  };
  // 1. A piece over the piece size.
  {
    auto [m, body] = piece(1'000'001, p + 1, true);
    m.payload = std::span<const std::byte>(*body);
    REQUIRE(c.send(m));
  }
  auto one_refused = [&] { return remote.stats().refused_in == 1; };
  CHECK(co_await eventually(one_refused));
  // 2. Pieces adding up to more than the message limit (17 pieces), then the last piece.
  for (int i = 0; i < 17; ++i) {
    auto [m, body] = piece(1'000'002, p, true);
    m.payload = std::span<const std::byte>(*body);
    REQUIRE(c.send(m));
  }
  {
    auto [m, body] = piece(1'000'002, 10, false);
    m.payload = std::span<const std::byte>(*body);
    REQUIRE(c.send(m));
  }
  auto two_refused = [&] { return remote.stats().refused_in == 2; };
  CHECK(co_await eventually(two_refused));
  // Each refused request was answered with an error for its mux (here: calls nobody made, so counted
  // as late responses), and nothing ran.
  auto answered = [&] { return c.stats().late_responses - late_before == 2; };
  CHECK(co_await eventually(answered));
  // 3. The link is up and works, for a large message too.
  const payload body = pattern(20000);
  auto r = co_await echo.call(c, body);
  REQUIRE(r);
  CHECK(**r == *body);
  const payload large = pattern(5 * p + 17);
  auto rl = co_await echo.call(c, large);
  REQUIRE(rl);
  CHECK(**rl == *large);
  CHECK(remote.stats().protocol_errors == 0);
  CHECK(reconnects(g) == 0);
  co_await g.shutdown();
}
asio::awaitable<void> broken_small_pieces(asio::any_io_executor ex) {
  const std::size_t p = 4096;
  co_await broken_pieces_of(ex, p, false);
}
asio::awaitable<void> broken_large_pieces(asio::any_io_executor ex) {
  const std::size_t p = 128 * 1024;
  co_await broken_pieces_of(ex, p, true);
}
TEST_CASE("a peer that sends an oversized piece or too many pieces ends that call, not the link") {
  run_async(broken_small_pieces);
}
TEST_CASE("the same over TLS, with pieces of 128 KiB") {
  run_async(broken_large_pieces);
}

// Pieces go no further ahead of the peer's acknowledgements than the window: with the peer's reader
// discarding what it reads (no acknowledgement comes), the sender stops after about a window.
asio::awaitable<void> window_bounds(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) {
    patient(o);
    o.connection.piece_bytes = 64u << 10;
    o.connection.piece_window_bytes = 256u << 10;
  });
  serve_all(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto& c = *g.link(0, 1);
  const auto before = c.stats().bytes_out;
  g.block_inbound(1, 0, true);
  const payload big = pattern(8u << 20);
  const call_options opt{300ms};
  auto r = co_await echo.call(c, big, opt); // nothing comes back: the deadline ends it
  CHECK(r.error().code == errc::timeout);
  const auto sent = c.stats().bytes_out - before;
  CHECK(sent >= (256u << 10));
  CHECK(sent < (256u << 10) + (64u << 10) + 4096); // the window and at most one piece over it, not 8 MiB
  // The discarded pieces are never acknowledged: a new session starts the count afresh.
  g.block_inbound(1, 0, false);
  g.kill(0, 1);
  auto up = [&] { return c.state() == connection_state::connected && c.stats().reconnects > 0; };
  REQUIRE(co_await eventually(up));
  auto r2 = co_await echo.call(c, big);
  REQUIRE(r2);
  CHECK(**r2 == *big);
  co_await g.shutdown();
}
TEST_CASE("pieces go no further ahead of the peer's acknowledgements than the window") { run_async(window_bounds); }

// A node that takes no pieces (piece_bytes 0, as a MinIO node behaves) is sent none: large payloads go
// whole, up to its limit.
asio::awaitable<void> no_pieces_peer(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t i, manager_options& o) {
    if (i == 1) o.connection.piece_bytes = 0;
    o.connection.ping_interval = 10s; // no pong in the count below
    o.connection.pong_timeout = 20s;
  });
  serve_all(g);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto& c = *g.link(0, 1);
  const auto before = c.stats();
  const payload body = pattern(3u << 20);
  auto r = co_await echo.call(c, body);
  REQUIRE(r);
  CHECK(**r == *body);
  const auto after = c.stats();
  CHECK(after.messages_out - before.messages_out == 1); // one message, not 12 pieces
  CHECK(g.link(1, 0)->stats().refused_in == 0);
  co_await g.shutdown();
}
TEST_CASE("a peer that takes no pieces gets large payloads whole") { run_async(no_pieces_peer); }

TEST_SUITE_END();
