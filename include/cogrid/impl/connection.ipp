// cogrid/impl/connection.ipp — definitions for cogrid/connection.hpp: a connection's life (the dial loop,
// adopting accepted sessions, running a session until it ends, shutdown), its outgoing queue's front,
// waiting for the link, and its statistics. The session's loops are in session.ipp, one dial in dial.ipp.
#ifndef COGRID_IMPL_CONNECTION_IPP
#define COGRID_IMPL_CONNECTION_IPP

#include <cogrid/connection.hpp>
#include <cogrid/election.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/wait_channel.hpp>
#include <cogrid/impl/dial.ipp>
#include <cogrid/impl/session.ipp>

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

// A random pause in [lo, hi). `rng` belongs to the connection and is used on its strand only (no
// thread_local: clang 16 may cache a thread_local's address across a co_await, see README).
inline std::chrono::milliseconds jitter(std::minstd_rand& rng, std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
  if (hi <= lo) return lo;
  return lo + std::chrono::milliseconds(rng() % static_cast<std::uint64_t>((hi - lo).count()));
}

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

COGRID_DECL asio::awaitable<result<void>> connection::wait_for_connect() {
  auto ex = co_await asio::this_coro::executor;
  for (;;) {
    const connection_state st = state();
    if (st == connection_state::connected) co_return result<void>();
    if (st == connection_state::shutdown) co_return errc::shutdown;
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

COGRID_DECL result<void> connection::send(const message& m) { return enqueue(m, false, detail::handoff::fresh); }

COGRID_DECL result<void> connection::enqueue(const message& m, bool control, detail::handoff how) {
  message out = m;
  out.flags |= base_flags_;
  return out_.push(out, control, how);
}

COGRID_DECL void connection::start() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->started_ || self->stopping_) return;
    self->started_ = true;
    if (self->dialer_) {
      self->dial_loop_running_ = true;
      asio::co_spawn(self->strand_, dial_loop(self), asio::bind_cancellation_slot(self->dial_cancel_.slot(), asio::detached));
    }
  });
}

COGRID_DECL void connection::kill() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->current_) self->current_->fail(make_error_code(errc::disconnected));
  });
}

COGRID_DECL void connection::adopt(std::unique_ptr<detail::ws_stream> ws, node_id remote_id) {
  // Runs on the strand; the WebSocket arrives from the acceptor's coroutine.
  auto self = shared_from_this();
  auto holder = std::make_shared<std::unique_ptr<detail::ws_stream>>(std::move(ws));
  asio::post(strand_, [self, holder, remote_id] {
    if (self->stopping_) {
      (*holder)->lower().close();
      return;
    }
    if (self->current_) self->current_->fail(make_error_code(errc::disconnected)); // replaced
    const std::uint64_t id = self->session_id_.load() + 1;
    auto s = std::make_shared<detail::session>(*self, id, std::move(*holder), remote_id);
    asio::co_spawn(self->strand_, run_session(self, s), asio::detached);
  });
}

COGRID_DECL void connection::attach(std::unique_ptr<transport> t) {
  auto holder = std::make_shared<std::unique_ptr<transport>>(std::move(t));
  asio::post(strand_, [self = shared_from_this(), holder] {
    if (self->stopping_) {
      (*holder)->close();
      return;
    }
    if (self->attached_) self->attached_->close(); // an earlier stream that was never used
    self->attached_ = std::move(*holder);
    self->attached_only_ = true;
    if (self->dial_loop_running_) {
      self->retry_timer_.cancel(); // waiting between attempts or for a stream: go now
      return;
    }
    self->started_ = true;
    self->dial_loop_running_ = true;
    asio::co_spawn(self->strand_, dial_loop(self), asio::bind_cancellation_slot(self->dial_cancel_.slot(), asio::detached));
  });
}

