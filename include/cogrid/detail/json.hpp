// cogrid/detail/json.hpp — just enough JSON for JWTs: a strict, bounded reader of one flat object (string,
// number, bool and null members; nested members are validated and skipped without recursion), and a
// string writer that escapes exactly as Go's encoding/json does.
#ifndef COGRID_DETAIL_JSON_HPP
#define COGRID_DETAIL_JSON_HPP

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace cogrid::detail::json {

enum class kind : std::uint8_t { string, number, boolean, null, object, array };

/// One member's value as `read_object` reports it. `text` is only valid during the callback.
struct value {
  json::kind kind = kind::null;
  /// string: the unescaped contents (UTF-8); number: the literal as written; boolean: "true"/"false";
  /// null: "null"; object/array: the raw text, brackets included.
  std::string_view text;
  bool boolean = false;
};

/// Bounds on what `read_object` accepts; anything beyond them is rejected like malformed input.
struct limits {
  std::size_t max_size = 64 * 1024; ///< bytes of input
  std::size_t max_members = 64;     ///< members of the top-level object
  std::size_t max_depth = 16;       ///< nesting of containers inside a member's value (at most 64)
};

namespace impl {

struct cursor {
  std::string_view s;
  std::size_t pos = 0;

  bool at_end() const noexcept { return pos >= s.size(); }
  unsigned char peek() const noexcept { return at_end() ? 0 : static_cast<unsigned char>(s[pos]); }
  void skip_ws() noexcept {
    while (!at_end() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r')) ++pos;
  }
  bool eat(char c) noexcept {
    if (at_end() || s[pos] != c) return false;
    ++pos;
    return true;
  }
};

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

/// Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or > U+10FFFF) starting at
/// `s[i]`, which is >= 0x80; 0 if it is not one. `cp` receives the code point.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i, std::uint32_t& cp) noexcept {
  const auto byte = [&](std::size_t k) -> unsigned { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  const unsigned b0 = byte(0);
  std::size_t n = 0;
  unsigned lo = 0x80, hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    n = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    n = 3;
    if (b0 == 0xe0) lo = 0xa0;
    if (b0 == 0xed) hi = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    n = 4;
    if (b0 == 0xf0) lo = 0x90;
    if (b0 == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  const unsigned b1 = byte(1);
  if (b1 < lo || b1 > hi) return 0;
  cp = (b0 & (0xffu >> (n + 1))) << 6 | (b1 & 0x3f);
  for (std::size_t k = 2; k < n; ++k) {
    const unsigned b = byte(k);
    if (b < 0x80 || b > 0xbf) return 0;
    cp = cp << 6 | (b & 0x3f);
  }
  return n;
}

inline bool hex4(cursor& c, std::uint32_t& v) noexcept {
  v = 0;
  for (int k = 0; k < 4; ++k) {
    const unsigned char h = c.peek();
    unsigned d;
    if (h >= '0' && h <= '9') d = h - '0';
    else if (h >= 'a' && h <= 'f') d = h - 'a' + 10u;
    else if (h >= 'A' && h <= 'F') d = h - 'A' + 10u;
    else return false;
    v = v << 4 | d;
    ++c.pos;
  }
  return true;
}

/// Reads a string at the cursor (which must be at '"'), unescaping into `*out` unless `out` is null.
/// Rejects raw control characters, invalid UTF-8, unknown escapes and unpaired surrogates.
inline bool read_string(cursor& c, std::string* out) {
  if (!c.eat('"')) return false;
  if (out) out->clear();
  for (;;) {
    if (c.at_end()) return false;
    const unsigned char ch = c.peek();
    if (ch == '"') {
      ++c.pos;
      return true;
    }
    if (ch < 0x20) return false;
    if (ch >= 0x80) {
      std::uint32_t cp = 0;
      const std::size_t n = utf8_sequence(c.s, c.pos, cp);
      if (n == 0) return false;
      if (out) out->append(c.s.substr(c.pos, n));
      c.pos += n;
      continue;
    }
    ++c.pos;
    if (ch != '\\') {
      if (out) *out += static_cast<char>(ch);
      continue;
    }
    const unsigned char e = c.peek();
    ++c.pos;
    char plain = 0;
    switch (e) {
      case '"': plain = '"'; break;
      case '\\': plain = '\\'; break;
      case '/': plain = '/'; break;
      case 'b': plain = '\b'; break;
      case 'f': plain = '\f'; break;
      case 'n': plain = '\n'; break;
      case 'r': plain = '\r'; break;
      case 't': plain = '\t'; break;
      case 'u': {
        std::uint32_t cp = 0;
        if (!hex4(c, cp)) return false;
        if (cp >= 0xdc00 && cp <= 0xdfff) return false; // a low surrogate first
        if (cp >= 0xd800 && cp <= 0xdbff) {            // a high surrogate: a low one must follow
          std::uint32_t low = 0;
          if (!c.eat('\\') || !c.eat('u') || !hex4(c, low) || low < 0xdc00 || low > 0xdfff) return false;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        if (out) append_utf8(*out, cp);
        continue;
      }
      default: return false;
    }
    if (out) *out += plain;
  }
}

/// Reads a number per RFC 8259's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
inline bool read_number(cursor& c) noexcept {
  const auto digit = [&] { return c.peek() >= '0' && c.peek() <= '9'; };
  c.eat('-');
  if (c.eat('0')) {
  } else if (digit()) {
    while (digit()) ++c.pos;
  } else {
    return false;
  }
  if (c.eat('.')) {
    if (!digit()) return false;
    while (digit()) ++c.pos;
  }
  if (c.peek() == 'e' || c.peek() == 'E') {
    ++c.pos;
    if (!c.eat('+')) c.eat('-');
    if (!digit()) return false;
    while (digit()) ++c.pos;
  }
  return true;
}

inline bool read_literal(cursor& c, std::string_view word) noexcept {
  if (c.s.substr(c.pos, word.size()) != word) return false;
  c.pos += word.size();
  return true;
}

/// Reads a scalar (string, number, true, false, null) without keeping it.
inline bool skip_scalar(cursor& c) {
  switch (c.peek()) {
    case '"': return read_string(c, nullptr);
    case 't': return read_literal(c, "true");
    case 'f': return read_literal(c, "false");
    case 'n': return read_literal(c, "null");
    default: return read_number(c);
  }
}

/// Validates and skips the object or array at the cursor, iteratively: a bit stack (1 = object) of at
/// most `max_depth` (<= 64) levels replaces recursion.
inline bool skip_container(cursor& c, std::size_t max_depth) {
  if (max_depth > 64) max_depth = 64;
  std::uint64_t stack = 0;
  std::size_t depth = 0;
  const auto open = [&]() -> bool {
    if (depth >= max_depth) return false;
    stack = stack << 1 | (c.peek() == '{' ? 1u : 0u);
    ++depth;
    ++c.pos;
    return true;
  };
  if (!open()) return false;
  bool first = true; // just after an opening bracket: a closing one may follow at once
  for (;;) {
    // Expecting a member (object) or element (array), or, if `first`, the closing bracket.
    bool in_object = (stack & 1) != 0;
    c.skip_ws();
    const char close = in_object ? '}' : ']';
    if (!(first && c.peek() == static_cast<unsigned char>(close))) {
      if (in_object) {
        if (c.peek() != '"' || !read_string(c, nullptr)) return false;
        c.skip_ws();
        if (!c.eat(':')) return false;
        c.skip_ws();
      }
      if (c.peek() == '{' || c.peek() == '[') {
        if (!open()) return false;
        first = true;
        continue;
      }
      if (!skip_scalar(c)) return false;
    }
    // After a value (or at an immediate close): ',' continues this container; closing brackets pop.
    for (;;) {
      in_object = (stack & 1) != 0;
      c.skip_ws();
      if (!(first && c.peek() == static_cast<unsigned char>(in_object ? '}' : ']')) && c.eat(',')) {
        first = false;
        break;
      }
      if (!c.eat(in_object ? '}' : ']')) return false;
      first = false;
      stack >>= 1;
      if (--depth == 0) return true;
    }
  }
}

} // namespace impl

/// Reads `text` as exactly one JSON object (RFC 8259, UTF-8, optional surrounding whitespace) and calls
/// `on_member(std::string_view key, const value& v) -> bool` for each member in order; duplicate keys are
/// reported as they come. A `false` from the callback stops reading and fails the call. Nested objects
/// and arrays are validated and reported with their raw text. Returns false on any syntax error, invalid
/// UTF-8, unpaired surrogate escape, or when `lim` is exceeded. Never reads outside `text`; no recursion.
template <class F>
  requires std::predicate<F&, std::string_view, const value&>
bool read_object(std::string_view text, F&& on_member, const limits& lim = {}) {
  if (text.size() > lim.max_size) return false;
  impl::cursor c{text};
  c.skip_ws();
  if (!c.eat('{')) return false;
  std::string key;
  std::string str;
  std::size_t members = 0;
  c.skip_ws();
  if (!c.eat('}')) {
    for (;;) {
      if (++members > lim.max_members) return false;
      c.skip_ws();
      if (c.peek() != '"' || !impl::read_string(c, &key)) return false;
      c.skip_ws();
      if (!c.eat(':')) return false;
      c.skip_ws();
      value v;
      const std::size_t start = c.pos;
      switch (c.peek()) {
        case '"':
          if (!impl::read_string(c, &str)) return false;
          v.kind = kind::string;
          v.text = str;
          break;
        case '{':
        case '[':
          v.kind = c.peek() == '{' ? kind::object : kind::array;
          if (!impl::skip_container(c, lim.max_depth)) return false;
          v.text = text.substr(start, c.pos - start);
          break;
        case 't':
        case 'f':
          if (!impl::read_literal(c, c.peek() == 't' ? "true" : "false")) return false;
          v.kind = kind::boolean;
          v.text = text.substr(start, c.pos - start);
          v.boolean = v.text == "true";
          break;
        case 'n':
          if (!impl::read_literal(c, "null")) return false;
          v.kind = kind::null;
          v.text = text.substr(start, c.pos - start);
          break;
        default:
          if (!impl::read_number(c)) return false;
          v.kind = kind::number;
          v.text = text.substr(start, c.pos - start);
          break;
      }
      if (!on_member(std::string_view{key}, static_cast<const value&>(v))) return false;
      c.skip_ws();
      if (c.eat('}')) break;
      if (!c.eat(',')) return false;
    }
  }
  c.skip_ws();
  return c.at_end();
}

/// The value of a number literal if it is an integer in int64 range written without fraction or
/// exponent ("-12"; not "1.0", "1e3" or "9223372036854775808"); nullopt otherwise.
inline std::optional<std::int64_t> to_int64(std::string_view literal) noexcept {
  bool neg = false;
  if (!literal.empty() && literal.front() == '-') {
    neg = true;
    literal.remove_prefix(1);
  }
  if (literal.empty() || literal.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  for (char ch : literal) {
    if (ch < '0' || ch > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(ch - '0'); // 19 digits cannot overflow uint64
  }
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (neg) {
    if (v > max + 1) return std::nullopt;
    return v == max + 1 ? std::numeric_limits<std::int64_t>::min() : -static_cast<std::int64_t>(v);
  }
  if (v > max) return std::nullopt;
  return static_cast<std::int64_t>(v);
}

/// Appends `s` as a JSON string literal escaped exactly as Go's `json.Marshal` does (HTML escaping on):
/// `"` and `\` backslashed; \b \f \n \r \t short; other controls and < > & as \u00xx (lower-case hex);
/// U+2028/U+2029 as \u2028/\u2029; each byte of invalid UTF-8 as \ufffd; everything else verbatim.
inline void append_go_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      switch (b) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (b < 0x20 || b == '<' || b == '>' || b == '&') {
            out += "\\u00";
            out += hex[b >> 4];
            out += hex[b & 0xf];
          } else {
            out += static_cast<char>(b);
          }
      }
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t n = impl::utf8_sequence(s, i, cp);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else if (cp == 0x2028 || cp == 0x2029) {
      out += cp == 0x2028 ? "\\u2028" : "\\u2029";
      i += n;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  out += '"';
}

} // namespace cogrid::detail::json

#endif // COGRID_DETAIL_JSON_HPP
