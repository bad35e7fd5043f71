// tests/fuzz/fuzz_check.hpp — invariants shared by the libFuzzer targets. A violated invariant prints
// what failed (with the bytes involved) and traps, so libFuzzer records the input as a crash.
#ifndef COGRID_TESTS_FUZZ_CHECK_HPP
#define COGRID_TESTS_FUZZ_CHECK_HPP

#include <cogrid/control.hpp>
#include <cogrid/message.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace fuzz {

using bytes = std::span<const std::byte>;

inline bytes as_bytes(const std::uint8_t* data, std::size_t size) noexcept {
  return {reinterpret_cast<const std::byte*>(data), size};
}

inline void dump(const char* label, bytes b) {
  std::fprintf(stderr, "  %s (%zu B):", label, b.size());
  const std::size_t shown = std::min<std::size_t>(b.size(), 256);
  for (std::size_t i = 0; i < shown; ++i) std::fprintf(stderr, " %02x", static_cast<unsigned>(b[i]));
  std::fprintf(stderr, shown < b.size() ? " ...\n" : "\n");
}

[[noreturn]] inline void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "INVARIANT VIOLATED: %s\n", what);
  if (!detail.empty()) std::fprintf(stderr, "  %s\n", detail.c_str());
  std::fflush(stderr);
  __builtin_trap();
}

