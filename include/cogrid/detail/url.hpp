// cogrid/detail/url.hpp — the host strings of a grid: "http://10.0.0.1:9000", "https://[::1]:9443".
#ifndef COGRID_DETAIL_URL_HPP
#define COGRID_DETAIL_URL_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace cogrid::detail {

struct host_url {
  bool tls = false;      ///< https:// or wss://
  std::string host;      ///< without brackets for IPv6
  std::uint16_t port = 0;
  /// "host:port" as sent in the HTTP Host header (IPv6 in brackets).
  std::string authority() const {
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }
};

/// Parses scheme://host:port (scheme http, https, ws or wss; a default port when absent; no path).
inline std::error_code parse_host_url(std::string_view s, host_url& out) {
  const auto sep = s.find("://");
  if (sep == std::string_view::npos) return errc::invalid_value;
  const std::string_view scheme = s.substr(0, sep);
  if (scheme == "http" || scheme == "ws") out.tls = false;
  else if (scheme == "https" || scheme == "wss") out.tls = true;
  else return errc::invalid_value;
  std::string_view rest = s.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty() || rest.find('/') != std::string_view::npos) return errc::invalid_value;
  std::string_view host, port;
  if (rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return errc::invalid_value;
    host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return errc::invalid_value;
      port = rest.substr(1);
    }
  } else {
    const auto colon = rest.rfind(':');
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
  }
  if (host.empty()) return errc::invalid_value;
  out.host.assign(host);
  if (port.empty()) {
    out.port = out.tls ? 443 : 80;
    return {};
  }
  unsigned v = 0;
  const auto r = std::from_chars(port.data(), port.data() + port.size(), v);
  if (r.ec != std::errc{} || r.ptr != port.data() + port.size() || v == 0 || v > 65535) return errc::invalid_value;
  out.port = static_cast<std::uint16_t>(v);
  return {};
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_URL_HPP
