// cogrid/detail/http.hpp — the HTTP/1.1 upgrade to WebSocket (RFC 6455 §4), both sides. wslay frames
// the WebSocket data transfer only; the opening handshake is written here.
#ifndef COGRID_DETAIL_HTTP_HPP
#define COGRID_DETAIL_HTTP_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/detail/deadline.hpp>
#include <cogrid/error.hpp>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>

#include <openssl/base64.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#if !defined(OPENSSL_IS_BORINGSSL)
#error "cogrid needs BoringSSL's headers (-isystem /usr/include/android), not OpenSSL's"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <charconv>
#include <optional>
#include <utility>
#include <vector>

namespace cogrid::detail {

/// Limits applied to one WebSocket connection.
struct ws_limits {
  std::size_t max_header_bytes = 16 * 1024;         ///< HTTP request/response head, blank line included
  std::size_t max_message_bytes = 64 * 1024 * 1024; ///< a message's payload (sum of its fragments)
};

/// Room for a grid message's own fields (header, subroute, CRC, a merged container's) around a payload:
/// a WebSocket message may be this much longer than the largest payload a node takes.
inline constexpr std::size_t grid_message_room = 4096;
/// The WebSocket message limit for a node that takes payloads of up to `max_payload` bytes.
constexpr std::size_t ws_message_limit(std::size_t max_payload) noexcept {
  return max_payload > SIZE_MAX - grid_message_room ? SIZE_MAX : max_payload + grid_message_room;
}

using http_headers = std::vector<std::pair<std::string, std::string>>;

/// What a cogrid node tells its peer about the grid messages it takes, in the upgrade exchange: the
/// header `X-Cogrid-Limits: message=<bytes>; piece=<bytes>` in the request, and in the 101 response
/// when the request had it. A MinIO node neither sends nor reads it (unknown HTTP headers are ignored
/// both ways), so its peer knows nothing: then messages are never cut into pieces and the size limit
/// for sending is the node's own `max_message_bytes`.
struct grid_limits {
  std::size_t max_message = 0; ///< the largest payload it accepts, reassembled pieces included; 0: not told
  std::size_t piece = 0;       ///< the largest piece of a payload it accepts; 0: it takes no pieces
};

inline constexpr std::string_view grid_limits_header = "X-Cogrid-Limits";

inline std::string format_grid_limits(const grid_limits& l) {
  return "message=" + std::to_string(l.max_message) + "; piece=" + std::to_string(l.piece);
}

/// Parses `message=<n>; piece=<n>` (either order, unknown keys skipped, whitespace allowed); nullopt when
/// malformed or without `message`.
inline std::optional<grid_limits> parse_grid_limits(std::string_view v) {
  grid_limits out;
  bool have_message = false;
  while (!v.empty()) {
    const std::size_t semi = v.find(';');
    std::string_view item = v.substr(0, semi);
    v = semi == std::string_view::npos ? std::string_view() : v.substr(semi + 1);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const std::string_view key = item.substr(0, eq), val = item.substr(eq + 1);
    std::size_t n = 0;
    const auto r = std::from_chars(val.data(), val.data() + val.size(), n);
    if (r.ec != std::errc{} || r.ptr != val.data() + val.size() || val.empty()) return std::nullopt;
    if (key == "message") {
      out.max_message = n;
      have_message = true;
    } else if (key == "piece") {
      out.piece = n;
    }
  }
  if (!have_message) return std::nullopt;
  return out;
}

/// A parsed HTTP request head. Header values are stored with surrounding whitespace removed.
struct http_request {
  std::string method, target;
  std::string version; ///< "HTTP/1.1"
  http_headers headers;

  /// The first value of header `name` (case-insensitive), or "" if absent.
  std::string_view header(std::string_view name) const;
};

// ---- small text helpers -----------------------------------------------------------------------------

inline char http_lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool http_iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (http_lower(a[i]) != http_lower(b[i])) return false;
  return true;
}

inline std::string_view http_trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// RFC 9110 tchar.
inline bool http_is_tchar(char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

inline bool http_is_token(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), http_is_tchar);
}

