#include <cogrid/manager.hpp>

#include <cogrid/testing.hpp>
#include <cogrid/tls.hpp>
#include <cogrid/election.hpp>
#include <cogrid/detail/http.hpp>
#include <cogrid/detail/url.hpp>
#include <cogrid/detail/websocket.hpp>
#include <cogrid/transport.hpp>

#include "net_util.hpp"
#include "tls_util.hpp"

#include <asio/connect.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/write.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

using namespace cogrid;
using namespace std::chrono_literals;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;

namespace {

// Collects what arrives through the grid (runs on connection strands).
struct collecting_sink : message_sink {
  std::mutex mu;
  std::vector<std::string> payloads;
  std::vector<std::uint64_t> mux_ids;
  std::vector<msg_flags> flags;     // as the message arrived (CRC when the sender's connection adds it)
  std::vector<std::string> remotes; // the connection each message came in on (its remote host)
  std::atomic<int> count{0};
  std::atomic<int> session_ends{0};

  void on_message(connection& c, const message& m) override {
    std::lock_guard lk(mu);
    payloads.emplace_back(m.payload ? std::string(reinterpret_cast<const char*>(m.payload->data()), m.payload->size()) : "<nil>");
    mux_ids.push_back(m.mux_id);
    flags.push_back(m.flags);
    remotes.push_back(c.remote());
    count.fetch_add(1);
  }
  void on_session_end(connection&, std::uint64_t, std::error_code) override { session_ends.fetch_add(1); }
};

// The message's payload views `text`: keep `text` alive while the message is used.
message data_msg(std::uint64_t mux, const std::string& text) {
  message m;
  m.mux_id = mux;
  m.op = op_code::mux_client_msg;
  m.payload = std::as_bytes(std::span(text));
  return m;
}

// A hand-driven client for the handshake checks: upgrades with `token`, sends `first` as one binary
// WebSocket message, and returns the connect response (or the error that came instead).
struct raw_result {
  std::error_code ec;
  int http_status = 0;
  connect_response resp;
};

asio::awaitable<raw_result> raw_connect(std::string host, std::string token, std::vector<std::byte> first,
                                        std::string route = "/minio/grid/v1") {
  raw_result out;
  detail::host_url u;
  (void)detail::parse_host_url(host, u);
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::socket s(ex);
  const asio::ip::tcp::endpoint ep(asio::ip::make_address(u.host), u.port); // named: no braced temporary inside co_await
  co_await s.async_connect(ep, asio::use_awaitable);
  auto t = make_tcp_transport(std::move(s));
  std::vector<std::byte> leftover;
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Authorization", "Bearer " + token}, {"X-Minio-Time", std::to_string(wire_time::now().unix_nanos())}};
  const detail::ws_limits limits;
  out.ec = co_await detail::ws_client_handshake(*t, u.authority(), route, headers, limits, leftover, &out.http_status);
  if (out.ec) co_return out;
  detail::ws_stream ws(std::move(t), detail::ws_role::client, limits, std::move(leftover));
  std::vector<std::byte> frame, in;
  ws.frame_binary(first, frame);
  if ((out.ec = co_await ws.write_raw(frame))) co_return out;
  if ((out.ec = co_await ws.read_message(in))) co_return out;
  const auto m = decode(in);
  if (!m) {
    out.ec = m.error().code;
  } else if (m->op != op_code::connect_response || !m->payload) {
    out.ec = errc::unexpected_message;
  } else {
    out.ec = decode(*m->payload, out.resp).error().code;
  }
  co_return out;
}

std::vector<std::byte> connect_msg(const connect_request& req) {
  std::vector<std::byte> payload, wire;
  encode_append(req, payload);
  message m;
  m.op = op_code::connect;
  m.payload = std::span<const std::byte>(payload);
  (void)encode_append(m, wire);
  return wire;
}

// A node that dials `acceptor` (or `acceptor` itself when none does).
std::size_t a_node_dialing(const testing::grid& g, std::size_t acceptor) {
  for (std::size_t i = 0; i < g.size(); ++i)
    if (i != acceptor && should_connect(g.host(i), g.host(acceptor))) return i;
  return acceptor;
}

// A node that `dialer` dials (or `dialer` itself when it dials none).
std::size_t a_node_dialed_by(const testing::grid& g, std::size_t dialer) {
  for (std::size_t i = 0; i < g.size(); ++i)
    if (i != dialer && should_connect(g.host(dialer), g.host(i))) return i;
  return dialer;
}

// In a two-node grid, the connection of whichever node dials the other.
std::shared_ptr<connection> dialing_link(testing::grid& g) {
  const std::size_t d = should_connect(g.host(0), g.host(1)) ? 0 : 1;
  return g.link(d, 1 - d);
}

// How many connections `m` refused for `reason` (0 when none).
std::uint64_t refused_for(const manager& m, const std::string& reason) {
  const rejection_counts r = m.rejections();
  const auto it = r.find(reason);
  return it == r.end() ? 0 : it->second;
}

// A raw TCP client of node `i`'s listener (`u`: the node's URL, for a handshake's Host).
asio::awaitable<asio::ip::tcp::socket> raw_client(const testing::grid& g, std::size_t i, detail::host_url& u) {
  (void)detail::parse_host_url(g.host(i), u);
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::socket s(ex);
  const asio::ip::tcp::endpoint ep(asio::ip::make_address(u.host), u.port);
  co_await s.async_connect(ep, asio::use_awaitable);
  co_return s;
}

} // namespace

TEST_SUITE_BEGIN("connection");

