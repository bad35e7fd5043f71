// cogrid/impl/error.ipp — definitions for cogrid/error.hpp.
#ifndef COGRID_IMPL_ERROR_IPP
#define COGRID_IMPL_ERROR_IPP

#include <cogrid/error.hpp>

#include <string>

namespace cogrid {
namespace detail {

class error_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "cogrid"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
    case errc::truncated: return "grid message truncated";
    case errc::malformed: return "not a grid message (expected a msgpack array of 7 elements)";
    case errc::type_mismatch: return "grid message field has the wrong msgpack type";
    case errc::integer_overflow: return "grid message integer out of range for its field";
    case errc::crc_mismatch: return "grid message CRC mismatch";
    case errc::unknown_op: return "unknown grid op code";
    case errc::trailing_bytes: return "trailing bytes after grid message";
    case errc::nested_merged: return "merged grid message inside a merged message";
    case errc::bad_field_length: return "grid message field has the wrong length";
    case errc::invalid_value: return "grid message field value out of range";
    case errc::buffer_too_small: return "output buffer too small for grid message";
    case errc::payload_too_large: return "payload over the size limit";
    case errc::disconnected: return "remote disconnected";
    case errc::timeout: return "grid operation timed out";
    case errc::not_websocket: return "not a WebSocket upgrade";
    case errc::http_header_too_large: return "HTTP headers too large";
    case errc::websocket_protocol: return "WebSocket protocol violation";
    case errc::message_too_large: return "message exceeds the maximum size";
    case errc::auth_failed: return "authentication failed";
    case errc::token_expired: return "token expired";
    case errc::clock_skew: return "time difference too large";
    case errc::unknown_host: return "unknown incoming host";
    case errc::wrong_dial_direction: return "grid: expected to be client side, not server side";
    case errc::connection_rejected: return "connection rejected by remote";
    case errc::queue_full: return "outgoing queue full";
    case errc::shutdown: return "grid shutting down";
    case errc::websocket_closed: return "WebSocket closed by peer";
    case errc::unexpected_message: return "unexpected grid message";
    case errc::remote_error: return "remote error";
    case errc::unknown_handler: return "unknown mux handler";
    case errc::handler_exists: return "handler already exists";
    case errc::bad_payload: return "payload does not decode as the expected type";
    case errc::invalid_handler: return "invalid handler id";
    case errc::stream_closed: return "stream closed";
    case errc::out_of_sequence: return "out-of-sequence item received";
    case errc::credit_violation: return "stream flow control violated (message without credit)";
    case errc::end_of_stream: return "end of stream";
    case errc::capacity_mismatch: return "the peers declare the stream with different capacities";
    case errc::not_authorized: return "the remote does not authorize this caller for the handler";
    }
    return "unknown cogrid error " + std::to_string(ev);
  }

  std::error_condition default_error_condition(int ev) const noexcept override {
    if (ev >= 1 && ev <= 10) return make_error_condition(condition::protocol_violation);
    if (ev == 11 || ev == 12) return make_error_condition(condition::encoding_failed);
    if (ev >= 106 && ev <= 111) return make_error_condition(condition::rejected);
    if (ev >= 100 && ev <= 115) return make_error_condition(condition::connection_failed);
    if (ev == 200 || ev == 201 || ev == 203) return make_error_condition(condition::call_failed);
    if (ev == 206 || ev == 207 || ev == 209) return make_error_condition(condition::protocol_violation);
    return {ev, *this};
  }
};

// Which conditions a cogrid error code matches; a code may match several (a bad WebSocket frame is a
// protocol violation and a failed connection).
inline bool matches(int ev, condition c) noexcept {
  switch (c) {
  case condition::protocol_violation:
    return (ev >= 1 && ev <= 10) || ev == 102 || ev == 104 || ev == 105 || ev == 115 || ev == 206 || ev == 207 || ev == 209;
  case condition::encoding_failed: return ev == 11 || ev == 12;
  case condition::connection_failed: return ev >= 100 && ev <= 115;
  case condition::rejected: return ev >= 106 && ev <= 111;
  case condition::call_failed: return ev == 200 || ev == 201 || ev == 203;
  }
  return false;
}

class condition_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "cogrid.condition"; }

  bool equivalent(const std::error_code& code, int cond) const noexcept override {
    if (code.category() == cogrid::error_category()) return matches(code.value(), static_cast<condition>(cond));
    return code.category().default_error_condition(code.value()) == std::error_condition(cond, *this);
  }

  std::string message(int ev) const override {
    switch (static_cast<condition>(ev)) {
    case condition::protocol_violation: return "grid protocol violation";
    case condition::encoding_failed: return "grid message encoding failed";
    case condition::connection_failed: return "grid connection failed";
    case condition::rejected: return "grid handshake rejected";
    case condition::call_failed: return "grid call failed at the remote";
    }
    return "unknown cogrid condition " + std::to_string(ev);
  }
};

} // namespace detail

COGRID_DECL const std::error_category& error_category() noexcept {
  static const detail::error_category_impl instance;
  return instance;
}

COGRID_DECL const std::error_category& condition_category() noexcept {
  static const detail::condition_category_impl instance;
  return instance;
}

} // namespace cogrid

#endif // COGRID_IMPL_ERROR_IPP
