// tests/fuzz/make_corpus.cpp — writes the fuzzers' seed corpus: `make_corpus DIR` fills DIR/message,
// DIR/merged, DIR/handshake and DIR/websocket (run from the source tree: `BUILD/tests/fuzz/make_corpus
// tests/fuzz/corpus`). Well-formed
// seeds are built with cogrid's public API only; malformed ones are those bytes with one thing broken.
// The byte shapes of grid-protocol.md §1.11 and §1.12 are checked on the way, so a codec that drifts
// from them makes this program fail instead of writing seeds.
#include "fuzz_net.hpp"

#include <cogrid/control.hpp>
#include <cogrid/message.hpp>
#include <cogrid/subroute.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace cogrid;
using bytes = std::vector<std::byte>;

bool ok = true;

bytes hex(std::string_view h) {
  bytes out;
  int hi = -1;
  for (char c : h) {
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) continue; // spaces
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<std::byte>(hi << 4 | v));
      hi = -1;
    }
  }
  return out;
}

bytes cat(std::initializer_list<std::span<const std::byte>> parts) {
  bytes out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::span<const std::byte> text(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::string to_hex(std::span<const std::byte> b) {
  std::string s;
  char buf[3];
  for (std::byte x : b) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(x));
    s += buf;
  }
  return s;
}

void expect(bool cond, const std::string& what) {
  if (cond) return;
  std::fprintf(stderr, "make_corpus: %s\n", what.c_str());
  ok = false;
}

void expect_prefix(std::span<const std::byte> got, std::string_view want_hex, const char* what) {
  const bytes want = hex(want_hex);
  expect(got.size() >= want.size() && std::equal(want.begin(), want.end(), got.begin()),
         std::string(what) + ": got " + to_hex(got) + ", want prefix " + to_hex(want));
}

bytes encode(const message& m) {
  bytes out;
  if (auto r = encode_append(m, out); !r) expect(false, "encode_append: " + r.error().message());
  return out;
}

template <class T>
bytes payload_of(const T& v) {
  bytes out;
  encode_append(v, out);
  return out;
}

class writer {
public:
  explicit writer(std::filesystem::path dir) : dir_(std::move(dir)) { std::filesystem::create_directories(dir_); }

  // `valid`: whether the seed must decode (as one message or a container); checked before writing.
  void put(const std::string& name, std::span<const std::byte> b, bool valid) {
    const std::error_code ec = for_each_message(b, [](const message&) {}).error().code;
    expect(!ec == valid, name + (valid ? " does not decode: " + ec.message() : " decodes but should not"));
    std::ofstream f(dir_ / name, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    expect(static_cast<bool>(f), "cannot write " + (dir_ / name).string());
    ++count_;
  }
  int count() const { return count_; }

private:
  std::filesystem::path dir_;
  int count_ = 0;
};

// Writes seeds that are not grid messages (byte streams for the network fuzzers).
struct raw_writer {
  std::filesystem::path dir;
  int count = 0;
  explicit raw_writer(std::filesystem::path d) : dir(std::move(d)) { std::filesystem::create_directories(dir); }
  void put(const std::string& name, std::span<const std::byte> b) {
    std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    expect(static_cast<bool>(f), "cannot write " + (dir / name).string());
    ++count;
  }
};

// One WebSocket frame (RFC 6455 §5.2), masked with a fixed key when `mask` (a client's frames).
bytes ws_frame(unsigned opcode, std::span<const std::byte> payload, bool mask, bool fin = true) {
  bytes f;
  f.push_back(static_cast<std::byte>((fin ? 0x80u : 0u) | opcode));
  const std::size_t n = payload.size();
  const unsigned m = mask ? 0x80u : 0u;
  if (n < 126) {
    f.push_back(static_cast<std::byte>(m | n));
  } else if (n < 65536) {
    f.push_back(static_cast<std::byte>(m | 126));
    for (int s = 8; s >= 0; s -= 8) f.push_back(static_cast<std::byte>((n >> s) & 0xff));
  } else {
    f.push_back(static_cast<std::byte>(m | 127));
    for (int s = 56; s >= 0; s -= 8) f.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(n) >> s) & 0xff));
  }
  const std::byte key[4] = {std::byte{0x12}, std::byte{0x34}, std::byte{0x56}, std::byte{0x78}};
  if (mask) f.insert(f.end(), key, key + 4);
  for (std::size_t i = 0; i < n; ++i) f.push_back(mask ? payload[i] ^ key[i % 4] : payload[i]);
  return f;
}