asio::awaitable<void> all_connect(asio::any_io_executor ex) {
  testing::grid g(ex, 3);
  collecting_sink sinks[3];
  for (std::size_t i = 0; i < 3; ++i) g.node(i).set_sink(&sinks[i]);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t j = 0; j < 3; ++j) {
      if (i == j) continue;
      auto c = g.link(i, j);
      CHECK(c->state() == connection_state::connected);
      CHECK(c->dialer() == should_connect(g.host(i), g.host(j)));
      CHECK(c->dialer() != g.link(j, i)->dialer());
      CHECK(c->remote_id() == g.node(j).id());
      const auto st = c->stats();
      CHECK(st.connects == 1);
      CHECK(st.reconnects == 0);
      REQUIRE(c->send(data_msg(1, "flags"))); // sent without flags: the connection adds its base flags
    }
  }
  // Plain http: CRC on (every link's base flags), seen on what each node received.
  auto all_in = [&] { return sinks[0].count + sinks[1].count + sinks[2].count == 6; };
  REQUIRE(co_await eventually(all_in));
  for (auto& k : sinks) {
    std::lock_guard lk(k.mu);
    CHECK(k.flags.size() == 2);
    for (const msg_flags f : k.flags) CHECK(f == msg_flags::crc);
  }
  co_await g.shutdown();
  for (std::size_t i = 0; i < 3; ++i)
    for (auto& c : g.node(i).connections()) CHECK(c->state() == connection_state::shutdown);
}
TEST_CASE("three nodes connect, each pair dialed by the side the election picks") { run_async(all_connect); }

asio::awaitable<void> messages_merge(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  collecting_sink sink0, sink1;
  g.node(0).set_sink(&sink0);
  g.node(1).set_sink(&sink1);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto c01 = g.link(0, 1);
  const auto writes_before = c01->stats().socket_writes;
  constexpr int n = 2000;
  for (int i = 0; i < n; ++i) REQUIRE(c01->send(data_msg(static_cast<std::uint64_t>(i + 1), "msg-" + std::to_string(i))));
  auto all_in = [&] { return sink1.count.load() == n; };
  REQUIRE(co_await eventually(all_in));
  {
    std::lock_guard lk(sink1.mu);
    for (int i = 0; i < n; ++i) {
      CHECK(sink1.mux_ids[i] == static_cast<std::uint64_t>(i + 1)); // in order
      CHECK(sink1.payloads[i] == "msg-" + std::to_string(i));
    }
  }
  const auto st = c01->stats();
  const auto writes = st.socket_writes - writes_before;
  MESSAGE("2000 messages left in " << writes << " socket writes");
  CHECK(writes * 20 <= static_cast<std::uint64_t>(n)); // merged: at least 20 messages per write on average
  CHECK(st.messages_out >= static_cast<std::uint64_t>(n));
  // And the other way, with nil and empty payloads kept apart.
  message nil_msg = data_msg(7, "");
  nil_msg.payload = std::nullopt;
  REQUIRE(g.link(1, 0)->send(nil_msg));
  REQUIRE(g.link(1, 0)->send(data_msg(8, "")));
  auto two_in = [&] { return sink0.count.load() == 2; };
  REQUIRE(co_await eventually(two_in));
  {
    std::lock_guard lk(sink0.mu);
    CHECK(sink0.payloads[0] == "<nil>");
    CHECK(sink0.payloads[1] == "");
  }
  co_await g.shutdown();
}
TEST_CASE("messages cross in order, many per socket write (merged)") { run_async(messages_merge); }

asio::awaitable<void> kill_and_reconnect(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  collecting_sink sink0, sink1;
  g.node(0).set_sink(&sink0);
  g.node(1).set_sink(&sink1);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  for (std::size_t killer : {0u, 1u}) { // from the dialer's end and from the acceptor's end
    const auto before = g.link(0, 1)->stats().connects;
    const auto session = g.link(0, 1)->session_id();
    g.kill(killer, 1 - killer);
    auto reconnected = [&] {
      return g.link(0, 1)->session_id() > session && g.link(0, 1)->state() == connection_state::connected &&
             g.link(1, 0)->state() == connection_state::connected;
    };
    REQUIRE(co_await eventually(reconnected));
    const auto st = g.link(0, 1)->stats();
    CHECK(st.connects == before + 1);
    CHECK(st.reconnects >= 1);
    CHECK(st.remote_restarts == 0); // same remote process
  }
  CHECK(sink0.session_ends.load() >= 2);
  CHECK(sink1.session_ends.load() >= 2);
  // A node has no link to itself, and there is no third node: the test hooks say so instead of failing
  // on a null connection.
  CHECK_THROWS_AS(g.kill(1, 1), std::invalid_argument);
  CHECK_THROWS_AS(g.block_inbound(0, 0, true), std::invalid_argument);
  CHECK_THROWS_AS(g.kill(0, 2), std::out_of_range);
  // Sending works on the new session.
  REQUIRE(g.link(0, 1)->send(data_msg(1, "after")));
  auto got = [&] { return sink1.count.load() == 1; };
  CHECK(co_await eventually(got));
  co_await g.shutdown();
}
TEST_CASE("a killed connection comes back, from either end") { run_async(kill_and_reconnect); }

asio::awaitable<void> send_while_down(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  // Not started: nothing is connected yet.
  CHECK(g.link(0, 1)->send(data_msg(1, "x")) == errc::disconnected);
  CHECK(g.link(0, 1)->state() == connection_state::unconnected);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  CHECK(g.link(0, 1)->send(data_msg(1, "x")));
  co_await g.shutdown();
  CHECK(g.link(0, 1)->send(data_msg(1, "x")) == errc::disconnected);
  CHECK(co_await g.link(0, 1)->wait_for_connect() == errc::shutdown);
}
TEST_CASE("sending without a session fails at once with disconnected") { run_async(send_while_down); }

