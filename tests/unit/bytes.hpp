// Helpers for the unit tests: hex to bytes and back.
#ifndef COGRID_TESTS_BYTES_HPP
#define COGRID_TESTS_BYTES_HPP

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cogrid_test {

// "97 01 cd ea60" -> bytes (spaces ignored).
inline std::vector<std::byte> hex(std::string_view s) {
  std::vector<std::byte> out;
  int hi = -1;
  for (char c : s) {
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else continue;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<std::byte>(hi * 16 + v));
      hi = -1;
    }
  }
  return out;
}

inline std::string to_hex(std::span<const std::byte> b) {
  static constexpr char d[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    if (!s.empty()) s += ' ';
    s += d[static_cast<unsigned>(x) >> 4];
    s += d[static_cast<unsigned>(x) & 15];
  }
  return s;
}

inline std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

inline std::vector<std::byte> concat(std::vector<std::byte> a, std::span<const std::byte> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

} // namespace cogrid_test

#endif // COGRID_TESTS_BYTES_HPP