/// Whether a comma-separated token list ("keep-alive, Upgrade") holds `token` (case-insensitive).
inline bool http_list_contains(std::string_view list, std::string_view token) noexcept {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (http_iequals(http_trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

/// Whether any header `name` holds `token` in its token list.
inline bool http_headers_contain(const http_headers& h, std::string_view name, std::string_view token) noexcept {
  return std::any_of(h.begin(), h.end(),
                     [&](const auto& kv) { return http_iequals(kv.first, name) && http_list_contains(kv.second, token); });
}

inline std::string_view http_find_header(const http_headers& h, std::string_view name) noexcept {
  for (const auto& kv : h)
    if (http_iequals(kv.first, name)) return kv.second;
  return {};
}

inline std::string_view http_request::header(std::string_view name) const { return http_find_header(headers, name); }

/// A field value may hold visible ASCII, space, tab and obs-text; no other control characters.
inline bool http_is_field_value(std::string_view v) noexcept {
  return std::all_of(v.begin(), v.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

/// A request target: visible ASCII only (no spaces, no control characters).
inline bool http_is_target(std::string_view t) noexcept {
  for (char c : t)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return !t.empty();
}

inline bool http_has_crlf(std::string_view s) noexcept { return s.find_first_of("\r\n") != std::string_view::npos; }

/// "HTTP/d.d"
inline bool http_is_version(std::string_view v) noexcept {
  return v.size() == 8 && v.substr(0, 5) == "HTTP/" && v[5] >= '0' && v[5] <= '9' && v[6] == '.' && v[7] >= '0' &&
         v[7] <= '9';
}

/// Splits a head (start line, header lines, blank line; CRLF line ends) into the start line and the
/// headers. False if it is not well-formed HTTP/1.1 (obsolete line folding is refused).
inline bool http_parse_head(std::string_view head, std::string_view& start_line, http_headers& headers) {
  headers.clear();
  std::size_t eol = head.find("\r\n");
  if (eol == std::string_view::npos) return false;
  start_line = head.substr(0, eol);
  std::size_t pos = eol + 2;
  for (;;) {
    eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) return false;
    if (eol == pos) return pos + 2 == head.size();
    const std::string_view line = head.substr(pos, eol - pos);
    pos = eol + 2;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return false;
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = http_trim(line.substr(colon + 1));
    if (!http_is_token(name) || !http_is_field_value(value)) return false;
    headers.emplace_back(std::string(name), std::string(value));
  }
}

// ---- keys -------------------------------------------------------------------------------------------

inline std::string ws_base64(const std::uint8_t* data, std::size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  const std::size_t len = EVP_EncodeBlock(reinterpret_cast<std::uint8_t*>(out.data()), data, n);
  out.resize(len);
  return out;
}

/// base64(SHA1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), the Sec-WebSocket-Accept for a key.
inline std::string ws_accept_key(std::string_view client_key) {
  static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char buf[128];
  std::string joined;
  std::string_view in;
  if (client_key.size() + guid.size() <= sizeof buf) {
    std::memcpy(buf, client_key.data(), client_key.size());
    std::memcpy(buf + client_key.size(), guid.data(), guid.size());
    in = std::string_view(buf, client_key.size() + guid.size());
  } else {
    joined.append(client_key).append(guid);
    in = joined;
  }
  std::uint8_t digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const std::uint8_t*>(in.data()), in.size(), digest);
  return ws_base64(digest, sizeof digest);
}

/// Whether `key` is the (canonical) base64 of exactly 16 bytes (RFC 6455 §4.2.1 item 5).
inline bool ws_key_valid(std::string_view key) {
  if (key.size() != 24) return false;
  std::uint8_t out[24];
  std::size_t len = 0;
  return EVP_DecodeBase64(out, &len, sizeof out, reinterpret_cast<const std::uint8_t*>(key.data()), key.size()) == 1 &&
         len == 16 && ws_base64(out, len) == key;
}

// ---- reading a head ---------------------------------------------------------------------------------

/// Reads one HTTP head (through the blank line) into `head`; bytes read past it go to `leftover`.
/// Refuses early (not_websocket) when the start line holds bytes that no HTTP start line has, so a TLS
/// hello or other binary garbage fails at once instead of waiting for the limit.
template <class Tag = void>
asio::awaitable<std::error_code> http_read_head(transport& t, std::size_t limit, std::string& head,
                                                       std::vector<std::byte>& leftover) {
  head.clear();
  leftover.clear();
  std::string buf(std::min<std::size_t>(limit, 2048), '\0');
  std::size_t n = 0, checked = 0;
  bool start_line_done = false;
  for (;;) {
    if (n == buf.size()) {
      if (n >= limit) co_return make_error_code(errc::http_header_too_large);
      buf.resize(std::min(limit, buf.size() * 2));
    }
    std::error_code ec;
    const std::size_t got = co_await t.read_some(asio::buffer(buf.data() + n, buf.size() - n), ec);
    if (ec) co_return make_error_code(errc::disconnected);
    const std::size_t from = n >= 3 ? n - 3 : 0;
    n += got;
    for (; !start_line_done && checked < n; ++checked) {
      const auto c = static_cast<unsigned char>(buf[checked]);
      if (c == '\n') start_line_done = true;
      else if (c != '\r' && (c < 0x20 || c > 0x7e)) co_return make_error_code(errc::not_websocket);
    }
    const std::size_t end = std::string_view(buf.data(), n).find("\r\n\r\n", from);
    if (end == std::string_view::npos) continue;
    const auto* rest = reinterpret_cast<const std::byte*>(buf.data()) + end + 4;
    leftover.assign(rest, reinterpret_cast<const std::byte*>(buf.data()) + n);
    buf.resize(end + 4);
    head = std::move(buf);
    co_return std::error_code{};
  }
}

// ---- server side ------------------------------------------------------------------------------------

/// Reads and parses one request head. Does not answer: the caller routes and authenticates, then calls
/// ws_accept() or http_respond().
/// Errors: http_header_too_large (head longer than limits.max_header_bytes), not_websocket (not an
/// HTTP/1.x request head), disconnected (the transport failed or ended first).
/// No deadline of its own: bound it with a timer (`||`) or close the transport.
template <class Tag = void>
asio::awaitable<std::error_code> http_read_request(transport& t, const ws_limits& limits, http_request& out,
                                                          std::vector<std::byte>& leftover) {
  out = http_request{};
  std::string head;
  std::error_code ec = co_await http_read_head<Tag>(t, limits.max_header_bytes, head, leftover);
  if (ec) co_return ec;
  std::string_view line;
  if (!http_parse_head(head, line, out.headers)) co_return make_error_code(errc::not_websocket);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) co_return make_error_code(errc::not_websocket);
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!http_is_token(method) || !http_is_target(target) || !http_is_version(version))
    co_return make_error_code(errc::not_websocket);
  out.method = method;
  out.target = target;
  out.version = version;
  co_return std::error_code{};
}

/// Checks that `r` is a WebSocket upgrade we accept: GET, HTTP/1.1, Upgrade: websocket, Connection holding
/// the token "upgrade", Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key of 16 base64 bytes.
/// Errors: not_websocket.
inline std::error_code ws_check_upgrade(const http_request& r) {
  const bool ok = r.method == "GET" && r.version == "HTTP/1.1" &&
                  http_headers_contain(r.headers, "Upgrade", "websocket") &&
                  http_headers_contain(r.headers, "Connection", "upgrade") &&
                  r.header("Sec-WebSocket-Version") == "13" && ws_key_valid(r.header("Sec-WebSocket-Key"));
  return ok ? std::error_code{} : make_error_code(errc::not_websocket);
}

/// Answers `r` with 101 Switching Protocols. Errors: not_websocket (r fails ws_check_upgrade; nothing is
/// written), disconnected (the write failed).
template <class Tag = void>
asio::awaitable<std::error_code> ws_accept(transport& t, const http_request& r, http_headers extra = {}) {
  if (std::error_code ec = ws_check_upgrade(r)) co_return ec;
  std::string resp;
  resp.reserve(160);
  resp += "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ";
  resp += ws_accept_key(r.header("Sec-WebSocket-Key"));
  resp += "\r\n";
  for (const auto& h : extra) resp.append(h.first).append(": ").append(h.second).append("\r\n");
  resp += "\r\n";
  std::error_code ec;
  co_await t.write_all(asio::buffer(resp), ec);
  if (ec) co_return make_error_code(errc::disconnected);
  co_return std::error_code{};
}

inline std::string_view http_reason_phrase(int status) noexcept {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 426: return "Upgrade Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Error";
  }
}

