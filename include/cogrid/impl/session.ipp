// cogrid/impl/session.ipp — definitions for cogrid/connection.hpp: a connection's life (construction,
// the dial loop, sessions with their reader, writer and health loops, shutdown). Part of what
// impl/node.ipp brings in.
#ifndef COGRID_IMPL_SESSION_IPP
#define COGRID_IMPL_SESSION_IPP

#include <cogrid/detail/service.hpp>
#include <cogrid/election.hpp>
#include <cogrid/impl/connection.ipp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/http.hpp>
#include <cogrid/detail/transport.hpp>
#include <cogrid/detail/websocket.hpp>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/execution/context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/query.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <random>

namespace cogrid {
namespace detail {

/// One established WebSocket session of a connection. Lives on the connection's strand.
struct session {
  session(std::uint64_t id_, std::unique_ptr<ws_stream> ws_, node_id remote, const connection::executor_type& ex)
      : id(id_), ws(std::move(ws_)), remote_id(remote), tick(ex) {}

  /// Ends the session once: closes the transport (the reader and writer then stop) and wakes the others.
  void fail(std::error_code ec, std::string text = {}) {
    if (failed) return;
    failed = true;
    why = ec;
    why_text = text.empty() ? ec.message() : std::move(text);
    ws->lower().close();
    if (conn) conn->wake_writer();
    tick.cancel();
  }

  std::uint64_t id;
  std::unique_ptr<ws_stream> ws;
  node_id remote_id;
  connection* conn = nullptr; // set by run_session: fail() wakes its writer
  asio::steady_timer tick; // the health loop's clock
  bool failed = false;
  std::error_code why;
  std::string why_text;
  bool writing = false;
  steady::time_point write_started{};
  steady::time_point last_pong = steady::now();
  steady::time_point last_ping_sent = steady::now();
  std::vector<std::byte> rbuf, wbuf, wqueue, container, scratch;
  std::vector<std::uint32_t> wends;
};

// The reader, writer and health loops are separate coroutines joined here, not a parallel group: each
// ends by itself once the session fails (fail() closes the transport, wakes the writer and cancels the
// health clock), so none needs a cancellation slot, and with none connected their socket operations
// allocate no cancellation handlers (Asio allocates one per operation on a connected slot). A loop
// that throws fails the session, so the others end too.
//
// The join is owned by the three loops' completion handlers only, never by run_session's frame (which
// holds the session): if the io_context is destroyed while the loops wait in it, their handlers go, the
// join goes, and with it the stored handler of run_session and its frame. A writer parked in
// connection::writer_w_ is not in the io_context, though: its handler (and through it the join and
// run_session, which holds the connection) stays reachable from the connection, a cycle that shutdown()
// breaks, or else connection::abandon() when the io_context is destroyed (detail/registry.hpp).
struct session_join {
  int running = 3; // the reader, writer and health loops not yet ended
  waiter done;     // run_session, until they have
};

struct session_loop_done {
  std::shared_ptr<session> s;
  std::shared_ptr<session_join> j;
  void operator()(std::exception_ptr e) const {
    if (e && !s->failed) {
      std::string what = "a session loop failed";
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        what += std::string(": ") + ex.what();
      } catch (...) {
      }
      s->fail(make_error_code(errc::disconnected), std::move(what));
    }
    if (--j->running == 0) {
      waiter w;
      take_waiter(j->done, w);
      wake(std::move(w));
    }
  }
};

// run_session waits here (on the strand) until the three loops have ended.
struct session_loops_wait {
  std::weak_ptr<session_join> j;
  void operator()(wait_handler h) const {
    std::shared_ptr<session_join> join = j.lock();
    if (!join || join->running == 0) {
      waiter now;
      now.h.emplace(std::move(h));
      wake(std::move(now));
    } else {
      join->done.h.emplace(std::move(h)); // not cancellable: the loops end once the session fails
    }
  }
};

// A random pause in [lo, hi). `rng` belongs to the connection and is used on its strand only (no
// thread_local: clang 16 may cache a thread_local's address across a co_await, see README).
inline std::chrono::milliseconds jitter(std::minstd_rand& rng, std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
  if (hi <= lo) return lo;
  return lo + std::chrono::milliseconds(rng() % static_cast<std::uint64_t>((hi - lo).count()));
}

inline asio::awaitable<std::error_code> tcp_connect(asio::ip::tcp::socket& s, asio::ip::tcp::resolver::results_type eps) {
  std::error_code e;
  co_await asio::async_connect(s, eps, asio::redirect_error(asio::use_awaitable, e));
  co_return e;
}

inline asio::awaitable<std::error_code> tls_handshake(asio::ssl::stream<asio::ip::tcp::socket>& s,
                                                      asio::ssl::stream_base::handshake_type type) {
  std::error_code e;
  co_await s.async_handshake(type, asio::redirect_error(asio::use_awaitable, e));
  co_return e;
}

/// Time left until `deadline`, at least 1 ms.
inline std::chrono::milliseconds time_left(steady::time_point deadline) {
  return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()));
}

} // namespace detail

