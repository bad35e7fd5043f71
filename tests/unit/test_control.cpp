#include <cogrid/control.hpp>

#include <cogrid/message.hpp>

#include "bytes.hpp"

#include <doctest/doctest.h>

#include <chrono>

using namespace cogrid;
using cogrid_test::bytes_of;
using cogrid_test::concat;
using cogrid_test::hex;
using cogrid_test::to_hex;

TEST_SUITE_BEGIN("control");

namespace {

template <class T>
std::vector<std::byte> enc(const T& v) {
  std::vector<std::byte> out;
  encode_append(v, out);
  return out;
}

template <class T>
T dec(std::span<const std::byte> b) {
  T v;
  const result<void> r = decode(b, v);
  REQUIRE_MESSAGE(r, r.error().message());
  return v;
}

template <class T>
std::error_code dec_err(std::span<const std::byte> b) {
  T v;
  return decode(b, v).error().code;
}

// 2024-07-01T12:00:00.123456789Z
constexpr wire_time t1{1719835200, 123456789};
const std::string t1_ext5 = "c7 0c 05 00 00 00 00 66 82 9a 40 07 5b cd 15";

node_id test_id() {
  node_id id;
  for (int i = 0; i < 16; ++i) id.bytes[i] = static_cast<std::byte>(0xa0 + i);
  return id;
}

} // namespace

TEST_CASE("time is msgp's ext 5: int64 seconds and int32 nanoseconds, big-endian") {
  CHECK(to_hex(enc(ping_msg{t1})) == "81 a1 74 " + t1_ext5);
  CHECK(dec<ping_msg>(enc(ping_msg{t1})).time == t1);
  // Go's zero time (year 1) and times before 1970 survive the round trip.
  CHECK(dec<ping_msg>(enc(ping_msg{wire_time{}})).time.is_zero());
  CHECK(dec<ping_msg>(enc(ping_msg{wire_time{-1, 999999999}})).time == wire_time{-1, 999999999});
}

TEST_CASE("time is also read from the msgpack timestamp extension -1 in all three sizes") {
  CHECK(dec<ping_msg>(hex("81 a1 74 d6 ff 66 82 9a 40")).time == wire_time{1719835200, 0});
  // timestamp 64: nanoseconds << 34 | seconds
  const std::uint64_t v64 = (std::uint64_t{123456789} << 34) | 1719835200u;
  std::vector<std::byte> b = hex("81 a1 74 d7 ff");
  for (int i = 7; i >= 0; --i) b.push_back(static_cast<std::byte>(v64 >> (8 * i)));
  CHECK(dec<ping_msg>(b).time == t1);
  CHECK(dec<ping_msg>(hex("81 a1 74 c7 0c ff 07 5b cd 15 00 00 00 00 66 82 9a 40")).time == t1);
}