asio::awaitable<void> stalled_peer(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  const auto session = g.link(0, 1)->session_id();
  // Node 1 stops handling what node 0 sends (pings included): node 0 sees no pongs and drops the link
  // within the pong timeout (200 ms in tests); then it comes back.
  g.block_inbound(1, 0, true);
  auto dropped = [&] { return g.link(0, 1)->session_id() > session || g.link(0, 1)->state() != connection_state::connected; };
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(co_await eventually(dropped));
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 2s);
  // Node 1 discards node 0's pongs too, so the rule may fire on either end first; it fired on one.
  auto ping_rule_fired = [&] {
    return g.link(0, 1)->stats().last_error.find("no pong") != std::string::npos ||
           g.link(1, 0)->stats().last_error.find("no pong") != std::string::npos;
  };
  CHECK(co_await eventually(ping_rule_fired));
  g.block_inbound(1, 0, false);
  REQUIRE(co_await g.wait_all_connected());
  co_await g.shutdown();
}
TEST_CASE("a peer that stops answering pings is dropped by the ping rule, then reconnects") { run_async(stalled_peer); }

asio::awaitable<void> full_queue_reconnect(asio::any_io_executor ex) {
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) { o.connection.max_queue_messages = 100; });
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  auto c = g.link(0, 1);
  // On this one thread the writer cannot run while we send: the queue fills.
  int accepted = 0;
  result<void> sent;
  for (int i = 0; i < 1000 && sent; ++i) {
    sent = c->send(data_msg(1, std::string(100, 'q')));
    if (sent) ++accepted;
  }
  CHECK(sent == errc::queue_full);
  CHECK(accepted == 100);
  CHECK(c->stats().queue_full >= 1);
  CHECK(c->stats().queue_length == 100);
  // A reconnect with the queue full completes (MinIO #19964 deadlocked here).
  const auto session = c->session_id();
  c->kill();
  auto back = [&] { return c->session_id() > session && c->state() == connection_state::connected; };
  REQUIRE(co_await eventually(back));
  CHECK(c->send(data_msg(2, "fresh")));
  co_await g.shutdown();
}
TEST_CASE("a full queue refuses sends clearly and does not block a reconnect") { run_async(full_queue_reconnect); }

asio::awaitable<void> remote_restart(asio::any_io_executor ex) {
  testing::grid g(ex, 2);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  const node_id old_id = g.link(0, 1)->remote_id();
  // Replace node 1 by a new process on the same port: a new manager, a new node id.
  co_await g.node(1).shutdown();
  detail::host_url u;
  (void)detail::parse_host_url(g.host(1), u);
  asio::ip::tcp::acceptor acc(ex);
  const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), u.port);
  acc.open(ep.protocol());
  acc.set_option(asio::socket_base::reuse_address(true));
  acc.bind(ep);
  acc.listen();
  manager_options o;
  o.local = g.host(1);
  o.hosts = g.hosts();
  o.auth = static_token_auth("cogrid-test-token");
  o.connection = connection_options::for_tests();
  manager reborn(ex, std::move(o));
  reborn.listen(std::move(acc));
  reborn.start();
  REQUIRE(co_await reborn.connection(g.host(0))->wait_for_connect());
  auto seen = [&] { return g.link(0, 1)->state() == connection_state::connected && !(g.link(0, 1)->remote_id() == old_id); };
  REQUIRE(co_await eventually(seen));
  CHECK(g.link(0, 1)->remote_id() == reborn.id());
  CHECK(g.link(0, 1)->stats().remote_restarts == 1);
  co_await reborn.shutdown();
  co_await g.shutdown();
}
TEST_CASE("a restarted remote is told apart from a reconnect (node id compared)") { run_async(remote_restart); }

