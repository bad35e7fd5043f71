#include <cogrid/transport.hpp>

#include <cogrid/stream.hpp>
#include <cogrid/testing.hpp>
#include <cogrid/unary.hpp>

#include "net_util.hpp"
#include "grid_helpers.hpp"
#include "test_types.hpp"

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>

#include <doctest/doctest.h>

#include <unistd.h>

using namespace cogrid;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using cogrid_test::bytes;
using cogrid_test::echo_fn;
using cogrid_test::echo_gen;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;
using cogrid_test::text;

namespace {

const unary_raw echo{handler_id{78}};
const bidi_stream_raw echo_stream{handler_id{78}, "echo"};



void serve_all(testing::grid& g) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(echo.serve(g.node(i), echo_fn{}));
    REQUIRE(echo_stream.serve(g.node(i), echo_gen));
  }
}

// One unary echo and one stream of three echoes from node i to node j; true when all came back right.
asio::awaitable<bool> round_trip(testing::grid& g, std::size_t i, std::size_t j, std::string tag) {
  auto c = g.link(i, j);
  payload req = bytes(tag);
  call_options opt{2s};
  auto r = co_await echo.call(*c, req, opt);
  if (!r || text(*r) != tag) co_return false;
  payload init;
  stream_options so{2s};
  auto s = co_await echo_stream.open(*c, init, so);
  if (!s) co_return false;
  for (int k = 0; k < 3; ++k) {
    payload m = bytes(tag + std::to_string(k));
    const result<void> sent = co_await s->send(m); // named: GCC 12 and non-trivial co_await results in conditions
    if (!sent) co_return false;
  }
  (void)s->close_send();
  int got = 0;
  for (;;) {
    auto m = co_await s->next();
    if (!m) co_return got == 3 && m == errc::end_of_stream; // all three, then a clean end
    if (text(*m) != tag + std::to_string(got)) co_return false;
    ++got;
  }
}

std::vector<std::byte> fill(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 7 + 3);
  return v;
}

// Reads exactly n bytes (or until an error), appending to `out`.
asio::awaitable<std::error_code> read_n(transport& t, std::size_t n, std::vector<std::byte>& out) {
  std::vector<std::byte> buf(4096);
  std::error_code ec;
  while (out.size() < n) {
    const std::size_t k = co_await t.read_some(asio::buffer(buf.data(), std::min(buf.size(), n - out.size())), ec);
    if (ec) co_return ec;
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(k));
  }
  co_return std::error_code{};
}

asio::awaitable<std::error_code> write_all(transport& t, std::vector<std::byte>& bytes) {
  std::error_code ec;
  co_await t.write_all(asio::buffer(bytes), ec);
  co_return ec;
}

} // namespace

TEST_SUITE_BEGIN("transport");

TEST_CASE("memory pipe: bytes in order both ways, a writer held back by an unread 256 KiB, EOF after close") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto [a, b] = make_memory_pipe(ex, "to-b", "to-a");
    CHECK(a->peer() == "to-b");
    CHECK(b->peer() == "to-a");
    // 1 MiB in one write: the writer can hand it over only while less than 256 KiB is unread, so it
    // completes at once here (nothing unread), and the next write waits for the reader.
    auto big = fill(1u << 20);
    CHECK(!co_await write_all(*a, big));
    std::vector<std::byte> small{std::byte{1}, std::byte{2}};
    std::vector<std::byte> got;
    auto r = co_await (write_all(*a, small) || sleep_for(50ms));
    CHECK(r.index() == 1); // still waiting: 1 MiB is unread
    CHECK(!co_await read_n(*b, big.size(), got));
    CHECK(got == big);
    CHECK(!co_await write_all(*a, small)); // room again
    got.clear();
    CHECK(!co_await read_n(*b, 2, got));
    CHECK(got == small);
    // The other direction.
    std::vector<std::byte> back = fill(1000);
    CHECK(!co_await write_all(*b, back));
    got.clear();
    CHECK(!co_await read_n(*a, back.size(), got));
    CHECK(got == back);
    CHECK(a->writes() == 2); // the write cancelled while waiting is not counted
    // Close: the peer reads what was written, then EOF; its writes fail; our own reads fail.
    CHECK(!co_await write_all(*a, small));
    a->close();
    a->close(); // idempotent
    got.clear();
    CHECK(!co_await read_n(*b, 2, got));
    got.clear();
    CHECK(co_await read_n(*b, 1, got) == asio::error::eof);
    CHECK(co_await write_all(*b, small) == asio::error::broken_pipe);
    CHECK(co_await read_n(*a, 1, got) == asio::error::bad_descriptor);
  });
}

