// cogrid/impl/connection.ipp — definitions for cogrid/connection.hpp: what a service's file reaches
// (statistics, waiting for the link, the outgoing queue). The sessions behind it are in session.ipp.
#ifndef COGRID_IMPL_CONNECTION_IPP
#define COGRID_IMPL_CONNECTION_IPP

#include <cogrid/detail/service.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/wait_channel.hpp>

#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>

namespace cogrid {
namespace detail {

using steady = std::chrono::steady_clock;

} // namespace detail

// The io_context is being destroyed with this connection running (no shutdown()): no thread runs it
// any more. The handlers parked in our objects are destroyed, which hands their coroutines' frames to
// the context (destroyed with its queue); the frames held the connection, so it goes with them.
COGRID_DECL void connection::abandon(asio::execution_context& ctx) {
  detail::waiter writer;
  {
    std::lock_guard lk(q_mu_);
    detail::take_waiter(writer_w_, writer);
  }
  detail::drop(std::move(writer));
  detail::abandon_calls(*this, ctx); // the writer runs on our strand, in `ctx`
  // An in-memory pipe under the session stores its reader's and writer's handlers too: it is enrolled
  // itself (transport.hpp), and severed by the same service.
}

COGRID_DECL node_id connection::remote_id() const {
  std::lock_guard lk(st_mu_);
  return remote_id_;
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
  s.queue_full = queue_full_.load(std::memory_order_relaxed);
  s.unhandled = unhandled_.load(std::memory_order_relaxed);
  {
    std::lock_guard lk(q_mu_);
    s.queue_length = q_ends_.size();
  }
  {
    std::lock_guard lk(mux_->mu);
    s.calls_out = mux_->outgoing.size();
    s.calls_in = mux_->incoming.size() + mux_->sync_in.load(std::memory_order_relaxed);
    s.streams_out = mux_->streams_out.size();
    s.streams_in = mux_->streams_in.size();
  }
  s.stream_errors = mux_->stream_errors.load(std::memory_order_relaxed);
  s.calls_made = mux_->calls_made.load(std::memory_order_relaxed);
  s.calls_served = mux_->calls_served.load(std::memory_order_relaxed);
  s.late_responses = mux_->late_responses.load(std::memory_order_relaxed);
  s.calls_cancelled = mux_->cancelled.load(std::memory_order_relaxed);
  s.unhandled += mux_->unknown_mux.load(std::memory_order_relaxed);
  return s;
}

COGRID_DECL const connection_options& connection::options() const noexcept { return shared_->opt; }

COGRID_DECL void connection::log(log_level level, const std::string& text) const {
  if (shared_->log) shared_->log(level, "grid " + local_ + " -> " + remote_ + ": " + text);
}

COGRID_DECL void connection::set_last_error(const std::string& text) {
  std::lock_guard lk(st_mu_);
  st_.last_error = text;
}

COGRID_DECL asio::awaitable<std::error_code> connection::wait_for_connect() {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    const connection_state st = state();
    if (st == connection_state::connected) co_return std::error_code{};
    if (st == connection_state::shutdown) co_return make_error_code(errc::shutdown);
    auto ch = std::make_shared<detail::wait_channel>(ex, 1);
    {
      std::lock_guard lk(w_mu_);
      waiters_.push_back(ch);
    }
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

COGRID_DECL std::error_code connection::send(const message& m) { return enqueue(m, false); }

COGRID_DECL std::error_code connection::enqueue(const message& m, bool control) {
  message out = m;
  out.flags |= base_flags_;
  bool wake = false;
  {
    std::lock_guard lk(q_mu_);
    if (q_session_ == 0) return errc::disconnected;
    if (!control && q_ends_.size() >= shared_->opt.max_queue_messages) {
      queue_full_.fetch_add(1, std::memory_order_relaxed);
      return errc::queue_full;
    }
    if (auto ec = encode_append(out, q_buf_)) return ec;
    q_ends_.push_back(static_cast<std::uint32_t>(q_buf_.size()));
    wake = writer_idle_;
    writer_idle_ = false;
  }
  if (wake) wake_writer();
  return {};
}

COGRID_DECL void connection::wake_writer() {
  detail::waiter w;
  {
    std::lock_guard lk(q_mu_);
    if (writer_w_.h) detail::take_waiter(writer_w_, w);
    else wake_pending_ = true; // the writer is not parked (yet): it will not park
  }
  detail::wake(std::move(w));
}

} // namespace cogrid

#endif // COGRID_IMPL_CONNECTION_IPP
