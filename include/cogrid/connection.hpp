// cogrid/connection.hpp — one WebSocket connection to one remote node: dialed or accepted,
// authenticated, kept alive with pings, re-established after failures, written in merged batches.
#ifndef COGRID_CONNECTION_HPP
#define COGRID_CONNECTION_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/control.hpp>
#include <cogrid/error.hpp>
#include <cogrid/message.hpp>
#include <cogrid/options.hpp>
#include <cogrid/process.hpp>
#include <cogrid/result.hpp>
#include <cogrid/stats.hpp>
#include <cogrid/transport.hpp>
#include <cogrid/detail/abandon.hpp>
#include <cogrid/detail/handoff.hpp>
#include <cogrid/detail/node.hpp>
#include <cogrid/detail/outbox.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace cogrid {

/// What `connection::wait_for_connect` does when a handshake of the link is refused.
enum class on_refusal {
  keep_waiting, ///< reconnects go on; the wait ends when connected, or at shutdown
  fail          ///< the wait ends with the refusal (`errc::connection_rejected`)
};

class connection;
class manager;

namespace detail {
struct grid_shared;
struct session;
struct conn_mux;
struct connection_access;
} // namespace detail

/// Receives the grid messages of a connection that are not connection-level (everything except the
/// connection ping/pong): by default the manager's layer of unary calls and streams; users who bring
/// their own mux layer set theirs with `manager::set_sink`.
class message_sink {
public:
  virtual ~message_sink() = default;
  /// A message arrived. Called on the connection's strand; must not block. `m` and its payload are
  /// valid only during the call.
  virtual void on_message(connection& c, const message& m) = 0;
  /// The session with id `session` ended (`why`): everything in flight on it has failed.
  virtual void on_session_end(connection& c, std::uint64_t session, std::error_code why) = 0;
  /// A message of one call or stream was refused: its payload, coming in pieces, broke this node's
  /// limits (`why` says how). `head` has its mux id, op, handler and sequence number, and no payload.
  /// That call or stream ends; the connection stays. Called on the connection's strand. By default,
  /// nothing.
  virtual void on_refused(connection& c, const message& head, const std::string& why) {
    (void)c;
    (void)head;
    (void)why;
  }
};

/// One connection from the local node to one remote node. Created and owned by a `manager`; users get
/// it from `manager::connection(host)` and use it to wait for the link and to call handlers over it.
///
/// @par Thread safety
/// All member functions may be called from any thread. The connection's sessions (reader, writer,
/// pings) run on its strand; `send` appends to the outgoing queue under a short lock and wakes the
/// writer only when it is idle.
class connection final : public std::enable_shared_from_this<connection>, private detail::abandonable {
public:
  /// The connection's strand.
  using executor_type = asio::any_io_executor;

  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  COGRID_DECL ~connection();

  /// This node's host string.
  const std::string& local() const noexcept { return local_; }
  /// The remote's host string.
  const std::string& remote() const noexcept { return remote_; }
  /// True when this side dials (`should_connect(local, remote)`).
  bool dialer() const noexcept { return dialer_; }
  /// The strand the connection's sessions run on.
  executor_type get_executor() const noexcept { return strand_; }

  /// The link's state now.
  connection_state state() const noexcept { return state_.load(std::memory_order_acquire); }
  /// Counts sessions established; 0 before the first. A message sent on session N never reaches session N+1.
  std::uint64_t session_id() const noexcept { return session_id_.load(std::memory_order_acquire); }
  /// The remote's node id as of the current (or last) session.
  COGRID_DECL node_id remote_id() const;
  /// What the transport of the current (or last) session vouched for beyond the remote's host string
  /// and token (`transport::identity`): for a link over an ssh forced command, the key's name that the
  /// command was given (`manager::attach`, `manager::attach_process`). Empty for TCP and TLS.
  COGRID_DECL std::string identity() const;
  /// A snapshot of the link's state and counters.
  COGRID_DECL connection_stats stats() const;

  /// Queues `m` for the current session, for users who bring their own mux layer (`manager::set_sink`).
  /// Encoded at once (the payload is copied), so the caller's buffers may be reused when this returns.
  /// The connection's base flags (CRC unless both hosts are TLS) are added.
  /// @par Errors
  /// `errc::disconnected` when no session is up; `errc::queue_full` when the queue holds
  /// `max_queue_messages`; `errc::payload_too_large`.
  COGRID_DECL result<void> send(const message& m);

  /// Completes when the connection is connected (at once if it is). With `on_refusal::fail`, it also
  /// completes, with the refusal, as soon as a handshake of this link is refused after the wait began:
  /// the remote refused this node's dial (its token, its clock, the direction: HTTP 403 or a refused
  /// connect exchange), or this node refused a dial that claimed to come from this link's host. Retries
  /// would meet the same refusal until a configuration changes, so a one-shot client should not wait.
  /// (A dial refused at the HTTP upgrade does not say which host it came from: the accepting side learns
  /// of those through `manager_options::on_rejected`.) On a link over a process
  /// (`manager::attach_process`), a process that ends before its link came up counts as a refusal, with
  /// how it ended and the last line of its stderr ("exited with status 255: Permission denied
  /// (publickey).").
  /// @par Errors
  /// `errc::shutdown` when the manager shuts down first; with `on_refusal::fail`,
  /// `errc::connection_rejected` whose text says which side refused and why.
  /// @par Cancellation
  /// Supports the awaiting coroutine's cancellation slot: completes with `asio::error::operation_aborted`.
  COGRID_DECL asio::awaitable<result<void>> wait_for_connect(on_refusal policy = on_refusal::keep_waiting);

