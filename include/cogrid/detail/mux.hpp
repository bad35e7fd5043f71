// cogrid/detail/mux.hpp — the type-erased core of calls: the handler registry, the calls a connection
// has in flight in both directions, and the routing of mux messages. Compiled once; the typed layer
// (unary.hpp) only packs and unpacks.
#ifndef COGRID_DETAIL_MUX_HPP
#define COGRID_DETAIL_MUX_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/detail/service.hpp>
#include <cogrid/message.hpp>
#include <cogrid/detail/id_map.hpp>
#include <cogrid/detail/pool.hpp>
#include <cogrid/detail/stream_core.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

namespace cogrid::detail {

struct pending_call;
struct server_call;

/// A registered unary handler (one of the two forms) and its counters.
struct unary_entry {
  raw_unary_handler fn;        // a coroutine: runs on a handler strand, cancellable
  sync_unary_handler sync;     // a plain function: posted to the io_context, nothing to cancel
  handler_metrics* metrics = nullptr;
};

/// The calls one connection has in flight, in both directions. Guarded by `mu` unless atomic.
struct conn_mux {
  explicit conn_mux(const asio::any_io_executor& ex) : deadline_timer(ex) {}
  std::mutex mu;
  std::atomic<std::uint64_t> next_id{0}; // mux ids are never reused on a connection (first id 1)
  id_map<std::shared_ptr<pending_call>> outgoing;
  id_map<std::shared_ptr<server_call>> incoming; // served by coroutine handlers
  id_map<std::shared_ptr<client_stream_state>> streams_out;
  id_map<std::shared_ptr<server_stream>> streams_in;
  std::atomic<std::size_t> sync_in{0}; // served by plain-function handlers, now running or queued
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

/// One per manager: the handler registry, and what every connection's mux messages are handed to (through
/// the manager's message_sink, defined with the node's life: see detail/service.hpp).
class mux_core final : public std::enable_shared_from_this<mux_core> {
public:
  mux_core(asio::any_io_executor ex, metrics_registry& metrics) : ex_(std::move(ex)), metrics_(metrics) {
    for (auto& s : strands_) s = make_strand_executor(ex_);
  }

  /// Registers a handler; `route` names its subroute in statistics.
  COGRID_DECL std::error_code register_unary(handler_id h, std::optional<subroute_id> sub, std::string_view route, raw_unary_handler fn);
  COGRID_DECL std::error_code register_unary(handler_id h, std::optional<subroute_id> sub, std::string_view route, sync_unary_handler fn);
  COGRID_DECL std::error_code register_stream(handler_id h, std::optional<subroute_id> sub, std::string_view route, stream_entry e);
  /// The stream handler `m` (an OpConnectMux) addresses, or null.
  COGRID_DECL std::shared_ptr<const stream_entry> find_stream(const message& m);
  const asio::any_io_executor& executor() const noexcept { return ex_; }
  /// A strand for one served call or stream, from a fixed pool (round robin): making a strand per call
  /// costs an allocation and a lock in Asio's strand service. Calls that share a strand only take turns
  /// while running; a handler that awaits does not hold up the others.
  const asio::any_io_executor& handler_strand() noexcept {
    return strands_[next_strand_.fetch_add(1, std::memory_order_relaxed) % strands_.size()];
  }

  /// A mux message arrived on `c` (see message_sink::on_message).
  COGRID_DECL void on_message(connection& c, const message& m);
  /// The session `session` of `c` ended (see message_sink::on_session_end).
  COGRID_DECL void on_session_end(connection& c, std::uint64_t session, std::error_code why);

private:
  COGRID_DECL std::error_code add_unary(handler_id h, std::optional<subroute_id> sub, std::shared_ptr<const unary_entry> e);
  COGRID_DECL std::shared_ptr<const unary_entry> find_unary(const message& m);
  COGRID_DECL void serve_request(connection& c, const message& m);
  COGRID_DECL static asio::awaitable<void> run_server_call(std::shared_ptr<server_call> sc,
                                                           std::shared_ptr<const unary_entry> fn, payload req);

  asio::any_io_executor ex_;
  metrics_registry& metrics_;
  std::array<asio::any_io_executor, 64> strands_;
  std::atomic<std::size_t> next_strand_{0};
  std::shared_mutex reg_mu_;
  std::unordered_map<std::uint8_t, std::shared_ptr<const unary_entry>> unary_;
  std::map<std::array<std::byte, 32>, std::shared_ptr<const unary_entry>> unary_sub_;
  std::unordered_map<std::uint8_t, std::shared_ptr<const stream_entry>> streams_;
  std::map<std::array<std::byte, 32>, std::shared_ptr<const stream_entry>> streams_sub_;
};

/// A single request on `c` to handler `h` (and subroute `sub`), waiting for its response. `req` is the
/// request's encoded payload (nil when `nil`); its buffer is recycled once sent.
/// @par Cancellation
/// The awaiting coroutine's cancellation slot: completes with `asio::error::operation_aborted` and
/// tells the remote to stop the handler (OpDisconnectServerMux).
COGRID_DECL asio::awaitable<call_result<payload>> call_raw(std::shared_ptr<connection> c, handler_id h,
                                                           std::optional<subroute_id> sub, std::vector<std::byte> req,
                                                           bool nil, call_options opt);

/// The connection's execution context `ctx` is shutting down: every call's parked handler that completes
/// in `ctx` is destroyed (not resumed), one in another context completes with `errc::shutdown`; the call
/// tables are emptied, and the same done for streams (see registry.hpp).
COGRID_DECL void abandon_calls(connection& c, asio::execution_context& ctx);

} // namespace cogrid::detail

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/mux.ipp>
#include <cogrid/impl/stream.ipp>
#endif

#endif // COGRID_DETAIL_MUX_HPP
