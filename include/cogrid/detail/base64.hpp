// cogrid/detail/base64.hpp — base64 (RFC 4648 §4, padded) encoding, and base64url (§5, unpadded, the
// form JWTs use) encoding and strict decoding.
#ifndef COGRID_DETAIL_BASE64_HPP
#define COGRID_DETAIL_BASE64_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace cogrid::detail {

inline constexpr std::string_view base64_std_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
inline constexpr std::string_view base64url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends the base64 of `in` in `alphabet` to `out`, with '=' padding to a multiple of 4 if `pad`.
inline void base64_append(std::string& out, std::span<const std::uint8_t> in, std::string_view alphabet, bool pad) {
  const std::size_t full = in.size() / 3;
  const std::size_t rest = in.size() % 3;
  out.reserve(out.size() + (full + (rest != 0)) * 4);
  std::size_t i = 0;
  for (std::size_t g = 0; g < full; ++g, i += 3) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{in[i]} << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    if (pad) out += "==";
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad) out += '=';
  }
}

inline std::span<const std::uint8_t> as_u8(std::string_view s) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

/// Standard base64 with padding ("Zm8=").
inline std::string base64_encode(std::string_view in) {
  std::string out;
  base64_append(out, as_u8(in), base64_std_alphabet, true);
  return out;
}

/// base64url without padding ("Zm8"), as JWT segments are written.
inline std::string base64url_encode(std::string_view in) {
  std::string out;
  base64_append(out, as_u8(in), base64url_alphabet, false);
  return out;
}
inline std::string base64url_encode(std::span<const std::uint8_t> in) {
  std::string out;
  base64_append(out, in, base64url_alphabet, false);
  return out;
}

/// Bytes that `n` characters of unpadded base64 decode to (n % 4 == 1 is not a valid length).
constexpr std::size_t base64url_decoded_size(std::size_t n) noexcept { return n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1); }

/// Decodes unpadded base64url strictly: only [A-Za-z0-9_-]; no '=', whitespace or line breaks; a length
/// that is not 1 mod 4; and zero bits in the unused low bits of the last character, so that every byte
/// string has exactly one accepted encoding. Replaces `out` with the bytes; false (and `out` unspecified)
/// on any violation. Never reads outside `in`.
inline bool base64url_decode(std::string_view in, std::string& out) {
  static constexpr auto table = [] {
    std::array<std::int8_t, 256> t{};
    t.fill(-1);
    for (std::size_t i = 0; i < base64url_alphabet.size(); ++i)
      t[static_cast<unsigned char>(base64url_alphabet[i])] = static_cast<std::int8_t>(i);
    return t;
  }();
  out.clear();
  if (in.size() % 4 == 1) return false;
  out.reserve(base64url_decoded_size(in.size()));
  std::uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    const std::int8_t v = table[static_cast<unsigned char>(ch)];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
      acc &= (1u << bits) - 1; // keep only the bits not yet emitted
    }
  }
  return acc == 0; // the 2 or 4 leftover bits of a partial group must be zero (canonical encoding)
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_BASE64_HPP