#define FUZZ_CHECK(cond, ...)                                                                           \
  do {                                                                                                  \
    if (!(cond)) ::fuzz::fail(#cond __VA_OPT__(, ) __VA_ARGS__);                                        \
  } while (0)

inline std::string describe(const cogrid::message& m) { return cogrid::to_string(m); }

inline bool same_bytes(bytes a, bytes b) noexcept { return std::ranges::equal(a, b); }

/// True when `inner` lies inside `outer` (decoded views must point into the buffer decoded).
inline bool within(bytes inner, bytes outer) noexcept {
  if (inner.empty()) return true;
  const auto* lo = outer.data();
  const auto* hi = outer.data() + outer.size();
  return std::less_equal<>{}(lo, inner.data()) && std::less_equal<>{}(inner.data() + inner.size(), hi);
}

/// The flags the encoder puts on the wire for `m` (message.hpp: payload_is_zero and subroute follow
/// the fields).
inline cogrid::msg_flags wire_flags(const cogrid::message& m) noexcept {
  using cogrid::msg_flags;
  msg_flags f = m.flags & ~(msg_flags::payload_is_zero | msg_flags::subroute);
  if (m.payload && m.payload->empty()) f |= msg_flags::payload_is_zero;
  if (m.subroute) f |= msg_flags::subroute;
  return f;
}

/// Field-wise equality; `b` is compared against the wire flags of `a` when `normalise` is set.
inline bool same_message(const cogrid::message& a, const cogrid::message& b, bool normalise) noexcept {
  if (a.mux_id != b.mux_id || a.seq != b.seq || a.deadline_ms != b.deadline_ms || a.handler != b.handler ||
      a.op != b.op)
    return false;
  if ((normalise ? wire_flags(a) : a.flags) != b.flags) return false;
  if (a.payload.has_value() != b.payload.has_value()) return false;
  if (a.payload && !same_bytes(*a.payload, *b.payload)) return false;
  return a.subroute == b.subroute;
}

inline void check_same(const char* what, const cogrid::message& a, const cogrid::message& b, bool normalise) {
  if (!same_message(a, b, normalise)) fail(what, "first:  " + describe(a) + "\n  second: " + describe(b));
}

// ---- control payloads ---------------------------------------------------------------------------------

inline bool same_value(const cogrid::connect_request& a, const cogrid::connect_request& b) {
  return a.id == b.id && a.host == b.host && a.time == b.time && a.token == b.token;
}
inline bool same_value(const cogrid::connect_response& a, const cogrid::connect_response& b) {
  return a.id == b.id && a.accepted == b.accepted && a.rejected_reason == b.rejected_reason;
}
inline bool same_value(const cogrid::mux_connect_error& a, const cogrid::mux_connect_error& b) {
  return a.error == b.error;
}
inline bool same_value(const cogrid::ping_msg& a, const cogrid::ping_msg& b) { return a.time == b.time; }
inline bool same_value(const cogrid::pong_msg& a, const cogrid::pong_msg& b) {
  return a.not_found == b.not_found && a.error == b.error && a.time == b.time;
}

// A decoded time is in its domain (control.hpp: nanoseconds 0 .. 999'999'999).
inline bool valid_value(const cogrid::connect_request& v) { return v.time.nanos < 1'000'000'000u; }
inline bool valid_value(const cogrid::connect_response&) { return true; }
inline bool valid_value(const cogrid::mux_connect_error&) { return true; }
inline bool valid_value(const cogrid::ping_msg& v) { return v.time.nanos < 1'000'000'000u; }
inline bool valid_value(const cogrid::pong_msg& v) { return v.time.nanos < 1'000'000'000u; }

/// If `payload` decodes as a `T`, its encoding must decode to an equal `T` and re-encode to the same bytes.
template <class T>
void check_control(const char* name, bytes payload) {
  T v{};
  if (!cogrid::decode(payload, v)) return;
  if (!valid_value(v)) {
    dump("payload", payload);
    fail("decoded control payload holds an out-of-domain value", name);
  }
  std::vector<std::byte> enc;
  cogrid::encode_append(v, enc);
  T w{};
  if (const cogrid::result<void> back = cogrid::decode(enc, w); !back) {
    const std::error_code ec = back.error().code;
    dump("payload", payload);
    dump("re-encoded", enc);
    fail("control payload re-encoding does not decode", std::string(name) + ": " + ec.message());
  }
  if (!same_value(v, w)) {
    dump("payload", payload);
    dump("re-encoded", enc);
    fail("control payload round trip changed the value", name);
  }
  std::vector<std::byte> enc2;
  cogrid::encode_append(w, enc2);
  if (!same_bytes(enc, enc2)) {
    dump("first", enc);
    dump("second", enc2);
    fail("control payload encoding is not idempotent", name);
  }
}

inline void check_controls(bytes payload) {
  check_control<cogrid::connect_request>("connect_request", payload);
  check_control<cogrid::connect_response>("connect_response", payload);
  check_control<cogrid::mux_connect_error>("mux_connect_error", payload);
  check_control<cogrid::ping_msg>("ping_msg", payload);
  check_control<cogrid::pong_msg>("pong_msg", payload);
}

// ---- messages -----------------------------------------------------------------------------------------

/// Invariants of one successfully decoded message `m` that came from `source`.
inline void check_message(const cogrid::message& m, bytes source) {
  FUZZ_CHECK(cogrid::is_known(m.op), describe(m));
  FUZZ_CHECK(m.subroute.has_value() == cogrid::has(m.flags, cogrid::msg_flags::subroute), describe(m));
  FUZZ_CHECK(!m.payload || within(*m.payload, source), "payload view outside the decoded buffer");
  (void)cogrid::to_string(m);

  // encode_append: appends exactly encoded_size bytes and leaves the existing ones alone.
  std::vector<std::byte> enc{std::byte{0xa5}};
  if (const auto r = cogrid::encode_append(m, enc); !r) fail("encode_append failed", r.error().message());
  FUZZ_CHECK(enc.front() == std::byte{0xa5}, "encode_append overwrote bytes before its output");
  const bytes out = bytes(enc).subspan(1);
  FUZZ_CHECK(cogrid::encoded_size(m) == out.size(), "encoded_size " + std::to_string(cogrid::encoded_size(m)) +
                                                        " != encode_append wrote " + std::to_string(out.size()));

  // encode into a span: the same bytes with room to spare or an exact fit, buffer_too_small when short.
  std::vector<std::byte> buf(out.size() + 3);
  auto n = cogrid::encode(m, buf);
  FUZZ_CHECK(n && *n == out.size() && same_bytes(bytes(buf).first(*n), out), "encode differs from encode_append");
  if (!out.empty()) {
    auto short_n = cogrid::encode(m, std::span(buf).first(out.size() - 1));
    FUZZ_CHECK(!short_n && short_n.error() == cogrid::errc::buffer_too_small, "encode into a short buffer");
  }

  // The encoding decodes to the same fields (payload_is_zero normalised) and is a fixed point.
  auto again = cogrid::decode(out);
  if (!again) {
    dump("source", source);
    dump("re-encoded", out);
    fail("re-encoded message does not decode", describe(m) + ": " + again.error().message());
  }
  check_same("re-encoded message decodes to other fields", m, *again, true);
  std::vector<std::byte> enc2;
  if (const auto r = cogrid::encode_append(*again, enc2); !r) fail("encode_append failed", r.error().message());
  if (!same_bytes(out, enc2)) {
    dump("first", out);
    dump("second", enc2);
    fail("message encoding is not idempotent", describe(m));
  }

  // One message per WebSocket message: for_each_message delivers it unchanged (a merged container
  // with items is not one message, so for that op only zero items can have decoded).
  if (m.op != cogrid::op_code::merged) {
    int calls = 0;
    const std::error_code ec = cogrid::for_each_message(out, [&](const cogrid::message& x) {
      ++calls;
      check_same("for_each_message on an encoding delivered other fields", *again, x, false);
    }).error().code;
    FUZZ_CHECK(!ec && calls == 1, describe(m) + ": " + ec.message());
  }

  if (m.payload) check_controls(*m.payload);
}

/// merged_reader::next as a loop condition: true with an item; false at the end (`ec` clear) or on an
/// error (`ec` set).
inline bool next_item(cogrid::merged_reader& r, cogrid::message& m, std::error_code& ec) {
  const cogrid::result<bool> got = r.next(m);
  ec = got.error().code;
  return got && *got;
}

} // namespace fuzz

#endif // COGRID_TESTS_FUZZ_CHECK_HPP
