// cogrid/impl/connection.ipp — definitions for cogrid/connection.hpp: construction, the outgoing
// queue's front, waiting for the link, and statistics. A connection's life (dialing, sessions, shutdown)
// is in node.ipp.
#ifndef COGRID_IMPL_CONNECTION_IPP
#define COGRID_IMPL_CONNECTION_IPP

#include <cogrid/connection.hpp>
#include <cogrid/election.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/wait_channel.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/query.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <random>

namespace cogrid {
namespace detail {
using steady = std::chrono::steady_clock;
} // namespace detail

COGRID_DECL connection::connection(std::shared_ptr<detail::grid_shared> shared, std::string remote, asio::any_io_executor ex,
                                   std::size_t executor_index)
    : shared_(std::move(shared)), mux_(std::make_unique<detail::conn_mux>(ex)), local_(shared_->local), remote_(std::move(remote)),
      dialer_(should_connect(local_, remote_)), base_flags_(msg_flags::none), inner_(ex),
      strand_(detail::make_strand_executor(ex)), executor_index_(executor_index), retry_timer_(strand_), loop_done_(strand_),
      session_done_(strand_), rng_(std::random_device{}()), out_(shared_->opt.max_queue_messages) {
  detail::host_url r;
  const bool remote_tls = !detail::parse_host_url(remote_, r) && r.tls;
  if (!(remote_tls && shared_->local_url.tls)) base_flags_ = msg_flags::crc;
  st_.remote = remote_;
  st_.dialer = dialer_;
  loop_done_.expires_at(detail::steady::time_point::max());
}

COGRID_DECL connection::~connection() = default;

COGRID_DECL void connection::enroll() {
  asio::use_service<detail::abandon_service>(asio::query(strand_, asio::execution::context))
      .add(std::shared_ptr<detail::abandonable>(shared_from_this(), static_cast<detail::abandonable*>(this)));
}

// The io_context is being destroyed with this connection running (no shutdown()): no thread runs it
// any more. The handlers parked in our objects are destroyed, which hands their coroutines' frames to
// the context (destroyed with its queue); the frames held the connection, so it goes with them.
COGRID_DECL void connection::abandon(asio::execution_context& ctx) {
  detail::drop(out_.take_parked());
  detail::abandon_calls(*this, ctx); // the writer runs on our strand, in `ctx`
  // An in-memory pipe under the session stores its reader's and writer's handlers too: it is enrolled
  // itself (transport.hpp), and severed by the same service.
}

COGRID_DECL void connection::set_state(connection_state s) {
  if (state_.exchange(s, std::memory_order_acq_rel) == s) return;
  wake_waiters();
}

COGRID_DECL void connection::note_refusal(std::string why) {
  {
    std::lock_guard lk(w_mu_);
    ++refusals_;
    refusal_ = std::move(why);
  }
  wake_waiters();
}

COGRID_DECL void connection::wake_waiters() {
  std::vector<std::shared_ptr<void>> w;
  {
    std::lock_guard lk(w_mu_);
    w.swap(waiters_);
  }
  for (auto& p : w) static_cast<detail::wait_channel*>(p.get())->try_send(std::error_code{}, 0);
}

COGRID_DECL void connection::log(log_level level, const std::string& text) const {
  if (shared_->log) shared_->log(level, "grid " + local_ + " -> " + remote_ + ": " + text);
}

COGRID_DECL void connection::set_last_error(const std::string& text) {
  std::lock_guard lk(st_mu_);
  st_.last_error = text;
}

COGRID_DECL node_id connection::remote_id() const {
  std::lock_guard lk(st_mu_);
  return remote_id_;
}

COGRID_DECL std::string connection::identity() const {
  std::lock_guard lk(st_mu_);
  return identity_;
}

COGRID_DECL connection_stats connection::stats() const {
  connection_stats s;
  {
    std::lock_guard lk(st_mu_);
    s = st_;
  }
  s.state = state();
  s.messages_out = messages_out_.load(std::memory_order_relaxed);
  s.messages_in = messages_in_.load(std::memory_order_relaxed);
  s.bytes_out = bytes_out_.load(std::memory_order_relaxed);
  s.bytes_in = bytes_in_.load(std::memory_order_relaxed);
  s.socket_writes = writes_.load(std::memory_order_relaxed);
  s.queue_full = out_.refused();
  s.unhandled = unhandled_.load(std::memory_order_relaxed);
  s.refused_in = refused_in_.load(std::memory_order_relaxed);
  s.queue_length = out_.length();
  detail::conn_mux& mx = *mux_;
  {
    std::lock_guard lk(mx.mu);
    s.calls_out = mx.outgoing.size();
    s.calls_in = mx.incoming.size() + mx.sync_in.load(std::memory_order_relaxed);
    s.streams_out = mx.streams_out.size();
    s.streams_in = mx.streams_in.size();
  }
  s.stream_errors = mx.stream_errors.load(std::memory_order_relaxed);
  s.calls_made = mx.calls_made.load(std::memory_order_relaxed);
  s.calls_served = mx.calls_served.load(std::memory_order_relaxed);
  s.late_responses = mx.late_responses.load(std::memory_order_relaxed);
  s.calls_cancelled = mx.cancelled.load(std::memory_order_relaxed);
  s.unhandled += mx.unknown_mux.load(std::memory_order_relaxed);
  return s;
}

COGRID_DECL asio::awaitable<result<void>> connection::wait_for_connect(on_refusal policy) {
  auto ex = co_await asio::this_coro::executor;
  std::uint64_t seen = 0;
  {
    std::lock_guard lk(w_mu_);
    seen = refusals_;
  }
  for (;;) {
    const connection_state st = state();
    if (st == connection_state::connected) co_return result<void>();
    if (st == connection_state::shutdown) co_return errc::shutdown;
    auto ch = std::make_shared<detail::wait_channel>(ex, 1);
    std::string refused;
    {
      std::lock_guard lk(w_mu_);
      if (policy == on_refusal::fail && refusals_ != seen) refused = refusal_.empty() ? std::string("refused") : refusal_;
      else waiters_.push_back(ch);
    }
    if (!refused.empty()) co_return error(errc::connection_rejected, std::move(refused));
    if (state() == st) { // else the change happened while registering: look again
      std::error_code ec;
      co_await ch->async_receive(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        std::lock_guard lk(w_mu_);
        std::erase(waiters_, std::static_pointer_cast<void>(ch));
        co_return std::error_code(asio::error::operation_aborted); // the caller cancelled the wait
      }
    }
  }
}

COGRID_DECL result<void> connection::send(const message& m) { return enqueue(m, false, detail::handoff::fresh); }

COGRID_DECL void connection::kill() { shared_->node->kill(*this); }

COGRID_DECL result<void> connection::enqueue(const message& m, bool control, detail::handoff how,
                                             std::vector<std::byte>* movable) {
  message out = m;
  out.flags |= base_flags_;
  // A call or stream given up ends what is left of its large payloads here (the peer drops the pieces it
  // had when the cancel arrives): the caller's cancel, or a server's end with an error. (A server's plain
  // OpDisconnectClientMux answers a message for a mux it does not hold, and must not cut off what that
  // mux's stream sent before it ended.)
  if (m.op == op_code::disconnect_server_mux || (m.op == op_code::disconnect_client_mux && has(m.flags, msg_flags::payload_is_err)))
    out_.cancel_flow(m.mux_id, m.op);
  return out_.push(out, control, how, movable);
}










} // namespace cogrid

#endif // COGRID_IMPL_CONNECTION_IPP
