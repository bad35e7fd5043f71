// cogrid/detail/msgpack.hpp — the msgpack subset the grid protocol puts on the wire, written and read
// without allocation. The reader never reads past its end and never recurses (skip is iterative), so a
// hostile buffer yields an error code, never a crash.
#ifndef COGRID_DETAIL_MSGPACK_HPP
#define COGRID_DETAIL_MSGPACK_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <system_error>
#include <vector>

namespace cogrid::detail::mp {

// ---- sizes --------------------------------------------------------------------------------------------

/// Bytes msgp's AppendUint* takes for `v`: the smallest unsigned form.
constexpr std::size_t uint_size(std::uint64_t v) noexcept {
  return v < 0x80 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}
constexpr std::size_t bin_header_size(std::size_t n) noexcept { return n <= 0xff ? 2 : n <= 0xffff ? 3 : 5; }
constexpr std::size_t str_header_size(std::size_t n) noexcept {
  return n < 32 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : 5;
}
constexpr std::size_t map_header_size(std::size_t n) noexcept { return n < 16 ? 1 : n <= 0xffff ? 3 : 5; }
inline constexpr std::size_t time_size = 15; // c7 0c 05 + 8 + 4
inline constexpr std::uint64_t max_bin = 0xffffffffu;

// ---- raw big-endian stores/loads ----------------------------------------------------------------------

inline std::byte* store_be(std::byte* p, std::uint64_t v, int n) noexcept {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
  return p + n;
}
inline std::uint64_t load_be(const std::byte* p, int n) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

// ---- writer primitives (caller guarantees room: sizes above are exact) ---------------------------------

inline std::byte* put_byte(std::byte* p, std::uint8_t b) noexcept {
  *p = static_cast<std::byte>(b);
  return p + 1;
}
inline std::byte* put_uint(std::byte* p, std::uint64_t v) noexcept {
  if (v < 0x80) return put_byte(p, static_cast<std::uint8_t>(v));
  if (v <= 0xff) return store_be(put_byte(p, 0xcc), v, 1);
  if (v <= 0xffff) return store_be(put_byte(p, 0xcd), v, 2);
  if (v <= 0xffffffffu) return store_be(put_byte(p, 0xce), v, 4);
  return store_be(put_byte(p, 0xcf), v, 8);
}
inline std::byte* put_bin_header(std::byte* p, std::size_t n) noexcept {
  if (n <= 0xff) return store_be(put_byte(p, 0xc4), n, 1);
  if (n <= 0xffff) return store_be(put_byte(p, 0xc5), n, 2);
  return store_be(put_byte(p, 0xc6), n, 4);
}
inline std::byte* put_str_header(std::byte* p, std::size_t n) noexcept {
  if (n < 32) return put_byte(p, static_cast<std::uint8_t>(0xa0 | n));
  if (n <= 0xff) return store_be(put_byte(p, 0xd9), n, 1);
  if (n <= 0xffff) return store_be(put_byte(p, 0xda), n, 2);
  return store_be(put_byte(p, 0xdb), n, 4);
}
inline std::byte* put_map_header(std::byte* p, std::size_t n) noexcept {
  if (n < 16) return put_byte(p, static_cast<std::uint8_t>(0x80 | n));
  if (n <= 0xffff) return store_be(put_byte(p, 0xde), n, 2);
  return store_be(put_byte(p, 0xdf), n, 4);
}
inline std::byte* put_bytes(std::byte* p, const void* data, std::size_t n) noexcept {
  if (n != 0) std::memcpy(p, data, n);
  return p + n;
}

/// Appends msgpack to a growable byte vector; used for the rare control payloads, not the hot path.
class vector_writer {
public:
  explicit vector_writer(std::vector<std::byte>& out) noexcept : out_(out) {}

  void map_header(std::size_t n) { p(map_header_size(n), [&](std::byte* d) { put_map_header(d, n); }); }
  void str(std::string_view s) {
    p(str_header_size(s.size()) + s.size(), [&](std::byte* d) { put_bytes(put_str_header(d, s.size()), s.data(), s.size()); });
  }
  void bin(std::span<const std::byte> b) {
    p(bin_header_size(b.size()) + b.size(), [&](std::byte* d) { put_bytes(put_bin_header(d, b.size()), b.data(), b.size()); });
  }
  void boolean(bool v) { p(1, [&](std::byte* d) { put_byte(d, v ? 0xc3 : 0xc2); }); }
  void uint(std::uint64_t v) { p(uint_size(v), [&](std::byte* d) { put_uint(d, v); }); }
  void nil() { p(1, [&](std::byte* d) { put_byte(d, 0xc0); }); }
  /// msgp's AppendTime: ext8, length 12, type 5, int64 seconds and int32 nanoseconds, big-endian.
  void time(std::int64_t seconds, std::uint32_t nanos) {
    p(time_size, [&](std::byte* d) {
      d = put_byte(put_byte(put_byte(d, 0xc7), 12), 5);
      store_be(store_be(d, static_cast<std::uint64_t>(seconds), 8), nanos, 4);
    });
  }

private:
  template <class F>
  void p(std::size_t n, F&& f) {
    const std::size_t at = out_.size();
    out_.resize(at + n);
    f(out_.data() + at);
  }
  std::vector<std::byte>& out_;
};

// ---- reader -------------------------------------------------------------------------------------------

/// Reads msgpack values from a byte range. Every read checks the remaining length first; a failed read
/// returns an error and leaves the position unspecified (the caller abandons the buffer).
class reader {
public:
  explicit reader(std::span<const std::byte> in) noexcept : p_(in.data()), end_(in.data() + in.size()) {}

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  std::span<const std::byte> rest() const noexcept { return {p_, remaining()}; }
  const std::byte* position() const noexcept { return p_; }