TEST_CASE("memory pipe: a pending read is ended by the peer's close, by its own close and by cancellation") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    {
      auto [a, b] = make_memory_pipe(ex);
      std::vector<std::byte> got;
      auto r = co_await (read_n(*a, 1, got) || sleep_for(30ms)); // cancelled by the timer
      CHECK(r.index() == 1);
      // The pipe still works after a cancelled read.
      std::vector<std::byte> one{std::byte{9}};
      CHECK(!co_await write_all(*b, one));
      CHECK(!co_await read_n(*a, 1, got));
      CHECK(got == one);
    }
    {
      auto [a, b] = make_memory_pipe(ex);
      transport* bp = b.get();
      asio::steady_timer t(ex, 20ms);
      t.async_wait([bp](std::error_code) { bp->close(); });
      std::vector<std::byte> got;
      CHECK(co_await read_n(*a, 1, got) == asio::error::eof);
    }
    {
      auto [a, b] = make_memory_pipe(ex);
      transport* ap = a.get();
      asio::steady_timer t(ex, 20ms);
      t.async_wait([ap](std::error_code) { ap->close(); });
      std::vector<std::byte> got;
      CHECK(co_await read_n(*a, 1, got) == asio::error::bad_descriptor);
    }
  });
}

namespace {
// Reads from one end of a pipe: parks in the pipe (not in the io_context) until a byte comes. Its frame
// holds its end, and `token`, until it is destroyed.
asio::awaitable<void> parked_reader(std::unique_ptr<transport> end, std::shared_ptr<int> token) {
  std::vector<std::byte> got;
  (void)co_await read_n(*end, 1, got);
  (void)token;
}
} // namespace

// An io_context destroyed with a coroutine waiting at each end of a pipe: the pipe is severed at the
// context's shutdown, so the frames (which hold the pipe that stores their handlers) are freed with it.
TEST_CASE("memory pipe: readers parked at both ends are freed with their io_context") {
  std::weak_ptr<int> a_alive, b_alive;
  {
    asio::io_context io;
    auto [a, b] = make_memory_pipe(io.get_executor());
    auto t1 = std::make_shared<int>(1), t2 = std::make_shared<int>(2);
    a_alive = t1;
    b_alive = t2;
    asio::co_spawn(io, parked_reader(std::move(a), std::move(t1)), asio::detached);
    asio::co_spawn(io, parked_reader(std::move(b), std::move(t2)), asio::detached);
    io.run_for(std::chrono::milliseconds(50));
    CHECK_FALSE(a_alive.expired()); // parked
    CHECK_FALSE(b_alive.expired());
  }
  CHECK(a_alive.expired());
  CHECK(b_alive.expired());
}

TEST_CASE("memory network: three nodes with no socket call each other, unary and streams, both ways") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    testing::grid g(ex, 3, {}, testing::grid::network::memory);
    serve_all(g);
    g.start();
    REQUIRE(co_await g.wait_all_connected());
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 3; ++j)
        if (i != j) CHECK(co_await round_trip(g, i, j, "m" + std::to_string(i) + std::to_string(j)));
    CHECK(g.memory().dials() == 3); // one pipe per pair
    for (std::size_t i = 0; i < 3; ++i) {
      CHECK(g.node(i).rejections().empty());
      for (auto& c : g.node(i).connections()) CHECK(c->stats().socket_writes > 0);
    }
    co_await g.shutdown();
  });
}