  /// Drops the current session (both directions), as a network failure would; the dialer reconnects.
  COGRID_DECL void kill();

private:
  friend class manager;
  friend struct detail::connection_access;
  friend struct detail::session;
  template <class>
  friend struct detail::node_impl;

  COGRID_DECL connection(std::shared_ptr<detail::grid_shared> shared, std::string remote, asio::any_io_executor ex,
                         std::size_t executor_index);

  COGRID_DECL void enroll();
  COGRID_DECL result<void> enqueue(const message& m, bool control, detail::handoff how,
                                   std::vector<std::byte>* movable = nullptr);
  COGRID_DECL void abandon(asio::execution_context& ctx) override;
  COGRID_DECL void set_state(connection_state s);
  COGRID_DECL void log(log_level level, const std::string& text) const;
  COGRID_DECL void set_last_error(const std::string& text);

  // A connection's life (impl/connection.ipp, impl/dial.ipp): templates, so that only a file that
  // constructs a manager (detail::node_impl) compiles them.
  template <class Tag>
  static asio::awaitable<void> dial_loop(std::shared_ptr<connection> self);
  template <class Tag>
  asio::awaitable<result<void>> dial_once(std::unique_ptr<detail::ws_stream>& ws, node_id& remote_id);
  template <class Tag>
  void adopt(std::unique_ptr<detail::ws_stream> ws, node_id remote_id);
  template <class Tag>
  static asio::awaitable<void> process_round(std::shared_ptr<connection> self);
  template <class Tag>
  static asio::awaitable<result<void>> dial_and_serve(std::shared_ptr<connection> self);
  static asio::awaitable<void> retry_pause(std::shared_ptr<connection> self, std::chrono::steady_clock::time_point started);
  template <class Tag>
  static asio::awaitable<void> run_session(std::shared_ptr<connection> self, std::shared_ptr<detail::session> s);
  template <class Tag>
  void end_session(detail::session& s);
  template <class Tag>
  static asio::awaitable<void> shutdown_on_strand(std::shared_ptr<connection> c);

  std::shared_ptr<detail::grid_shared> shared_;
  std::unique_ptr<detail::conn_mux> mux_;
  std::string local_, remote_;
  bool dialer_;
  msg_flags base_flags_;
  asio::any_io_executor inner_;  // the executor the connection was given (its served handlers run there)
  executor_type strand_;         // a strand on it: the sessions, the dial loop, the timers
  std::size_t executor_index_;   // which of the manager's executors
  std::atomic<connection_state> state_{connection_state::unconnected};
  std::atomic<std::uint64_t> session_id_{0};
  std::atomic<bool> block_inbound_{false};
  std::atomic<bool> stopping_{false};
  bool started_ = false;                     // strand
  bool dial_loop_running_ = false;           // strand
  bool dialing_ = false;                     // strand: the dial loop is inside dial_once
  asio::cancellation_signal dial_cancel_;    // strand: cancels what the dial loop awaits (shutdown)
  std::shared_ptr<detail::session> current_; // strand
  std::unique_ptr<transport> attached_;      // strand: a stream from attach() for the next attempt
  bool attached_only_ = false;               // strand: attach() was used; never dial TCP
  std::shared_ptr<const process_spec> process_; // strand: attach_process(): each attempt starts this
  std::weak_ptr<detail::manager_state> process_home_; // strand: where a process's incoming handshake goes
  asio::steady_timer retry_timer_;           // strand: the dialer's pause between attempts
  asio::steady_timer loop_done_;             // strand: cancelled when the dial loop exits
  asio::steady_timer session_done_;          // strand: cancelled when the current session ends
  std::minstd_rand rng_;                     // strand: reconnect jitter
  detail::outbox out_;                       // the outgoing queue

  // Coroutines waiting in wait_for_connect, each woken through its own one-slot channel.
  std::mutex w_mu_;
  std::vector<std::shared_ptr<void>> waiters_;
  std::uint64_t refusals_ = 0; // w_mu_: handshakes of this link refused, ever
  std::string refusal_;        // w_mu_: the last one, for wait_for_connect's error text
  /// A handshake of this link was refused (`why` says by whom and why): waiters that fail on refusal end.
  COGRID_DECL void note_refusal(std::string why);
  /// Wakes every wait_for_connect waiter (they look at the state and the refusals again).
  COGRID_DECL void wake_waiters();

  // Statistics.
  mutable std::mutex st_mu_;
  connection_stats st_;        // fields not kept in atomics below, guarded by st_mu_
  node_id remote_id_;          // guarded by st_mu_
  std::string identity_;       // guarded by st_mu_
  std::atomic<std::uint64_t> messages_out_{0}, messages_in_{0}, bytes_out_{0}, bytes_in_{0}, writes_{0}, unhandled_{0},
      refused_in_{0};
};

} // namespace cogrid

// The definitions come with the manager's header, which declares everything they use.
#include <cogrid/manager.hpp>

#endif // COGRID_CONNECTION_HPP