  /// Peeks the next type byte; false at the end.
  bool peek(std::uint8_t& b) const noexcept {
    if (p_ == end_) return false;
    b = static_cast<std::uint8_t>(*p_);
    return true;
  }

  /// An unsigned integer as msgp's ReadUint64Bytes takes it: positive fixint, uint8-64, or a
  /// non-negative int8-64. Negative values are `integer_overflow`; other types `type_mismatch`.
  std::error_code read_uint(std::uint64_t& v) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    if (t < 0x80) {
      v = t;
      ++p_;
      return {};
    }
    int n;
    bool is_signed = false;
    switch (t) {
    case 0xcc: n = 1; break;
    case 0xcd: n = 2; break;
    case 0xce: n = 4; break;
    case 0xcf: n = 8; break;
    case 0xd0: n = 1; is_signed = true; break;
    case 0xd1: n = 2; is_signed = true; break;
    case 0xd2: n = 4; is_signed = true; break;
    case 0xd3: n = 8; is_signed = true; break;
    default: return t >= 0xe0 ? errc::integer_overflow : errc::type_mismatch; // negative fixint
    }
    if (remaining() < static_cast<std::size_t>(n) + 1) return errc::truncated;
    v = load_be(p_ + 1, n);
    if (is_signed && (v >> (8 * n - 1)) != 0) return errc::integer_overflow;
    p_ += n + 1;
    return {};
  }

  template <class U>
  std::error_code read_uint_as(U& out) noexcept {
    std::uint64_t v;
    if (auto ec = read_uint(v)) return ec;
    if (v > static_cast<std::uint64_t>(static_cast<U>(~U{}))) return errc::integer_overflow;
    out = static_cast<U>(v);
    return {};
  }

