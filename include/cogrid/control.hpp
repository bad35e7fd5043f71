// cogrid/control.hpp — the payloads of the protocol's own messages: connect request and response,
// connection and stream ping/pong, and the mux connect error. Each is a msgpack map keyed by field name,
// as MinIO's msgp-generated Go structs are; decoders accept any key order, skip unknown keys and leave
// missing fields at their defaults.
#ifndef COGRID_CONTROL_HPP
#define COGRID_CONTROL_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>
#include <cogrid/result.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace cogrid {

/// A point in time as the wire carries it: seconds since the Unix epoch and nanoseconds. It covers
/// Go's zero time (year 1), which `std::chrono::system_clock` with nanoseconds cannot. The default
/// value is Go's zero time, which is what a Go peer decodes a missing time field to.
struct wire_time {
  static constexpr std::int64_t go_zero_seconds = -62135596800; ///< 0001-01-01T00:00:00Z

  std::int64_t seconds = go_zero_seconds; ///< whole seconds since the Unix epoch (negative before 1970)
  std::uint32_t nanos = 0; ///< 0 .. 999'999'999

  /// Same seconds and nanoseconds.
  friend bool operator==(const wire_time&, const wire_time&) = default;

  /// Whether this is Go's zero time (the default, or a time field the peer left unset).
  bool is_zero() const noexcept { return seconds == go_zero_seconds && nanos == 0; }

  /// The wire form of `t`, with `nanos` in 0 .. 999'999'999 also before the epoch.
  static wire_time from(std::chrono::system_clock::time_point t) noexcept {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    std::int64_t s = ns / 1'000'000'000;
    std::int64_t rem = ns % 1'000'000'000;
    if (rem < 0) {
      rem += 1'000'000'000;
      --s;
    }
    return {s, static_cast<std::uint32_t>(rem)};
  }
  /// The wire form of `std::chrono::system_clock::now()`.
  static wire_time now() noexcept { return from(std::chrono::system_clock::now()); }

  /// Nanoseconds since the Unix epoch, saturated at the range of int64 (about years 1678 to 2262).
  COGRID_DECL std::int64_t unix_nanos() const noexcept;
};

namespace detail {
/// |a - b| without signed overflow (times from a peer may be anything).
constexpr std::uint64_t abs_diff(std::int64_t a, std::int64_t b) noexcept {
  return a > b ? static_cast<std::uint64_t>(a) - static_cast<std::uint64_t>(b)
               : static_cast<std::uint64_t>(b) - static_cast<std::uint64_t>(a);
}
} // namespace detail

/// A node's 16-byte identity (a UUID), new for each start of a manager; compared across reconnects
/// to tell a restarted remote from a reconnected one.
struct node_id {
  std::array<std::byte, 16> bytes{}; ///< the UUID's bytes in wire order; all zero by default
  /// Same bytes.
  friend bool operator==(const node_id&, const node_id&) = default;
  /// 8-4-4-4-12 lower-case hex.
  COGRID_DECL std::string to_string() const;
};

/// OpConnect payload (MinIO `connectReq`): map {"ID": bin(16), "Host": str, "Time": time, "Token": str}.
struct connect_request {
  node_id id;        ///< the dialing node's identity
  std::string host;  ///< the dialing node's own host string, which the acceptor must know as one of its remotes
  wire_time time;    ///< when the request was sent; the acceptor refuses it beyond its allowed clock skew
  std::string token; ///< the dialer's authentication token, which the acceptor validates
};

/// OpConnectResponse payload (MinIO `connectResp`): map {"ID", "Accepted": bool, "RejectedReason": str}.
struct connect_response {
  node_id id;                  ///< the accepting node's identity
  bool accepted = false;       ///< whether the acceptor took the connection
  std::string rejected_reason; ///< why it did not, when `accepted` is false
};

/// OpMuxConnectError payload (MinIO `muxConnectError`): map {"Error": str}.
struct mux_connect_error {
  std::string error; ///< why the request or stream was refused, e.g. "Invalid Handler for type: 12"
};

/// OpPing payload (MinIO `pingMsg`): map {"t": time}. Connection pings carry the send time.
struct ping_msg {
  wire_time time; ///< when a connection ping was sent; its pong echoes it
};

/// OpPong payload (MinIO `pongMsg`): map {"nf": bool, "e": nil|str, "t": time}. `not_found` says the
/// pinged stream does not exist; `error` carries a failure text; `time` echoes the ping's time.
struct pong_msg {
  bool not_found = false;           ///< the pinged stream does not exist
  std::optional<std::string> error; ///< a failure text; absent (nil) when none
  wire_time time;                   ///< the answered connection ping's time, echoed
};

/// OpAckMux payload, a cogrid extension: the stream's capacities as its handler declares them, so that a
/// cogrid caller can tell when the two peers disagree (`errc::capacity_mismatch`). map {"in": uint,
/// "out": uint}. MinIO sends an empty ack and ignores an ack's payload, so either side may be MinIO: a
/// MinIO caller ignores it, and an empty ack from a MinIO handler is not checked.
struct stream_ack {
  std::uint32_t in = 0;  ///< the in capacity: requests from the caller to the handler the stream buffers
  std::uint32_t out = 0; ///< the out capacity: responses from the handler to the caller the stream buffers
};

/// Appends the msgpack encoding of a control payload to `out`.
COGRID_DECL void encode_append(const connect_request& v, std::vector<std::byte>& out);
COGRID_DECL void encode_append(const connect_response& v, std::vector<std::byte>& out);
COGRID_DECL void encode_append(const mux_connect_error& v, std::vector<std::byte>& out);
COGRID_DECL void encode_append(const ping_msg& v, std::vector<std::byte>& out);
COGRID_DECL void encode_append(const pong_msg& v, std::vector<std::byte>& out);
COGRID_DECL void encode_append(const stream_ack& v, std::vector<std::byte>& out);

/// Decodes a control payload occupying all of `in` into `out`.
/// @par Errors
/// `truncated`, `type_mismatch` (including a map key that is not a string, or a time that is neither
/// ext 5 nor the msgpack timestamp ext -1), `bad_field_length` (an ID that is not 16 bytes),
/// `invalid_value` (nanoseconds >= 1e9), `trailing_bytes`. `out` is unspecified after an error.
COGRID_DECL result<void> decode(std::span<const std::byte> in, connect_request& out);
COGRID_DECL result<void> decode(std::span<const std::byte> in, connect_response& out);
COGRID_DECL result<void> decode(std::span<const std::byte> in, mux_connect_error& out);
COGRID_DECL result<void> decode(std::span<const std::byte> in, ping_msg& out);
COGRID_DECL result<void> decode(std::span<const std::byte> in, pong_msg& out);
COGRID_DECL result<void> decode(std::span<const std::byte> in, stream_ack& out);

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/control.ipp>
#endif

#endif // COGRID_CONTROL_HPP
