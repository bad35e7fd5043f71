// cogrid/error.hpp — the one error enum of cogrid, its category, and the conditions to match on.
#ifndef COGRID_ERROR_HPP
#define COGRID_ERROR_HPP

#include <cogrid/detail/config.hpp>

#include <system_error>
#include <type_traits>

namespace cogrid {

/// Errors cogrid reports, in `std::error_code`s of `cogrid::error_category()`.
///
/// The numeric values are stable: they are logged, counted and compared across versions. New values
/// are only ever appended; a retired value keeps its number.
enum class errc : int {
  // Wire format: a buffer that is not a well-formed grid message (1-99).
  truncated = 1,          ///< The buffer ends before the message does (a length field points past the end).
  malformed = 2,          ///< Not a grid message: the header is not a msgpack array of exactly 7 elements.
  type_mismatch = 3,      ///< A field holds a msgpack type the protocol does not allow there.
  integer_overflow = 4,   ///< An integer is negative or too large for its field.
  crc_mismatch = 5,       ///< The XXH3 checksum trailer does not match the message bytes.
  unknown_op = 6,         ///< The op code is not one the protocol defines (1-17).
  trailing_bytes = 7,     ///< Bytes follow the end of a message or of a merged container's last item.
  nested_merged = 8,      ///< A merged container holds another merged container.
  bad_field_length = 9,   ///< A fixed-size field (the 16-byte node id) has another length.
  invalid_value = 10,     ///< A field is well-typed but out of its domain (e.g. nanoseconds >= 1e9).
  buffer_too_small = 11,  ///< The caller's output buffer cannot hold the encoded message.
  payload_too_large = 12, ///< A payload is over the limit of the node it is for (or over msgpack bin32's 4 GiB - 1 bytes).

  // Connections: transport, WebSocket, handshake and authentication (100-199).
  disconnected = 100,         ///< The connection to the remote is down (or went down during the call).
  timeout = 101,              ///< A deadline passed (handshake read, ping/pong, write, call).
  not_websocket = 102,        ///< The HTTP exchange is not a valid WebSocket upgrade.
  http_header_too_large = 103, ///< The HTTP upgrade headers exceed the configured limit.
  websocket_protocol = 104,   ///< A WebSocket frame breaks RFC 6455 (bad opcode, RSV bits, masking, fragmentation).
  message_too_large = 105,    ///< A message exceeds the configured maximum size.
  auth_failed = 106,          ///< The token is missing, malformed, wrongly signed or for someone else.
  token_expired = 107,        ///< The token's expiry (or not-before) time excludes now.
  clock_skew = 108,           ///< The peer's clock differs from ours by more than allowed.
  unknown_host = 109,         ///< The peer's host is not in our list of hosts.
  wrong_dial_direction = 110, ///< The peer dialed us although the election makes us the dialer.
  connection_rejected = 111,  ///< The remote rejected our connect request (its reason is logged and kept).
  queue_full = 112,           ///< The connection's outgoing queue is full.
  shutdown = 113,             ///< The manager or connection is shutting down.
  websocket_closed = 114,     ///< The peer closed the WebSocket (close frame).
  unexpected_message = 115,   ///< A handshake or control message arrived where another was required.

  // Calls and streams (200-299).
  remote_error = 200,         ///< The remote handler failed; the call's error carries the remote's text.
  unknown_handler = 201,      ///< The remote has no handler for this id or subroute (OpMuxConnectError).
  handler_exists = 202,       ///< A handler with this id and subroute is registered already.
  bad_payload = 203,          ///< A payload does not decode as the handler's declared type.
  invalid_handler = 204,      ///< Handler id 0 is not a valid handler.
  stream_closed = 205,        ///< A send on a stream whose input was closed, or that has ended.
  out_of_sequence = 206,      ///< A stream message arrived with the wrong sequence number (the stream is closed).
  credit_violation = 207,     ///< The peer sent more stream messages than its credits allowed (the stream is closed).
  end_of_stream = 208,        ///< A stream (or a stream's input) ended cleanly: no more values (like `asio::error::eof`).
  capacity_mismatch = 209,    ///< The two peers declared a stream with different capacities (the stream is closed).
  not_authorized = 210,       ///< The remote's authorization hook refused this node the handler (`manager::authorize`); the text says why.
};

/// Coarse classes of cogrid errors, for matching with `==` against any `std::error_code`.
enum class condition : int {
  protocol_violation = 1, ///< The peer (or a buffer) broke the wire format: a connection would be closed.
  encoding_failed = 2,    ///< A message could not be encoded (caller error or a payload too large).
  connection_failed = 3,  ///< The connection is down or could not be made (transport, WebSocket, handshake).
  rejected = 4,           ///< A peer failed (or we failed) the handshake's checks: auth, skew, host, direction.
  call_failed = 5,        ///< A call or stream failed at the remote (remote error, unknown handler, bad payload).
};

/// The category of `cogrid::errc` codes. Its name is "cogrid".
COGRID_DECL const std::error_category& error_category() noexcept;

/// The category of `cogrid::condition`s. Its name is "cogrid.condition".
COGRID_DECL const std::error_category& condition_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

inline std::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

} // namespace cogrid

/// @cond
template <>
struct std::is_error_code_enum<cogrid::errc> : std::true_type {};
template <>
struct std::is_error_condition_enum<cogrid::condition> : std::true_type {};
/// @endcond

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/error.ipp>
#endif

#endif // COGRID_ERROR_HPP