TEST_CASE("wire_time converts to and from system_clock") {
  const auto now = std::chrono::system_clock::now();
  const wire_time w = wire_time::from(now);
  CHECK(w.nanos < 1'000'000'000u);
  CHECK(w.unix_nanos() == std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count());
  CHECK(wire_time::from(std::chrono::system_clock::time_point(std::chrono::nanoseconds(-1))) == wire_time{-1, 999999999});
  CHECK(wire_time{}.unix_nanos() == std::numeric_limits<std::int64_t>::min()); // saturates: year 1
  CHECK(t1.unix_nanos() == 1719835200123456789);
}

TEST_CASE("grid-protocol.md 1.12: the connection ping, byte for byte") {
  std::vector<std::byte> payload = enc(ping_msg{t1});
  message m;
  m.deadline_ms = 10000;
  m.op = op_code::ping;
  m.payload = std::span<const std::byte>(payload);
  std::vector<std::byte> out;
  REQUIRE(encode_append(m, out));
  CHECK(to_hex(out) == "97 00 00 cd 27 10 00 03 00 c4 12 81 a1 74 " + t1_ext5);
}

TEST_CASE("grid-protocol.md 1.12: its pong echoes the time, with CRC") {
  pong_msg p;
  p.time = t1;
  std::vector<std::byte> payload = enc(p);
  CHECK(to_hex(payload) == "83 a2 6e 66 c2 a1 65 c0 a1 74 " + t1_ext5);
  message m;
  m.deadline_ms = 10000;
  m.op = op_code::pong;
  m.flags = msg_flags::crc;
  m.payload = std::span<const std::byte>(payload);
  std::vector<std::byte> out;
  REQUIRE(encode_append(m, out));
  const std::string head = "97 00 00 cd 27 10 00 04 01 c4 19 ";
  CHECK(to_hex(out).substr(0, head.size()) == head);
  const auto d = decode(out);
  REQUIRE(d);
  const pong_msg back = dec<pong_msg>(*d->payload);
  CHECK(back.time == t1);
  CHECK_FALSE(back.not_found);
  CHECK_FALSE(back.error.has_value());

  pong_msg err;
  err.not_found = true;
  err.error = "stream gone";
  const pong_msg err_back = dec<pong_msg>(enc(err));
  CHECK(err_back.not_found);
  CHECK(err_back.error == "stream gone");
  CHECK(err_back.time.is_zero());
}

TEST_CASE("connect request and response: map shapes with MinIO's keys") {
  connect_request req{test_id(), "http://127.0.0.1:9000", t1, "tok"};
  const auto b = enc(req);
  CHECK(to_hex(b) == to_hex(hex("84 a2 49 44 c4 10 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab ac ad ae af"
                                " a4 48 6f 73 74 b5 68 74 74 70 3a 2f 2f 31 32 37 2e 30 2e 30 2e 31 3a 39 30 30 30"
                                " a4 54 69 6d 65 " + t1_ext5 + " a5 54 6f 6b 65 6e a3 74 6f 6b")));
  const auto r = dec<connect_request>(b);
  CHECK(r.id == req.id);
  CHECK(r.host == req.host);
  CHECK(r.time == t1);
  CHECK(r.token == "tok");

  connect_response resp{test_id(), false, "unknown incoming host"};
  const auto rb = enc(resp);
  CHECK(to_hex(std::span(rb).first(4)) == "83 a2 49 44");
  const auto rr = dec<connect_response>(rb);
  CHECK(rr.id == resp.id);
  CHECK_FALSE(rr.accepted);
  CHECK(rr.rejected_reason == "unknown incoming host");
  CHECK(dec<connect_response>(enc(connect_response{test_id(), true, ""})).accepted);

  CHECK(to_hex(enc(mux_connect_error{"Invalid Handler"})) == "81 a5 45 72 72 6f 72 af " + to_hex(bytes_of("Invalid Handler")));
  CHECK(dec<mux_connect_error>(enc(mux_connect_error{"Invalid Handler"})).error == "Invalid Handler");
  CHECK(test_id().to_string() == "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
}

TEST_CASE("decoders take any key order, skip unknown keys of any shape, keep defaults for missing keys") {
  // {"Token": "t", "extra": {"x": [1, 2, {"y": nil}], "z": 1.5}, "Host": "h", "bin": bin(2)} — no ID, no Time
  const auto b = hex("84 a5 54 6f 6b 65 6e a1 74 a5 65 78 74 72 61 82 a1 78 93 01 02 81 a1 79 c0 a1 7a"
                     " cb 3f f8 00 00 00 00 00 00 a4 48 6f 73 74 a1 68 a3 62 69 6e c4 02 00 01");
  const auto r = dec<connect_request>(b);
  CHECK(r.token == "t");
  CHECK(r.host == "h");
  CHECK(r.id == node_id{});
  CHECK(r.time.is_zero());
  // bin keys are keys too (msgp's ReadMapKeyZC)
  CHECK(dec<mux_connect_error>(hex("81 c4 05 45 72 72 6f 72 a1 78")).error == "x");
  // An unknown key with an ext value, a str16 and a deeply nested array are skipped as well.
  std::vector<std::byte> deep = hex("82 a1 71");
  for (int i = 0; i < 100000; ++i) deep.push_back(std::byte{0x91});
  deep.push_back(std::byte{0x00});
  deep = concat(deep, hex("a1 74 " + t1_ext5));
  CHECK(dec<ping_msg>(deep).time == t1);
}

TEST_CASE("reject paths of the control decoders") {
  const auto good = enc(connect_request{test_id(), "h", t1, "tok"});
  SUBCASE("every strict prefix is truncated") {
    for (std::size_t n = 0; n < good.size(); ++n)
      CHECK_MESSAGE(dec_err<connect_request>(std::span(good).first(n)) == errc::truncated, "prefix " << n);
  }
  SUBCASE("trailing bytes") { CHECK(dec_err<connect_request>(concat(good, hex("c0"))) == errc::trailing_bytes); }
  SUBCASE("not a map") {
    CHECK(dec_err<connect_request>(hex("94 00 00 00 00")) == errc::type_mismatch);
    CHECK(dec_err<ping_msg>(hex("c0")) == errc::type_mismatch);
  }
  SUBCASE("a key that is not a string") { CHECK(dec_err<ping_msg>(hex("81 01 02")) == errc::type_mismatch); }
  SUBCASE("an ID that is not 16 bytes, or not bin") {
    CHECK(dec_err<connect_request>(hex("81 a2 49 44 c4 0f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")) ==
          errc::bad_field_length);
    CHECK(dec_err<connect_response>(hex("81 a2 49 44 a1 78")) == errc::type_mismatch);
  }
  SUBCASE("fields of the wrong type") {
    CHECK(dec_err<connect_request>(hex("81 a4 48 6f 73 74 01")) == errc::type_mismatch);      // Host: int
    CHECK(dec_err<connect_request>(hex("81 a4 48 6f 73 74 c4 01 68")) == errc::type_mismatch); // Host: bin
    CHECK(dec_err<connect_response>(hex("81 a8 41 63 63 65 70 74 65 64 01")) == errc::type_mismatch); // bool
    CHECK(dec_err<pong_msg>(hex("81 a1 65 01")) == errc::type_mismatch); // e: int
  }
  SUBCASE("times that are not times") {
    CHECK(dec_err<ping_msg>(hex("81 a1 74 01")) == errc::type_mismatch);
    CHECK(dec_err<ping_msg>(hex("81 a1 74 d6 05 00 00 00 00")) == errc::type_mismatch); // ext 5, 4 bytes
    CHECK(dec_err<ping_msg>(hex("81 a1 74 d6 07 00 00 00 00")) == errc::type_mismatch); // ext 7
    CHECK(dec_err<ping_msg>(hex("81 a1 74 c7 0c 05 00 00 00 00 00 00 00 00 3b 9a ca 00")) == errc::invalid_value);
    CHECK(dec_err<ping_msg>(hex("81 a1 74 c7 ff 05 00")) == errc::truncated); // ext8 claiming 255 bytes
  }
  SUBCASE("container counts far beyond the buffer") {
    CHECK(dec_err<ping_msg>(hex("df ff ff ff ff a1 74")) == errc::truncated);
    CHECK(dec_err<ping_msg>(hex("81 a1 71 dd ff ff ff ff 00")) == errc::truncated);
  }
}

TEST_SUITE_END();
