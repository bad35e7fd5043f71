// cogrid/connection.hpp — one WebSocket connection to one remote node: dialed or accepted,
// authenticated, kept alive with pings, re-established after failures, written in merged batches.
#ifndef COGRID_CONNECTION_HPP
#define COGRID_CONNECTION_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/control.hpp>
#include <cogrid/error.hpp>
#include <cogrid/message.hpp>
#include <cogrid/options.hpp>
#include <cogrid/stats.hpp>
#include <cogrid/detail/transport_base.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <cogrid/detail/registry.hpp>
#include <cogrid/detail/strand.hpp>
#include <cogrid/detail/waiter.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace cogrid {

class connection;

namespace detail {
struct grid_shared;
struct session;
struct writer_cancel_fn;
struct writer_park;
class ws_stream;
struct conn_mux;
class mux_core;
} // namespace detail

/// Receives the grid messages of a connection that are not connection-level (everything except the
/// connection ping/pong): the manager's sink hands them to the mux layer of unary calls and streams.
class message_sink {
public:
  virtual ~message_sink() = default;
  /// A message arrived. Called on the connection's strand; must not block. `m` and its payload are
  /// valid only during the call.
  virtual void on_message(connection& c, const message& m) = 0;
  /// The session with id `session` ended (`why`): everything in flight on it has failed.
  virtual void on_session_end(connection& c, std::uint64_t session, std::error_code why) = 0;
};

/// One connection from the local node to one remote node. Created and owned by a `manager`; users get
/// it from `manager::connection(host)` and use it to wait for the link and to send.
///
/// @par Thread safety
/// All member functions may be called from any thread. Internally every session runs on the
/// connection's strand; `send` appends to a mutex-guarded queue (a strand post per message would cost
/// more than an uncontended lock) and wakes the writer only when it is idle. The io_context may run on
/// several threads (checked with ThreadSanitizer under GCC). Clang 16 and older, at -O1 and above, may
/// cache a thread_local's address across a co_await (LLVM issue 63022, fixed in clang 17), which breaks
/// Asio's per-thread allocator when a coroutine resumes on another thread: with those compilers run the
/// io_context on one thread.
class connection final : public std::enable_shared_from_this<connection>, private detail::abandonable {
public:
  /// A strand of its own (see `detail::make_strand_executor`).
  using executor_type = asio::any_io_executor;

  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  COGRID_DECL ~connection();

  const std::string& local() const noexcept { return local_; }
  const std::string& remote() const noexcept { return remote_; }
  /// True when this side dials (`should_connect(local, remote)`).
  bool dialer() const noexcept { return dialer_; }
  executor_type get_executor() const noexcept { return strand_; }

  connection_state state() const noexcept { return state_.load(std::memory_order_acquire); }
  /// Counts sessions established; 0 before the first. A message sent on session N never reaches session N+1.
  std::uint64_t session_id() const noexcept { return session_id_.load(std::memory_order_acquire); }
  /// The remote's node id as of the current (or last) session.
  COGRID_DECL node_id remote_id() const;
  COGRID_DECL connection_stats stats() const;

  /// Queues `m` for the current session. Encoded at once (the payload is copied), so the caller's buffers
  /// may be reused when this returns. The connection's base flags (CRC unless both hosts are TLS) are added.
  /// @par Errors
  /// `errc::disconnected` when no session is up; `errc::queue_full` when the queue holds
  /// `max_queue_messages`; `errc::payload_too_large`.
  COGRID_DECL std::error_code send(const message& m);

  /// Completes when the connection is connected (at once if it is).
  /// @par Errors
  /// `errc::shutdown` when the manager shuts down first.
  /// @par Cancellation
  /// Supports the awaiting coroutine's cancellation slot: completes with `asio::error::operation_aborted`.
  COGRID_DECL asio::awaitable<std::error_code> wait_for_connect();

  /// Drops the current session (both directions), as a network failure would; the dialer reconnects.
  /// Header-only builds: defined with a node's life, so a file calling it includes this header (see
  /// detail/service.hpp).
  COGRID_DECL void kill();

  /// While blocked, inbound messages are read and discarded without being handled (pongs included), so
  /// the peer's liveness checks and ours run as if the link were stalled. For tests.
  void block_inbound(bool on) noexcept { block_inbound_.store(on, std::memory_order_relaxed); }

