// cogrid/options.hpp — the settings of a grid manager and its connections, as one value struct.
#ifndef COGRID_OPTIONS_HPP
#define COGRID_OPTIONS_HPP

#include <cogrid/detail/config.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace cogrid {

using namespace std::chrono_literals;

/// Severity of a log record.
enum class log_level { debug, info, warning, error };

/// A log sink: called with records the library emits (never with tokens or secrets). Unset: nothing is
/// logged. Called on connection strands, possibly concurrently from several threads; must not block
/// (the connection's other work waits for it).
using log_sink = std::function<void(log_level, std::string_view message)>;

/// Timing and sizing of connections. Defaults are MinIO's; `for_tests()` shortens every interval so that
/// tests of liveness run in milliseconds.
struct connection_options {
  std::chrono::milliseconds ping_interval = 10s;     ///< connection ping every this often (MinIO connPingInterval)
  std::chrono::milliseconds pong_timeout = 20s;      ///< no pong for this long: connection dropped (2 x ping)
  std::chrono::milliseconds write_timeout = 4s;      ///< a socket write taking longer drops the connection
  std::chrono::milliseconds dial_timeout = 2s;       ///< TCP connect + TLS + WebSocket upgrade (MinIO defaultDialTimeout)
  std::chrono::milliseconds handshake_timeout = 5s;  ///< read deadline of each handshake message
  std::chrono::milliseconds reconnect_min = 1s;      ///< the dialer waits a random time in [min, max)
  std::chrono::milliseconds reconnect_max = 2s;      ///<   between attempts (jitter), forever until shutdown
  std::chrono::milliseconds max_clock_skew = 5min;   ///< connect request Time must be within this of ours
  std::size_t max_queue_messages = 65535;            ///< outgoing queue bound (MinIO defaultOutQueue)
  /// The largest payload accepted in one message (a call's request or response, a stream message),
  /// whether it came whole or in pieces; checked before it is buffered. Sending a larger one fails at
  /// once with `errc::payload_too_large` (against the peer's limit when the peer is a cogrid node, which
  /// tells it in the handshake; against this one when it is a MinIO node).
  std::size_t max_message_bytes = 64u << 20;
  /// Between cogrid nodes, a payload larger than this travels as pieces of this size (ordinary grid
  /// messages), with the small messages of the link sent between them, so that large data does not hold
  /// up calls, stream messages or pings. 0: never cut payloads (as a MinIO node, which is never sent
  /// pieces whatever this says).
  std::size_t piece_bytes = 256u << 10;
  /// Bytes of pieces a node sends ahead of its peer's acknowledgements (per connection). It bounds the
  /// large data queued in the sockets between the two, and so how long a small message waits behind it
  /// (about this many bytes at the link's rate, each way). Raise it for links whose bandwidth times
  /// round trip is larger (e.g. 1 GB/s x 10 ms: 10 MB). 0: no limit.
  std::size_t piece_window_bytes = 512u << 10;
  /// Whether payloads of 64 KiB or more sent to a cogrid node, whole or in pieces (bulk chunks, large
  /// calls and stream messages), carry the CRC trailer (FlagCRCxxh3). This only matters on a link whose
  /// messages carry one, which is a link not under TLS at both ends (as MinIO decides): over TLS its MAC
  /// covers every byte and no message has a CRC. Off by default: the CRC costs a pass over every byte of
  /// large data at each end, and large data is then checked by TCP's 16-bit checksum of each segment
  /// only, as hashicorp/raft's and zrepl's TCP transports leave it. Set it where that is not enough
  /// (a plaintext link over unreliable hardware). The receiver checks a CRC whenever a message has one
  /// (as MinIO does), so the two ends need not agree. Smaller messages, and everything sent to a node
  /// that takes no pieces (a MinIO node, or `piece_bytes` 0 at either end), keep the link's CRC.
  bool large_payload_crc = false;
  std::size_t max_http_header_bytes = 16u << 10;     ///< largest HTTP upgrade head accepted
  std::size_t merge_max_messages = 50;               ///< grid messages per OpMerged container (MinIO maxMergeMessages)
  std::size_t merge_max_bytes = 31u << 10;           ///< bytes per OpMerged container (MinIO: 32 KiB - 1 KiB)
  /// A stream's caller pings it this often (MinIO clientPingInterval), unless its deadline is sooner.
  std::chrono::milliseconds stream_ping_interval = 15s;
  /// A caller that hears nothing from a stream (no pong, no response) for this long ends it as disconnected.
  std::chrono::milliseconds stream_pong_timeout = 30s;
  /// A server whose stream got no ping for this long cancels the handler (MinIO: 4 x 15 s), unless the
  /// stream's deadline is sooner.
  std::chrono::milliseconds stream_ping_timeout = 60s;

  /// Intervals in milliseconds for tests: ping 50 ms, pong timeout 200 ms, reconnect 10-20 ms, stream
  /// pings every 100 ms with a 1 s pong timeout and a 2 s server timeout, ...
  static connection_options for_tests() {
    connection_options o;
    o.ping_interval = 50ms;
    o.pong_timeout = 200ms;
    o.write_timeout = 500ms;
    o.dial_timeout = 1s;
    o.handshake_timeout = 1s;
    o.reconnect_min = 10ms;
    o.reconnect_max = 20ms;
    o.stream_ping_interval = 100ms;
    o.stream_pong_timeout = 1s;
    o.stream_ping_timeout = 2s;
    return o;
  }
};

} // namespace cogrid

#endif // COGRID_OPTIONS_HPP
