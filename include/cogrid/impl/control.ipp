// cogrid/impl/control.ipp — definitions for cogrid/control.hpp.
#ifndef COGRID_IMPL_CONTROL_IPP
#define COGRID_IMPL_CONTROL_IPP

#include <cogrid/control.hpp>
#include <cogrid/detail/hex.hpp>
#include <cogrid/detail/msgpack.hpp>

#include <cstring>
#include <limits>
#include <string_view>

namespace cogrid {
namespace detail {


inline std::error_code read_time(mp::reader& r, wire_time& out) noexcept {
  std::int8_t type;
  std::span<const std::byte> d;
  if (auto ec = r.read_ext(type, d)) return ec;
  std::int64_t sec;
  std::uint64_t nsec;
  if (type == 5 && d.size() == 12) { // msgp: int64 seconds, int32 nanoseconds
    sec = static_cast<std::int64_t>(mp::load_be(d.data(), 8));
    nsec = mp::load_be(d.data() + 8, 4);
  } else if (type == -1 && d.size() == 4) { // msgpack timestamp 32: uint32 seconds
    sec = static_cast<std::int64_t>(mp::load_be(d.data(), 4));
    nsec = 0;
  } else if (type == -1 && d.size() == 8) { // timestamp 64: 30-bit nanoseconds, 34-bit seconds
    const std::uint64_t v = mp::load_be(d.data(), 8);
    nsec = v >> 34;
    sec = static_cast<std::int64_t>(v & ((std::uint64_t{1} << 34) - 1));
  } else if (type == -1 && d.size() == 12) { // timestamp 96: uint32 nanoseconds, int64 seconds
    nsec = mp::load_be(d.data(), 4);
    sec = static_cast<std::int64_t>(mp::load_be(d.data() + 4, 8));
  } else {
    return errc::type_mismatch;
  }
  if (nsec >= 1'000'000'000) return errc::invalid_value;
  out = {sec, static_cast<std::uint32_t>(nsec)};
  return {};
}

inline std::error_code read_string(mp::reader& r, std::string& out) {
  std::string_view s;
  if (auto ec = r.read_str(s)) return ec;
  out.assign(s);
  return {};
}

inline std::error_code read_node_id(mp::reader& r, node_id& out) noexcept {
  std::span<const std::byte> b;
  if (auto ec = r.read_bin(b)) return ec;
  if (b.size() != out.bytes.size()) return errc::bad_field_length;
  std::memcpy(out.bytes.data(), b.data(), b.size());
  return {};
}

// Reads a map of the whole buffer, calling `field(key, reader)` per key; `field` returns true when it
// consumed the value, false to have the value skipped as unknown.
template <class F>
std::error_code read_map(std::span<const std::byte> in, F&& field) {
  mp::reader r(in);
  std::uint32_t n;
  if (auto ec = r.read_map_header(n)) return ec;
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string_view key;
    if (auto ec = r.read_key(key)) return ec;
    std::error_code ec;
    if (!field(key, r, ec)) ec = r.skip();
    if (ec) return ec;
  }
  if (r.remaining() != 0) return errc::trailing_bytes;
  return {};
}

} // namespace detail

COGRID_DECL std::int64_t wire_time::unix_nanos() const noexcept {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  if (seconds > max / 1'000'000'000 - 1) return max;
  if (seconds < min / 1'000'000'000 + 1) return min;
  return seconds * 1'000'000'000 + nanos;
}

COGRID_DECL std::string node_id::to_string() const {
  const std::string h = detail::to_hex(bytes);
  return h.substr(0, 8) + '-' + h.substr(8, 4) + '-' + h.substr(12, 4) + '-' + h.substr(16, 4) + '-' + h.substr(20);
}

COGRID_DECL void encode_append(const connect_request& v, std::vector<std::byte>& out) {
  detail::mp::vector_writer w(out);
  w.map_header(4);
  w.str("ID");
  w.bin(v.id.bytes);
  w.str("Host");
  w.str(v.host);
  w.str("Time");
  w.time(v.time.seconds, v.time.nanos);
  w.str("Token");
  w.str(v.token);
}

COGRID_DECL void encode_append(const connect_response& v, std::vector<std::byte>& out) {
  detail::mp::vector_writer w(out);
  w.map_header(3);
  w.str("ID");
  w.bin(v.id.bytes);
  w.str("Accepted");
  w.boolean(v.accepted);
  w.str("RejectedReason");
  w.str(v.rejected_reason);
}

COGRID_DECL void encode_append(const mux_connect_error& v, std::vector<std::byte>& out) {
  detail::mp::vector_writer w(out);
  w.map_header(1);
  w.str("Error");
  w.str(v.error);
}

COGRID_DECL void encode_append(const ping_msg& v, std::vector<std::byte>& out) {
  detail::mp::vector_writer w(out);
  w.map_header(1);
  w.str("t");
  w.time(v.time.seconds, v.time.nanos);
}

COGRID_DECL void encode_append(const pong_msg& v, std::vector<std::byte>& out) {
  detail::mp::vector_writer w(out);
  w.map_header(3);
  w.str("nf");
  w.boolean(v.not_found);
  w.str("e");
  if (v.error) {
    w.str(*v.error);
  } else {
    w.nil();
  }
  w.str("t");
  w.time(v.time.seconds, v.time.nanos);
}

COGRID_DECL void encode_append(const stream_ack& v, std::vector<std::byte>& out) {
  detail::mp::vector_writer w(out);
  w.map_header(2);
  w.str("in");
  w.uint(v.in);
  w.str("out");
  w.uint(v.out);
}

COGRID_DECL result<void> decode(std::span<const std::byte> in, stream_ack& out) {
  return detail::read_map(in, [&](std::string_view k, detail::mp::reader& r, std::error_code& ec) {
    if (k == "in") ec = r.read_uint_as(out.in);
    else if (k == "out") ec = r.read_uint_as(out.out);
    else return false;
    return true;
  });
}

COGRID_DECL result<void> decode(std::span<const std::byte> in, connect_request& out) {
  return detail::read_map(in, [&](std::string_view k, detail::mp::reader& r, std::error_code& ec) {
    if (k == "ID") ec = detail::read_node_id(r, out.id);
    else if (k == "Host") ec = detail::read_string(r, out.host);
    else if (k == "Time") ec = detail::read_time(r, out.time);
    else if (k == "Token") ec = detail::read_string(r, out.token);
    else return false;
    return true;
  });
}

COGRID_DECL result<void> decode(std::span<const std::byte> in, connect_response& out) {
  return detail::read_map(in, [&](std::string_view k, detail::mp::reader& r, std::error_code& ec) {
    if (k == "ID") ec = detail::read_node_id(r, out.id);
    else if (k == "Accepted") ec = r.read_bool(out.accepted);
    else if (k == "RejectedReason") ec = detail::read_string(r, out.rejected_reason);
    else return false;
    return true;
  });
}

COGRID_DECL result<void> decode(std::span<const std::byte> in, mux_connect_error& out) {
  return detail::read_map(in, [&](std::string_view k, detail::mp::reader& r, std::error_code& ec) {
    if (k != "Error") return false;
    ec = detail::read_string(r, out.error);
    return true;
  });
}

COGRID_DECL result<void> decode(std::span<const std::byte> in, ping_msg& out) {
  return detail::read_map(in, [&](std::string_view k, detail::mp::reader& r, std::error_code& ec) {
    if (k != "t") return false;
    ec = detail::read_time(r, out.time);
    return true;
  });
}

COGRID_DECL result<void> decode(std::span<const std::byte> in, pong_msg& out) {
  return detail::read_map(in, [&](std::string_view k, detail::mp::reader& r, std::error_code& ec) {
    if (k == "nf") {
      ec = r.read_bool(out.not_found);
    } else if (k == "e") {
      if (r.try_nil()) {
        out.error.reset();
      } else {
        out.error.emplace();
        ec = detail::read_string(r, *out.error);
      }
    } else if (k == "t") {
      ec = detail::read_time(r, out.time);
    } else {
      return false;
    }
    return true;
  });
}

} // namespace cogrid

#endif // COGRID_IMPL_CONTROL_IPP
