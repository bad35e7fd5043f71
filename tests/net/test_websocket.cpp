// Tests for cogrid/detail/websocket.hpp (with http.hpp and transport.hpp): the HTTP upgrade on both sides and
// the WebSocket framing, over loopback TCP against each other and against a raw peer writing hand-built bytes.
// ws_mask lives in message.hpp (with the merge framer), which detail/websocket.hpp uses without including it.
#include <cogrid/message.hpp>
#include <cogrid/detail/websocket.hpp>

#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace cogrid;
using namespace cogrid::detail;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using bytes = std::vector<std::byte>;

// ---- harness ----------------------------------------------------------------------------------------

// A loopback listener (port chosen by the OS) and the coroutines of one test, run with a deadline so that a
// bug fails the test instead of hanging it.
class harness {
public:
  asio::io_context io;
  tcp::acceptor acc{io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)};

  std::uint16_t port() const { return acc.local_endpoint().port(); }

  void spawn(awaitable<void> a) {
    ++pending_;
    asio::co_spawn(io, std::move(a), [this](std::exception_ptr e) {
      --pending_;
      if (e && !error_) {
        error_ = e;
        io.stop();
      }
    });
  }

  void run(std::chrono::seconds limit = std::chrono::seconds(20)) {
    io.run_for(limit);
    if (error_) std::rethrow_exception(error_);
    REQUIRE_MESSAGE(pending_ == 0, "test coroutines did not finish within " << limit.count() << " s");
  }

private:
  int pending_ = 0;
  std::exception_ptr error_;
};

bytes to_bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return bytes(p, p + s.size());
}

std::string to_string(std::span<const std::byte> b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

bytes pattern(std::size_t n, unsigned seed) {
  bytes b(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& v : b) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<std::byte>(x >> 24);
  }
  return b;
}

// A frame as a raw peer writes it. `declared` overrides the length field (to announce more than is sent).
constexpr std::uint64_t actual = ~std::uint64_t{0};
bytes raw_frame(std::uint8_t b0, std::span<const std::byte> payload, bool mask, std::uint64_t declared = actual) {
  const std::uint64_t len = declared == actual ? payload.size() : declared;
  bytes out;
  out.push_back(static_cast<std::byte>(b0));
  const std::uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    out.push_back(static_cast<std::byte>(m | len));
  } else if (len < 65536) {
    out.push_back(static_cast<std::byte>(m | 126));
    for (int i = 1; i >= 0; --i) out.push_back(static_cast<std::byte>(len >> (8 * i)));
  } else {
    out.push_back(static_cast<std::byte>(m | 127));
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::byte>(len >> (8 * i)));
  }
  const std::uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
  if (mask)
    for (auto k : key) out.push_back(static_cast<std::byte>(k));
  for (std::size_t i = 0; i < payload.size(); ++i)
    out.push_back(mask ? payload[i] ^ static_cast<std::byte>(key[i % 4]) : payload[i]);
  return out;
}

bytes raw_frame(std::uint8_t b0, std::string_view payload, bool mask) { return raw_frame(b0, to_bytes(payload), mask); }

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

struct parsed_frame {
  std::uint8_t b0 = 0;
  bool masked = false;
  bytes payload;
};

// Reads one frame from a raw socket (unmasking it).
awaitable<parsed_frame> read_raw_frame(tcp::socket& s) {
  parsed_frame f;
  std::uint8_t h[2];
  co_await asio::async_read(s, asio::buffer(h), use_awaitable);
  f.b0 = h[0];
  f.masked = (h[1] & 0x80) != 0;
  std::uint64_t len = h[1] & 0x7f;
  if (len >= 126) {
    std::uint8_t ext[8];
    const std::size_t n = len == 126 ? 2 : 8;
    co_await asio::async_read(s, asio::buffer(ext, n), use_awaitable);
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | ext[i];
  }
  std::uint8_t key[4] = {};
  if (f.masked) co_await asio::async_read(s, asio::buffer(key), use_awaitable);
  f.payload.resize(static_cast<std::size_t>(len));
  co_await asio::async_read(s, asio::buffer(f.payload), use_awaitable);
  if (f.masked)
    for (std::size_t i = 0; i < f.payload.size(); ++i) f.payload[i] ^= static_cast<std::byte>(key[i % 4]);
  co_return f;
}

// Reads until the peer closes; returns what arrived.
awaitable<std::string> read_to_end(tcp::socket& s) {
  std::string all;
  std::error_code ec;
  co_await asio::async_read(s, asio::dynamic_buffer(all), asio::redirect_error(use_awaitable, ec));
  co_return all;
}

awaitable<tcp::socket> raw_connect(std::uint16_t port) {
  tcp::socket s(co_await asio::this_coro::executor);
  co_await s.async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), port), use_awaitable);
  s.set_option(tcp::no_delay(true));
  co_return s;
}

std::string upgrade_request(std::string_view extra_headers = {},
                            std::string_view key_header = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") {
  std::string r = "GET /minio/grid/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  r += key_header;
  r += "Sec-WebSocket-Version: 13\r\n";
  r += extra_headers;
  r += "\r\n";
  return r;
}