TEST_CASE("memory network: a killed link reconnects; a host taken off fails fast and comes back") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    testing::grid g(ex, 3, {}, testing::grid::network::memory);
    serve_all(g);
    g.start();
    REQUIRE(co_await g.wait_all_connected());
    auto c01 = g.link(0, 1);
    const auto before = c01->stats().connects;
    g.kill(0, 1);
    auto reconnected = [&] { return c01->stats().connects > before && c01->state() == connection_state::connected; };
    CHECK(co_await eventually(reconnected));
    CHECK(co_await round_trip(g, 0, 1, "after-kill"));

    // Node 2 off the network: its links are cut at once, calls to it fail (disconnected), 0 <-> 1 go on.
    g.set_host_up(2, false);
    auto c02 = g.link(0, 2);
    auto down = [&] { return c02->state() != connection_state::connected && g.link(1, 2)->state() != connection_state::connected; };
    CHECK(co_await eventually(down, 2000ms));
    payload p = bytes("x");
    call_options opt{1s};
    auto r = co_await echo.call(*c02, p, opt);
    REQUIRE(!r);
    CHECK(r.error().code == errc::disconnected);
    payload nil_init;
    auto so = co_await echo_stream.open(*c02, nil_init); // a stream too, at once
    REQUIRE(!so);
    CHECK(so.error().code == errc::disconnected);
    CHECK(co_await round_trip(g, 0, 1, "during"));
    CHECK(co_await round_trip(g, 1, 0, "during"));
    co_await sleep_for(100ms); // dials to the host that is off keep failing
    CHECK(c02->state() != connection_state::connected);

    g.set_host_up(2, true);
    REQUIRE(co_await g.wait_all_connected());
    CHECK(co_await round_trip(g, 0, 2, "back"));
    CHECK(co_await round_trip(g, 2, 1, "back"));
    co_await g.shutdown();
  });
}

namespace {
// True when a unary echo from node i to node j fails within `timeout`.
asio::awaitable<bool> call_fails(testing::grid& g, std::size_t i, std::size_t j, std::chrono::milliseconds timeout) {
  payload p = bytes("x");
  call_options opt{timeout};
  auto r = co_await echo.call(*g.link(i, j), p, opt);
  co_return !r && (r.error().code == errc::disconnected || r.error().code == errc::timeout);
}
} // namespace

TEST_CASE("memory network: partitions of one pair, one way, and of everyone, as raft tests make them") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    testing::grid g(ex, 3, {}, testing::grid::network::memory);
    serve_all(g);
    g.start();
    REQUIRE(co_await g.wait_all_connected());

    // 0 and 1 cut from each other, both ways: their calls fail at once, each still reaches 2.
    g.disconnect(0, 1);
    auto cut01 = [&] { return g.link(0, 1)->state() != connection_state::connected && g.link(1, 0)->state() != connection_state::connected; };
    CHECK(co_await eventually(cut01, 2000ms));
    CHECK(co_await call_fails(g, 0, 1, 1s));
    CHECK(co_await call_fails(g, 1, 0, 1s));
    CHECK(co_await round_trip(g, 0, 2, "around"));
    CHECK(co_await round_trip(g, 2, 1, "around"));
    co_await sleep_for(100ms); // redials keep failing
    CHECK(g.link(0, 1)->state() != connection_state::connected);
    g.reconnect(0, 1);
    REQUIRE(co_await g.wait_all_connected());
    CHECK(co_await round_trip(g, 0, 1, "healed"));

    // One way: what 0 sends 1 is lost. 0's calls to 1 and 1's calls to 0 (whose answers are lost) both
    // time out; the pings notice and the link is dropped; 2 is untouched.
    const auto drops_before = g.link(0, 1)->stats().connects + g.link(1, 0)->stats().connects;
    g.disconnect_one_way(0, 1);
    CHECK(co_await call_fails(g, 0, 1, 300ms));
    CHECK(co_await call_fails(g, 1, 0, 300ms));
    CHECK(co_await round_trip(g, 1, 2, "one-way"));
    CHECK(co_await round_trip(g, 2, 0, "one-way"));
    auto noticed = [&] { return g.link(1, 0)->state() != connection_state::connected || g.link(0, 1)->state() != connection_state::connected; };
    CHECK(co_await eventually(noticed, 3000ms));
    g.reconnect(0, 1);
    REQUIRE(co_await g.wait_all_connected());
    CHECK(co_await round_trip(g, 0, 1, "both ways again"));
    CHECK(co_await round_trip(g, 1, 0, "both ways again"));
    CHECK(g.link(0, 1)->stats().connects + g.link(1, 0)->stats().connects > drops_before);

    // Everyone cut, then everyone back.
    g.memory().disconnect_all();
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 3; ++j)
        if (i != j) CHECK(co_await call_fails(g, i, j, 1s));
    g.memory().reconnect_all();
    REQUIRE(co_await g.wait_all_connected());
    CHECK(co_await round_trip(g, 2, 0, "all back"));
    CHECK(co_await round_trip(g, 1, 2, "all back"));
    co_await g.shutdown();
  });
}