COGRID_DECL connection::connection(std::shared_ptr<detail::grid_shared> shared, std::string remote, asio::any_io_executor ex)
    : shared_(std::move(shared)), mux_(std::make_unique<detail::conn_mux>(ex)), local_(shared_->local), remote_(std::move(remote)),
      dialer_(should_connect(local_, remote_)), base_flags_(msg_flags::none), strand_(detail::make_strand_executor(ex)),
      retry_timer_(strand_), loop_done_(strand_), session_done_(strand_), rng_(std::random_device{}()) {
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

COGRID_DECL void connection::set_state(connection_state s) {
  if (state_.exchange(s, std::memory_order_acq_rel) == s) return;
  std::vector<std::shared_ptr<void>> w;
  {
    std::lock_guard lk(w_mu_);
    w.swap(waiters_);
  }
  for (auto& p : w) static_cast<detail::wait_channel*>(p.get())->try_send(std::error_code{}, 0);
}

namespace detail {
// The writer's park was cancelled (its session is being torn down): resume it with operation_aborted.
struct writer_cancel_fn {
  connection* c;
  void operator()(asio::cancellation_type) const { c->unpark_writer(asio::error::operation_aborted); }
};
// Parks the writer until wake_writer (on the connection's strand, inside the writer's co_await).
struct writer_park {
  connection* c;
  session* s;
  void operator()(wait_handler h) const { c->park_writer(*s, std::move(h)); }
};
} // namespace detail

COGRID_DECL void connection::unpark_writer(std::error_code ec) {
  detail::waiter w;
  {
    std::lock_guard lk(q_mu_);
    detail::take_waiter(writer_w_, w);
  }
  detail::wake(std::move(w), ec);
}

COGRID_DECL void connection::park_writer(detail::session& s, detail::wait_handler h) {
  detail::handoff_scope handing_off; // the writer is suspended
  detail::waiter now;
  {
    std::lock_guard lk(q_mu_);
    if (s.failed || wake_pending_ || !q_ends_.empty()) { // woken (or work came) since the writer looked
      wake_pending_ = false;
      now.h.emplace(std::move(h));
    } else {
      detail::arm(writer_w_, std::move(h), detail::writer_cancel_fn{this});
    }
  }
  detail::wake(std::move(now));
}

COGRID_DECL void connection::start() {
  asio::post(strand_, [self = shared_from_this()] {
    if (self->started_ || self->stopping_) return;
    self->started_ = true;
    if (self->dialer_) {
      self->dial_loop_running_ = true;
      asio::co_spawn(self->strand_, dial_loop(self), asio::detached);
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
    auto s = std::make_shared<detail::session>(id, std::move(*holder), remote_id, self->strand_);
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
    asio::co_spawn(self->strand_, dial_loop(self), asio::detached);
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
    const std::error_code ec = co_await self->dial_once(ws, rid);
    if (self->stopping_) break;
    if (!ec) {
      const std::uint64_t id = self->session_id_.load() + 1;
      auto s = std::make_shared<detail::session>(id, std::move(ws), rid, self->strand_);
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

COGRID_DECL asio::awaitable<std::error_code> connection::dial_once(std::unique_ptr<detail::ws_stream>& ws, node_id& remote_id) {
  using asio::ip::tcp;
  const connection_options& opt = shared_->opt;
  detail::host_url url;
  if (auto ec = detail::parse_host_url(remote_, url)) {
    set_last_error("bad remote host " + remote_);
    co_return ec;
  }
  std::error_code ec;
  std::unique_ptr<detail::transport> t = std::move(attached_); // a stream handed to attach(), used once
  const auto deadline = detail::steady::now() + opt.dial_timeout;
  try {
    if (!t && shared_->dialer) {
      std::string why;
      ec = co_await detail::with_deadline(detail::dial_into(shared_->dialer, remote_, t, why), opt.dial_timeout);
      if (ec) throw std::system_error(ec, why.empty() ? std::string("dialer") : "dialer: " + why); // a transport opened after the deadline is dropped
      if (!t) throw std::system_error(make_error_code(errc::disconnected), "dialer returned no transport");
    }
    if (!t) {
      tcp::resolver resolver(strand_);
      auto endpoints = co_await resolver.async_resolve(url.host, std::to_string(url.port), asio::use_awaitable);
      tcp::socket sock(strand_);
      ec = co_await detail::with_deadline(detail::tcp_connect(sock, endpoints), detail::time_left(deadline));
      if (ec) throw std::system_error(ec);
      if (url.tls) {
        if (!shared_->tls_client) throw std::system_error(make_error_code(errc::invalid_value), "no TLS client context for https:// remote");
        using ssl_stream = asio::ssl::stream<tcp::socket>;
        ssl_stream stream(std::move(sock), *shared_->tls_client);
        SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());
        stream.set_verify_callback(asio::ssl::host_name_verification(url.host));
        ec = co_await detail::with_deadline(detail::tls_handshake(stream, asio::ssl::stream_base::client),
                                            detail::time_left(deadline));
        if (ec) throw std::system_error(ec);
        t = detail::make_tls_transport(std::move(stream));
      } else {
        t = detail::make_tcp_transport(std::move(sock));
      }
    }
    std::vector<std::pair<std::string, std::string>> headers;
    const std::string token = shared_->auth.token ? shared_->auth.token() : std::string();
    headers.emplace_back("Authorization", "Bearer " + token);
    headers.emplace_back("X-Minio-Time", std::to_string(wire_time::now().unix_nanos()));
    std::vector<std::byte> leftover;
    detail::ws_limits limits{opt.max_http_header_bytes, opt.max_message_bytes};
    int status = 0;
    ec = co_await detail::with_deadline(
        detail::ws_client_handshake(*t, url.authority(), shared_->route, headers, limits, leftover, &status),
        detail::time_left(deadline));
    if (ec) {
      set_last_error("WebSocket upgrade failed: " + ec.message() + (status ? " (HTTP " + std::to_string(status) + ")" : ""));
      t->close();
      co_return ec;
    }
    ws = std::make_unique<detail::ws_stream>(std::move(t), detail::ws_role::client, limits, std::move(leftover));

    // The connect exchange: OpConnect out, OpConnectResponse back, each with a deadline.
    connect_request req{shared_->id, local_, wire_time::now(), token};
    std::vector<std::byte> payload, wire, frame;
    encode_append(req, payload);
    message m;
    m.op = op_code::connect;
    m.payload = std::span<const std::byte>(payload);
    if (auto e = encode_append(m, wire)) throw std::system_error(e);
    ws->frame_binary(wire, frame);
    ec = co_await detail::with_deadline(ws->write_raw(frame), opt.handshake_timeout);
    if (ec) throw std::system_error(ec);
    std::vector<std::byte> in;
    ec = co_await detail::with_deadline(ws->read_message(in), opt.handshake_timeout);
    if (ec) throw std::system_error(ec);
    const result<message> reply = decode(in);
    if (!reply) throw std::system_error(reply.error());
    if (reply->op != op_code::connect_response || !reply->payload) throw std::system_error(make_error_code(errc::unexpected_message));
    connect_response resp;
    if (auto e = decode(*reply->payload, resp)) throw std::system_error(e);
    if (!resp.accepted) {
      set_last_error("connection rejected: " + resp.rejected_reason);
      log(log_level::warning, "connection rejected: " + resp.rejected_reason);
      ws->lower().close();
      co_return make_error_code(errc::connection_rejected);
    }
    remote_id = resp.id;
    co_return std::error_code{};
  } catch (const std::system_error& e) {
    ec = e.code();
    set_last_error(std::string("dial failed: ") + e.what());
  }
  if (ws) ws->lower().close();
  else if (t) t->close();
  co_return ec;
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
  {
    std::lock_guard lk(self->q_mu_);
    self->q_buf_.clear();
    self->q_ends_.clear();
    self->q_session_ = s->id;
    self->writer_idle_ = false;
  }
  s->conn = self.get();
  // A raw pointer: the reader calls it while run_session (holding the connection) runs; a shared_ptr here
  // would make connection -> session -> ws -> connection a cycle if the io_context went without a shutdown.
  s->ws->on_control_output = [c = self.get()] { c->wake_writer(); };
  self->log(log_level::info, "connected (session " + std::to_string(s->id) + ", remote " + s->remote_id.to_string() + ")");
  self->set_state(connection_state::connected);

  std::weak_ptr<detail::session_join> join;
  {
    auto j = std::make_shared<detail::session_join>();
    join = j;
    asio::co_spawn(self->strand_, self->reader(s), detail::session_loop_done{s, j});
    asio::co_spawn(self->strand_, self->writer(s), detail::session_loop_done{s, j});
    asio::co_spawn(self->strand_, self->health(s), detail::session_loop_done{s, std::move(j)});
  }
  detail::session_loops_wait wait_loops{std::move(join)};
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(std::move(wait_loops),
                                                                                     asio::use_awaitable);

  self->end_session(*s, s->why);
}

COGRID_DECL void connection::end_session(detail::session& s, std::error_code why) {
  std::size_t dropped = 0;
  {
    std::lock_guard lk(q_mu_);
    if (q_session_ == s.id) {
      dropped = q_ends_.size();
      q_buf_.clear();
      q_ends_.clear();
      q_session_ = 0;
    }
  }
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
  if (message_sink* sink = shared_->sink.load(std::memory_order_acquire)) sink->on_session_end(*this, s.id, why);
}

COGRID_DECL asio::awaitable<void> connection::reader(std::shared_ptr<detail::session> s) {
  while (!s->failed) {
    const std::error_code ec = co_await s->ws->read_message(s->rbuf);
    if (ec) {
      if (ec == condition::protocol_violation && !s->failed) { // a bad frame, or one over the size limit
        {
          std::lock_guard lk(st_mu_);
          ++st_.protocol_errors;
        }
        log(log_level::error, "malformed WebSocket frame from remote: " + ec.message());
        s->fail(ec, "malformed WebSocket frame from remote: " + ec.message());
      } else {
        s->fail(ec);
      }
      break;
    }
    bytes_in_.fetch_add(s->rbuf.size(), std::memory_order_relaxed);
    if (block_inbound_.load(std::memory_order_relaxed)) continue;
    detail::handoff_scope handing_off; // the batch is dispatched by our code alone (no co_await in it)
    const std::error_code perr = for_each_message(s->rbuf, [&](const message& m) {
      messages_in_.fetch_add(1, std::memory_order_relaxed);
      if (!s->failed) handle(*s, m);
    });
    if (perr) {
      {
        std::lock_guard lk(st_mu_);
        ++st_.protocol_errors;
      }
      log(log_level::error, "malformed message from remote: " + perr.message());
      s->fail(perr, "malformed message from remote: " + perr.message());
    }
  }
}

COGRID_DECL void connection::handle(detail::session& s, const message& m) {
  if (m.mux_id == 0 && m.op == op_code::ping) {
    ping_msg ping;
    if (m.payload) (void)decode(*m.payload, ping);
    pong_msg pong;
    pong.time = ping.time;
    s.scratch.clear();
    encode_append(pong, s.scratch);
    message reply;
    reply.seq = m.seq;
    reply.deadline_ms = m.deadline_ms;
    reply.op = op_code::pong;
    reply.payload = std::span<const std::byte>(s.scratch);
    (void)enqueue(reply, true);
    return;
  }
  if (m.mux_id == 0 && m.op == op_code::pong) {
    pong_msg pong;
    if (m.payload && !decode(*m.payload, pong)) {
      s.last_pong = detail::steady::now();
      const auto now = std::chrono::system_clock::now();
      std::lock_guard lk(st_mu_);
      st_.last_pong = now;
      // The pong echoes our ping's time; a peer may echo anything: only a time in the last hour counts.
      const std::int64_t now_ns = wire_time::now().unix_nanos(), sent_ns = pong.time.unix_nanos();
      if (!pong.time.is_zero() && sent_ns <= now_ns && detail::abs_diff(now_ns, sent_ns) < 3'600'000'000'000ULL)
        st_.last_ping_rtt = std::chrono::microseconds((now_ns - sent_ns) / 1000);
    } else {
      unhandled_.fetch_add(1, std::memory_order_relaxed);
    }
    return;
  }
  if (m.op == op_code::connect || m.op == op_code::connect_response || m.op == op_code::disconnect) {
    unhandled_.fetch_add(1, std::memory_order_relaxed);
    log(log_level::warning, std::string("unexpected ") + to_string(m.op) + " on an established connection");
    return;
  }
  if (message_sink* sink = shared_->sink.load(std::memory_order_acquire)) {
    sink->on_message(*this, m);
  } else {
    unhandled_.fetch_add(1, std::memory_order_relaxed);
  }
}

COGRID_DECL asio::awaitable<void> connection::writer(std::shared_ptr<detail::session> s) {
  const connection_options& opt = shared_->opt;
  bool yielded = false;
  while (!s->failed) {
    s->wqueue.clear();
    s->wends.clear();
    {
      std::lock_guard lk(q_mu_);
      s->wqueue.swap(q_buf_);
      s->wends.swap(q_ends_);
      wake_pending_ = false; // everything up to here is seen below
      // Sleeping next: producers on other threads must wake us (after one yield, see below).
      if (s->wends.empty() && yielded) writer_idle_ = true;
    }
    s->wbuf.clear();
    const bool control = s->ws->take_control_output(s->wbuf);
    if (s->wends.empty() && !control) {
      if (!yielded) {
        // Give producers on this strand one turn before sleeping, so their messages merge (MinIO's Gosched).
        yielded = true;
        co_await asio::post(strand_, asio::use_awaitable);
        continue;
      }
      yielded = false;
      // Park until a producer or fail() wakes us: one hand-off, no timer.
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(detail::writer_park{this, s.get()},
                                                                                         asio::use_awaitable);
      continue;
    }
    yielded = false;
    // Frame the batch: runs of up to merge_max_messages / merge_max_bytes go into one OpMerged container;
    // a run of one goes alone. All frames leave in one socket write.
    const std::size_t n = s->wends.size();
    std::size_t i = 0;
    std::uint32_t start = 0;
    while (i < n) {
      std::size_t j = i, bytes = 0;
      std::uint32_t end = start;
      while (j < n && j - i < opt.merge_max_messages) {
        const std::size_t len = s->wends[j] - end;
        if (j > i && bytes + len > opt.merge_max_bytes) break;
        bytes += len;
        end = s->wends[j];
        ++j;
      }
      const std::span<const std::byte> run(s->wqueue.data() + start, end - start);
      if (j - i == 1) {
        s->ws->frame_binary(run, s->wbuf);
      } else {
        merge_builder mb(s->container);
        std::uint32_t at = start;
        for (std::size_t k = i; k < j; ++k) {
          (void)mb.add(std::span<const std::byte>(s->wqueue.data() + at, s->wends[k] - at));
          at = s->wends[k];
        }
        s->ws->frame_binary(mb.finish(), s->wbuf);
      }
      start = end;
      i = j;
    }
    messages_out_.fetch_add(n, std::memory_order_relaxed);
    bytes_out_.fetch_add(s->wbuf.size(), std::memory_order_relaxed);
    s->writing = true;
    s->write_started = detail::steady::now();
    std::error_code ec = make_error_code(errc::disconnected);
    if (s->ws->begin_write()) {
      std::error_code transport_ec;
      co_await s->ws->lower().write_all(asio::buffer(s->wbuf), transport_ec);
      ec = s->ws->end_write(transport_ec);
    }
    s->writing = false;
    writes_.fetch_add(1, std::memory_order_relaxed);
    if (ec) s->fail(ec);
    // Give back memory after a burst of large messages (MinIO keeps merge buffers <= 256 KiB).
    if (s->wbuf.capacity() > (256u << 10)) std::vector<std::byte>().swap(s->wbuf);
    if (s->container.capacity() > (256u << 10)) std::vector<std::byte>().swap(s->container);
    if (s->wqueue.capacity() > (256u << 10)) std::vector<std::byte>().swap(s->wqueue);
  }
}

COGRID_DECL asio::awaitable<void> connection::health(std::shared_ptr<detail::session> s) {
  const connection_options& opt = shared_->opt;
  const auto tick = std::clamp(std::min({opt.ping_interval, opt.pong_timeout, opt.write_timeout}) / 4,
                               std::chrono::milliseconds(1), std::chrono::milliseconds(1000));
  std::vector<std::byte> payload;
  while (!s->failed) {
    s->tick.expires_after(tick);
    std::error_code ec;
    co_await s->tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (s->failed) break;
    const auto now = detail::steady::now();
    if (s->writing && now - s->write_started > opt.write_timeout) {
      log(log_level::warning, "write timeout: the remote stopped reading");
      s->fail(make_error_code(errc::timeout), "write timeout: the remote stopped reading");
      break;
    }
    if (now - s->last_pong > opt.pong_timeout) {
      log(log_level::warning, "no pong within the timeout: the remote is not answering");
      s->fail(make_error_code(errc::timeout), "no pong within the timeout: the remote is not answering");
      break;
    }
    if (now - s->last_ping_sent >= opt.ping_interval) {
      s->last_ping_sent = now;
      payload.clear();
      encode_append(ping_msg{wire_time::now()}, payload);
      message ping;
      ping.deadline_ms = static_cast<std::uint32_t>(opt.ping_interval.count());
      ping.op = op_code::ping;
      ping.payload = std::span<const std::byte>(payload);
      ping.flags = msg_flags::none;
      // MinIO sends connection pings without CRC; the queue adds base flags, which a peer accepts either way.
      (void)enqueue(ping, true);
    }
  }
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

#endif // COGRID_IMPL_SESSION_IPP
