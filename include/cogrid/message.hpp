// cogrid/message.hpp — the grid message: op codes, flags, encoding, decoding and merged containers.
//
// A grid message is a msgpack array of 7 (MuxID, Seq, DeadlineMS, Handler, Op, Flags, Payload as bin),
// followed outside msgpack by an optional 32-byte subroute id and an optional 4-byte little-endian CRC
// (low 32 bits of XXH3-64 over every preceding byte). Every WebSocket message carries one grid message
// or one OpMerged container holding several. Nothing here does I/O or allocates per message. The merge
// framer (detail::frame_batch) turns a batch of encoded messages into the WebSocket frames of one write.
#ifndef COGRID_MESSAGE_HPP
#define COGRID_MESSAGE_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>
#include <cogrid/result.hpp>
#include <cogrid/subroute.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace cogrid {

/// Op codes, with MinIO's numeric values.
enum class op_code : std::uint8_t {
  connect = 1,               ///< dialer -> acceptor, first message, payload `connect_request`
  connect_response = 2,      ///< acceptor -> dialer, payload `connect_response`
  ping = 3,                  ///< mux 0: connection ping; mux != 0: stream ping (client -> server)
  pong = 4,                  ///< reply to a ping, payload `pong_msg`
  connect_mux = 5,           ///< client -> server: open a stream
  mux_connect_error = 6,     ///< server -> client: stream or request rejected, payload `mux_connect_error`
  disconnect_client_mux = 7, ///< server -> client: stream gone
  disconnect_server_mux = 8, ///< client -> server: cancel a server mux
  mux_client_msg = 9,        ///< client -> server stream data
  mux_server_msg = 10,       ///< server -> client stream data
  unblock_srv_mux = 11,      ///< client -> server: one output credit back
  unblock_cl_mux = 12,       ///< server -> client: one input credit back
  ack_mux = 13,              ///< server -> client: stream created
  request = 14,              ///< single request
  response = 15,             ///< single response
  disconnect = 16,           ///< defined by the protocol, never sent
  merged = 17,               ///< container of several messages
};

/// True for the op codes the protocol defines (1-17).
constexpr bool is_known(op_code op) noexcept {
  return static_cast<std::uint8_t>(op) >= 1 && static_cast<std::uint8_t>(op) <= 17;
}

/// MinIO's name of an op code ("OpRequest"), or "OpUnknown" for values outside 1-17.
COGRID_DECL const char* to_string(op_code op) noexcept;

/// Message flags (a bit set), with MinIO's numeric values.
enum class msg_flags : std::uint8_t {
  none = 0,
  crc = 0x01,             ///< CRC trailer present (FlagCRCxxh3)
  eof = 0x02,             ///< the stream (either direction) or the single request/response ends
  stateless = 0x04,       ///< stateless stream (rejected by servers)
  payload_is_err = 0x08,  ///< the payload is an error text
  payload_is_zero = 0x10, ///< the payload is empty but not nil
  subroute = 0x20,        ///< subroute id trailer present
  /// cogrid's own: more pieces of this payload follow (the message is one piece of a large payload; the
  /// last piece goes without it). Sent only to a cogrid node that said it takes pieces (see
  /// `connection_options::piece_bytes`), never to a MinIO node.
  more = 0x40,
};

constexpr msg_flags operator|(msg_flags a, msg_flags b) noexcept {
  return static_cast<msg_flags>(static_cast<std::uint8_t>(a) | static_cast<std::uint8_t>(b));
}
constexpr msg_flags operator&(msg_flags a, msg_flags b) noexcept {
  return static_cast<msg_flags>(static_cast<std::uint8_t>(a) & static_cast<std::uint8_t>(b));
}
constexpr msg_flags operator~(msg_flags a) noexcept {
  return static_cast<msg_flags>(static_cast<std::uint8_t>(~static_cast<std::uint8_t>(a)));
}
constexpr msg_flags& operator|=(msg_flags& a, msg_flags b) noexcept { return a = a | b; }
constexpr msg_flags& operator&=(msg_flags& a, msg_flags b) noexcept { return a = a & b; }
/// True when every bit of `f` is set in `set`.
constexpr bool has(msg_flags set, msg_flags f) noexcept { return (set & f) == f; }

/// The set bits as "CRC|EOF" (MinIO's short names; unknown bits as hex), or "none".
COGRID_DECL std::string to_string(msg_flags f);