asio::awaitable<void> rejections(asio::any_io_executor ex) {
  testing::grid g(ex, 3);
  collecting_sink sinks[3];
  for (std::size_t i = 0; i < 3; ++i) g.node(i).set_sink(&sinks[i]);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  // The acceptor under test is a node that one peer dials (`dialer`, whom a raw client may claim to be)
  // and that dials the other (`non_dialer`). Among three nodes one always exists, whatever the ports.
  std::size_t acceptor = 0;
  while (a_node_dialing(g, acceptor) == acceptor || a_node_dialed_by(g, acceptor) == acceptor) ++acceptor;
  REQUIRE(acceptor < 3);
  const std::size_t dialer = a_node_dialing(g, acceptor);
  const std::size_t non_dialer = a_node_dialed_by(g, acceptor);
  const std::string token = "cogrid-test-token";
  connect_request good{node_id{}, g.host(dialer), wire_time::now(), token};

  // Unknown host.
  connect_request r = good;
  r.host = "http://127.0.0.1:1";
  raw_result res = co_await raw_connect(g.host(acceptor), token, connect_msg(r));
  REQUIRE(!res.ec);
  CHECK_FALSE(res.resp.accepted);
  CHECK(res.resp.rejected_reason == "unknown incoming host");
  CHECK(res.resp.id == g.node(acceptor).id());

  // Clock skew beyond 5 minutes.
  r = good;
  r.time.seconds -= 600;
  res = co_await raw_connect(g.host(acceptor), token, connect_msg(r));
  CHECK(res.resp.rejected_reason == "time difference too large");
  r.time.seconds = std::numeric_limits<std::int64_t>::min(); // no overflow in the check (found by fuzz_handshake)
  res = co_await raw_connect(g.host(acceptor), token, connect_msg(r));
  CHECK(res.resp.rejected_reason == "time difference too large");
  r.time.seconds = std::numeric_limits<std::int64_t>::max();
  res = co_await raw_connect(g.host(acceptor), token, connect_msg(r));
  CHECK(res.resp.rejected_reason == "time difference too large");

  // Bad token in the connect request (the HTTP header carried the good one).
  r = good;
  r.token = "wrong";
  res = co_await raw_connect(g.host(acceptor), token, connect_msg(r));
  CHECK(res.resp.rejected_reason == "authentication failed");
  CHECK(res.resp.rejected_reason.find("wrong") == std::string::npos);

  // Claiming to be a node that node 0 itself must dial: wrong direction.
  r = good;
  r.host = g.host(non_dialer);
  REQUIRE(should_connect(g.host(acceptor), g.host(non_dialer)));
  res = co_await raw_connect(g.host(acceptor), token, connect_msg(r));
  CHECK(res.resp.rejected_reason == "grid: expected to be client side, not server side");

  // A first message that is not OpConnect, and garbage that is not a grid message at all.
  const std::string hello = "hello";
  message not_connect = data_msg(1, hello);
  std::vector<std::byte> wire;
  (void)encode_append(not_connect, wire);
  res = co_await raw_connect(g.host(acceptor), token, wire);
  CHECK(res.resp.rejected_reason == "unexpected grid message");
  const std::string garbage = "garbage, not msgpack";
  res = co_await raw_connect(g.host(acceptor), token, std::vector<std::byte>(
      reinterpret_cast<const std::byte*>(garbage.data()), reinterpret_cast<const std::byte*>(garbage.data()) + garbage.size()));
  CHECK_FALSE(res.resp.accepted);
  CHECK_FALSE(res.resp.rejected_reason.empty());

  // Bad token in the HTTP upgrade: 403 before any WebSocket.
  res = co_await raw_connect(g.host(acceptor), "wrong", connect_msg(good));
  CHECK(res.ec);
  CHECK(res.http_status == 403);
  // Wrong route: 404.
  res = co_await raw_connect(g.host(acceptor), token, connect_msg(good), "/other");
  CHECK(res.http_status == 404);

  // Not a WebSocket at all: plain HTTP and raw garbage get an HTTP error and a close.
  for (std::string req : {std::string("GET /minio/grid/v1 HTTP/1.1\r\nHost: x\r\n\r\n"), std::string("\x16\x03\x01 garbage\r\n\r\n")}) {
    detail::host_url u;
    asio::ip::tcp::socket s = co_await raw_client(g, acceptor, u);
    co_await asio::async_write(s, asio::buffer(req), asio::use_awaitable);
    std::string reply;
    std::error_code ec;
    co_await asio::async_read(s, asio::dynamic_buffer(reply), asio::redirect_error(asio::use_awaitable, ec));
    CHECK(ec == asio::error::eof); // closed by the node
    CHECK(reply.rfind("HTTP/1.1 4", 0) == 0);
  }

  const rejection_counts rc = g.node(acceptor).rejections();
  CHECK(rc.at("unknown incoming host") == 1);
  CHECK(rc.at("time difference too large") == 3);
  CHECK(rc.at("authentication failed") == 1);
  CHECK(rc.at("grid: expected to be client side, not server side") == 1);
  CHECK(rc.at("wrong route") == 1);
  CHECK(rc.at("not a WebSocket upgrade") == 1);

  // The node kept serving its real peers all along.
  CHECK(g.link(acceptor, dialer)->state() == connection_state::connected);
  CHECK(g.link(acceptor, non_dialer)->state() == connection_state::connected);
  CHECK(g.link(acceptor, dialer)->stats().connects == 1);
  const std::size_t other = acceptor == 2 ? 1 : 2;
  REQUIRE(g.link(acceptor, other)->send(data_msg(5, "still here")));
  auto got = [&] { return sinks[other].count.load() == 1; };
  CHECK(co_await eventually(got));
  co_await g.shutdown();
}
TEST_CASE("every rejection reason is told to the peer and counted, and the node keeps serving") { run_async(rejections); }

asio::awaitable<void> wrong_token_node(asio::any_io_executor ex) {
  // Node 1 has another token: whichever side dials, the link never comes up, and both sides say why.
  testing::grid g(ex, 2, [](std::size_t i, manager_options& o) {
    if (i == 1) o.auth = static_token_auth("another-token");
  });
  g.start();
  const std::size_t d = g.link(0, 1)->dialer() ? 0 : 1;
  auto failed = [&] { return g.link(d, 1 - d)->stats().dial_failures >= 2; };
  REQUIRE(co_await eventually(failed));
  CHECK(g.link(d, 1 - d)->state() != connection_state::connected);
  CHECK(g.link(d, 1 - d)->stats().last_error.find("403") != std::string::npos);
  CHECK(g.node(1 - d).rejections().at("HTTP upgrade: authentication failed") >= 2);
  co_await g.shutdown();
}
TEST_CASE("a node with the wrong token is refused on every attempt, and retries") { run_async(wrong_token_node); }

// The outcome of a wait_for_connect run on its own (co_spawn), kept by a shared_ptr the spawned side owns too.
struct wait_outcome {
  bool done = false;
  result<void> r;
};
void spawn_wait(asio::any_io_executor ex, std::shared_ptr<connection> c, on_refusal policy, std::shared_ptr<wait_outcome> out) {
  asio::co_spawn(ex, c->wait_for_connect(policy), [out](std::exception_ptr e, result<void> r) {
    out->r = e ? result<void>(errc::disconnected) : std::move(r);
    out->done = true;
  });
}