  /// msgpack bin8/16/32 only (msgp's ReadBytesBytes): a str is `type_mismatch`. Zero-copy.
  std::error_code read_bin(std::span<const std::byte>& out) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    int n;
    switch (t) {
    case 0xc4: n = 1; break;
    case 0xc5: n = 2; break;
    case 0xc6: n = 4; break;
    default: return errc::type_mismatch;
    }
    return read_sized(n, out);
  }

  /// msgpack fixstr/str8/16/32 only. Zero-copy.
  std::error_code read_str(std::string_view& out) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    std::span<const std::byte> s;
    std::error_code ec;
    if ((t & 0xe0) == 0xa0) {
      const std::size_t len = t & 0x1f;
      if (remaining() < len + 1) return errc::truncated;
      s = {p_ + 1, len};
      p_ += len + 1;
    } else if (t == 0xd9 || t == 0xda || t == 0xdb) {
      ec = read_sized(t == 0xd9 ? 1 : t == 0xda ? 2 : 4, s);
    } else {
      return errc::type_mismatch;
    }
    if (!ec) out = {reinterpret_cast<const char*>(s.data()), s.size()};
    return ec;
  }

  /// A map key as msgp's ReadMapKeyZC takes it: str or bin.
  std::error_code read_key(std::string_view& out) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    if (t >= 0xc4 && t <= 0xc6) {
      std::span<const std::byte> b;
      if (auto ec = read_bin(b)) return ec;
      out = {reinterpret_cast<const char*>(b.data()), b.size()};
      return {};
    }
    return read_str(out);
  }

  std::error_code read_bool(bool& v) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    if (t != 0xc2 && t != 0xc3) return errc::type_mismatch;
    v = t == 0xc3;
    ++p_;
    return {};
  }

  /// True (and consumes it) when the next value is nil.
  bool try_nil() noexcept {
    std::uint8_t t;
    if (!peek(t) || t != 0xc0) return false;
    ++p_;
    return true;
  }

  std::error_code read_map_header(std::uint32_t& n) noexcept { return read_container(0x80, 0xde, n); }
  std::error_code read_array_header(std::uint32_t& n) noexcept { return read_container(0x90, 0xdc, n); }

  /// Any ext form (fixext1-16, ext8/16/32): its type and its data (zero-copy).
  std::error_code read_ext(std::int8_t& type, std::span<const std::byte>& data) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    std::size_t len;
    int hdr;
    switch (t) {
    case 0xd4: len = 1; hdr = 1; break;
    case 0xd5: len = 2; hdr = 1; break;
    case 0xd6: len = 4; hdr = 1; break;
    case 0xd7: len = 8; hdr = 1; break;
    case 0xd8: len = 16; hdr = 1; break;
    case 0xc7: case 0xc8: case 0xc9: {
      const int n = t == 0xc7 ? 1 : t == 0xc8 ? 2 : 4;
      if (remaining() < static_cast<std::size_t>(n) + 1) return errc::truncated;
      len = load_be(p_ + 1, n);
      hdr = n + 1;
      break;
    }
    default: return errc::type_mismatch;
    }
    // hdr bytes + 1 type byte + len data bytes; compare without overflow.
    if (remaining() < static_cast<std::size_t>(hdr) + 1 || remaining() - hdr - 1 < len) return errc::truncated;
    type = static_cast<std::int8_t>(static_cast<std::uint8_t>(p_[hdr]));
    data = {p_ + hdr + 1, len};
    p_ += hdr + 1 + len;
    return {};
  }

  /// Skips one complete value of any type, nested containers included, without recursion: a counter of
  /// values still to skip grows by a container's element count. Every step consumes at least one byte,
  /// so the loop is bounded by the buffer length however large the claimed counts.
  std::error_code skip() noexcept {
    std::uint64_t pending = 1;
    while (pending != 0) {
      --pending;
      std::uint8_t t;
      if (!peek(t)) return errc::truncated;
      if (t < 0x80 || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) { // fixints, nil, bools
        ++p_;
      } else if ((t & 0xf0) == 0x80) { // fixmap
        pending += 2u * (t & 0x0f);
        ++p_;
      } else if ((t & 0xf0) == 0x90) { // fixarray
        pending += t & 0x0f;
        ++p_;
      } else if ((t & 0xe0) == 0xa0) { // fixstr
        if (auto ec = advance(1 + (t & 0x1f))) return ec;
      } else {
        switch (t) {
        case 0xcc: case 0xd0: if (auto ec = advance(2)) return ec; break;
        case 0xcd: case 0xd1: if (auto ec = advance(3)) return ec; break;
        case 0xce: case 0xd2: case 0xca: if (auto ec = advance(5)) return ec; break;
        case 0xcf: case 0xd3: case 0xcb: if (auto ec = advance(9)) return ec; break;
        case 0xc4: case 0xd9: { std::span<const std::byte> s; if (auto ec = read_sized(1, s)) return ec; break; }
        case 0xc5: case 0xda: { std::span<const std::byte> s; if (auto ec = read_sized(2, s)) return ec; break; }
        case 0xc6: case 0xdb: { std::span<const std::byte> s; if (auto ec = read_sized(4, s)) return ec; break; }
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: case 0xc7: case 0xc8: case 0xc9: {
          std::int8_t type;
          std::span<const std::byte> data;
          if (auto ec = read_ext(type, data)) return ec;
          break;
        }
        case 0xdc: case 0xdd: {
          std::uint32_t n;
          if (auto ec = read_array_header(n)) return ec;
          pending += n;
          break;
        }
        case 0xde: case 0xdf: {
          std::uint32_t n;
          if (auto ec = read_map_header(n)) return ec;
          pending += 2ull * n;
          break;
        }
        default: return errc::type_mismatch; // 0xc1 is never used
        }
      }
    }
    return {};
  }

private:
  std::error_code advance(std::size_t n) noexcept {
    if (remaining() < n) return errc::truncated;
    p_ += n;
    return {};
  }

  // A length field of `n` bytes after the type byte, then that many bytes.
  std::error_code read_sized(int n, std::span<const std::byte>& out) noexcept {
    if (remaining() < static_cast<std::size_t>(n) + 1) return errc::truncated;
    const std::uint64_t len = load_be(p_ + 1, n);
    if (remaining() - n - 1 < len) return errc::truncated;
    out = {p_ + 1 + n, static_cast<std::size_t>(len)};
    p_ += 1 + n + len;
    return {};
  }

  std::error_code read_container(std::uint8_t fix, std::uint8_t t16, std::uint32_t& n) noexcept {
    std::uint8_t t;
    if (!peek(t)) return errc::truncated;
    if ((t & 0xf0) == fix) {
      n = t & 0x0f;
      ++p_;
      return {};
    }
    const int w = t == t16 ? 2 : t == t16 + 1 ? 4 : 0;
    if (w == 0) return errc::type_mismatch;
    if (remaining() < static_cast<std::size_t>(w) + 1) return errc::truncated;
    n = static_cast<std::uint32_t>(load_be(p_ + 1, w));
    p_ += 1 + w;
    return {};
  }

  const std::byte* p_;
  const std::byte* end_;
};

} // namespace cogrid::detail::mp

#endif // COGRID_DETAIL_MSGPACK_HPP
