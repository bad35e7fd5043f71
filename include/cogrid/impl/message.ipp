// cogrid/impl/message.ipp — definitions for cogrid/message.hpp.
#ifndef COGRID_IMPL_MESSAGE_IPP
#define COGRID_IMPL_MESSAGE_IPP

#include <cogrid/message.hpp>
#include <cogrid/detail/msgpack.hpp>
#include <cogrid/detail/xxh3.hpp>

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

// Writes exactly encoded_size_with(m, f) bytes at `out`.
inline std::byte* encode_unchecked(const message& m, msg_flags f, std::byte* out) noexcept {
  std::byte* const start = out;
  std::byte* p = mp::put_byte(out, 0x97);
  p = mp::put_uint(p, m.mux_id);
  p = mp::put_uint(p, m.seq);
  p = mp::put_uint(p, m.deadline_ms);
  p = mp::put_uint(p, static_cast<std::uint8_t>(m.handler));
  p = mp::put_uint(p, static_cast<std::uint8_t>(m.op));
  p = mp::put_uint(p, static_cast<std::uint8_t>(f));
  const std::size_t len = payload_size(m);
  p = mp::put_bin_header(p, len);
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
  static constexpr const char* names[] = {"CRC", "EOF", "STATELESS", "ERR", "ZERO", "SUB"};
  std::string out;
  const auto bits = static_cast<std::uint8_t>(f);
  for (int i = 0; i < 8; ++i) {
    if ((bits & (1u << i)) == 0) continue;
    if (!out.empty()) out += '|';
    if (i < 6) {
      out += names[i];
    } else {
      out += i == 6 ? "0x40" : "0x80";
    }
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

} // namespace cogrid

#endif // COGRID_IMPL_MESSAGE_IPP
