// cogrid/stats.hpp — what a connection reports about itself.
#ifndef COGRID_STATS_HPP
#define COGRID_STATS_HPP

#include <cogrid/detail/config.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace cogrid {

/// States of a connection (MinIO's numbering).
enum class connection_state : std::uint8_t {
  unconnected = 0, ///< never connected; an accepting side stays here until its peer dials
  connecting = 1,  ///< the dialer is trying
  connected = 2,
  error = 3,       ///< the last attempt or session failed; the dialer retries, the acceptor waits
  shutdown = 4,    ///< terminal
};

inline const char* to_string(connection_state s) noexcept {
  switch (s) {
  case connection_state::unconnected: return "unconnected";
  case connection_state::connecting: return "connecting";
  case connection_state::connected: return "connected";
  case connection_state::error: return "error";
  case connection_state::shutdown: return "shutdown";
  }
  return "unknown";
}

/// A snapshot of one connection's counters. Counters accumulate over every session of the connection.
struct connection_stats {
  std::string remote;                       ///< the remote's host string
  connection_state state = connection_state::unconnected; ///< the state when the snapshot was taken
  bool dialer = false;                      ///< this side dials (the election)
  std::uint64_t connects = 0;               ///< sessions established
  std::uint64_t reconnects = 0;             ///< sessions established after the first
  std::uint64_t remote_restarts = 0;        ///< reconnects where the remote's node id had changed
  std::uint64_t dial_failures = 0;          ///< dial attempts that failed
  /// Grid messages sent (`messages_in`: received).
  std::uint64_t messages_out = 0, messages_in = 0;  ///< grid messages (items of merged containers counted)
  /// WebSocket payload bytes sent (`bytes_in`: received).
  std::uint64_t bytes_out = 0, bytes_in = 0;        ///< WebSocket payload bytes
  std::uint64_t socket_writes = 0;          ///< transport write calls (one per merged batch)
  std::uint64_t queue_full = 0;             ///< sends refused because the queue was full
  std::uint64_t dropped_on_disconnect = 0;  ///< queued messages discarded when a session ended
  std::uint64_t protocol_errors = 0;        ///< sessions ended by a malformed message or frame
  std::uint64_t unhandled = 0;              ///< messages no handler took (unknown op, stray control message)
  std::uint64_t refused_in = 0;             ///< payloads in pieces refused for breaking this node's limits (their call or stream ended, not the link)
  std::size_t queue_length = 0;             ///< messages waiting to be written now
  std::size_t calls_out = 0;                ///< requests this node sent that await their response (open muxes)
  std::size_t calls_in = 0;                 ///< requests from the remote whose handlers run now (open muxes)
  std::size_t streams_out = 0;              ///< streams this node opened that are still open
  std::size_t streams_in = 0;               ///< streams the remote opened whose handlers run now
  std::uint64_t calls_made = 0;             ///< unary calls and streams this node started on this connection, ever
  std::uint64_t calls_served = 0;           ///< unary calls and streams the remote started whose handlers ran here, ever
  std::uint64_t stream_errors = 0;          ///< streams closed because the peer broke sequence or credit rules
  std::uint64_t late_responses = 0;         ///< responses that came (or handlers that ended) after the deadline
  std::uint64_t calls_cancelled = 0;        ///< handlers (unary or stream) cancelled because the caller gave up
  std::uint64_t pings_sent = 0;             ///< connection pings this side sent
  std::uint64_t pongs_received = 0;         ///< answers to them (a pong that never came shows as the difference)
  std::chrono::microseconds last_ping_rtt{0}; ///< round-trip time of the last answered ping; 0 until one
  std::chrono::microseconds max_ping_rtt{0}; ///< the slowest answer to a ping, ever
  std::chrono::system_clock::time_point last_pong{};     ///< zero when never
  std::chrono::system_clock::time_point last_connect{};  ///< zero when never
  std::string last_error;                   ///< why the last attempt or session ended
};

} // namespace cogrid

#endif // COGRID_STATS_HPP