asio::awaitable<void> refusal_ends_wait(asio::any_io_executor ex) {
  // Node 1 has another token, so every dial is refused at the HTTP upgrade (403).
  struct heard {
    std::vector<std::string> reasons, peers;
  };
  auto hook = std::make_shared<heard>();
  testing::grid g(ex, 2, [hook](std::size_t i, manager_options& o) {
    if (i == 1) o.auth = static_token_auth("another-token");
    o.on_rejected = [hook](const std::string& reason, const std::string& peer) {
      hook->reasons.push_back(reason);
      hook->peers.push_back(peer);
    };
  });
  const std::size_t d = g.link(0, 1)->dialer() ? 0 : 1, a = 1 - d;
  auto fails = std::make_shared<wait_outcome>(), keeps = std::make_shared<wait_outcome>();
  spawn_wait(ex, g.link(d, a), on_refusal::fail, fails);
  spawn_wait(ex, g.link(d, a), on_refusal::keep_waiting, keeps);
  g.start();

  // The dialer's wait that fails on refusal ends with the remote's refusal; the default one goes on.
  auto ended = [&] { return fails->done; };
  REQUIRE(co_await eventually(ended));
  REQUIRE_FALSE(fails->r);
  CHECK(fails->r.error() == errc::connection_rejected);
  CHECK(fails->r.error().message().find("HTTP 403") != std::string::npos);
  auto refused_twice = [&] { return g.link(d, a)->stats().dial_failures >= 3; };
  REQUIRE(co_await eventually(refused_twice));
  CHECK_FALSE(keeps->done);

  // The acceptor's hook heard each refused dial, with the reason it counts and the dialer's address.
  REQUIRE_FALSE(hook->reasons.empty());
  CHECK(hook->reasons[0] == "HTTP upgrade: authentication failed");
  CHECK(hook->peers[0].rfind("127.0.0.1:", 0) == 0);
  CHECK(hook->reasons.size() == g.node(a).rejections().at("HTTP upgrade: authentication failed"));

  // A connect exchange that claims the dialer's host and is refused ends the acceptor's wait on that
  // host's link (the HTTP upgrade did not say who dialed; the connect message does).
  auto claimed = std::make_shared<wait_outcome>();
  spawn_wait(ex, g.link(a, d), on_refusal::fail, claimed);
  const connect_request claim{node_id{}, g.host(d), wire_time::now(), "not-the-token"};
  const raw_result res = co_await raw_connect(g.host(a), a == 1 ? "another-token" : "cogrid-test-token", connect_msg(claim));
  REQUIRE(!res.ec);
  CHECK(res.resp.rejected_reason == "authentication failed");
  auto claimed_ended = [&] { return claimed->done; };
  REQUIRE(co_await eventually(claimed_ended));
  REQUIRE_FALSE(claimed->r);
  CHECK(claimed->r.error() == errc::connection_rejected);
  CHECK(claimed->r.error().message().find("this node refused the remote's connect: authentication failed") != std::string::npos);

  co_await g.shutdown();
  auto keeps_ended = [&] { return keeps->done; };
  REQUIRE(co_await eventually(keeps_ended));
  CHECK(keeps->r.error() == errc::shutdown);
}
TEST_CASE("a refused handshake ends a wait that fails on refusal, on either side, and the acceptor's hook hears it") {
  run_async(refusal_ends_wait);
}

asio::awaitable<void> tls_grid(asio::any_io_executor ex) {
  const auto cert = cogrid_test::make_test_cert();
  auto server = make_server_tls_context(cert.cert_pem, cert.key_pem);
  auto client = make_client_tls_context(cert.cert_pem);
  std::vector<std::string> https_hosts;
  testing::grid g(ex, 2, [&](std::size_t, manager_options& o) {
    for (auto& h : o.hosts) h.replace(0, 4, "https");
    o.local.replace(0, 4, "https");
    o.tls_client = client;
    o.tls_server = server;
  });
  collecting_sink sink;
  const std::string h0 = "https" + g.host(0).substr(4), h1 = "https" + g.host(1).substr(4);
  g.node(1).set_sink(&sink);
  g.start();
  auto c01 = g.node(0).connection(h1);
  REQUIRE(c01);
  REQUIRE(co_await c01->wait_for_connect());
  REQUIRE(co_await g.node(1).connection(h0)->wait_for_connect());
  REQUIRE(c01->send(data_msg(1, "over tls")));
  auto got = [&] { return sink.count.load() == 1; };
  REQUIRE(co_await eventually(got));
  CHECK(sink.payloads[0] == "over tls");
  CHECK(sink.flags[0] == msg_flags::none); // both TLS: no CRC (the connection's base flags add none)
  co_await g.shutdown();
}
TEST_CASE("TLS: https hosts connect with a certificate made in the test, CRC off") { run_async(tls_grid); }

asio::awaitable<void> tls_untrusted(asio::any_io_executor ex) {
  const auto cert = cogrid_test::make_test_cert();
  const auto other = cogrid_test::make_test_cert("someone-else");
  auto server = make_server_tls_context(cert.cert_pem, cert.key_pem);
  auto client = make_client_tls_context(other.cert_pem); // trusts another certificate only
  testing::grid g(ex, 2, [&](std::size_t, manager_options& o) {
    for (auto& h : o.hosts) h.replace(0, 4, "https");
    o.local.replace(0, 4, "https");
    o.tls_client = client;
    o.tls_server = server;
  });
  g.start();
  const std::size_t d = should_connect("https" + g.host(0).substr(4), "https" + g.host(1).substr(4)) ? 0 : 1;
  auto c = g.node(d).connection("https" + g.host(1 - d).substr(4));
  auto failed = [&] { return c->stats().dial_failures >= 1; };
  REQUIRE(co_await eventually(failed));
  CHECK(c->state() != connection_state::connected);
  CHECK(c->stats().connects == 0);
  co_await g.shutdown();
}
TEST_CASE("TLS: certificates are verified by default (an untrusted server is refused)") { run_async(tls_untrusted); }