  // -- used by the manager ----------------------------------------------------------------------------
  /// Construction is the manager's: `shared` holds the grid-wide settings.
  COGRID_DECL connection(std::shared_ptr<detail::grid_shared> shared, std::string remote, asio::any_io_executor ex);
  /// Starts the dial loop (dialer side). Idempotent.
  COGRID_DECL void start();
  /// Dialer side of `manager::attach`: the next dial attempt runs the handshake over `t` instead of
  /// dialing, and later attempts wait for the next attached stream.
  COGRID_DECL void attach(std::unique_ptr<transport> t);
  /// Runs a session over an accepted and handshaken WebSocket (acceptor side), replacing any current one.
  COGRID_DECL void adopt(std::unique_ptr<detail::ws_stream> ws, node_id remote_id);
  /// Registers the connection with its execution context, which lets its parked handlers go if it is
  /// destroyed before shutdown() (see detail/registry.hpp). Once, after construction.
  COGRID_DECL void enroll();
  /// Ends everything; `state()` becomes shutdown. Completes when the session and dial loop are gone.
  COGRID_DECL asio::awaitable<void> shutdown();
  /// Whether shutdown() has begun: calls are refused with `errc::shutdown` from then on.
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }
  /// The flags every queued message gets (CRC unless both hosts are TLS).
  msg_flags base_flags() const noexcept { return base_flags_; }
  /// Like `send`, for replies to messages the peer sent (responses, pongs, credits): not refused when the
  /// queue is full, since dropping them would leave the peer waiting.
  std::error_code send_control(const message& m) { return enqueue(m, true); }
  /// The calls in flight on this connection (the mux layer's state).
  detail::conn_mux& mux() noexcept { return *mux_; }
  /// The grid's connection settings.
  COGRID_DECL const connection_options& options() const noexcept;
  /// What the manager shares with its connections (handler metrics, trace hook, ...).
  detail::grid_shared& shared() const noexcept { return *shared_; }

private:
  friend struct detail::session;

  COGRID_DECL std::error_code enqueue(const message& m, bool control);
  COGRID_DECL void abandon(asio::execution_context& ctx) override;
  COGRID_DECL void set_state(connection_state s);
  COGRID_DECL void log(log_level level, const std::string& text) const;
  COGRID_DECL void set_last_error(const std::string& text);
  COGRID_DECL static asio::awaitable<void> dial_loop(std::shared_ptr<connection> self);
  COGRID_DECL asio::awaitable<std::error_code> dial_once(std::unique_ptr<detail::ws_stream>& ws, node_id& remote_id);
  COGRID_DECL static asio::awaitable<void> run_session(std::shared_ptr<connection> self, std::shared_ptr<detail::session> s);
  COGRID_DECL asio::awaitable<void> reader(std::shared_ptr<detail::session> s);
  COGRID_DECL asio::awaitable<void> writer(std::shared_ptr<detail::session> s);
  COGRID_DECL asio::awaitable<void> health(std::shared_ptr<detail::session> s);
  COGRID_DECL void handle(detail::session& s, const message& m);
  COGRID_DECL void end_session(detail::session& s, std::error_code why);
  COGRID_DECL void wake_writer();
  COGRID_DECL void park_writer(detail::session& s, detail::wait_handler h);
  COGRID_DECL void unpark_writer(std::error_code ec);
  friend struct detail::writer_cancel_fn;
  friend struct detail::writer_park;
  COGRID_DECL static asio::awaitable<void> shutdown_on_strand(std::shared_ptr<connection> c);

  std::shared_ptr<detail::grid_shared> shared_;
  std::unique_ptr<detail::conn_mux> mux_;
  std::string local_, remote_;
  bool dialer_;
  msg_flags base_flags_;
  executor_type strand_;
  std::atomic<connection_state> state_{connection_state::unconnected};
  std::atomic<std::uint64_t> session_id_{0};
  std::atomic<bool> block_inbound_{false};
  std::atomic<bool> stopping_{false};
  bool started_ = false;                    // strand
  bool dial_loop_running_ = false;          // strand
  std::shared_ptr<detail::session> current_; // strand
  std::unique_ptr<transport> attached_;      // strand: a stream from attach() for the next attempt
  bool attached_only_ = false;               // strand: attach() was used; never dial TCP
  asio::steady_timer retry_timer_;           // strand: the dialer's pause between attempts
  asio::steady_timer loop_done_;             // strand: cancelled when the dial loop exits
  asio::steady_timer session_done_;          // strand: cancelled when the current session ends
  std::minstd_rand rng_;                     // strand: reconnect jitter

  // Coroutines waiting in wait_for_connect, each woken through its own one-slot channel.
  std::mutex w_mu_;
  std::vector<std::shared_ptr<void>> waiters_;

  // The outgoing queue: encoded messages back to back, with their end offsets.
  mutable std::mutex q_mu_;
  std::vector<std::byte> q_buf_;
  std::vector<std::uint32_t> q_ends_;
  std::uint64_t q_session_ = 0;   // the session the queued messages belong to; 0 = none (sends refused)
  bool writer_idle_ = false;
  bool wake_pending_ = false;       // wake_writer() found the writer not parked: it must not park
  detail::waiter writer_w_;         // the writer, parked while there is nothing to write

  // Statistics.
  mutable std::mutex st_mu_;
  connection_stats st_;        // fields not kept in atomics below, guarded by st_mu_
  node_id remote_id_;          // guarded by st_mu_
  std::atomic<std::uint64_t> messages_out_{0}, messages_in_{0}, bytes_out_{0}, bytes_in_{0}, writes_{0},
      queue_full_{0}, unhandled_{0};
};

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/connection.ipp>
#endif

#endif // COGRID_CONNECTION_HPP

// Including this header itself brings what a node's files use with it: the transports, and in
// header-only builds the definitions of a node's life (see detail/service.hpp). cogrid's other headers,
// except cogrid.hpp and testing.hpp, include detail/service.hpp instead, which leaves them out.
#if !defined(COGRID_DETAIL_SERVICE_ONLY)
#include <cogrid/transport.hpp>
#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/node.ipp>
#endif
#endif