COGRID_DECL asio::awaitable<void> connection::dial_loop(std::shared_ptr<connection> self) {
  while (!self->stopping_) {
    if (self->attached_only_ && !self->attached_) {
      // This connection runs over streams handed to attach(): nothing to dial until the next one.
      self->set_state(connection_state::error);
      self->retry_timer_.expires_at(detail::steady::time_point::max());
      std::error_code wait_ec;
      co_await self->retry_timer_.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
      continue;
    }
    self->set_state(connection_state::connecting);
    std::unique_ptr<detail::ws_stream> ws;
    node_id rid;
    const auto started = detail::steady::now();
    self->dialing_ = true;
    const result<void> dialed = co_await self->dial_once(ws, rid);
    self->dialing_ = false;
    if (self->stopping_) break; // (shutdown cancelled the dial: no co_await from here on)
    if (dialed) {
      const std::uint64_t id = self->session_id_.load() + 1;
      auto s = std::make_shared<detail::session>(*self, id, std::move(ws), rid);
      co_await run_session(self, s);
      continue; // redial at once after a session ends, as MinIO does
    }
    {
      std::lock_guard lk(self->st_mu_);
      ++self->st_.dial_failures;
    }
    self->set_state(connection_state::error);
    // Wait a random 1-2 s (by default) counted from the start of the attempt.
    const auto wait = detail::jitter(self->rng_, self->shared_->opt.reconnect_min, self->shared_->opt.reconnect_max);
    self->retry_timer_.expires_at(started + wait);
    std::error_code wait_ec;
    co_await self->retry_timer_.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
  }
  self->dial_loop_running_ = false;
  self->loop_done_.cancel();
}

COGRID_DECL asio::awaitable<void> connection::run_session(std::shared_ptr<connection> self, std::shared_ptr<detail::session> s) {
  if (self->stopping_) {
    s->ws->lower().close();
    co_return;
  }
  self->current_ = s;
  self->session_id_.store(s->id, std::memory_order_release);
  {
    std::lock_guard lk(self->st_mu_);
    const bool had = self->st_.connects > 0;
    ++self->st_.connects;
    if (had) ++self->st_.reconnects;
    if (had && !(self->remote_id_ == s->remote_id)) ++self->st_.remote_restarts;
    self->remote_id_ = s->remote_id;
    self->st_.last_connect = std::chrono::system_clock::now();
    self->st_.last_pong = self->st_.last_connect;
  }
  self->out_.open(s->id);
  s->ws->on_control_output = [c = self.get()] { c->out_.wake_writer(detail::handoff::continuation); };
  self->log(log_level::info, "connected (session " + std::to_string(s->id) + ", remote " + s->remote_id.to_string() + ")");
  self->set_state(connection_state::connected);

  std::weak_ptr<detail::session_join> join;
  {
    auto j = std::make_shared<detail::session_join>();
    join = j;
    asio::co_spawn(self->strand_, detail::session::read_loop(s), detail::session_loop_done{s, j});
    asio::co_spawn(self->strand_, detail::session::write_loop(s), detail::session_loop_done{s, j});
    asio::co_spawn(self->strand_, detail::session::health_loop(s), detail::session_loop_done{s, std::move(j)});
  }
  detail::session_loops_wait wait_loops{std::move(join)};
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(std::move(wait_loops),
                                                                                     asio::use_awaitable);
  self->end_session(*s);
}

COGRID_DECL void connection::end_session(detail::session& s) {
  const std::size_t dropped = out_.close(s.id);
  s.ws->on_control_output = nullptr;
  {
    std::lock_guard lk(st_mu_);
    st_.dropped_on_disconnect += dropped;
    st_.last_error = "session ended: " + s.why_text;
  }
  log(log_level::info, "session " + std::to_string(s.id) + " ended: " + s.why_text);
  if (current_.get() == &s) {
    current_.reset();
    session_done_.cancel();
    set_state(stopping_ ? connection_state::shutdown : connection_state::error);
  }
  if (message_sink* sink = shared_->sink.load(std::memory_order_acquire)) sink->on_session_end(*this, s.id, s.why);
}

COGRID_DECL asio::awaitable<void> connection::shutdown() {
  // Hop onto the strand for the state changes.
  co_await asio::co_spawn(strand_, shutdown_on_strand(shared_from_this()), asio::use_awaitable);
}

COGRID_DECL asio::awaitable<void> connection::shutdown_on_strand(std::shared_ptr<connection> c) {
  c->stopping_ = true;
  {
    std::lock_guard lk(c->mux_->mu); // the calls' deadline timer: nothing to wait for any more
    c->mux_->deadline_timer.cancel();
    c->mux_->timer_at = detail::steady::time_point::max();
  }
  c->retry_timer_.cancel();
  if (c->dialing_) c->dial_cancel_.emit(asio::cancellation_type::terminal); // a dial in progress ends now
  if (c->current_) c->current_->fail(make_error_code(errc::shutdown));
  if (c->dial_loop_running_) {
    std::error_code ec;
    co_await c->loop_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  // A session still winding down (acceptor side) ends on its own once failed; end_session signals.
  while (c->current_) {
    std::error_code ec;
    c->session_done_.expires_at(detail::steady::time_point::max());
    co_await c->session_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  c->set_state(connection_state::shutdown);
}

} // namespace cogrid

#endif // COGRID_IMPL_CONNECTION_IPP