asio::awaitable<void> shared_port(asio::any_io_executor ex) {
  // Node 1's "application" owns its listener, reads each HTTP request head itself and hands the
  // connection to the grid (sharing one port with the application).
  asio::ip::tcp::acceptor a0(ex, {asio::ip::make_address("127.0.0.1"), 0}), a1(ex, {asio::ip::make_address("127.0.0.1"), 0});
  std::vector<std::string> hosts = {"http://127.0.0.1:" + std::to_string(a0.local_endpoint().port()),
                                    "http://127.0.0.1:" + std::to_string(a1.local_endpoint().port())};
  const std::size_t app = should_connect(hosts[0], hosts[1]) ? 1 : 0; // the side that is dialed
  std::unique_ptr<manager> m[2];
  for (std::size_t i = 0; i < 2; ++i) {
    manager_options o;
    o.local = hosts[i];
    o.hosts = hosts;
    o.auth = static_token_auth("cogrid-test-token");
    o.connection = connection_options::for_tests();
    m[i] = std::make_unique<manager>(ex, std::move(o));
  }
  m[1 - app]->listen(app == 0 ? std::move(a1) : std::move(a0));
  asio::ip::tcp::acceptor& app_acceptor = app == 0 ? a0 : a1;
  m[0]->start();
  m[1]->start();
  // The application's server: one request, parsed by hand.
  asio::ip::tcp::socket s = co_await app_acceptor.async_accept(asio::use_awaitable);
  std::string head;
  const std::size_t n = co_await asio::async_read_until(s, asio::dynamic_buffer(head), "\r\n\r\n", asio::use_awaitable);
  const std::string extra = head.substr(n);
  head.resize(n);
  upgrade_request req;
  std::size_t line_end = head.find("\r\n");
  const std::string start = head.substr(0, line_end);
  req.method = start.substr(0, start.find(' '));
  req.target = start.substr(start.find(' ') + 1, start.rfind(' ') - start.find(' ') - 1);
  req.version = start.substr(start.rfind(' ') + 1);
  for (std::size_t at = line_end + 2; at + 2 < head.size();) {
    const std::size_t end = head.find("\r\n", at);
    const std::string line = head.substr(at, end - at);
    const std::size_t colon = line.find(':');
    req.headers.emplace_back(line.substr(0, colon), line.substr(line.find_first_not_of(' ', colon + 1)));
    at = end + 2;
  }
  CHECK(req.target == "/minio/grid/v1");
  m[app]->accept(std::move(s), std::move(req),
                 std::vector<std::byte>(reinterpret_cast<const std::byte*>(extra.data()),
                                        reinterpret_cast<const std::byte*>(extra.data()) + extra.size()));
  REQUIRE(co_await m[app]->connection(hosts[1 - app])->wait_for_connect());
  REQUIRE(co_await m[1 - app]->connection(hosts[app])->wait_for_connect());
  CHECK(m[1 - app]->connection(hosts[app])->remote_id() == m[app]->id());
  co_await m[0]->shutdown();
  co_await m[1]->shutdown();
}
TEST_CASE("an HTTP request read by the application's own server is handed to the grid (shared port)") {
  run_async(shared_port);
}

asio::awaitable<void> many_threads(asio::any_io_executor ex) {
  // Messages are fire-and-forget: a link dropped while they are queued loses them, by design. This test is
  // about threads, not liveness, so the tests' 200 ms pong deadline (which eight busy threads on two cores
  // under ThreadSanitizer can overrun) is relaxed, and a reconnect before the kills is reported as such.
  auto relaxed = [](std::size_t, manager_options& o) {
    o.connection.pong_timeout = std::chrono::seconds(10);
    o.connection.write_timeout = std::chrono::seconds(10);
  };
  testing::grid g(ex, 3, relaxed);
  collecting_sink sinks[3];
  for (std::size_t i = 0; i < 3; ++i) g.node(i).set_sink(&sinks[i]);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  // Four threads send on all six links at once while the io_context runs on four threads.
  constexpr int per_thread = 3000;
  std::vector<std::thread> senders;
  std::atomic<int> refused{0};
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&g, &refused, t] {
      for (int k = 0; k < per_thread; ++k) {
        const std::size_t i = static_cast<std::size_t>(k + t) % 3, j = (i + 1 + static_cast<std::size_t>(k % 2)) % 3;
        const std::string text = "thread-" + std::to_string(t) + "/" + std::to_string(k); // k: the send order
        if (!g.link(i, j)->send(data_msg(static_cast<std::uint64_t>(t + 1), text))) refused.fetch_add(1);
      }
    });
  }
  for (auto& t : senders) t.join();
  CHECK(refused.load() == 0);
  auto all = [&] { return sinks[0].count + sinks[1].count + sinks[2].count == 4 * per_thread; };
  const std::chrono::milliseconds patience(30000);
  const bool arrived = co_await eventually(all, patience);
  std::uint64_t reconnects = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 3; ++j)
      if (i != j) reconnects += g.link(i, j)->stats().reconnects;
  // (No INFO here: its scope would outlive the co_awaits below and end on another thread.)
  CHECK_MESSAGE(reconnects == 0, "a link reconnected before the kills: messages queued on it were lost");
  REQUIRE_MESSAGE(arrived, "arrived " << sinks[0].count + sinks[1].count + sinks[2].count << " of "
                                      << 4 * per_thread << "; reconnects " << reconnects);
  // Per sender, messages arrive in the order sent on each link (they carry the thread id as mux id and
  // their send order in the payload): on every link, each thread's sequence numbers strictly increase.
  int checked = 0, out_of_order = 0;
  for (auto& k : sinks) {
    std::lock_guard lk(k.mu);
    std::map<std::pair<std::string, std::uint64_t>, int> last; // (link's remote, thread) -> last sequence number seen
    for (std::size_t x = 0; x < k.payloads.size(); ++x) {
      const std::string prefix = "thread-" + std::to_string(k.mux_ids[x] - 1) + "/";
      REQUIRE(k.payloads[x].rfind(prefix, 0) == 0); // the payload is its thread's
      const int seq = std::stoi(k.payloads[x].substr(prefix.size()));
      const auto [it, first] = last.try_emplace({k.remotes[x], k.mux_ids[x]}, seq);
      if (!first) {
        if (seq <= it->second) ++out_of_order;
        it->second = seq;
      }
      ++checked;
    }
  }
  CHECK(checked == 4 * per_thread);
  CHECK(out_of_order == 0);
  // Kill every link from several threads at once: all come back.
  std::vector<std::thread> killers;
  for (std::size_t i = 0; i < 3; ++i) killers.emplace_back([&g, i] { g.kill(i, (i + 1) % 3); });
  for (auto& t : killers) t.join();
  co_await sleep_for(50ms);
  REQUIRE(co_await g.wait_all_connected());
  co_await g.shutdown();
}
TEST_CASE("an io_context on four threads, with sends and kills from other threads") {
  run_async(many_threads, std::chrono::seconds(60), 4);
}