// Seeds for fuzz_handshake (what a dialing node sends) and fuzz_websocket (role byte, then frames).
void network_seeds(const std::filesystem::path& root, const message& request, const message& ping_example) {
  raw_writer hs(root / "handshake"), ws(root / "websocket");
  const wire_time t{1744934400, 0};
  node_id id;
  for (std::size_t i = 0; i < 16; ++i) id.bytes[i] = static_cast<std::byte>(0x20 + i);
  auto connect_frame = [&](const std::string& host, const std::string& token) {
    message m;
    m.op = op_code::connect;
    const bytes p = payload_of(connect_request{id, host, t, token});
    m.payload = std::span<const std::byte>(p);
    return ws_frame(2, encode(m), true);
  };
  const std::string up = fuzz::upgrade_request(fuzz::token);
  const bytes req = encode(request), ping = encode(ping_example);
  const bytes conn = connect_frame(fuzz::dialer(), fuzz::token);
  hs.put("connect_only", cat({text(up), conn}));
  hs.put("connect_then_request_and_ping", cat({text(up), conn, ws_frame(2, req, true), ws_frame(2, ping, true)}));
  bytes merged_buf;
  merge_builder mb(merged_buf);
  expect(mb.add(req).has_value(), "merge_builder::add");
  expect(mb.add(ping).has_value(), "merge_builder::add");
  hs.put("connect_then_merged", cat({text(up), conn, ws_frame(2, mb.finish(), true)}));
  message open;
  open.mux_id = 9;
  open.op = op_code::connect_mux;
  open.handler = handler_id{78};
  open.subroute = make_subroute_id(handler_id{78}, "echo");
  open.flags = msg_flags::crc;
  message item = open;
  item.op = op_code::mux_client_msg;
  item.seq = 1;
  item.subroute.reset();
  item.payload = text("x");
  message done = item;
  done.seq = 2;
  done.payload.reset();
  done.flags |= msg_flags::eof;
  hs.put("connect_then_stream", cat({text(up), conn, ws_frame(2, encode(open), true), ws_frame(2, encode(item), true),
                                     ws_frame(2, encode(done), true)}));
  hs.put("connect_then_close", cat({text(up), conn, ws_frame(8, hex("03 e8"), true)}));
  hs.put("bad_http_token", cat({text(fuzz::upgrade_request("wrong")), conn}));
  hs.put("bad_connect_token", cat({text(up), connect_frame(fuzz::dialer(), "wrong")}));
  hs.put("unknown_host", cat({text(up), connect_frame("http://nobody:1", fuzz::token)}));
  hs.put("first_message_not_connect", cat({text(up), ws_frame(2, req, true)}));
  hs.put("http_time_min", cat({text(fuzz::upgrade_request(fuzz::token, "-9223372036854775808")), conn}));
  hs.put("not_http", text("SSH-2.0-OpenSSH_9.2\r\n"));
  hs.put("wrong_route", text("GET /other HTTP/1.1\r\nHost: a:1\r\n\r\n"));

  const bytes server_role = hex("00"), client_role = hex("01");
  ws.put("server_binary", cat({server_role, ws_frame(2, req, true)}));
  ws.put("server_fragmented_with_ping", cat({server_role, ws_frame(2, std::span(req).first(5), true, false),
                                             ws_frame(9, text("p"), true), ws_frame(0, std::span(req).subspan(5), true)}));
  ws.put("server_text_then_binary", cat({server_role, ws_frame(1, text("hello"), true), ws_frame(2, ping, true)}));
  ws.put("server_close", cat({server_role, ws_frame(8, hex("03 e8"), true)}));
  ws.put("server_long_16bit", cat({server_role, ws_frame(2, bytes(300, std::byte{0x41}), true)}));
  ws.put("client_binary", cat({client_role, ws_frame(2, req, false), ws_frame(2, ping, false)}));
  ws.put("client_pong_and_close", cat({client_role, ws_frame(10, text("x"), false), ws_frame(8, hex("03 e8"), false)}));
  expect(hs.count > 0 && ws.count > 0, "no network seeds written");
  std::printf("make_corpus: wrote %d handshake and %d websocket seeds\n", hs.count, ws.count);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR   (writes CORPUS_DIR/{message,merged,handshake,websocket})\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root = argv[1];
  writer msg(root / "message");
  writer mrg(root / "merged");

  const handler_id test_handler{78};
  const wire_time t{1744934400, 123456789}; // 2025-04-18T00:00:00.123456789Z
  node_id id_a, id_b;
  for (std::size_t i = 0; i < 16; ++i) {
    id_a.bytes[i] = static_cast<std::byte>(0x10 + i);
    id_b.bytes[i] = static_cast<std::byte>(0xf0 - i);
  }
  const subroute_id sub = make_subroute_id(test_handler, "some-subroute");
  expect(sub.to_hex() == "4e009a6621c598f8aaa3b0f270111bab3c6c463e5d2886959f7c26e0ac9c6c48",
         "subroute id of 78/some-subroute is " + sub.to_hex());

  // §1.11: OpRequest mux 1, seq 0, deadline 60000, handler 78, CRC|EOF, payload "hi".
  message req{.mux_id = 1, .seq = 0, .deadline_ms = 60000, .handler = test_handler, .op = op_code::request,
              .flags = msg_flags::crc | msg_flags::eof, .payload = text("hi"), .subroute = std::nullopt};
  const bytes example = encode(req);
  expect(example == hex("97 01 00 cd ea 60 4e 0e 03 c4 02 68 69 ea be 91 c7"), "§1.11 example: " + to_hex(example));
  msg.put("request_crc_example", example, true);

  message sreq = req;
  sreq.subroute = sub;
  const bytes sub_crc = encode(sreq);
  msg.put("request_subroute_crc", sub_crc, true);
  sreq.flags = msg_flags::eof;
  msg.put("request_subroute", encode(sreq), true);
  message smux{.mux_id = 7, .seq = 0, .deadline_ms = 30000, .handler = test_handler, .op = op_code::connect_mux,
               .flags = msg_flags::crc, .payload = text("stream-init"), .subroute = make_subroute_id(test_handler, join_route({"subroute", "1"}))};
  msg.put("connect_mux_subroute_crc", encode(smux), true);

  // §1.12: connection ping (no CRC) and its pong (CRC, time echoed).
  const bytes ping_payload = payload_of(ping_msg{t});
  message ping{.mux_id = 0, .seq = 0, .deadline_ms = 10000, .handler = {}, .op = op_code::ping,
               .flags = msg_flags::none, .payload = ping_payload, .subroute = std::nullopt};
  const bytes ping_bytes = encode(ping);
  expect_prefix(ping_bytes, "97 00 00 cd 27 10 00 03 00 c4 12 81 a1 74 c7 0c 05 00 00 00 00 68 01 96 00 07 5b cd 15",
                "§1.12 connection ping");
  msg.put("conn_ping", ping_bytes, true);
  const bytes pong_payload = payload_of(pong_msg{false, std::nullopt, t});
  message pong = ping;
  pong.op = op_code::pong;
  pong.flags = msg_flags::crc;
  pong.payload = pong_payload;
  const bytes pong_bytes = encode(pong);
  expect_prefix(pong_bytes, "97 00 00 cd 27 10 00 04 01 c4 19 83 a2 6e 66 c2 a1 65 c0 a1 74 c7 0c 05", "§1.12 pong");
  msg.put("conn_pong_crc", pong_bytes, true);

  // Stream ping (empty payload) and a "not found" pong with an error text.
  message sping{.mux_id = 9, .seq = 4, .deadline_ms = 0, .handler = {}, .op = op_code::ping,
                .flags = msg_flags::crc, .payload = std::nullopt, .subroute = std::nullopt};
  msg.put("stream_ping", encode(sping), true);
  const bytes nf_payload = payload_of(pong_msg{true, std::string("stream not found"), wire_time{}});
  message spong = sping;
  spong.op = op_code::pong;
  spong.payload = nf_payload;
  msg.put("stream_pong_not_found", encode(spong), true);

  // Handshake payloads (flags 0, never CRC).
  const bytes creq_payload =
      payload_of(connect_request{id_a, "http://127.0.0.1:9000", t, "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJtaW5pbyJ9.c2ln"});
  message creq{.mux_id = 0, .seq = 0, .deadline_ms = 0, .handler = {}, .op = op_code::connect,
               .flags = msg_flags::none, .payload = creq_payload, .subroute = std::nullopt};
  msg.put("connect_request", encode(creq), true);
  const bytes cresp_payload = payload_of(connect_response{id_b, true, ""});
  message cresp = creq;
  cresp.op = op_code::connect_response;
  cresp.payload = cresp_payload;
  msg.put("connect_response_accepted", encode(cresp), true);
  const bytes crej_payload = payload_of(connect_response{id_b, false, "grid: expected to be client side, not server side"});
  cresp.payload = crej_payload;
  msg.put("connect_response_rejected", encode(cresp), true);
  const bytes mce_payload = payload_of(mux_connect_error{"unknown mux handler"});
  message mce{.mux_id = 3, .seq = 0, .deadline_ms = 0, .handler = test_handler, .op = op_code::mux_connect_error,
              .flags = msg_flags::crc | msg_flags::eof, .payload = mce_payload, .subroute = std::nullopt};
  msg.put("mux_connect_error", encode(mce), true);

  // Nil vs empty payload, an error payload, bin16, and a few stream control messages.
  message resp{.mux_id = 2, .seq = 1, .deadline_ms = 0, .handler = test_handler, .op = op_code::response,
               .flags = msg_flags::eof, .payload = std::nullopt, .subroute = std::nullopt};
  msg.put("payload_nil", encode(resp), true);
  resp.payload = std::span<const std::byte>{};
  const bytes empty_bytes = encode(resp);
  expect(!empty_bytes.empty() && empty_bytes[6] == std::byte{0x12}, "empty payload sets ZERO: " + to_hex(empty_bytes));
  msg.put("payload_empty", empty_bytes, true);
  resp.payload = text("remote error: disk not found");
  resp.flags = msg_flags::eof | msg_flags::payload_is_err | msg_flags::crc;
  msg.put("payload_is_err", encode(resp), true);
  bytes big(300);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7);
  resp.payload = big;
  resp.flags = msg_flags::eof;
  resp.mux_id = 0x123456789abcdef0;
  resp.seq = 0xfffffffe;
  resp.deadline_ms = 0xffffffff;
  const bytes bin16 = encode(resp);
  expect_prefix(bin16, "97 cf 12 34 56 78 9a bc de f0 ce ff ff ff fe ce ff ff ff ff 4e 0f 02 c5 01 2c", "bin16 payload");
  msg.put("payload_bin16_wide_ints", bin16, true);
  for (op_code op : {op_code::ack_mux, op_code::unblock_cl_mux, op_code::unblock_srv_mux, op_code::disconnect_server_mux}) {
    message c{.mux_id = 11, .seq = 5, .deadline_ms = 0, .handler = {}, .op = op, .flags = msg_flags::crc,
              .payload = std::nullopt, .subroute = std::nullopt};
    msg.put(std::string("control_") + to_string(op), encode(c), true);
  }

  // Valid but not as cogrid writes it: signed and oversized int forms, a bin32 header, unknown flag bits.
  msg.put("noncanonical_ints_bin32", hex("97 d0 01 d1 00 00 ce 00 00 ea 60 cc 4e d3 00 00 00 00 00 00 00 0e 00 c6 00 00 00 02 68 69"), true);
  message odd = req;
  odd.flags = msg_flags::eof | static_cast<msg_flags>(0xc0);
  msg.put("unknown_flag_bits", encode(odd), true);
  odd.flags = msg_flags::payload_is_zero | msg_flags::eof; // ZERO with a payload: dropped on re-encode
  bytes zero_with_payload = encode(odd);
  expect(zero_with_payload[8] == std::byte{0x02}, "flags at [8]: " + to_hex(zero_with_payload));
  zero_with_payload[8] = std::byte{0x12};
  msg.put("zero_flag_with_payload", zero_with_payload, true);

  // Ping payloads with the msgpack timestamp ext -1 (32, 64, 96 bit) and a pong with reordered keys.
  for (auto [name, p] : {std::pair{"ping_ts32", hex("81 a1 74 d6 ff 68 01 96 00")},
                         std::pair{"ping_ts64", hex("81 a1 74 d7 ff 1d 6f 34 54 68 01 96 00")},
                         std::pair{"ping_ts96", hex("81 a1 74 c7 0c ff 07 5b cd 15 00 00 00 00 68 01 96 00")},
                         std::pair{"pong_reordered_unknown_key",
                                   hex("84 a1 74 c7 0c 05 00 00 00 00 68 01 96 00 07 5b cd 15 a1 78 92 c0 81 a1 61 01 "
                                       "a2 6e 66 c3 c4 01 65 a3 65 72 72")}}) {
    message m = ping;
    m.payload = p;
    if (std::string_view(name).starts_with("pong")) {
      m.op = op_code::pong;
      pong_msg v;
      expect(decode(p, v) && v.not_found && v.error == "err" && v.time == t, std::string(name) + " payload");
    } else {
      ping_msg v;
      const wire_time want = std::string_view(name) == "ping_ts32" ? wire_time{t.seconds, 0} : t;
      expect(decode(p, v) && v.time == want, std::string(name) + " payload");
    }
    msg.put(name, encode(m), true);
  }

  // Malformed.
  bytes bad = example;
  bad.back() ^= std::byte{0x01};
  msg.put("bad_crc", bad, false);
  msg.put("truncated", std::span(example).first(example.size() - 6), false);
  msg.put("truncated_subroute", std::span(sub_crc).first(20), false);
  bad = example;
  bad[0] = std::byte{0x96};
  msg.put("array_of_6", bad, false);
  message unk = resp;
  unk.op = static_cast<op_code>(18);
  unk.payload = std::nullopt;
  msg.put("unknown_op", encode(unk), false);
  msg.put("negative_mux_id", hex("97 e0 00 00 4e 0f 02 c4 00"), false);
  msg.put("str_payload", hex("97 01 00 00 4e 0e 02 a2 68 69"), false);
  msg.put("subroute_flag_no_trailer", hex("97 01 00 00 4e 0e 22 c4 02 68 69"), false);
  msg.put("crc_flag_no_trailer", hex("97 01 00 00 4e 0e 03 c4 02 68 69"), false);
  msg.put("seq_overflow", hex("97 01 cf 00 00 00 01 00 00 00 00 00 4e 0e 02 c4 00"), false);
  msg.put("trailing_byte", cat({encode(sping), hex("00")}), false);
  msg.put("bin32_huge_length", hex("97 01 00 00 4e 0e 02 c6 ff ff ff ff 00"), false);
  msg.put("empty", {}, false);

  // A container in the message corpus too (for_each_message).
  {
    bytes buf;
    merge_builder b(buf);
    expect(b.add(req).has_value(), "merge_builder::add");
    expect(b.add(sping).has_value(), "merge_builder::add");
    const auto c = b.finish();
    msg.put("merged_two", c, true);
  }

  // Merged containers.
  {
    bytes buf;
    merge_builder b(buf);
    expect(b.add(req).has_value(), "merge_builder::add");
    const auto c = b.finish();
    expect_prefix(c, "97 00 01 00 00 11 00 c4 00 c4 11", "merged container header");
    mrg.put("merged_1", c, true);
  }
  {
    bytes buf;
    merge_builder b(buf);
    message ack{.mux_id = 7, .seq = 0, .deadline_ms = 0, .handler = {}, .op = op_code::ack_mux,
                .flags = msg_flags::none, .payload = std::nullopt, .subroute = std::nullopt};
    message out{.mux_id = 7, .seq = 1, .deadline_ms = 0, .handler = {}, .op = op_code::mux_server_msg,
                .flags = msg_flags::none, .payload = text("response 1"), .subroute = std::nullopt};
    expect(b.add(ack).has_value(), "merge_builder::add");
    expect(b.add(encode(out)).has_value(), "merge_builder::add");
    mrg.put("merged_2", b.finish(), true);
  }
  {
    bytes buf;
    merge_builder b(buf);
    message zero = resp;
    zero.payload = std::span<const std::byte>{};
    zero.flags = msg_flags::crc | msg_flags::eof;
    expect(b.add(sub_crc).has_value(), "merge_builder::add");
    expect(b.add(zero).has_value(), "merge_builder::add");
    expect(b.add(pong).has_value(), "merge_builder::add");
    mrg.put("merged_3_crc_subroute", b.finish(), true);
  }
  {
    bytes buf;
    merge_builder b(buf);
    mrg.put("merged_0", b.finish(), true);
  }
  {
    bytes buf;
    merge_builder b(buf);
    for (std::uint32_t i = 0; i < 51; ++i) {
      message m{.mux_id = 100 + i, .seq = i, .deadline_ms = 0, .handler = {}, .op = op_code::mux_server_msg,
                .flags = i % 3 == 0 ? msg_flags::crc : msg_flags::none,
                .payload = i % 2 == 0 ? std::optional(text("x")) : std::nullopt, .subroute = std::nullopt};
      expect(b.add(m).has_value(), "merge_builder::add");
    }
    mrg.put("merged_51", b.finish(), true);
  }
  {
    // Malformed containers: count says 3 but 2 items, a nested container, a byte after the last item,
    // an item with a bad CRC.
    bytes buf;
    merge_builder b(buf);
    expect(b.add(req).has_value(), "merge_builder::add");
    expect(b.add(sping).has_value(), "merge_builder::add");
    const auto fin = b.finish();
    const bytes two(fin.begin(), fin.end());
    bytes c = two;
    c[2] = std::byte{0x03};
    mrg.put("merged_count_too_high", c, false);
    mrg.put("merged_trailing_byte", cat({two, hex("c0")}), false);

    bytes nested_buf;
    merge_builder n(nested_buf);
    expect(n.add(req).has_value(), "merge_builder::add");
    expect(n.add(two).has_value(), "merge_builder::add");
    mrg.put("merged_nested", n.finish(), false);

    bytes badcrc_buf;
    merge_builder e(badcrc_buf);
    bytes broken = example;
    broken.back() ^= std::byte{0x80};
    expect(e.add(sping).has_value(), "merge_builder::add");
    expect(e.add(broken).has_value(), "merge_builder::add");
    mrg.put("merged_item_bad_crc", e.finish(), false);
    mrg.put("merged_item_truncated", std::span(two).first(two.size() - 3), false);
  }

  network_seeds(root, req, ping);

  if (!ok) return 1;
  std::printf("make_corpus: wrote %d message and %d merged seeds under %s\n", msg.count(), mrg.count(),
              root.string().c_str());
  return 0;
}