/// Answers with `status` and `reason_text` as a short text/plain body, marked Connection: close (the
/// caller closes the transport afterwards). A 426 also says Sec-WebSocket-Version: 13. Write errors are
/// ignored: the connection is being refused anyway.
template <class Tag = void>
asio::awaitable<void> http_respond(transport& t, int status, std::string_view reason_text) {
  if (status < 100 || status > 999) status = 500;
  std::string body(reason_text);
  body += '\n';
  std::string resp;
  resp.reserve(160 + body.size());
  resp += "HTTP/1.1 ";
  resp += std::to_string(status);
  resp += ' ';
  resp += http_reason_phrase(status);
  resp += "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ";
  resp += std::to_string(body.size());
  resp += "\r\nConnection: close\r\n";
  if (status == 426) resp += "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
  resp += "\r\n";
  resp += body;
  std::error_code ignored;
  co_await t.write_all(asio::buffer(resp), ignored);
}

// ---- client side ------------------------------------------------------------------------------------

/// Sends the upgrade request `GET path` with Host, Upgrade, Connection, Sec-WebSocket-Version, a random
/// Sec-WebSocket-Key and the `extra` headers, then reads and checks the response: status 101, Upgrade:
/// websocket and Connection: upgrade (case-insensitive tokens), the right Sec-WebSocket-Accept, no
/// extension or subprotocol we did not ask for. Bytes read past the response head are returned in
/// `leftover`: they are the start of the WebSocket stream. `*status` (if given) receives the HTTP status
/// (0 if none was read); `*response_headers` (if given) the response's headers.
/// Errors: auth_failed (status 401 or 403), not_websocket (another status, or a bad 101),
/// http_header_too_large, disconnected (the transport failed or ended first),
/// std::errc::invalid_argument (host, path or an extra header holds CR/LF or is malformed).
/// No deadline of its own: bound it with a timer (`||`) or close the transport.
template <class Tag = void>
asio::awaitable<std::error_code> ws_client_handshake(transport& t, std::string_view host, std::string_view path,
                                                            const http_headers& extra, const ws_limits& limits,
                                                            std::vector<std::byte>& leftover, int* status = nullptr,
                                                            http_headers* response_headers = nullptr) {
  if (status) *status = 0;
  leftover.clear();
  bool args_ok = !host.empty() && !http_has_crlf(host) && !path.empty() && path.front() == '/' && http_is_target(path);
  for (const auto& header : extra) args_ok = args_ok && http_is_token(header.first) && !http_has_crlf(header.second);
  if (!args_ok) co_return std::make_error_code(std::errc::invalid_argument);

  std::uint8_t raw_key[16];
  RAND_bytes(raw_key, sizeof raw_key);
  const std::string key = ws_base64(raw_key, sizeof raw_key);

  std::string req;
  req.reserve(256);
  req.append("GET ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
  req.append("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ").append(key);
  req.append("\r\nSec-WebSocket-Version: 13\r\n");
  for (const auto& header : extra) req.append(header.first).append(": ").append(header.second).append("\r\n");
  req.append("\r\n");
  std::error_code ec;
  co_await t.write_all(asio::buffer(req), ec);
  if (ec) co_return make_error_code(errc::disconnected);

  std::string head;
  ec = co_await http_read_head<Tag>(t, limits.max_header_bytes, head, leftover);
  if (ec) co_return ec;
  std::string_view line;
  http_headers headers;
  const bool parsed = http_parse_head(head, line, headers);
  // "HTTP/1.1 101 Switching Protocols" (the reason phrase may be empty).
  if (!parsed || line.size() < 12 || !http_is_version(line.substr(0, 8)) || line[8] != ' ' ||
      (line.size() > 12 && line[12] != ' ') || line[9] < '0' || line[9] > '9' || line[10] < '0' || line[10] > '9' ||
      line[11] < '0' || line[11] > '9') {
    leftover.clear();
    co_return make_error_code(errc::not_websocket);
  }
  const int code = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (status) *status = code;
  std::error_code result;
  if (code == 401 || code == 403) result = make_error_code(errc::auth_failed);
  else if (code != 101 || !http_headers_contain(headers, "Upgrade", "websocket") ||
           !http_headers_contain(headers, "Connection", "upgrade") ||
           http_find_header(headers, "Sec-WebSocket-Accept") != ws_accept_key(key) ||
           !http_find_header(headers, "Sec-WebSocket-Extensions").empty() ||
           (!http_find_header(headers, "Sec-WebSocket-Protocol").empty() &&
            http_find_header(extra, "Sec-WebSocket-Protocol").empty()))
    result = make_error_code(errc::not_websocket);
  if (result) leftover.clear();
  else if (response_headers) *response_headers = std::move(headers);
  co_return result;
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_HTTP_HPP