asio::awaitable<void> write_stall(asio::any_io_executor ex) {
  // A fake peer completes the handshake and then never reads its socket again. Our writes back up and
  // the write deadline (500 ms in tests) drops the connection; pings are slowed so they do not fire first.
  asio::ip::tcp::acceptor ours(ex), fake(ex);
  std::vector<std::string> hosts;
  for (;;) { // ports until the real node is the dialer
    ours = asio::ip::tcp::acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
    fake = asio::ip::tcp::acceptor(ex, {asio::ip::make_address("127.0.0.1"), 0});
    hosts = {"http://127.0.0.1:" + std::to_string(ours.local_endpoint().port()),
             "http://127.0.0.1:" + std::to_string(fake.local_endpoint().port())};
    if (should_connect(hosts[0], hosts[1])) break;
  }
  manager_options o;
  o.local = hosts[0];
  o.hosts = hosts;
  o.auth = static_token_auth("cogrid-test-token");
  o.connection = connection_options::for_tests();
  o.connection.ping_interval = 10s;
  o.connection.pong_timeout = 60s;
  manager m(ex, std::move(o));
  m.listen(std::move(ours));
  m.start();
  // The fake node's side of the handshake.
  asio::ip::tcp::socket s = co_await fake.async_accept(asio::use_awaitable);
  s.set_option(asio::socket_base::receive_buffer_size(4096));
  auto t = make_tcp_transport(std::move(s));
  detail::http_request req;
  std::vector<std::byte> leftover, in, frame, wire, payload;
  const detail::ws_limits limits;
  REQUIRE(!(co_await detail::http_read_request(*t, limits, req, leftover)));
  REQUIRE(!(co_await detail::ws_accept(*t, req)));
  detail::ws_stream ws(std::move(t), detail::ws_role::server, limits, std::move(leftover));
  REQUIRE(!(co_await ws.read_message(in)));
  encode_append(connect_response{node_id{}, true, ""}, payload);
  message reply;
  reply.op = op_code::connect_response;
  reply.payload = std::span<const std::byte>(payload);
  REQUIRE(encode_append(reply, wire));
  ws.frame_binary(wire, frame);
  REQUIRE(!(co_await ws.write_raw(frame)));
  auto c = m.connection(hosts[1]);
  REQUIRE(co_await c->wait_for_connect());
  // Now flood it; the fake never reads again.
  const std::string big(64 * 1024, 'x');
  for (int i = 0; i < 400 && c->state() == connection_state::connected; ++i) {
    (void)c->send(data_msg(1, big));
    co_await sleep_for(1ms);
  }
  auto dropped = [&] { return c->stats().last_error.find("write timeout") != std::string::npos; };
  REQUIRE(co_await eventually(dropped));
  CHECK(c->state() != connection_state::connected);
  CHECK(!c->send(data_msg(1, big))); // fails fast afterwards
  co_await m.shutdown();
  ws.lower().close();
}
TEST_CASE("a peer that stops reading its socket is dropped by the write deadline") { run_async(write_stall); }

asio::awaitable<void> lock_route_and_rtt(asio::any_io_executor ex) {
  // MinIO runs a second grid on /minio/grid/lock/v1: any route works when both sides use it.
  testing::grid g(ex, 2, [](std::size_t, manager_options& o) { o.route = std::string(lock_route_v1); });
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  // Pings (every 50 ms in tests) carry their send time; pongs echo it: RTT and last pong are kept.
  auto measured = [&] { return g.link(0, 1)->stats().last_ping_rtt.count() > 0 && g.link(1, 0)->stats().last_ping_rtt.count() > 0; };
  REQUIRE(co_await eventually(measured));
  const auto st = g.link(0, 1)->stats();
  CHECK(st.last_ping_rtt < std::chrono::seconds(1));
  CHECK(st.last_pong >= st.last_connect);
  CHECK(std::chrono::system_clock::now() - st.last_pong < std::chrono::seconds(2));
  co_await g.shutdown();
}
TEST_CASE("a configured route (the lock grid's) connects; ping RTT and last pong are recorded") { run_async(lock_route_and_rtt); }

asio::awaitable<void> silent_peer(asio::any_io_executor ex) {
  // A peer that upgrades and then never sends OpConnect is dropped by the handshake read deadline (1 s in
  // tests) — MinIO sets none, so such a peer stalls its accept path.
  testing::grid g(ex, 2);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  detail::host_url u;
  asio::ip::tcp::socket s = co_await raw_client(g, 0, u);
  auto t = make_tcp_transport(std::move(s));
  std::vector<std::byte> leftover, in;
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Authorization", "Bearer cogrid-test-token"}, {"X-Minio-Time", std::to_string(wire_time::now().unix_nanos())}};
  const detail::ws_limits limits;
  REQUIRE(!(co_await detail::ws_client_handshake(*t, u.authority(), "/minio/grid/v1", headers, limits, leftover)));
  detail::ws_stream ws(std::move(t), detail::ws_role::client, limits, std::move(leftover));
  const auto t0 = std::chrono::steady_clock::now();
  const std::error_code ec = co_await ws.read_message(in); // we say nothing; the node gives up on us
  CHECK(ec);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  auto counted = [&] { return refused_for(g.node(0), "grid operation timed out") == 1; };
  CHECK(co_await eventually(counted));
  CHECK(g.link(0, 1)->state() == connection_state::connected); // the real peer never noticed
  co_await g.shutdown();
}
TEST_CASE("a peer silent after the upgrade is dropped by the handshake read deadline") { run_async(silent_peer); }

asio::awaitable<void> mute_client(asio::any_io_executor ex) {
  // A client that connects and never sends its HTTP request is dropped at the handshake deadline (1 s in
  // tests) and counted; the nodes' own link is not disturbed.
  testing::grid g(ex, 2);
  g.start();
  REQUIRE(co_await g.wait_all_connected());
  detail::host_url u;
  asio::ip::tcp::socket s = co_await raw_client(g, 0, u);
  const auto t0 = std::chrono::steady_clock::now();
  std::array<char, 64> buf{};
  std::error_code ec;
  co_await s.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec)); // we say nothing
  CHECK(ec == asio::error::eof);
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited > 500ms);
  CHECK(waited < 3s);
  auto counted = [&] { return refused_for(g.node(0), "bad HTTP request: grid operation timed out") == 1; };
  CHECK(co_await eventually(counted));
  CHECK(g.link(0, 1)->state() == connection_state::connected);
  co_await g.shutdown();
}
TEST_CASE("a client that never sends its upgrade request is dropped by the handshake deadline") { run_async(mute_client); }

