// cogrid/impl/message.ipp — definitions for cogrid/message.hpp.
#ifndef COGRID_IMPL_MESSAGE_IPP
#define COGRID_IMPL_MESSAGE_IPP

#include <cogrid/message.hpp>
#include <cogrid/detail/msgpack.hpp>
#include <cogrid/detail/xxh3.hpp>

#include <openssl/rand.h>

#include <algorithm>
#include <stdexcept>

#include <cstring>

namespace cogrid {
namespace detail {

inline constexpr std::size_t subroute_trailer_size = 32;
inline constexpr std::size_t crc_trailer_size = 4;

// The flags as they go on the wire: payload_is_zero and subroute follow the fields, not the caller.
inline msg_flags wire_flags(const message& m) noexcept {
  msg_flags f = m.flags & ~(msg_flags::payload_is_zero | msg_flags::subroute);
  if (m.payload && m.payload->empty()) f |= msg_flags::payload_is_zero;
  if (m.subroute) f |= msg_flags::subroute;
  return f;
}

inline std::size_t payload_size(const message& m) noexcept { return m.payload ? m.payload->size() : 0; }

inline std::size_t encoded_size_with(const message& m, msg_flags f) noexcept {
  const std::size_t len = payload_size(m);
  return 1 + mp::uint_size(m.mux_id) + mp::uint_size(m.seq) + mp::uint_size(m.deadline_ms) +
         mp::uint_size(static_cast<std::uint8_t>(m.handler)) + mp::uint_size(static_cast<std::uint8_t>(m.op)) +
         mp::uint_size(static_cast<std::uint8_t>(f)) + mp::bin_header_size(len) + len +
         (has(f, msg_flags::subroute) ? subroute_trailer_size : 0) + (has(f, msg_flags::crc) ? crc_trailer_size : 0);
}

// Writes the message's fields and its payload's bin header (`len` bytes) at `out`; returns the end.
inline std::byte* put_head(const message& m, msg_flags f, std::size_t len, std::byte* out) noexcept {
  std::byte* p = mp::put_byte(out, 0x97);
  p = mp::put_uint(p, m.mux_id);
  p = mp::put_uint(p, m.seq);
  p = mp::put_uint(p, m.deadline_ms);
  p = mp::put_uint(p, static_cast<std::uint8_t>(m.handler));
  p = mp::put_uint(p, static_cast<std::uint8_t>(m.op));
  p = mp::put_uint(p, static_cast<std::uint8_t>(f));
  return mp::put_bin_header(p, len);
}

// Writes exactly encoded_size_with(m, f) bytes at `out`.
inline std::byte* encode_unchecked(const message& m, msg_flags f, std::byte* out) noexcept {
  std::byte* const start = out;
  const std::size_t len = payload_size(m);
  std::byte* p = put_head(m, f, len, out);
  if (len != 0) p = mp::put_bytes(p, m.payload->data(), len);
  if (has(f, msg_flags::subroute)) p = mp::put_bytes(p, m.subroute->bytes.data(), subroute_trailer_size);
  if (has(f, msg_flags::crc)) {
    const std::uint32_t crc = crc32_xxh3({start, static_cast<std::size_t>(p - start)});
    for (int i = 0; i < 4; ++i) p = mp::put_byte(p, static_cast<std::uint8_t>(crc >> (8 * i)));
  }
  return p;
}

} // namespace detail

COGRID_DECL const char* to_string(op_code op) noexcept {
  switch (op) {
  case op_code::connect: return "OpConnect";
  case op_code::connect_response: return "OpConnectResponse";
  case op_code::ping: return "OpPing";
  case op_code::pong: return "OpPong";
  case op_code::connect_mux: return "OpConnectMux";
  case op_code::mux_connect_error: return "OpMuxConnectError";
  case op_code::disconnect_client_mux: return "OpDisconnectClientMux";
  case op_code::disconnect_server_mux: return "OpDisconnectServerMux";
  case op_code::mux_client_msg: return "OpMuxClientMsg";
  case op_code::mux_server_msg: return "OpMuxServerMsg";
  case op_code::unblock_srv_mux: return "OpUnblockSrvMux";
  case op_code::unblock_cl_mux: return "OpUnblockClMux";
  case op_code::ack_mux: return "OpAckMux";
  case op_code::request: return "OpRequest";
  case op_code::response: return "OpResponse";
  case op_code::disconnect: return "OpDisconnect";
  case op_code::merged: return "OpMerged";
  }
  return "OpUnknown";
}

COGRID_DECL std::string to_string(msg_flags f) {
  static constexpr const char* names[] = {"CRC", "EOF", "STATELESS", "ERR", "ZERO", "SUB", "MORE"};
  std::string out;
  const auto bits = static_cast<std::uint8_t>(f);
  for (int i = 0; i < 8; ++i) {
    if ((bits & (1u << i)) == 0) continue;
    if (!out.empty()) out += '|';
    if (i < 7) out += names[i];
    else out += "0x80";
  }
  return out.empty() ? "none" : out;
}

COGRID_DECL std::string to_string(const message& m) {
  std::string out = to_string(m.op);
  out += " mux=" + std::to_string(m.mux_id);
  out += " seq=" + std::to_string(m.seq);
  out += " deadline=" + std::to_string(m.deadline_ms) + "ms";
  out += " handler=" + std::to_string(static_cast<unsigned>(m.handler));
  out += " flags=" + to_string(m.flags);
  out += m.payload ? " payload=" + std::to_string(m.payload->size()) + "B" : std::string(" payload=nil");
  if (m.subroute) out += " subroute=" + m.subroute->to_hex().substr(0, 16) + "...";
  return out;
}

COGRID_DECL std::uint32_t crc32_xxh3(std::span<const std::byte> data) noexcept {
  return static_cast<std::uint32_t>(detail::xxh3_64(data));
}

COGRID_DECL std::size_t encoded_size(const message& m) noexcept {
  return detail::encoded_size_with(m, detail::wire_flags(m));
}

COGRID_DECL result<std::size_t> encode(const message& m, std::span<std::byte> out) noexcept {
  if (detail::payload_size(m) > detail::mp::max_bin) return errc::payload_too_large;
  const msg_flags f = detail::wire_flags(m);
  const std::size_t n = detail::encoded_size_with(m, f);
  if (out.size() < n) return errc::buffer_too_small;
  detail::encode_unchecked(m, f, out.data());
  return n;
}

COGRID_DECL result<void> encode_append(const message& m, std::vector<std::byte>& out) {
  if (detail::payload_size(m) > detail::mp::max_bin) return errc::payload_too_large;
  const msg_flags f = detail::wire_flags(m);
  const std::size_t at = out.size();
  out.resize(at + detail::encoded_size_with(m, f));
  detail::encode_unchecked(m, f, out.data() + at);
  return {};
}

COGRID_DECL result<message> parse(std::span<const std::byte> in, std::span<const std::byte>& rest) noexcept {
  detail::mp::reader r(in);
  std::uint32_t n;
  if (auto ec = r.read_array_header(n)) return ec == errc::type_mismatch ? make_error_code(errc::malformed) : ec;
  if (n != 7) return errc::malformed;

  message m;
  std::uint8_t handler, op, flags;
  std::span<const std::byte> payload;
  if (auto ec = r.read_uint_as(m.mux_id)) return ec;
  if (auto ec = r.read_uint_as(m.seq)) return ec;
  if (auto ec = r.read_uint_as(m.deadline_ms)) return ec;
  if (auto ec = r.read_uint_as(handler)) return ec;
  if (auto ec = r.read_uint_as(op)) return ec;
  if (auto ec = r.read_uint_as(flags)) return ec;
  if (auto ec = r.read_bin(payload)) return ec;
  m.handler = static_cast<handler_id>(handler);
  m.op = static_cast<op_code>(op);
  m.flags = static_cast<msg_flags>(flags);
  if (!payload.empty() || has(m.flags, msg_flags::payload_is_zero)) m.payload = payload;

  std::span<const std::byte> h = r.rest();
  if (has(m.flags, msg_flags::crc)) {
    if (h.size() < detail::crc_trailer_size) return errc::truncated;
    const std::byte* t = in.data() + in.size() - detail::crc_trailer_size;
    std::uint32_t want = 0;
    for (int i = 3; i >= 0; --i) want = (want << 8) | static_cast<std::uint8_t>(t[i]);
    if (crc32_xxh3(in.first(in.size() - detail::crc_trailer_size)) != want) return errc::crc_mismatch;
    h = h.first(h.size() - detail::crc_trailer_size);
  }
  if (has(m.flags, msg_flags::subroute)) {
    if (h.size() < detail::subroute_trailer_size) return errc::truncated;
    subroute_id id;
    std::memcpy(id.bytes.data(), h.data() + h.size() - detail::subroute_trailer_size, detail::subroute_trailer_size);
    m.subroute = id;
    h = h.first(h.size() - detail::subroute_trailer_size);
  }
  if (!is_known(m.op)) return errc::unknown_op;
  rest = h;
  return m;
}

COGRID_DECL result<message> decode(std::span<const std::byte> in) noexcept {
  std::span<const std::byte> rest;
  result<message> m = parse(in, rest);
  if (m && !rest.empty()) return errc::trailing_bytes;
  return m;
}

COGRID_DECL result<merged_reader> merged_reader::open(std::span<const std::byte> container) noexcept {
  std::span<const std::byte> rest;
  result<message> outer = parse(container, rest);
  if (!outer) return outer.error();
  if (outer->op != op_code::merged) return errc::type_mismatch;
  return merged_reader(outer->seq, rest);
}

COGRID_DECL result<bool> merged_reader::next(message& out) noexcept {
  if (failed_) return errc::malformed;
  if (count_ == 0) {
    if (items_.empty()) return false;
    failed_ = true;
    return errc::trailing_bytes;
  }
  detail::mp::reader r(items_);
  std::span<const std::byte> item;
  std::error_code ec = r.read_bin(item);
  if (!ec) {
    result<message> m = decode(item);
    if (!m) {
      ec = m.error().code;
    } else if (m->op == op_code::merged) {
      ec = errc::nested_merged;
    } else {
      out = *m;
      items_ = r.rest();
      --count_;
      return true;
    }
  }
  failed_ = true;
  return ec;
}

COGRID_DECL merge_builder::merge_builder(std::vector<std::byte>& buf) : buf_(buf) {
  buf_.clear();
  buf_.resize(max_header_size);
}

COGRID_DECL result<void> merge_builder::add(std::span<const std::byte> encoded_message) {
  if (encoded_message.size() > detail::mp::max_bin) return errc::payload_too_large;
  const std::size_t at = buf_.size();
  buf_.resize(at + detail::mp::bin_header_size(encoded_message.size()) + encoded_message.size());
  detail::mp::put_bytes(detail::mp::put_bin_header(buf_.data() + at, encoded_message.size()), encoded_message.data(),
                        encoded_message.size());
  ++count_;
  return {};
}

COGRID_DECL result<void> merge_builder::add(const message& m) {
  if (detail::payload_size(m) > detail::mp::max_bin) return errc::payload_too_large;
  const msg_flags f = detail::wire_flags(m);
  const std::size_t n = detail::encoded_size_with(m, f);
  if (n > detail::mp::max_bin) return errc::payload_too_large;
  const std::size_t at = buf_.size();
  buf_.resize(at + detail::mp::bin_header_size(n) + n);
  detail::encode_unchecked(m, f, detail::mp::put_bin_header(buf_.data() + at, n));
  ++count_;
  return {};
}

COGRID_DECL std::size_t merge_builder::header_size() const noexcept {
  return 1 + 1 + detail::mp::uint_size(count_) + 4 + 2; // 97, mux 0, seq N, deadline/handler/op/flags, c4 00
}

COGRID_DECL std::span<const std::byte> merge_builder::finish() noexcept {
  const std::size_t hs = header_size();
  std::byte* p = buf_.data() + (max_header_size - hs);
  std::byte* const start = p;
  p = detail::mp::put_byte(p, 0x97);
  p = detail::mp::put_uint(p, 0);        // MuxID
  p = detail::mp::put_uint(p, count_);   // Seq = item count
  p = detail::mp::put_uint(p, 0);        // DeadlineMS
  p = detail::mp::put_uint(p, 0);        // Handler
  p = detail::mp::put_uint(p, static_cast<std::uint8_t>(op_code::merged));
  p = detail::mp::put_uint(p, 0);        // Flags: never CRC on the container
  detail::mp::put_bin_header(p, 0);      // nil payload
  return {start, buf_.size() - (max_header_size - hs)};
}

namespace detail {

/// XORs `n` bytes at `p` with the 4-byte masking `key` (RFC 6455 §5.3), starting at byte `phase` of the
/// key (the offset of p in the frame's payload, modulo 4); returns the phase after.
COGRID_DECL std::size_t ws_mask(std::byte* p, std::size_t n, const std::array<std::uint8_t, 4>& key, std::size_t phase) noexcept {
  phase &= 3;
  std::uint8_t rot[8];
  for (std::size_t i = 0; i < 8; ++i) rot[i] = key[(phase + i) & 3];
  std::uint64_t k8;
  std::memcpy(&k8, rot, 8); // byte order does not matter: memory order in, memory order out
  std::size_t i = 0;
  // 32 bytes a step as two 16-byte vectors (SSE2 on x86-64, NEON on ARM): large frames are masked at
  // memory speed; the key is the same 8-byte pattern in every lane, as each step starts at a multiple of 8.
  using v16 = std::uint64_t __attribute__((vector_size(16)));
  const v16 kv = {k8, k8};
  for (; i + 32 <= n; i += 32) {
    v16 a, b;
    std::memcpy(&a, p + i, 16);
    std::memcpy(&b, p + i + 16, 16);
    a ^= kv;
    b ^= kv;
    std::memcpy(p + i, &a, 16);
    std::memcpy(p + i + 16, &b, 16);
  }
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    w ^= k8;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] ^= static_cast<std::byte>(rot[i & 7]);
  return (phase + n) & 3;
}

// A fresh masking key: four bytes of BoringSSL's CSPRNG, drawn 256 at a time per thread. Not inlined:
// clang 16 may keep a thread_local's address across a co_await (see pool.hpp), and the writer coroutine
// reaches this.
[[gnu::noinline]] inline std::array<std::uint8_t, 4> ws_mask_key() {
  struct pool {
    std::uint8_t bytes[256];
    std::size_t next = sizeof bytes;
  };
  thread_local pool p;
  if (p.next + 4 > sizeof p.bytes) {
    if (RAND_bytes(p.bytes, sizeof p.bytes) != 1) throw std::runtime_error("RAND_bytes failed");
    p.next = 0;
  }
  std::array<std::uint8_t, 4> k;
  std::memcpy(k.data(), p.bytes + p.next, 4);
  p.next += 4;
  return k;
}

COGRID_DECL std::array<std::uint8_t, 4> append_frame_header(std::size_t n, bool mask, std::vector<std::byte>& out) {
  std::uint8_t h[14];
  std::size_t hl = 2;
  h[0] = 0x80 | 0x2; // FIN, binary
  if (n < 126) {
    h[1] = static_cast<std::uint8_t>(n);
  } else if (n <= 0xffff) {
    h[1] = 126;
    h[2] = static_cast<std::uint8_t>(n >> 8);
    h[3] = static_cast<std::uint8_t>(n);
    hl = 4;
  } else {
    h[1] = 127;
    for (std::size_t i = 0; i < 8; ++i) h[2 + i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(n) >> (56 - 8 * i));
    hl = 10;
  }
  std::array<std::uint8_t, 4> key{};
  if (mask) {
    key = ws_mask_key();
    h[1] |= 0x80;
    std::memcpy(h + hl, key.data(), 4);
    hl += 4;
  }
  const auto* hb = reinterpret_cast<const std::byte*>(h);
  out.insert(out.end(), hb, hb + hl);
  return key;
}

/// Appends one binary FIN frame holding `payload` to `out`: header and payload, masked with a fresh
/// random key when `mask` (a client's frames). Allocates only to grow `out` (geometrically).
COGRID_DECL void append_binary_frame(std::span<const std::byte> payload, bool mask, std::vector<std::byte>& out) {
  const std::size_t n = payload.size();
  const std::size_t need = out.size() + 14 + n; // 14: the longest header
  if (need > out.capacity()) out.reserve(std::max(need, out.capacity() * 2));
  const auto key = append_frame_header(n, mask, out);
  const std::size_t at = out.size();
  out.insert(out.end(), payload.begin(), payload.end());
  if (mask) ws_mask(out.data() + at, n, key, 0);
}

COGRID_DECL split_message encode_split(const message& m) noexcept {
  split_message out;
  const msg_flags f = wire_flags(m);
  const std::size_t len = payload_size(m);
  std::byte* const start = out.head.data();
  std::byte* const p = put_head(m, f, len, start);
  out.head_size = static_cast<std::size_t>(p - start);
  std::byte* t = out.tail.data();
  if (has(f, msg_flags::subroute)) t = mp::put_bytes(t, m.subroute->bytes.data(), subroute_trailer_size);
  if (has(f, msg_flags::crc)) {
    const std::span<const std::byte> payload = len != 0 ? *m.payload : std::span<const std::byte>();
    const auto crc = static_cast<std::uint32_t>(
        xxh3_64_parts({std::span<const std::byte>(start, out.head_size), payload,
                       std::span<const std::byte>(out.tail.data(), static_cast<std::size_t>(t - out.tail.data()))}));
    for (int i = 0; i < 4; ++i) t = mp::put_byte(t, static_cast<std::uint8_t>(crc >> (8 * i)));
  }
  out.tail_size = static_cast<std::size_t>(t - out.tail.data());
  return out;
}

COGRID_DECL void frame_batch(std::span<std::byte> queue, std::span<const std::size_t> ends, merge_limits limits, bool mask,
                             std::vector<std::byte>& scratch, std::vector<std::byte>& out, std::vector<frame_part>& parts,
                             std::size_t in_place_min) {
  const std::size_t n = ends.size();
  std::size_t i = 0, start = 0, covered = 0; // covered: the bytes of `out` already in `parts`
  while (i < n) {
    std::size_t j = i, bytes = 0, end = start;
    while (j < n && j - i < limits.max_messages) {
      const std::size_t len = ends[j] - end;
      if (j > i && bytes + len > limits.max_bytes) break;
      bytes += len;
      end = ends[j];
      ++j;
    }
    if (j - i == 1 && end - start >= in_place_min) {
      const auto key = append_frame_header(end - start, mask, out);
      if (mask) ws_mask(queue.data() + start, end - start, key, 0);
      parts.push_back({false, covered, out.size()});
      parts.push_back({true, start, end});
      covered = out.size();
    } else if (j - i == 1) {
      append_binary_frame(queue.subspan(start, end - start), mask, out);
    } else {
      merge_builder mb(scratch);
      std::size_t at = start;
      for (std::size_t k = i; k < j; ++k) {
        (void)mb.add(queue.subspan(at, ends[k] - at)); // each item is under max_bytes: it fits
        at = ends[k];
      }
      append_binary_frame(mb.finish(), mask, out);
    }
    start = end;
    i = j;
  }
  if (out.size() > covered) parts.push_back({false, covered, out.size()});
}

} // namespace detail

} // namespace cogrid

#endif // COGRID_IMPL_MESSAGE_IPP