/// One grid message. The payload and subroute are views: a decoded message points into the buffer it
/// was decoded from and is valid only while that buffer is.
struct message {
  std::uint64_t mux_id = 0;      ///< the call or stream the message belongs to; 0 for connection-level ones
  std::uint32_t seq = 0;         ///< the sequence number of a call's or stream's message; OpMerged: its item count
  std::uint32_t deadline_ms = 0; ///< milliseconds left when sent; 0 = none
  handler_id handler{};          ///< the handler a request or stream open is for
  op_code op{};                  ///< what the message is
  /// On encode, `payload_is_zero` and `subroute` are derived from `payload` and `subroute` below and
  /// the bits given here are ignored; `crc` adds the CRC trailer. On decode, the flags as received.
  msg_flags flags = msg_flags::none;
  /// `std::nullopt` is a nil payload; an engaged empty span is an empty, non-nil payload.
  std::optional<std::span<const std::byte>> payload;
  /// Present exactly when the subroute trailer is.
  std::optional<subroute_id> subroute;
  /// Set by a connection's reader on a message it put together from pieces: the buffer `payload` views,
  /// which whoever takes the message may move from instead of copying it. Not encoded.
  std::vector<std::byte>* reassembled = nullptr;
};

/// One-line description for logs and the demo: "OpRequest mux=1 seq=0 deadline=60000ms handler=78
/// flags=CRC|EOF payload=2B".
COGRID_DECL std::string to_string(const message& m);

/// Low 32 bits of XXH3-64 (seed 0): the CRC the trailer carries.
COGRID_DECL std::uint32_t crc32_xxh3(std::span<const std::byte> data) noexcept;

/// The exact number of bytes `encode` writes for `m`.
COGRID_DECL std::size_t encoded_size(const message& m) noexcept;

/// Encodes `m` into `out`, returning the bytes written.
/// @par Errors
/// `errc::buffer_too_small` when `out` is shorter than `encoded_size(m)`; `errc::payload_too_large`
/// for a payload over 4 GiB - 1. Nothing is allocated.
COGRID_DECL result<std::size_t> encode(const message& m, std::span<std::byte> out) noexcept;

/// Appends the encoding of `m` to `out` (growing it; reuse one vector to avoid allocations).
/// @par Errors
/// `errc::payload_too_large`; on error `out` is unchanged.
COGRID_DECL result<void> encode_append(const message& m, std::vector<std::byte>& out);

/// Parses one message from the front of `in`, as MinIO's `parse` does: the trailers are taken from the
/// end of `in` (CRC first, then subroute id) and whatever lies between the 7-tuple and the trailers is
/// left in `*rest` (the items of an OpMerged container). The CRC, when flagged, is verified.
/// @par Errors
/// `truncated`, `malformed`, `type_mismatch`, `integer_overflow`, `crc_mismatch`, `unknown_op`.
COGRID_DECL result<message> parse(std::span<const std::byte> in, std::span<const std::byte>& rest) noexcept;

/// Decodes exactly one message occupying all of `in`.
/// @par Errors
/// Those of `parse`, and `trailing_bytes` when bytes are left over (an OpMerged container with items is
/// not one message: use `for_each_message` or `merged_reader`).
COGRID_DECL result<message> decode(std::span<const std::byte> in) noexcept;

/// Reads the inner messages of an OpMerged container one by one.
class merged_reader {
public:
  /// A reader over `count` bin items in `items` (the `rest` of parsing the outer message).
  merged_reader(std::uint32_t count, std::span<const std::byte> items) noexcept : count_(count), items_(items) {}

  /// Parses `container` (one whole WebSocket message) and opens its items.
  /// @par Errors
  /// Those of `parse`; `type_mismatch` when the message is not an OpMerged container.
  COGRID_DECL static result<merged_reader> open(std::span<const std::byte> container) noexcept;

  /// Inner messages not read yet.
  std::uint32_t remaining() const noexcept { return count_; }

  /// Reads the next inner message into `out`: true when it did, false when the container is exhausted,
  /// or an error: a malformed or truncated item, an item that is itself a merged container
  /// (`nested_merged`), bytes left inside an item or after the last item (`trailing_bytes`). After an
  /// error the reader stays failed.
  COGRID_DECL result<bool> next(message& out) noexcept;

private:
  std::uint32_t count_;
  std::span<const std::byte> items_;
  bool failed_ = false;
};

/// Decodes one WebSocket message, which holds one grid message or an OpMerged container, and calls
/// `f(const message&)` for each grid message in order. Stops at the first error and returns it; the
/// messages before it have been delivered.
template <class F>
result<void> for_each_message(std::span<const std::byte> ws_message, F&& f) {
  std::span<const std::byte> rest;
  result<message> outer = parse(ws_message, rest);
  if (!outer) return outer.error();
  if (outer->op != op_code::merged) {
    if (!rest.empty()) return errc::trailing_bytes;
    f(static_cast<const message&>(*outer));
    return {};
  }
  merged_reader items(outer->seq, rest);
  message m;
  for (;;) {
    result<bool> more = items.next(m);
    if (!more) return more.error();
    if (!*more) return {};
    f(static_cast<const message&>(m));
  }
}