// A transport_dialer that never completes by itself: it waits an hour, and counts the cancellations it gets.
asio::awaitable<result<std::unique_ptr<transport>>> dial_that_hangs(std::shared_ptr<std::atomic<int>> cancelled) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::hours(1));
  std::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (ec == asio::error::operation_aborted) cancelled->fetch_add(1);
  co_return result<std::unique_ptr<transport>>(make_error_code(errc::disconnected));
}

asio::awaitable<void> hanging_dialer(asio::any_io_executor ex) {
  // The dial timeout bounds a custom dialer too: the attempt is cancelled (the dialer sees it), counted as
  // a dial failure with the timeout as its reason, and retried; shutdown is not held up by it.
  auto cancelled = std::make_shared<std::atomic<int>>(0);
  testing::grid g(ex, 2, [cancelled](std::size_t, manager_options& o) {
    o.connection.dial_timeout = 150ms;
    o.dialer = [cancelled](std::string) { return dial_that_hangs(cancelled); };
  });
  g.start();
  auto c = dialing_link(g);
  auto retried = [&] { return cancelled->load() >= 2 && c->stats().dial_failures >= 2; };
  CHECK(co_await eventually(retried));
  CHECK(c->stats().last_error.find("timed out") != std::string::npos);
  CHECK(c->state() != connection_state::connected);
  const auto t0 = std::chrono::steady_clock::now();
  co_await g.shutdown();
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}
TEST_CASE("a custom dialer that never completes is cancelled at the dial timeout, and retried") { run_async(hanging_dialer); }

asio::awaitable<void> throwing_dialer(asio::any_io_executor ex) {
  // A dialer that throws fails its attempt at once, with its text, and is retried (not held until the
  // dial timeout, and not the end of the dial loop).
  auto dials = std::make_shared<std::atomic<int>>(0);
  testing::grid g(ex, 2, [dials](std::size_t, manager_options& o) {
    o.connection.dial_timeout = 30s;
    o.dialer = [dials](std::string) -> asio::awaitable<result<std::unique_ptr<transport>>> {
      dials->fetch_add(1);
      throw std::runtime_error("no route to the test host");
    };
  });
  g.start();
  auto c = dialing_link(g);
  auto retried = [&] { return dials->load() >= 2 && c->stats().dial_failures >= 2; };
  CHECK(co_await eventually(retried, 3s));
  CHECK(c->stats().last_error.find("no route to the test host") != std::string::npos);
  co_await g.shutdown();
}
TEST_CASE("a custom dialer that throws fails its attempt at once with its text, and is retried") { run_async(throwing_dialer); }

// What the resolver below saw: resolutions started, and those that ended (cancelled, as it never ends by itself).
struct resolver_probe {
  std::atomic<int> started{0}, ended{0}, cancelled{0};
};

// A host_resolver that never completes by itself: it waits an hour for its answer.
asio::awaitable<result<std::vector<asio::ip::tcp::endpoint>>> resolve_that_hangs(std::shared_ptr<resolver_probe> probe,
                                                                                 std::string, std::uint16_t) {
  probe->started.fetch_add(1);
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::hours(1));
  std::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (ec == asio::error::operation_aborted) probe->cancelled.fetch_add(1);
  probe->ended.fetch_add(1);
  co_return result<std::vector<asio::ip::tcp::endpoint>>(make_error_code(errc::disconnected));
}

asio::awaitable<void> hanging_resolver(asio::any_io_executor ex) {
  // The dial timeout bounds name resolution too: a resolver that never answers fails the attempt at the
  // dial timeout (counted, with the resolution as its reason) and is cancelled; shutdown does not wait
  // for it.
  auto probe = std::make_shared<resolver_probe>();
  testing::grid g(ex, 2, [probe](std::size_t, manager_options& o) {
    o.connection.dial_timeout = 200ms;
    for (const auto& h : o.hosts)
      if (h != o.local && should_connect(o.local, h)) // only the dialer resolves
        o.resolve = [probe](std::string host, std::uint16_t port) { return resolve_that_hangs(probe, std::move(host), port); };
  });
  auto c = dialing_link(g);
  REQUIRE(c->dialer());
  const auto t0 = std::chrono::steady_clock::now();
  g.start();
  auto failed = [&] { return c->stats().dial_failures > 0; };
  REQUIRE(co_await eventually(failed, 2000ms));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  const auto st = c->stats();
  CHECK(st.last_error.find("resolving") != std::string::npos);
  CHECK(st.state != connection_state::connected);
  CHECK(st.connects == 0);
  CHECK(probe->started.load() >= 1);
  auto resolver_cancelled = [&] { return probe->cancelled.load() >= 1; };
  CHECK(co_await eventually(resolver_cancelled, 1000ms)); // the timed-out resolution was cancelled
  const auto t1 = std::chrono::steady_clock::now();
  co_await g.shutdown();
  CHECK(std::chrono::steady_clock::now() - t1 < 2s);
  // No resolution is left waiting for its hour (it would keep the io_context busy after the test).
  auto all_ended = [&] { return probe->ended.load() == probe->started.load(); };
  CHECK(co_await eventually(all_ended, 1000ms));
  CHECK(probe->cancelled.load() == probe->started.load());
}
TEST_CASE("a resolver that never completes is bounded by the dial timeout, and shutdown does not wait for it") {
  run_async(hanging_resolver, std::chrono::seconds(5));
}

TEST_SUITE_END();
