// cogrid/detail/mux.hpp — the type-erased core of calls: the calls and streams a connection has in
// flight in both directions, the manager's layer that routes mux messages to them and serves requests
// with the registered handlers, and the calling side of unary calls. Compiled once; the typed layers
// (unary.hpp, stream.hpp) only pack and unpack.
#ifndef COGRID_DETAIL_MUX_HPP
#define COGRID_DETAIL_MUX_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/message.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/id_map.hpp>
#include <cogrid/detail/pool.hpp>
#include <cogrid/detail/registry.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

namespace cogrid::detail {

struct pending_call;
struct server_call;
struct client_stream_state;
struct served_stream;

/// The calls one connection has in flight, in both directions. Guarded by `mu` unless atomic.
struct conn_mux {
  explicit conn_mux(const asio::any_io_executor& ex) : deadline_timer(ex) {}
  std::mutex mu;
  std::atomic<std::uint64_t> next_id{0}; // mux ids are never reused on a connection (first id 1)
  id_map<std::shared_ptr<pending_call>> outgoing;
  id_map<std::shared_ptr<server_call>> incoming; // served by coroutine handlers
  id_map<std::shared_ptr<client_stream_state>> streams_out;
  id_map<std::shared_ptr<served_stream>> streams_in;
  std::atomic<std::size_t> sync_in{0}; // served by plain-function handlers, now running or queued
  std::size_t next_strand = 0;         // the connection's strand only: round robin over handler strands
  // The deadlines of outgoing unary calls: a list in deadline order (calls with the same timeout are
  // appended, so an insert is O(1)) and one timer for its head, re-armed only when the head gets earlier
  // than the time it is set for. A call that completes leaves the list without touching the timer.
  pending_call* dl_head = nullptr;
  pending_call* dl_tail = nullptr;
  asio::steady_timer deadline_timer;
  std::chrono::steady_clock::time_point timer_at = std::chrono::steady_clock::time_point::max(); // max: idle
  std::atomic<std::uint64_t> late_responses{0}, cancelled{0}, unknown_mux{0}, stream_errors{0};
  std::atomic<std::uint64_t> calls_made{0}, calls_served{0}; // unary calls and streams, ever
};

/// One per manager, its message sink: the handler registry, and what every connection's mux messages
/// are handed to.
class mux_core final : public message_sink {
public:
  /// Handler strands per executor of the manager (each connection's served coroutines run on those of
  /// its own executor).
  static constexpr std::size_t strands_per_executor = 64;

  mux_core(const std::vector<asio::any_io_executor>& executors, metrics_registry& metrics) : metrics_(metrics) {
    for (const auto& ex : executors) {
      auto& set = strands_.emplace_back();
      for (auto& s : set) s = make_strand_executor(ex);
    }
  }

  handler_registry& handlers() noexcept { return handlers_; }
  metrics_registry& metrics() noexcept { return metrics_; }

  /// A strand for one call or stream served on `c`, from a fixed set per executor (round robin):
  /// making a strand per call costs an allocation and a lock in Asio's strand service. Calls that share a
  /// strand only take turns while running; a handler that awaits does not hold up the others. Called on
  /// the connection's strand.
  COGRID_DECL const asio::any_io_executor& handler_strand(connection& c);

  COGRID_DECL void on_message(connection& c, const message& m) override;
  COGRID_DECL void on_session_end(connection& c, std::uint64_t session, std::error_code why) override;
  COGRID_DECL void on_refused(connection& c, const message& head, const std::string& why) override;

private:
  COGRID_DECL void serve_request(connection& c, const message& m);

  metrics_registry& metrics_;
  handler_registry handlers_;
  std::vector<std::array<asio::any_io_executor, strands_per_executor>> strands_;
};

/// A single request on `c` to handler `h` (and subroute `sub`), waiting for its response. `req` is the
/// request's encoded payload (nil when `nil`); its buffer is recycled once sent.
/// @par Cancellation
/// The awaiting coroutine's cancellation slot: completes with `asio::error::operation_aborted` and
/// tells the remote to stop the handler (OpDisconnectServerMux).
COGRID_DECL asio::awaitable<result<payload>> call_raw(std::shared_ptr<connection> c, handler_id h, std::optional<subroute_id> sub,
                                                      std::vector<std::byte> req, bool nil, call_options opt);

/// The connection's execution context `ctx` is shutting down: every call's parked handler that completes
/// in `ctx` is destroyed (not resumed), one in another context completes with `errc::shutdown`; the call
/// tables are emptied, and the same done for streams (see abandon.hpp).
COGRID_DECL void abandon_calls(connection& c, asio::execution_context& ctx);

/// The text a failed handler (unary or stream) sends back: the text of a `cogrid::exception` (or its
/// code's message), the what() of a standard exception, "handler cancelled" for operation_aborted.
COGRID_DECL std::string describe_failure(const std::exception_ptr& e);

} // namespace cogrid::detail

#endif // COGRID_DETAIL_MUX_HPP
