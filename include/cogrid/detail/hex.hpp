// cogrid/detail/hex.hpp — lower-case hex of a byte range (for ids in logs and error texts).
#ifndef COGRID_DETAIL_HEX_HPP
#define COGRID_DETAIL_HEX_HPP

#include <cstddef>
#include <span>
#include <string>

namespace cogrid::detail {

inline std::string to_hex(std::span<const std::byte> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::byte b : bytes) {
    out += digits[static_cast<unsigned>(b) >> 4];
    out += digits[static_cast<unsigned>(b) & 0xf];
  }
  return out;
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_HEX_HPP