/// Builds an OpMerged container in a caller-owned vector (kept and reused by the caller, so a steady
/// state allocates nothing). Items are appended after headroom for the container header, which
/// `finish` writes in front of them without moving them.
class merge_builder {
public:
  /// The largest container header: 97 00 ce <4 bytes> 00 00 11 00 c4 00.
  static constexpr std::size_t max_header_size = 13;

  /// Clears `buf` and starts a container in it. `buf` must outlive the builder.
  COGRID_DECL explicit merge_builder(std::vector<std::byte>& buf);

  /// Appends one already encoded message as an item.
  /// @par Errors
  /// `payload_too_large` for an item over 4 GiB - 1; the container is unchanged.
  COGRID_DECL result<void> add(std::span<const std::byte> encoded_message);

  /// Encodes `m` straight into the container as an item.
  COGRID_DECL result<void> add(const message& m);

  /// Items added since the container was started.
  std::uint32_t count() const noexcept { return count_; }

  /// Bytes the finished container will take.
  std::size_t size() const noexcept { return buf_.size() - max_header_size + header_size(); }

  /// Writes the header and returns the whole container (valid until `buf` changes).
  COGRID_DECL std::span<const std::byte> finish() noexcept;

private:
  COGRID_DECL std::size_t header_size() const noexcept;
  std::vector<std::byte>& buf_;
  std::uint32_t count_ = 0;
};

namespace detail {

/// XORs `n` bytes at `p` with the 4-byte WebSocket masking `key` (RFC 6455 §5.3), starting at byte `phase`
/// of the key (the offset of p in the frame's payload, modulo 4); returns the phase after.
COGRID_DECL std::size_t ws_mask(std::byte* p, std::size_t n, const std::array<std::uint8_t, 4>& key, std::size_t phase) noexcept;

/// Appends one WebSocket binary FIN frame holding `payload` to `out`: header and payload, masked with a
/// fresh random key when `mask` (a client's frames). Allocates only to grow `out` (geometrically).
COGRID_DECL void append_binary_frame(std::span<const std::byte> payload, bool mask, std::vector<std::byte>& out);

/// Limits of one batch's framing (from `connection_options`).
struct merge_limits {
  std::size_t max_messages = 50;     ///< grid messages per OpMerged container
  std::size_t max_bytes = 31u << 10; ///< bytes of messages per container (a message larger than this goes alone)
};

/// Appends the header of one WebSocket binary FIN frame of `n` payload bytes to `out`; with `mask` (a
/// client's frames) it carries a fresh random key, which is returned for masking the payload.
COGRID_DECL std::array<std::uint8_t, 4> append_frame_header(std::size_t n, bool mask, std::vector<std::byte>& out);

/// A message encoded around its payload, for a writer that sends a large payload from where it is: the
/// bytes before the payload (`head`) and after it (`tail`: subroute and CRC), which with the payload
/// between them are the bytes encode_append writes (the CRC covers the payload where it is).
struct split_message {
  std::array<std::byte, 40> head{};
  std::size_t head_size = 0;
  std::array<std::byte, 36> tail{};
  std::size_t tail_size = 0;
};
COGRID_DECL split_message encode_split(const message& m) noexcept;

/// A run of the bytes of one batch: a range of the framer's `out` (headers, containers, small frames) or
/// of the batch's queue (a large message's bytes, masked where they are). Written in order, each run of
/// the queue with a write of its own.
struct frame_part {
  bool from_queue = false;
  std::size_t begin = 0, end = 0;
  const std::byte* data = nullptr; ///< when set, the run is data[begin, end) (a payload sent from where it is)
};

/// The merge framer: the bytes of a batch of encoded messages (`queue` holds them
/// back to back, message i ending at `ends[i]`), described by `parts` over `out` and `queue`, after
/// whatever `out` already holds. Runs of up to `limits` go into one OpMerged container (built in
/// `scratch`); a run of one goes alone. Each container or lone message is one WebSocket binary frame,
/// masked when `mask`. A lone message of at least `in_place_min` bytes is not copied: its frame header
/// goes to `out` and its bytes stay in `queue` (masked in place), so a large payload is copied once on
/// its way to the socket, not twice.
COGRID_DECL void frame_batch(std::span<std::byte> queue, std::span<const std::size_t> ends, merge_limits limits, bool mask,
                             std::vector<std::byte>& scratch, std::vector<std::byte>& out, std::vector<frame_part>& parts,
                             std::size_t in_place_min);

} // namespace detail

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/message.ipp>
#endif

#endif // COGRID_MESSAGE_HPP