// A raw client through the upgrade; `then` is written in the same write as the request.
awaitable<tcp::socket> raw_client_upgraded(std::uint16_t port, bytes then = {}) {
  tcp::socket s = co_await raw_connect(port);
  bytes req = concat({to_bytes(upgrade_request()), then});
  co_await asio::async_write(s, asio::buffer(req), use_awaitable);
  std::string head; // read byte by byte: what follows the head is the server's first frame
  while (head.size() < 4 || head.compare(head.size() - 4, 4, "\r\n\r\n") != 0) {
    char c;
    co_await asio::async_read(s, asio::buffer(&c, 1), use_awaitable);
    head += c;
  }
  REQUIRE(head.substr(0, 13) == "HTTP/1.1 101 ");
  REQUIRE(head.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
  co_return s;
}

// A raw server through the upgrade; `then` is written in the same write as the 101 response.
awaitable<tcp::socket> raw_server_upgraded(tcp::acceptor& acc, bytes then = {}, std::string_view accept = {}) {
  tcp::socket s = co_await acc.async_accept(use_awaitable);
  std::string head;
  co_await asio::async_read_until(s, asio::dynamic_buffer(head), "\r\n\r\n", use_awaitable);
  const std::string_view field = "Sec-WebSocket-Key: ";
  const std::size_t at = head.find(field);
  REQUIRE(at != std::string::npos);
  const std::string key = head.substr(at + field.size(), head.find("\r\n", at) - at - field.size());
  const std::string accept_value = accept.empty() ? ws_accept_key(key) : std::string(accept);
  bytes resp = concat({to_bytes("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Accept: " + accept_value + "\r\n\r\n"),
                       then});
  co_await asio::async_write(s, asio::buffer(resp), use_awaitable);
  co_return s;
}

// The server side through the upgrade, as cogrid does it.
awaitable<std::unique_ptr<ws_stream>> accept_ws(tcp::acceptor& acc, ws_limits limits = {}, http_request* seen = nullptr,
                                                std::size_t* leftover_size = nullptr) {
  auto t = make_tcp_transport(co_await acc.async_accept(use_awaitable));
  http_request req;
  bytes leftover;
  std::error_code ec = co_await http_read_request(*t, limits, req, leftover);
  REQUIRE_MESSAGE(!ec, ec.message());
  REQUIRE(!ws_check_upgrade(req));
  ec = co_await ws_accept(*t, req);
  REQUIRE(!ec);
  if (seen) *seen = req;
  if (leftover_size) *leftover_size = leftover.size();
  co_return std::make_unique<ws_stream>(std::move(t), ws_role::server, limits, std::move(leftover));
}

// The client side through the upgrade, as cogrid does it.
awaitable<std::unique_ptr<ws_stream>> connect_ws(std::uint16_t port, http_headers extra = {}, ws_limits limits = {}) {
  tcp::socket s = co_await raw_connect(port);
  auto t = make_tcp_transport(std::move(s));
  CHECK(t->peer() == "127.0.0.1:" + std::to_string(port));
  bytes leftover;
  int status = 0;
  const std::string host = "127.0.0.1:" + std::to_string(port);
  const std::error_code ec = co_await ws_client_handshake(*t, host, "/minio/grid/v1", extra, limits, leftover, &status);
  REQUIRE_MESSAGE(!ec, ec.message());
  CHECK(status == 101);
  co_return std::make_unique<ws_stream>(std::move(t), ws_role::client, limits, std::move(leftover));
}

// ---- pure functions ---------------------------------------------------------------------------------

TEST_CASE("ws_accept_key: the RFC 6455 sample") {
  CHECK(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

http_request good_request() {
  http_request r;
  r.method = "GET";
  r.target = "/minio/grid/v1";
  r.version = "HTTP/1.1";
  r.headers = {{"Host", "a:9000"},
               {"Upgrade", "websocket"},
               {"Connection", "Upgrade"},
               {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
               {"Sec-WebSocket-Version", "13"}};
  return r;
}

void set_header(http_request& r, std::string_view name, std::string value) {
  for (auto& [n, v] : r.headers)
    if (http_iequals(n, name)) v = std::move(value);
}

TEST_CASE("ws_check_upgrade") {
  CHECK(!ws_check_upgrade(good_request()));
  CHECK(good_request().header("sec-websocket-VERSION") == "13");
  CHECK(good_request().header("Origin").empty());
  {
    auto r = good_request();
    set_header(r, "Connection", "keep-alive, upgrade");
    set_header(r, "Upgrade", "WebSocket");
    CHECK(!ws_check_upgrade(r));
  }
  {
    auto r = good_request();
    r.headers.erase(r.headers.begin() + 3); // no Sec-WebSocket-Key
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
  for (std::string_view key : {"", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZT==", "dGhlIHNhbXBsZSBub25jZSE=",
                          "!GhlIHNhbXBsZSBub25jZQ=="}) {
    CAPTURE(key);
    auto r = good_request();
    set_header(r, "Sec-WebSocket-Key", std::string(key));
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
  {
    auto r = good_request();
    r.method = "POST";
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
  {
    auto r = good_request();
    r.version = "HTTP/1.0";
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
  {
    auto r = good_request();
    set_header(r, "Sec-WebSocket-Version", "8");
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
  {
    auto r = good_request();
    set_header(r, "Connection", "keep-alive");
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
  {
    auto r = good_request();
    set_header(r, "Upgrade", "h2c");
    CHECK(ws_check_upgrade(r) == errc::not_websocket);
  }
}

TEST_CASE("frame_binary: clients mask with a fresh key, servers do not") {
  asio::io_context io;
  ws_stream client(make_tcp_transport(tcp::socket(io)), ws_role::client, {});
  ws_stream server(make_tcp_transport(tcp::socket(io)), ws_role::server, {});
  const bytes payload = pattern(300, 1);
  bytes a, b, s;
  client.frame_binary(payload, a);
  client.frame_binary(payload, b);
  server.frame_binary(payload, s);
  REQUIRE(a.size() == 2 + 2 + 4 + 300);
  CHECK(a[0] == std::byte{0x82});
  CHECK(a[1] == std::byte{0x80 | 126});
  CHECK(a != b); // fresh masking keys (a 2^-32 chance of a false failure)
  for (std::size_t i = 0; i < 300; ++i) CHECK((a[8 + i] ^ a[4 + i % 4]) == payload[i]);
  CHECK(s == raw_frame(0x82, payload, false));
  bytes e;
  server.frame_binary({}, e);
  CHECK(e == bytes{std::byte{0x82}, std::byte{0}});
}

TEST_CASE("ws_mask: word-wise masking equals RFC 6455's byte-wise rule at every key offset") {
  const std::array<std::uint8_t, 4> key{0xa1, 0x02, 0xf3, 0x7c};
  for (std::size_t phase = 0; phase < 4; ++phase) {
    for (std::size_t n = 0; n < 100; ++n) { // the 32-byte steps, the 8-byte steps and the byte tail
      CAPTURE(phase);
      CAPTURE(n);
      const bytes plain = pattern(n, static_cast<unsigned>(n + phase));
      bytes masked = plain;
      CHECK(ws_mask(masked.data(), n, key, phase) == (phase + n) % 4);
      for (std::size_t i = 0; i < n; ++i) CHECK((masked[i] ^ static_cast<std::byte>(key[(phase + i) % 4])) == plain[i]);
      (void)ws_mask(masked.data(), n, key, phase);
      CHECK(masked == plain);
    }
  }
  // Split anywhere, continuing from the returned offset: the same bytes as one call.
  const bytes plain = pattern(100, 5);
  bytes whole = plain;
  (void)ws_mask(whole.data(), whole.size(), key, 0);
  for (std::size_t cut = 0; cut <= plain.size(); ++cut) {
    bytes parts = plain;
    const std::size_t phase = ws_mask(parts.data(), cut, key, 0);
    (void)ws_mask(parts.data() + cut, parts.size() - cut, key, phase);
    CHECK(parts == whole);
  }
}

// One frame at `p` (RFC 6455 header, unmasked here when masked): its payload; `p` moves past it.
bytes take_frame(std::span<const std::byte>& p) {
  REQUIRE(p.size() >= 2);
  CHECK(static_cast<std::uint8_t>(p[0]) == 0x82); // FIN, binary
  const bool masked = (static_cast<std::uint8_t>(p[1]) & 0x80) != 0;
  std::uint64_t n = static_cast<std::uint8_t>(p[1]) & 0x7f;
  std::size_t at = 2;
  const std::size_t ext = n == 126 ? 2 : n == 127 ? 8 : 0;
  if (ext) {
    n = 0;
    for (std::size_t i = 0; i < ext; ++i) n = (n << 8) | static_cast<std::uint8_t>(p[2 + i]);
    at += ext;
  }
  std::array<std::uint8_t, 4> key{};
  if (masked) {
    for (std::size_t i = 0; i < 4; ++i) key[i] = static_cast<std::uint8_t>(p[at + i]);
    at += 4;
  }
  REQUIRE(p.size() >= at + n);
  bytes out(p.begin() + static_cast<std::ptrdiff_t>(at), p.begin() + static_cast<std::ptrdiff_t>(at + n));
  if (masked) (void)ws_mask(out.data(), out.size(), key, 0);
  p = p.subspan(at + n);
  return out;
}

TEST_CASE("frame_batch: a large lone message is written from the queue (masked in place), the rest from out, in order") {
  for (const bool mask : {false, true}) {
    CAPTURE(mask);
    // Three messages: a small one, one over in_place_min, a small one.
    const std::size_t payload_sizes[] = {10, 100'000, 20};
    bytes queue;
    std::vector<std::size_t> ends;
    std::vector<bytes> encoded;
    for (std::size_t i = 0; i < std::size(payload_sizes); ++i) {
      const bytes body = pattern(payload_sizes[i], static_cast<unsigned>(i + 1));
      message m;
      m.mux_id = i + 1;
      m.op = op_code::request;
      m.payload = std::span<const std::byte>(body);
      const std::size_t at = queue.size();
      REQUIRE(encode_append(m, queue));
      ends.push_back(queue.size());
      encoded.emplace_back(queue.begin() + static_cast<std::ptrdiff_t>(at), queue.end());
    }
    bytes scratch, out{std::byte{0xee}}; // out already holds a byte (a control frame's place)
    std::vector<frame_part> parts;
    frame_batch(queue, ends, merge_limits{}, mask, scratch, out, parts, 64u << 10);
    // out's first byte and the small message's frame, the large one's header; its bytes from the queue;
    // the last small message's frame.
    REQUIRE(parts.size() == 3);
    CHECK(!parts[0].from_queue);
    CHECK(parts[0].begin == 0);
    CHECK(parts[1].from_queue);
    CHECK(parts[1].begin == ends[0]);
    CHECK(parts[1].end == ends[1]);
    CHECK(!parts[2].from_queue);
    CHECK(parts[2].begin == parts[0].end);
    CHECK(parts[2].end == out.size());
    bytes wire;
    for (const frame_part& p : parts) {
      const bytes& from = p.from_queue ? queue : out;
      wire.insert(wire.end(), from.begin() + static_cast<std::ptrdiff_t>(p.begin), from.begin() + static_cast<std::ptrdiff_t>(p.end));
    }
    CHECK(wire[0] == std::byte{0xee});
    std::span<const std::byte> rest = std::span<const std::byte>(wire).subspan(1);
    for (const bytes& want : encoded) CHECK(take_frame(rest) == want);
    CHECK(rest.empty());
  }
}

// ---- cogrid against cogrid --------------------------------------------------------------------------

const std::size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 1 << 20};

awaitable<void> echo_server(tcp::acceptor& acc, http_request& seen) {
  auto ws = co_await accept_ws(acc, {}, &seen);
  bytes msg, out;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    std::error_code ec = co_await ws->read_message(msg);
    REQUIRE_MESSAGE(!ec, ec.message());
    CHECK(msg.size() == sizes[i]);
    out.clear();
    ws->frame_binary(msg, out);
    ec = co_await ws->write_raw(out);
    REQUIRE(!ec);
  }
  const std::error_code ec = co_await ws->read_message(msg);
  CHECK(ec == errc::websocket_closed);
  CHECK(ws->close_received());
  out.clear();
  CHECK(ws->take_control_output(out));
  CHECK(out == raw_frame(0x88, bytes{std::byte{0x03}, std::byte{0xe8}}, false));
  co_await ws->close();
}

awaitable<void> sizes_client(std::uint16_t port) {
  http_headers extra = {{"Authorization", "Bearer t0k3n"}, {"X-Minio-Time", "1700000000000000000"}};
  auto ws = co_await connect_ws(port, extra);
  bytes out, msg;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    CAPTURE(sizes[i]);
    const bytes payload = pattern(sizes[i], static_cast<unsigned>(i));
    out.clear();
    ws->frame_binary(payload, out);
    std::error_code ec = co_await ws->write_raw(out);
    REQUIRE(!ec);
    ec = co_await ws->read_message(msg);
    REQUIRE_MESSAGE(!ec, ec.message());
    CHECK(msg == payload);
  }
  co_await ws->close(1000);
}

TEST_CASE("handshake, extra headers, and messages of every length class both ways") {
  harness h;
  http_request seen;
  h.spawn(echo_server(h.acc, seen));
  h.spawn(sizes_client(h.port()));
  h.run();
  CHECK(seen.method == "GET");
  CHECK(seen.target == "/minio/grid/v1");
  CHECK(seen.header("host") == "127.0.0.1:" + std::to_string(h.port()));
  CHECK(seen.header("AUTHORIZATION") == "Bearer t0k3n");
  CHECK(seen.header("x-minio-time") == "1700000000000000000");
}

awaitable<void> batch_server(tcp::acceptor& acc, int count) {
  auto ws = co_await accept_ws(acc);
  bytes msg;
  for (int i = 0; i < count; ++i) {
    const std::error_code ec = co_await ws->read_message(msg);
    REQUIRE_MESSAGE(!ec, ec.message());
    if (msg != pattern(static_cast<std::size_t>(i % 300), static_cast<unsigned>(i))) FAIL("message " << i << " differs");
  }
  const std::error_code ec = co_await ws->read_message(msg);
  CHECK(ec == errc::websocket_closed);
}

awaitable<void> batch_client(std::uint16_t port, int count) {
  auto ws = co_await connect_ws(port);
  bytes batch;
  for (int i = 0; i < count; ++i) ws->frame_binary(pattern(static_cast<std::size_t>(i % 300), static_cast<unsigned>(i)), batch);
  const std::uint64_t before = ws->lower().writes();
  const std::error_code ec = co_await ws->write_raw(batch);
  CHECK(!ec);
  CHECK(ws->lower().writes() == before + 1);
  co_await ws->close();
}

TEST_CASE("1000 messages in one write_raw") {
  harness h;
  h.spawn(batch_server(h.acc, 1000));
  h.spawn(batch_client(h.port(), 1000));
  h.run();
}

awaitable<void> shrink_server(tcp::acceptor& acc) {
  auto ws = co_await accept_ws(acc);
  bytes out;
  ws->frame_binary(pattern(1 << 20, 1), out);
  ws->frame_binary(pattern(10, 2), out);
  ws->frame_binary(pattern(100 << 10, 3), out);
  ws->frame_binary(pattern(10, 4), out);
  const std::error_code ec = co_await ws->write_raw(out);
  CHECK(!ec);
  bytes msg;
  const std::error_code ec2 = co_await ws->read_message(msg);
  CHECK(ec2 == errc::websocket_closed);
}

awaitable<void> shrink_client(std::uint16_t port) {
  auto ws = co_await connect_ws(port);
  bytes msg;
  std::error_code ec = co_await ws->read_message(msg);
  REQUIRE(!ec);
  CHECK(msg == pattern(1 << 20, 1));
  CHECK(msg.capacity() >= (1u << 20));
  ec = co_await ws->read_message(msg);
  REQUIRE(!ec);
  CHECK(msg == pattern(10, 2));
  CHECK(msg.capacity() < 1024); // the 1 MiB buffer was dropped before this read
  ec = co_await ws->read_message(msg);
  REQUIRE(!ec);
  CHECK(msg == pattern(100 << 10, 3));
  const std::size_t cap = msg.capacity();
  ec = co_await ws->read_message(msg);
  REQUIRE(!ec);
  CHECK(msg == pattern(10, 4));
  CHECK(msg.capacity() == cap); // <= 128 KiB: reused
  co_await ws->close();
}

TEST_CASE("a buffer grown beyond 128 KiB is dropped at the next read; smaller ones are reused") {
  harness h;
  h.spawn(shrink_server(h.acc));
  h.spawn(shrink_client(h.port()));
  h.run();
}

// ---- the server side against a raw client -----------------------------------------------------------

awaitable<void> leftover_server(tcp::acceptor& acc, std::size_t expect_leftover) {
  std::size_t leftover = 0;
  auto ws = co_await accept_ws(acc, {}, nullptr, &leftover);
  CHECK(leftover == expect_leftover);
  bytes msg;
  std::error_code ec = co_await ws->read_message(msg);
  REQUIRE(!ec);
  CHECK(to_string(msg) == "hello");
  ec = co_await ws->read_message(msg);
  REQUIRE(!ec);
  CHECK(to_string(msg) == "world");
}

awaitable<void> leftover_raw_client(std::uint16_t port, bytes first) {
  tcp::socket s = co_await raw_client_upgraded(port, std::move(first));
  bytes second = raw_frame(0x82, "world", true);
  co_await asio::async_write(s, asio::buffer(second), use_awaitable);
  co_await read_to_end(s);
}

TEST_CASE("server: bytes after the request head (same write) are the first frame") {
  harness h;
  bytes first = raw_frame(0x82, "hello", true);
  h.spawn(leftover_server(h.acc, first.size()));
  h.spawn(leftover_raw_client(h.port(), first));
  h.run();
}

// A raw client sends `frames` after the upgrade, then reads until the server closes.
awaitable<void> raw_client_sends(std::uint16_t port, bytes frames, std::vector<parsed_frame>* replies = nullptr,
                                 int reply_count = 0) {
  tcp::socket s = co_await raw_client_upgraded(port);
  co_await asio::async_write(s, asio::buffer(frames), use_awaitable);
  for (int i = 0; i < reply_count; ++i) replies->push_back(co_await read_raw_frame(s));
  co_await read_to_end(s);
}

struct server_result {
  std::error_code ec;
  std::string msg;
  int control_calls = 0;
  bytes control;
  std::error_code transport_error;
};

// Accepts, reads messages until an error or `count` messages, writes the control output, closes.
awaitable<void> server_reads(tcp::acceptor& acc, ws_limits limits, server_result& r, int count = 1) {
  auto ws = co_await accept_ws(acc, limits);
  ws->on_control_output = [&r] { ++r.control_calls; };
  bytes msg;
  for (int i = 0; i < count && !r.ec; ++i) {
    r.ec = co_await ws->read_message(msg);
    if (!r.ec) r.msg += (r.msg.empty() ? "" : "|") + to_string(msg);
  }
  r.transport_error = ws->last_transport_error();
  if (ws->take_control_output(r.control)) {
    const std::error_code ec = co_await ws->write_raw(r.control);
    CHECK(!ec);
  }
  if (r.ec) {
    const std::error_code again = co_await ws->read_message(msg); // a failed stream stays failed
    CHECK(again == r.ec);
  }
  ws->lower().close();
}

TEST_CASE("server: a fragmented message is joined; pings in between are answered with their payload") {
  harness h;
  server_result r;
  std::vector<parsed_frame> replies;
  const bytes ping125 = pattern(125, 9);
  bytes frames = concat({raw_frame(0x89, ping125, true), raw_frame(0x02, "abc", true), raw_frame(0x89, "p1", true),
                         raw_frame(0x00, "def", true), raw_frame(0x8A, "unsolicited pong", true),
                         raw_frame(0x00, "", true), raw_frame(0x80, "ghi", true)});
  h.spawn(server_reads(h.acc, {}, r));
  h.spawn(raw_client_sends(h.port(), frames, &replies, 2));
  h.run();
  CHECK(!r.ec);
  CHECK(r.msg == "abcdefghi");
  CHECK(r.control_calls == 2);
  REQUIRE(replies.size() == 2);
  CHECK(replies[0].b0 == 0x8A);
  CHECK(!replies[0].masked);
  CHECK(replies[0].payload == ping125);
  CHECK(replies[1].b0 == 0x8A);
  CHECK(to_string(replies[1].payload) == "p1");
}

// Writes `frames` `chunk` bytes at a time, pausing between writes so the server reads them piecemeal.
awaitable<void> raw_client_trickles(std::uint16_t port, bytes frames, std::size_t chunk) {
  tcp::socket s = co_await raw_client_upgraded(port);
  asio::steady_timer pause(s.get_executor());
  for (std::size_t at = 0; at < frames.size(); at += chunk) {
    const std::size_t n = std::min(chunk, frames.size() - at);
    co_await asio::async_write(s, asio::buffer(frames.data() + at, n), use_awaitable);
    pause.expires_after(std::chrono::microseconds(300));
    co_await pause.async_wait(use_awaitable);
  }
  co_await read_to_end(s);
}

TEST_CASE("server: masked fragments arriving a few bytes at a time are unmasked at the right key offset") {
  const bytes payload = pattern(1000, 21);
  const std::span<const std::byte> all(payload);
  bytes frames = concat({raw_frame(0x02, all.subspan(0, 333), true), raw_frame(0x89, "p", true),
                         raw_frame(0x00, all.subspan(333, 1), true), raw_frame(0x00, all.subspan(334, 0), true),
                         raw_frame(0x80, all.subspan(334), true), raw_frame(0x82, all.subspan(0, 130), true)});
  for (const std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{250}}) {
    CAPTURE(chunk);
    harness h;
    server_result r;
    h.spawn(server_reads(h.acc, {}, r, 2));
    h.spawn(raw_client_trickles(h.port(), frames, chunk));
    h.run();
    CHECK(!r.ec);
    CHECK(r.msg == to_string(payload) + "|" + to_string(bytes(payload.begin(), payload.begin() + 130)));
    CHECK(r.control_calls == 1);
  }
}

TEST_CASE("server: text frames are discarded, fragmented or not") {
  harness h;
  server_result r;
  bytes frames = concat({raw_frame(0x81, "text", true), raw_frame(0x01, "frag", true), raw_frame(0x89, "", true),
                         raw_frame(0x80, "ment", true), raw_frame(0x82, "binary", true), raw_frame(0x81, "more", true),
                         raw_frame(0x82, "", true)});
  h.spawn(server_reads(h.acc, {}, r, 2));
  h.spawn(raw_client_sends(h.port(), frames, nullptr, 0));
  h.run();
  CHECK(!r.ec);
  CHECK(r.msg == "binary|");
  CHECK(r.control_calls == 1);
}

TEST_CASE("server: close → websocket_closed and a close reply with the same code") {
  harness h;
  server_result r;
  std::vector<parsed_frame> replies;
  const bytes close_payload = concat({bytes{std::byte{0x03}, std::byte{0xe9}}, to_bytes("going away")});
  h.spawn(server_reads(h.acc, {}, r));
  h.spawn(raw_client_sends(h.port(), raw_frame(0x88, close_payload, true), &replies, 1));
  h.run();
  CHECK(r.ec == errc::websocket_closed);
  CHECK(r.control_calls == 1);
  CHECK(r.control == raw_frame(0x88, bytes{std::byte{0x03}, std::byte{0xe9}}, false));
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].b0 == 0x88);
  CHECK(replies[0].payload == bytes{std::byte{0x03}, std::byte{0xe9}});
}

TEST_CASE("server: protocol violations → websocket_protocol") {
  struct violation {
    const char* what;
    bytes frames;
  };
  const violation cases[] = {
      {"RSV1 set", raw_frame(0xC2, "a", true)},
      {"RSV2 set", raw_frame(0xA2, "a", true)},
      {"RSV3 set", raw_frame(0x92, "a", true)},
      {"reserved data opcode 3", raw_frame(0x83, "a", true)},
      {"reserved control opcode 11", raw_frame(0x8B, "a", true)},
      {"ping of 126 bytes", raw_frame(0x89, pattern(126, 1), true)},
      {"close of 126 bytes", raw_frame(0x88, pattern(126, 1), true)},
      {"fragmented ping", raw_frame(0x09, "a", true)},
      {"continuation without a start", raw_frame(0x80, "a", true)},
      {"new binary message inside a fragmented one", concat({raw_frame(0x02, "a", true), raw_frame(0x82, "b", true)})},
      {"text message inside a fragmented binary one", concat({raw_frame(0x02, "a", true), raw_frame(0x81, "b", true)})},
      {"unmasked frame to a server", raw_frame(0x82, "a", false)},
      {"non-minimal 16-bit length", raw_frame(0x82, pattern(10, 1), true, 10)},
      {"non-minimal 64-bit length", raw_frame(0x82, pattern(200, 1), true, 200)},
      {"close with a 1-byte payload", raw_frame(0x88, bytes{std::byte{3}}, true)},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    bytes frames = c.frames;
    if (std::string_view(c.what) == "non-minimal 16-bit length") { // rewrite the length as 126 + 16 bits
      frames = concat({bytes{std::byte{0x82}, std::byte{0x80 | 126}, std::byte{0}, std::byte{10}},
                       bytes(c.frames.begin() + 2, c.frames.end())});
    }
    if (std::string_view(c.what) == "non-minimal 64-bit length") { // 127 + 64 bits holding 200
      frames = concat({bytes{std::byte{0x82}, std::byte{0x80 | 127}, std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0},
                             std::byte{0}, std::byte{0}, std::byte{0}, std::byte{200}},
                       bytes(c.frames.begin() + 4, c.frames.end())});
    }
    harness h;
    server_result r;
    h.spawn(server_reads(h.acc, {}, r));
    h.spawn(raw_client_sends(h.port(), frames));
    h.run();
    CHECK(r.ec == errc::websocket_protocol);
  }
}

awaitable<void> raw_client_partial(std::uint16_t port, bytes frames, bool close_after) {
  tcp::socket s = co_await raw_client_upgraded(port);
  co_await asio::async_write(s, asio::buffer(frames), use_awaitable);
  if (close_after) s.close();
  else co_await read_to_end(s); // keep the connection open: the server must decide without the rest
}

TEST_CASE("server: a message over the limit fails from the frame header, before the payload is sent") {
  ws_limits limits;
  limits.max_message_bytes = 64 * 1024;
  SUBCASE("one frame") {
    harness h;
    server_result r;
    bytes partial = raw_frame(0x82, pattern(1000, 1), true, 1 << 20); // announces 1 MiB, sends 1000 bytes
    h.spawn(server_reads(h.acc, limits, r));
    h.spawn(raw_client_partial(h.port(), partial, false));
    h.run();
    CHECK(r.ec == errc::message_too_large);
  }
  SUBCASE("fragments adding up") {
    harness h;
    server_result r;
    bytes partial = concat({raw_frame(0x02, pattern(40000, 1), true), raw_frame(0x80, {}, true, 40000)});
    h.spawn(server_reads(h.acc, limits, r));
    h.spawn(raw_client_partial(h.port(), partial, false));
    h.run();
    CHECK(r.ec == errc::message_too_large);
  }
  SUBCASE("exactly the limit is fine") {
    harness h;
    server_result r;
    h.spawn(server_reads(h.acc, limits, r));
    h.spawn(raw_client_partial(h.port(), raw_frame(0x82, pattern(64 * 1024, 1), true), false));
    h.run();
    CHECK(!r.ec);
    CHECK(r.msg.size() == 64 * 1024);
  }
}

TEST_CASE("server: the peer closing mid-frame → disconnected") {
  const bytes whole = raw_frame(0x82, pattern(100, 1), true);
  for (std::size_t cut : {std::size_t{1}, std::size_t{3}, std::size_t{6}, std::size_t{50}}) {
    CAPTURE(cut);
    harness h;
    server_result r;
    h.spawn(server_reads(h.acc, {}, r));
    h.spawn(raw_client_partial(h.port(), bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(cut)), true));
    h.run();
    CHECK(r.ec == errc::disconnected);
    CHECK(r.transport_error == asio::error::eof);
  }
}

// ---- the server's HTTP checks ------------------------------------------------------------------------

struct http_result {
  std::error_code read_ec;
  std::error_code check_ec;
  std::error_code accept_ec;
  std::string response;
};

awaitable<void> http_server(tcp::acceptor& acc, ws_limits limits, http_result& r) {
  auto t = make_tcp_transport(co_await acc.async_accept(use_awaitable));
  http_request req;
  bytes leftover;
  r.read_ec = co_await http_read_request(*t, limits, req, leftover);
  if (r.read_ec) {
    co_await http_respond(*t, r.read_ec == errc::http_header_too_large ? 431 : 400, "bad request");
  } else {
    r.check_ec = ws_check_upgrade(req);
    r.accept_ec = co_await ws_accept(*t, req); // refuses (and writes nothing) if the check fails
    if (r.accept_ec) co_await http_respond(*t, 400, "missing or invalid Sec-WebSocket-Key");
  }
  t->close();
}

awaitable<void> http_raw_client(std::uint16_t port, std::string request, http_result& r) {
  tcp::socket s = co_await raw_connect(port);
  co_await asio::async_write(s, asio::buffer(request), use_awaitable);
  r.response = co_await read_to_end(s); // the connection stays open until the server has decided
}

TEST_CASE("server: not HTTP, or not a WebSocket upgrade → not_websocket") {
  for (std::string garbage : {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), std::string("HELLO WORLD\r\n\r\n"),
                              std::string("GET /\r\n\r\n"), std::string("GET / HTTP/1.1\r\nno colon here\r\n\r\n"),
                              std::string("GET / HTTP/1.1\r\n folded: header\r\n\r\n"),
                              std::string("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), std::string("G\x01T / HTTP/1.1")}) {
    CAPTURE(garbage);
    harness h;
    http_result r;
    h.spawn(http_server(h.acc, {}, r));
    h.spawn(http_raw_client(h.port(), garbage, r));
    h.run();
    CHECK(r.read_ec == errc::not_websocket);
    CHECK(r.response.substr(0, 24) == "HTTP/1.1 400 Bad Request");
  }
}

TEST_CASE("server: a head over max_header_bytes → http_header_too_large") {
  ws_limits limits;
  limits.max_header_bytes = 1024;
  SUBCASE("too large") {
    harness h;
    http_result r;
    h.spawn(http_server(h.acc, limits, r));
    h.spawn(http_raw_client(h.port(), upgrade_request("X-Pad: " + std::string(1000, 'a') + "\r\n"), r));
    h.run();
    CHECK(r.read_ec == errc::http_header_too_large);
  }
  SUBCASE("exactly at the limit is fine") {
    harness h;
    http_result r;
    std::string req = upgrade_request("X-Pad: \r\n");
    req = upgrade_request("X-Pad: " + std::string(1024 - req.size(), 'a') + "\r\n");
    REQUIRE(req.size() == 1024);
    h.spawn(http_server(h.acc, limits, r));
    h.spawn(http_raw_client(h.port(), req, r));
    h.run();
    CHECK(!r.read_ec);
    CHECK(!r.accept_ec);
    CHECK(r.response.substr(0, 13) == "HTTP/1.1 101 ");
  }
}

TEST_CASE("server: a missing or invalid Sec-WebSocket-Key → not_websocket, then a 400") {
  for (std::string key_header : {std::string(), std::string("Sec-WebSocket-Key: c2hvcnQ=\r\n")}) {
    CAPTURE(key_header);
    harness h;
    http_result r;
    h.spawn(http_server(h.acc, {}, r));
    h.spawn(http_raw_client(h.port(), upgrade_request({}, key_header), r));
    h.run();
    CHECK(!r.read_ec);
    CHECK(r.check_ec == errc::not_websocket);
    CHECK(r.accept_ec == errc::not_websocket);
    CHECK(r.response.substr(0, 24) == "HTTP/1.1 400 Bad Request");
    CHECK(r.response.find("Content-Length: 37\r\n") != std::string::npos);
    CHECK(r.response.find("\r\n\r\nmissing or invalid Sec-WebSocket-Key\n") != std::string::npos);
  }
}

// ---- the client side against a raw or refusing server -----------------------------------------------

struct client_result {
  std::error_code ec;
  int status = -1;
  std::size_t leftover = 0;
  std::string msg;
};

awaitable<void> client_handshake_only(std::uint16_t port, client_result& r) {
  auto t = make_tcp_transport(co_await raw_connect(port));
  bytes leftover;
  r.ec = co_await ws_client_handshake(*t, "127.0.0.1", "/minio/grid/v1", {}, {}, leftover, &r.status);
  r.leftover = leftover.size();
  if (!r.ec) {
    ws_stream ws(std::move(t), ws_role::client, {}, std::move(leftover));
    bytes msg;
    r.ec = co_await ws.read_message(msg);
    r.msg = to_string(msg);
  }
}

awaitable<void> refusing_server(tcp::acceptor& acc, int status) {
  auto t = make_tcp_transport(co_await acc.async_accept(use_awaitable));
  http_request req;
  bytes leftover;
  const std::error_code ec = co_await http_read_request(*t, {}, req, leftover);
  CHECK(!ec);
  co_await http_respond(*t, status, "no");
  t->close();
}

TEST_CASE("client: a refusal → not_websocket, or auth_failed for 401/403, with the status") {
  for (int status : {200, 400, 401, 403, 404, 426, 500}) {
    CAPTURE(status);
    harness h;
    client_result r;
    h.spawn(refusing_server(h.acc, status));
    h.spawn(client_handshake_only(h.port(), r));
    h.run();
    CHECK(r.status == status);
    CHECK(r.ec == (status == 401 || status == 403 ? errc::auth_failed : errc::not_websocket));
  }
}

awaitable<void> raw_http_server(tcp::acceptor& acc, std::string response) {
  tcp::socket s = co_await acc.async_accept(use_awaitable);
  std::string head;
  co_await asio::async_read_until(s, asio::dynamic_buffer(head), "\r\n\r\n", use_awaitable);
  co_await asio::async_write(s, asio::buffer(response), use_awaitable);
  co_await read_to_end(s);
}

TEST_CASE("client: a bad 101 response → not_websocket") {
  const std::string accept = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"; // for another key
  for (std::string response :
       {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + accept + "\r\n",
        std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        std::string("garbage\r\n\r\n"), std::string("HTTP/1.1 1O1 Switching\r\n\r\n")}) {
    CAPTURE(response);
    harness h;
    client_result r;
    h.spawn(raw_http_server(h.acc, response));
    h.spawn(client_handshake_only(h.port(), r));
    h.run();
    CHECK(r.ec == errc::not_websocket);
  }
}

awaitable<void> raw_server_sends(tcp::acceptor& acc, bytes then, bytes after) {
  tcp::socket s = co_await raw_server_upgraded(acc, std::move(then));
  if (!after.empty()) co_await asio::async_write(s, asio::buffer(after), use_awaitable);
  co_await read_to_end(s);
}

TEST_CASE("client: bytes after the 101 response (same write) are the first frame") {
  harness h;
  client_result r;
  const bytes first = raw_frame(0x82, "early", false);
  h.spawn(raw_server_sends(h.acc, first, {}));
  h.spawn(client_handshake_only(h.port(), r));
  h.run();
  CHECK(!r.ec);
  CHECK(r.status == 101);
  CHECK(r.leftover == first.size());
  CHECK(r.msg == "early");
}

TEST_CASE("client: a masked frame from the server → websocket_protocol") {
  harness h;
  client_result r;
  h.spawn(raw_server_sends(h.acc, {}, raw_frame(0x82, "masked", true)));
  h.spawn(client_handshake_only(h.port(), r));
  h.run();
  CHECK(r.status == 101);
  CHECK(r.ec == errc::websocket_protocol);
}

awaitable<void> closing_server(tcp::acceptor& acc) {
  auto ws = co_await accept_ws(acc);
  co_await ws->close(1001);
  co_await ws->close(1000); // idempotent
  bytes b;
  const std::error_code ec = co_await ws->write_raw(b);
  CHECK(ec == errc::disconnected);
}

awaitable<void> raw_client_expect_close(std::uint16_t port, parsed_frame& f, std::string& rest) {
  tcp::socket s = co_await raw_client_upgraded(port);
  f = co_await read_raw_frame(s);
  rest = co_await read_to_end(s);
}

TEST_CASE("ws_stream::close sends a close frame, then closes the transport") {
  harness h;
  parsed_frame f;
  std::string rest = "x";
  h.spawn(closing_server(h.acc));
  h.spawn(raw_client_expect_close(h.port(), f, rest));
  h.run();
  CHECK(f.b0 == 0x88);
  CHECK(!f.masked);
  CHECK(f.payload == bytes{std::byte{0x03}, std::byte{0xe9}});
  CHECK(rest.empty());
}

} // namespace

// ---- close() when the peer does not read -----------------------------------------------------------------

namespace {

awaitable<void> sleep_ms(int ms) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await t.async_wait(use_awaitable);
}

awaitable<void> close_after(ws_stream& ws, int ms) {
  co_await sleep_ms(ms);
  co_await ws.close();
}

struct stuck_result {
  std::error_code write_ec;
  std::chrono::milliseconds close_took{};
};

// Writes more than the socket buffers and the peer's window hold to a peer that does not read, then closes
// while the write is stuck: close() must not write (no second concurrent write) and the write must end.
awaitable<void> stuck_server(tcp::acceptor& acc, stuck_result& r, asio::steady_timer& gate) {
  using namespace asio::experimental::awaitable_operators;
  auto ws = co_await accept_ws(acc);
  auto* st = dynamic_cast<stream_transport<tcp::socket>*>(&ws->lower());
  REQUIRE(st);
  st->stream().set_option(asio::socket_base::send_buffer_size(64 * 1024)); // fixed size: no autotuning
  bytes big;
  ws->frame_binary(pattern(32 << 20, 1), big);
  const auto start = std::chrono::steady_clock::now();
  r.write_ec = co_await (ws->write_raw(big) && close_after(*ws, 100));
  r.close_took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  gate.cancel();
}

awaitable<void> lazy_raw_client(std::uint16_t port, asio::steady_timer& gate) {
  tcp::socket s = co_await raw_client_upgraded(port);
  std::error_code ec;
  co_await gate.async_wait(asio::redirect_error(use_awaitable, ec)); // read only once the server is done
  co_await read_to_end(s);
}

TEST_CASE("ws_stream::close during a stuck write closes without writing; the write ends with disconnected") {
  harness h;
  stuck_result r;
  asio::steady_timer gate(h.io, std::chrono::steady_clock::time_point::max());
  h.spawn(stuck_server(h.acc, r, gate));
  h.spawn(lazy_raw_client(h.port(), gate));
  h.run();
  CHECK(r.write_ec == errc::disconnected);
  CHECK(r.close_took < std::chrono::milliseconds(2000));
}

// An in-memory transport whose reads and writes never complete until it is closed (or they are cancelled).
class stalled_transport final : public transport {
public:
  explicit stalled_transport(asio::any_io_executor ex) : ex_(std::move(ex)), timer_(ex_) {
    timer_.expires_at(std::chrono::steady_clock::time_point::max());
  }
  awaitable<std::size_t> read_some(asio::mutable_buffer, std::error_code& ec) override {
    co_await stall(ec);
    co_return 0;
  }
  awaitable<std::size_t> write_all(asio::const_buffer, std::error_code& ec) override {
    ++writes_;
    co_await stall(ec);
    co_return 0;
  }
  void close() noexcept override {
    closed_ = true;
    timer_.cancel();
  }
  std::string peer() const override { return "stalled"; }
  asio::any_io_executor get_executor() override { return ex_; }
  bool closed() const noexcept { return closed_; }

private:
  awaitable<void> stall(std::error_code& ec) {
    ec.clear();
    if (!closed_) co_await timer_.async_wait(asio::redirect_error(use_awaitable, ec));
    if (!ec) ec = asio::error::operation_aborted;
  }
  asio::any_io_executor ex_;
  asio::steady_timer timer_;
  bool closed_ = false;
};

struct stalled_result {
  std::chrono::milliseconds close_took{};
  std::uint64_t writes = 0;
  bool closed = false;
};

awaitable<void> close_stalled(stalled_result& r) {
  auto t = std::make_unique<stalled_transport>(co_await asio::this_coro::executor);
  stalled_transport& lower = *t;
  ws_stream ws(std::move(t), ws_role::client, {});
  ws.close_timeout = std::chrono::milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  co_await ws.close(1001);
  r.close_took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  r.writes = lower.writes();
  r.closed = lower.closed();
}

TEST_CASE("ws_stream::close: the close frame's write is bounded by close_timeout") {
  asio::io_context io;
  stalled_result r;
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, close_stalled(r), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  io.run_for(std::chrono::seconds(10));
  if (error) std::rethrow_exception(error);
  REQUIRE(done);
  CHECK(r.writes == 1);
  CHECK(r.closed);
  CHECK(r.close_took >= std::chrono::milliseconds(190));
  CHECK(r.close_took < std::chrono::milliseconds(2000));
}

awaitable<void> truncated_request_client(std::uint16_t port) {
  tcp::socket s = co_await raw_connect(port);
  const std::string part = "GET /minio/grid/v1 HTTP/1.1\r\nHost: x\r\n";
  co_await asio::async_write(s, asio::buffer(part), use_awaitable);
  s.close();
}

TEST_CASE("server: the peer leaving during the request head → disconnected") {
  harness h;
  http_result r;
  h.spawn(http_server(h.acc, {}, r));
  h.spawn(truncated_request_client(h.port()));
  h.run();
  CHECK(r.read_ec == errc::disconnected);
}

} // namespace
