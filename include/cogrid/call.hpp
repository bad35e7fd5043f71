// cogrid/call.hpp — the vocabulary of calls: payloads, the context a handler sees, the raw (bytes in,
// bytes out) handler types the typed layer is built on, and per-call options.
#ifndef COGRID_CALL_HPP
#define COGRID_CALL_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>
#include <cogrid/result.hpp>
#include <cogrid/subroute.hpp>

#include <asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cogrid {

/// Owned payload bytes. `std::nullopt` is a nil payload, an empty vector an empty one: both cross the
/// wire and arrive as they were sent.
using payload = std::optional<std::vector<std::byte>>;

class connection;

/// What a handler knows about the call it serves.
struct call_context {
  /// The connection the call came in on (its `remote()` is the caller's host).
  connection* conn = nullptr;
  handler_id handler{};               ///< the handler id the call was made to
  std::optional<subroute_id> subroute; ///< its subroute, when it has one
  /// When the caller stops waiting (steady clock); `time_point::max()` when the caller set no deadline.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// Who is calling a handler, as its authorization hook (`manager::authorize`) sees it.
struct caller_info {
  /// The host string of the calling node: the one it claimed in its handshake and proved with its token
  /// (`connection::remote()`).
  std::string_view host;
  /// What the caller's transport vouched for beyond that (`connection::identity()`): for a link over an
  /// ssh forced command, the key's name the command was given. Empty for TCP and TLS.
  std::string_view identity;
  handler_id handler{};                ///< the handler called
  std::optional<subroute_id> subroute; ///< its subroute, when it has one
};

/// Decides whether a caller may call a handler (unary or stream), before the handler runs: success
/// admits the call; an error refuses it, and the caller gets `errc::not_authorized` with the error's
/// text (its message when it has none). Runs on the connection's strand for every call of the handler:
/// it must not block.
using authorize_hook = std::function<result<void>(const caller_info&)>;

/// A handler of single requests in bytes: the layer typed handlers are built on, and the form for users
/// with their own serialization. Runs as its own coroutine (never on the connection's reader);
/// cancelled (Asio terminal cancellation) when the caller cancels or its deadline passes. Returning an
/// error (`cogrid::remote_error("text")`) or throwing fails the call: the caller gets
/// `errc::remote_error` with the error's text or the exception's `what()`.
using raw_unary_handler = std::function<asio::awaitable<result<payload>>(call_context, payload)>;

/// The same for a handler that is a plain function (no awaitable): it is called as a handler of the
/// connection's executor, with no coroutine, strand or timer of its own. It cannot be cancelled; when the
/// caller's deadline has passed by the time it returns, its response is dropped (counted in
/// `late_responses`).
using sync_unary_handler = std::function<result<payload>(const call_context&, payload)>;

/// Per-call settings.
struct call_options {
  /// The call's deadline, sent to the remote as DeadlineMS (MinIO's default for single requests: 60 s).
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

/// How many messages a stream buffers in each direction: `in` requests from the caller to the handler
/// (0 for a stream without requests), `out` responses from the handler to the caller (at least 1).
/// MinIO's defaults are 1 and 1. Each side declares the capacities; when both are cogrid, a caller whose
/// capacities differ from its handler's gets `errc::capacity_mismatch` when it opens the stream.
struct stream_capacity {
  std::uint32_t in = 1;  ///< requests buffered for the handler
  std::uint32_t out = 1; ///< responses buffered for the caller
  /// Equal when both capacities are.
  friend bool operator==(const stream_capacity&, const stream_capacity&) = default;
};

/// Per-stream settings of the caller.
struct stream_options {
  /// Bounds the whole stream on both sides (sent as DeadlineMS); zero means no deadline (MinIO's default
  /// for streams).
  std::chrono::milliseconds timeout{0};
};

} // namespace cogrid

#endif // COGRID_CALL_HPP