TEST_CASE("membership: a host removed at run time fails its calls and is refused; added back, it is linked again") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    testing::grid g(ex, 3, {}, testing::grid::network::memory);
    serve_all(g);
    g.start();
    REQUIRE(co_await g.wait_all_connected());
    const std::string h2 = g.host(2);
    auto old02 = g.link(0, 2);
    const auto connects01 = g.link(0, 1)->stats().connects;
    std::uint64_t rejected_before = 0;
    for (auto& [why, n] : g.node(0).rejections()) rejected_before += n;

    auto removed = co_await g.node(0).remove_host(h2);
    REQUIRE(removed);
    CHECK(g.node(0).connection(h2) == nullptr);
    CHECK(g.node(0).connections().size() == 1);
    payload p = bytes("x");
    call_options opt{1s};
    auto r = co_await echo.call(*old02, p, opt);
    REQUIRE(!r);
    CHECK(r.error().code == errc::shutdown);
    if (g.link(2, 0)->dialer()) { // node 2 still counts node 0 as a host: its dials are refused
      auto refused = [&] {
        std::uint64_t n = 0;
        for (auto& [why, k] : g.node(0).rejections()) n += k;
        return n > rejected_before;
      };
      CHECK(co_await eventually(refused));
    }
    co_await sleep_for(100ms);
    CHECK(g.link(2, 0)->state() != connection_state::connected);
    // Nothing else was disturbed.
    CHECK(co_await round_trip(g, 0, 1, "undisturbed"));
    CHECK(co_await round_trip(g, 1, 2, "undisturbed"));
    CHECK(g.link(0, 1)->stats().connects == connects01);

    auto again = co_await g.node(0).remove_host(h2);
    CHECK(again == errc::unknown_host);
    CHECK(g.node(0).add_host(g.host(0)) == errc::invalid_value); // this node
    CHECK(g.node(0).add_host(g.host(1)) == errc::invalid_value); // a host already
    CHECK(g.node(0).add_host("no scheme") == errc::invalid_value);

    // Added back: a new link, which comes up and carries calls both ways.
    REQUIRE(g.node(0).add_host(h2));
    auto new02 = g.node(0).connection(h2);
    REQUIRE(new02);
    CHECK(new02 != old02);
    const result<void> up = co_await new02->wait_for_connect();
    REQUIRE(up);
    CHECK(co_await round_trip(g, 0, 2, "added"));
    CHECK(co_await round_trip(g, 2, 0, "added"));
    co_await g.shutdown();
    CHECK(g.node(0).add_host("http://127.0.0.9:1") == errc::shutdown);
  });
}

TEST_CASE("memory network: a wrong token is refused as over TCP") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto configure = [](std::size_t i, manager_options& o) {
      if (i == 1) o.auth = static_token_auth("another-token");
    };
    testing::grid g(ex, 2, configure, testing::grid::network::memory);
    g.start();
    auto refused = [&] {
      std::uint64_t n = 0;
      for (std::size_t i = 0; i < 2; ++i)
        for (auto& [why, count] : g.node(i).rejections()) n += count;
      return n >= 2;
    };
    CHECK(co_await eventually(refused));
    CHECK(g.link(0, 1)->state() != connection_state::connected);
    for (std::size_t i = 0; i < 2; ++i)
      for (auto& [why, count] : g.node(i).rejections()) {
        CHECK(why.find("cogrid-test-token") == std::string::npos); // tokens never in reasons
        CHECK(why.find("another-token") == std::string::npos);
      }
    co_await g.shutdown();
  });
}

namespace {

// Two nodes with no listener and no dialer, joined by streams handed to attach().
struct attached_pair {
  std::vector<std::string> hosts;
  std::unique_ptr<manager> m[2];
  attached_pair(asio::any_io_executor ex, std::string h0, std::string h1) : hosts{std::move(h0), std::move(h1)} {
    for (int i = 0; i < 2; ++i) {
      manager_options o;
      o.local = hosts[i];
      o.hosts = hosts;
      o.auth = static_token_auth("attach-token");
      o.connection = connection_options::for_tests();
      m[i] = std::make_unique<manager>(ex, std::move(o));
      REQUIRE(echo.serve(*m[i], echo_fn{}));
      REQUIRE(echo_stream.serve(*m[i], echo_gen));
    }
  }
  asio::awaitable<bool> call(int from, std::string tag) {
    auto c = m[from]->connection(hosts[1 - from]);
    const result<void> up = co_await c->wait_for_connect(); // named: GCC 12 and non-trivial co_await results in conditions
    if (!up) co_return false;
    payload p = bytes(tag);
    call_options opt{2s};
    auto r = co_await echo.call(*c, p, opt);
    co_return r && text(*r) == tag;
  }
  asio::awaitable<void> shutdown() {
    co_await m[0]->shutdown();
    co_await m[1]->shutdown();
  }
};

} // namespace

TEST_CASE("attach: a grid connection over a Unix socket pair, either side of the election, and again after it ends") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    // Host strings in both orders, so that each manager is the dialer in one of the two rounds.
    for (int round = 0; round < 2; ++round) {
      attached_pair p(ex, round ? "http://b:1" : "http://a:1", round ? "http://a:1" : "http://b:1");
      CHECK(p.m[0]->connection(p.hosts[1])->dialer() != p.m[1]->connection(p.hosts[0])->dialer());
      for (int pass = 0; pass < 2; ++pass) {
        asio::local::stream_protocol::socket s0(ex), s1(ex);
        asio::local::connect_pair(s0, s1);
        CHECK(p.m[0]->attach(p.hosts[1], make_stream_transport(std::move(s0), "unix:1")));
        CHECK(p.m[1]->attach(p.hosts[0], make_stream_transport(std::move(s1), "unix:0")));
        CHECK(co_await p.call(0, "to-1"));
        CHECK(co_await p.call(1, "to-0"));
        // End this stream: both sides see the connection go down, and nothing dials TCP.
        auto c = p.m[0]->connection(p.hosts[1]);
        c->kill();
        auto down = [&] { return c->state() != connection_state::connected; };
        CHECK(co_await eventually(down));
        co_await sleep_for(50ms);
        CHECK(p.m[0]->connection(p.hosts[1])->stats().dial_failures == 0);
      }
      CHECK(p.m[0]->attach("http://nobody:1", make_memory_pipe(ex).first) == errc::unknown_host);
      co_await p.shutdown();
    }
  });
}

TEST_CASE("attach: a grid connection over two pipes (a child process's stdin/stdout), unary and stream") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    int ab[2], ba[2];
    REQUIRE(::pipe(ab) == 0);
    REQUIRE(::pipe(ba) == 0);
    attached_pair p(ex, "http://parent:1", "http://child:1");
    using desc = asio::posix::stream_descriptor;
    CHECK(p.m[0]->attach(p.hosts[1], make_fd_transport(desc(ex, ba[0]), desc(ex, ab[1]), "child")));
    CHECK(p.m[1]->attach(p.hosts[0], make_fd_transport(desc(ex, ab[0]), desc(ex, ba[1]), "parent")));
    CHECK(co_await p.call(0, "over-pipes"));
    CHECK(co_await p.call(1, "back"));
    auto c = p.m[0]->connection(p.hosts[1]);
    payload init;
    stream_options so{2s};
    auto s = co_await echo_stream.open(*c, init, so);
    REQUIRE(s);
    payload m = bytes("streamed");
    CHECK(co_await s->send(m));
    (void)s->close_send();
    auto r = co_await s->next();
    REQUIRE(r);
    CHECK(text(*r) == "streamed");
    auto end = co_await s->next();
    CHECK(end == errc::end_of_stream); // no more responses: the handler ended cleanly
    co_await p.shutdown();
  });
}

TEST_SUITE_END();
