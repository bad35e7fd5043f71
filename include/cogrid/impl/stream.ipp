// cogrid/impl/stream.ipp — definitions for cogrid/detail/stream_core.hpp.
//
// Wire rules (grid-protocol.md §3.1, §3.3, §3.4): the caller sends OpConnectMux (seq 0) and nothing else
// before the handler's OpAckMux; each side numbers every message it sends on the mux (connect, ack, data,
// EOF, unblocks, pings) and checks the numbers of data, unblock, ack and ping messages; a message that
// is delivered to the user returns one credit (OpUnblockSrvMux / OpUnblockClMux); the handler's EOF costs
// a credit, the caller's EOF does not.
#ifndef COGRID_IMPL_STREAM_IPP
#define COGRID_IMPL_STREAM_IPP

#include <cogrid/detail/stream_core.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/control.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/post.hpp>

namespace cogrid::detail {

using steady_clock = std::chrono::steady_clock;

// Sends `m` numbered with `seq` and advances `seq` only when it was queued, so that a refused message
// leaves no gap. Stream messages are never refused for a full queue: credits bound them already.
inline std::error_code send_numbered(connection& c, message& m, std::uint32_t& seq) {
  m.seq = seq;
  std::error_code ec = c.send_control(m);
  if (!ec) ++seq;
  return ec;
}

inline message mux_message(std::uint64_t mux, op_code op, msg_flags flags = msg_flags::none) {
  message m;
  m.mux_id = mux;
  m.op = op;
  m.flags = flags;
  return m;
}

// -- the server side ------------------------------------------------------------------------------------

COGRID_DECL server_stream::server_stream(std::shared_ptr<connection> c, asio::any_io_executor s)
    : conn(std::move(c)), strand(std::move(s)), deadline_timer(strand), ping_timer(strand) {}

// Takes the stream off its connection (once) and records how it ended. Called without s.mu held.
inline void server_unlist(server_stream& s) {
  conn_mux& mx = s.conn->mux();
  {
    std::lock_guard lk(mx.mu);
    std::shared_ptr<server_stream>* found = mx.streams_in.find(s.mux);
    if (!found || found->get() != &s) return;
    mx.streams_in.take(s.mux);
  }
  call_meter meter;
  std::error_code status;
  std::size_t in = 0, out = 0;
  {
    std::lock_guard lk(s.mu);
    meter = std::exchange(s.meter, call_meter{});
    if (s.cancelled) status = asio::error::operation_aborted;
    else if (s.eof_is_error) status = make_error_code(errc::remote_error);
    in = s.bytes_in;
    out = s.bytes_out;
  }
  meter.end(s.conn->shared().trace, s.conn->remote(), status, in, out);
}

// On the stream's strand: stops what the generator awaits and the stream's timers.
inline void stop_server_timers(server_stream& s) {
  s.cancel_signal.emit(asio::cancellation_type::terminal);
  s.deadline_timer.cancel();
  s.ping_timer.cancel();
}

struct stop_server_timers_fn {
  std::shared_ptr<server_stream> s;
  void operator()() const { stop_server_timers(*s); }
};

// Under s.mu: the current value of the generator, as OpMuxServerMsg.
inline void send_value(server_stream& s) {
  s.scratch.clear();
  message m = mux_message(s.mux, op_code::mux_server_msg);
  m.payload = s.gen->encode(*s.gen, s.scratch);
  if (m.payload) s.bytes_out += m.payload->size();
  (void)send_numbered(*s.conn, m, s.send_seq);
}

// Under s.mu: the handler's end, OpMuxServerMsg|EOF (|PayloadIsErr with its text).
inline void send_eof(server_stream& s) {
  message m = mux_message(s.mux, op_code::mux_server_msg, msg_flags::eof);
  if (s.eof_is_error) {
    m.flags |= msg_flags::payload_is_err;
    m.payload = std::as_bytes(std::span(s.eof_text.data(), s.eof_text.size()));
  }
  (void)send_numbered(*s.conn, m, s.send_seq);
}

// Stops the handler: its generator is resumed (to throw operation_aborted) or its awaited operation is
// cancelled. With a non-empty `tell`, the caller gets OpDisconnectClientMux carrying that error. True when
// a running handler was stopped (not one that had returned and waits to send its EOF).
inline bool server_cancel(const std::shared_ptr<server_stream>& sp, const std::string& tell) {
  server_stream& s = *sp;
  std::coroutine_handle<> w;
  bool running = false;
  {
    std::lock_guard lk(s.mu);
    if (s.cancelled || (s.finished && !s.eof_pending)) return false;
    running = !s.finished;
    s.cancelled = true;
    s.eof_pending = false;
    if (!tell.empty() && s.conn->session_id() == s.session) {
      message m = mux_message(s.mux, op_code::disconnect_client_mux, msg_flags::payload_is_err);
      m.payload = std::as_bytes(std::span(tell.data(), tell.size()));
      (void)send_numbered(*s.conn, m, s.send_seq);
    }
    w = std::exchange(s.input_waiter, nullptr);
    if (!w) w = std::exchange(s.yield_waiter, nullptr);
  }
  server_unlist(s);
  if (w) post_continuation(s.strand, owned_resume(w));
  post_continuation(s.strand, stop_server_timers_fn{sp});
  return running;
}

// The caller gave up (cancel, deadline, lost pings): the handler stops and is counted as cancelled.
inline void server_abandon(const std::shared_ptr<server_stream>& sp, const std::string& tell) {
  if (server_cancel(sp, tell)) sp->conn->mux().cancelled.fetch_add(1, std::memory_order_relaxed);
}

// The caller broke the stream's rules: the stream ends with `text` told to the caller; the connection stays.
inline void server_violation(const std::shared_ptr<server_stream>& sp, const std::string& text) {
  sp->conn->mux().stream_errors.fetch_add(1, std::memory_order_relaxed);
  server_cancel(sp, text);
}

COGRID_DECL bool server_on_yield(server_stream& s, std::coroutine_handle<> h) {
  std::lock_guard lk(s.mu);
  if (s.cancelled) return false;
  if (s.credits > 0) {
    --s.credits;
    send_value(s);
    return false;
  }
  s.yield_waiter = h;
  return true;
}

COGRID_DECL bool server_on_next(server_stream& s, std::coroutine_handle<> h) {
  std::lock_guard lk(s.mu);
  if (s.cancelled || !s.input.empty() || s.input_closed) return false;
  s.input_waiter = h;
  return true;
}

COGRID_DECL void server_check_cancelled(server_stream& s) {
  std::lock_guard lk(s.mu);
  if (s.cancelled) throw std::system_error(asio::error::operation_aborted);
}

COGRID_DECL bool server_take_input(server_stream& s, payload& out) {
  std::lock_guard lk(s.mu);
  if (s.cancelled) throw std::system_error(asio::error::operation_aborted);
  if (s.input.empty()) return false; // input closed
  s.input.pop(out);
  message m = mux_message(s.mux, op_code::unblock_cl_mux);
  (void)send_numbered(*s.conn, m, s.send_seq);
  return true;
}

COGRID_DECL void server_on_finished(server_stream& s, std::exception_ptr error) {
  std::string text = error ? describe_failure(error) : std::string();
  bool closed = false;
  {
    std::lock_guard lk(s.mu);
    s.finished = true;
    s.gen = nullptr;
    if (!s.cancelled) {
      s.eof_is_error = static_cast<bool>(error);
      s.eof_text = std::move(text);
      if (s.credits > 0) {
        --s.credits;
        send_eof(s);
        closed = true;
      } else {
        s.eof_pending = true; // sent when the caller returns a credit
      }
    }
  }
  if (closed) {
    server_unlist(s);
    stop_server_timers(s); // we run on the stream's strand
  }
}

struct server_deadline_fn {
  std::shared_ptr<server_stream> s;
  void operator()(std::error_code ec) const {
    if (ec) return;
    // The caller has its own deadline and ends the stream there; the handler stops, nothing is sent.
    server_abandon(s, std::string());
  }
};

struct server_ping_check_fn {
  std::shared_ptr<server_stream> s;
  void operator()(std::error_code ec) const {
    if (ec) return;
    const connection_options& o = s->conn->options();
    bool dead = false;
    {
      std::lock_guard lk(s->mu);
      if (s->cancelled || s->finished) return;
      dead = steady_clock::now() - s->last_ping > o.stream_ping_timeout;
    }
    if (dead) {
      server_abandon(s, "no ping from the caller within " + std::to_string(o.stream_ping_timeout.count()) + " ms");
      return;
    }
    s->ping_timer.expires_after(std::min(o.stream_ping_interval, o.stream_ping_timeout));
    s->ping_timer.async_wait(*this);
  }
};

struct server_arm_fn {
  std::shared_ptr<server_stream> s;
  void operator()() const {
    const connection_options& o = s->conn->options();
    {
      std::lock_guard lk(s->mu);
      if (s->cancelled || (s->finished && !s->eof_pending)) return;
    }
    if (s->deadline_ms) {
      s->deadline_timer.expires_after(std::chrono::milliseconds(s->deadline_ms));
      s->deadline_timer.async_wait(server_deadline_fn{s});
    }
    // MinIO checks liveness only when the deadline does not come first.
    if (s->deadline_ms == 0 || std::chrono::milliseconds(s->deadline_ms) > o.stream_ping_timeout) {
      s->ping_timer.expires_after(std::min(o.stream_ping_interval, o.stream_ping_timeout));
      s->ping_timer.async_wait(server_ping_check_fn{s});
    }
  }
};

// OpConnectMux: find the handler, acknowledge, start the generator on its own strand.
inline void server_open(mux_core& core, connection& c, const message& m) {
  if (has(m.flags, msg_flags::stateless)) {
    reply_unknown_handler(c, m, "Stateless streams not supported");
    return;
  }
  std::shared_ptr<const stream_entry> entry = core.find_stream(m);
  if (!entry) {
    reply_unknown_handler(c, m);
    return;
  }
  auto s = std::allocate_shared<server_stream>(pool_allocator<server_stream>(), c.shared_from_this(), core.handler_strand());
  s->mux = m.mux_id;
  s->session = c.session_id();
  s->cap = entry->cap;
  s->deadline_ms = m.deadline_ms;
  s->recv_seq = m.seq + 1;
  s->send_seq = m.seq;
  s->credits = entry->cap.out;
  s->input.init(entry->cap.in);
  s->input_closed = entry->cap.in == 0 || has(m.flags, msg_flags::eof);
  s->last_ping = steady_clock::now();
  {
    std::lock_guard lk(c.mux().mu);
    if (c.mux().streams_in.find(m.mux_id)) { // a second connect for a live mux: ignored
      c.mux().unknown_mux.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    c.mux().streams_in.put(m.mux_id, s);
  }
  s->meter.begin(*entry->metrics);
  c.mux().calls_served.fetch_add(1, std::memory_order_relaxed);
  if (m.payload) s->bytes_in += m.payload->size();
  call_context ctx;
  ctx.conn = &c;
  ctx.handler = m.handler;
  ctx.subroute = m.subroute;
  if (m.deadline_ms) ctx.deadline = steady_clock::now() + std::chrono::milliseconds(m.deadline_ms);
  {
    std::lock_guard lk(s->mu);
    message ack = mux_message(s->mux, op_code::ack_mux);
    (void)send_numbered(c, ack, s->send_seq);
  }
  gen_start g;
  std::exception_ptr failed;
  try {
    g = entry->start(std::move(ctx), copy_payload(m), s);
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed || !g.handle) {
    server_on_finished(*s, failed ? failed : std::make_exception_ptr(std::runtime_error("stream handler produced no generator")));
    return;
  }
  {
    std::lock_guard lk(s->mu);
    s->gen = g.promise;
  }
  g.promise->stream = s;
  post_continuation(s->strand, owned_resume(g.handle));
  post_continuation(s->strand, server_arm_fn{s});
}

inline std::shared_ptr<server_stream> find_server_stream(connection& c, std::uint64_t mux) {
  std::lock_guard lk(c.mux().mu);
  std::shared_ptr<server_stream>* found = c.mux().streams_in.find(mux);
  return found ? *found : nullptr;
}

inline std::string seq_mismatch(std::uint32_t want, std::uint32_t got) {
  return "receive sequence number mismatch. want " + std::to_string(want) + ", got " + std::to_string(got);
}

// OpMuxClientMsg: a request (or the end of input) for a stream we serve.
inline void server_on_request(connection& c, const message& m) {
  auto sp = find_server_stream(c, m.mux_id);
  if (!sp) { // MinIO's answer to data for a mux it does not hold
    c.mux().unknown_mux.fetch_add(1, std::memory_order_relaxed);
    message reply = mux_message(m.mux_id, op_code::disconnect_client_mux);
    (void)c.send_control(reply);
    return;
  }
  server_stream& s = *sp;
  std::string violation;
  std::coroutine_handle<> w;
  {
    std::lock_guard lk(s.mu);
    if (s.cancelled) return;
    if (m.seq != s.recv_seq) {
      violation = seq_mismatch(s.recv_seq, m.seq);
    } else {
      ++s.recv_seq;
      if (s.finished) return; // the handler is done: late input is dropped
      if (has(m.flags, msg_flags::eof)) {
        s.input_closed = true;
      } else if (s.cap.in == 0) {
        violation = "did not expect inbound message";
      } else if (s.input_closed) {
        violation = "inbound message after end of input";
      } else if (s.input.full()) {
        violation = "handler blocked"; // the caller sent without a credit
      } else {
        s.input.push(m.payload);
        if (m.payload) s.bytes_in += m.payload->size();
      }
      if (violation.empty()) w = std::exchange(s.input_waiter, nullptr);
    }
  }
  if (!violation.empty()) {
    server_violation(sp, violation);
    return;
  }
  if (w) post_continuation(s.strand, owned_resume(w));
}

// OpUnblockSrvMux: the caller consumed a response; one more may be sent.
inline void server_on_credit(connection& c, const message& m) {
  auto sp = find_server_stream(c, m.mux_id);
  if (!sp) return; // MinIO ignores unblocks for unknown muxes
  server_stream& s = *sp;
  std::string violation;
  std::coroutine_handle<> w;
  bool closed = false;
  {
    std::lock_guard lk(s.mu);
    if (s.cancelled) return;
    if (m.seq != s.recv_seq) {
      violation = seq_mismatch(s.recv_seq, m.seq);
    } else {
      ++s.recv_seq;
      if (s.eof_pending) {
        s.eof_pending = false;
        send_eof(s);
        closed = true;
      } else if (s.yield_waiter) {
        send_value(s);
        w = std::exchange(s.yield_waiter, nullptr);
      } else if (s.credits < s.cap.out) {
        ++s.credits;
      } // else: more credits than capacity; MinIO logs and ignores it, and so do we
    }
  }
  if (!violation.empty()) {
    server_violation(sp, violation);
    return;
  }
  if (w) post_continuation(s.strand, owned_resume(w));
  if (closed) {
    server_unlist(s);
    post_continuation(s.strand, stop_server_timers_fn{sp});
  }
}

// OpPing with a mux id: the caller's liveness check of one stream.
inline void server_on_ping(connection& c, const message& m) {
  auto sp = find_server_stream(c, m.mux_id);
  pong_msg pong;
  std::string violation;
  if (!sp) {
    pong.not_found = true;
  } else {
    std::lock_guard lk(sp->mu);
    if (m.seq != sp->recv_seq) {
      violation = seq_mismatch(sp->recv_seq, m.seq);
      pong.error = violation;
    } else {
      ++sp->recv_seq;
      sp->last_ping = steady_clock::now();
    }
  }
  std::vector<std::byte> body;
  encode_append(pong, body);
  message reply = mux_message(m.mux_id, op_code::pong);
  reply.seq = m.seq; // pongs echo the ping's number and are not counted
  reply.payload = std::span<const std::byte>(body);
  (void)c.send_control(reply);
  if (!violation.empty()) server_violation(sp, violation);
}

// OpDisconnectServerMux: the caller cancelled or dropped the stream.
inline void server_on_disconnect(connection& c, const message& m) {
  auto sp = find_server_stream(c, m.mux_id);
  if (sp) server_abandon(sp, std::string());
}

// -- the client side ------------------------------------------------------------------------------------

struct stop_client_timers {
  std::shared_ptr<client_stream_state> s;
  void operator()() const {
    s->ping_timer.cancel();
    s->deadline_timer.cancel();
  }
};

// Ends the stream once: stores `why`, closes the mux (telling the handler to stop when `tell_server`),
// and wakes every waiter. False when it had ended already.
inline bool client_finish(const std::shared_ptr<client_stream_state>& sp, call_error why, bool tell_server) {
  client_stream_state& s = *sp;
  waiter woken[3];
  std::shared_ptr<connection> c = s.conn.lock();
  call_meter meter;
  std::error_code status = why.code;
  std::size_t in = 0, out = 0;
  {
    std::lock_guard lk(s.mu);
    if (s.finished) return false;
    s.finished = true;
    s.err = std::move(why);
    meter = std::exchange(s.meter, call_meter{});
    in = s.bytes_in;
    out = s.bytes_out;
    if (tell_server && c && c->session_id() == s.session) {
      message m = mux_message(s.mux, op_code::disconnect_server_mux);
      (void)send_numbered(*c, m, s.send_seq);
    }
    for (int i = 0; i < 3; ++i) take_waiter(s.waits[i], woken[i]);
  }
  if (c) {
    {
      std::lock_guard lk(c->mux().mu);
      std::shared_ptr<client_stream_state>* found = c->mux().streams_out.find(s.mux);
      if (found && *found == sp) c->mux().streams_out.take(s.mux);
    }
    post_continuation(c->get_executor(), stop_client_timers{sp});
    meter.end(c->shared().trace, c->remote(), status, in, out);
  } else {
    meter.end(trace_hook(), std::string_view(), status, in, out); // the connection is gone: counters only
  }
  for (auto& w : woken) wake(std::move(w));
  return true;
}

COGRID_DECL void stream_cancel(client_stream_state& s) {
  client_finish(s.shared_from_this(), call_error(asio::error::operation_aborted), true);
}

COGRID_DECL call_error stream_error(client_stream_state& s) {
  std::lock_guard lk(s.mu);
  return s.err;
}

struct client_cancel_fn {
  std::weak_ptr<client_stream_state> s;
  void operator()(asio::cancellation_type) const {
    if (auto sp = s.lock()) stream_cancel(*sp);
  }
};

struct client_deadline_fn {
  std::shared_ptr<client_stream_state> s;
  void operator()(std::error_code ec) const {
    if (!ec) client_finish(s, call_error(errc::timeout), true);
  }
};

struct client_ping_fn {
  std::shared_ptr<client_stream_state> s;
  void operator()(std::error_code ec) const {
    if (ec) return;
    auto c = s->conn.lock();
    if (!c) return;
    const connection_options& o = c->options();
    bool dead = false;
    {
      std::lock_guard lk(s->mu);
      if (s->finished) return;
      dead = steady_clock::now() - s->last_heard > o.stream_pong_timeout;
      if (!dead) {
        message ping = mux_message(s->mux, op_code::ping);
        ping.payload = std::span<const std::byte>(); // MinIO's stream ping: an empty payload
        (void)send_numbered(*c, ping, s->send_seq);
      }
    }
    if (dead) {
      client_finish(s, call_error(errc::disconnected, "no response or pong from the stream within " +
                                                          std::to_string(o.stream_pong_timeout.count()) + " ms"),
                    true);
      return;
    }
    s->ping_timer.expires_after(o.stream_ping_interval);
    s->ping_timer.async_wait(*this);
  }
};

struct client_arm_fn {
  std::shared_ptr<client_stream_state> s;
  void operator()() const {
    auto c = s->conn.lock();
    if (!c) return;
    {
      std::lock_guard lk(s->mu);
      if (s->finished) return;
    }
    const connection_options& o = c->options();
    if (s->timeout.count() > 0) {
      s->deadline_timer.expires_after(s->timeout);
      s->deadline_timer.async_wait(client_deadline_fn{s});
    }
    if (s->timeout.count() == 0 || s->timeout > o.stream_ping_interval) {
      s->ping_timer.expires_after(o.stream_ping_interval);
      s->ping_timer.async_wait(client_ping_fn{s});
    }
  }
};

COGRID_DECL void client_wait_init::operator()(wait_handler h) const {
  handoff_scope handing_off(resumed_by_us(h)); // then our posts may wait for this to return
  if (kind == wait_kind::open) { // the stream is sent: its deadline and ping timers start
    if (auto c = s->conn.lock()) post_continuation(c->get_executor(), client_arm_fn{s});
  }
  waiter now;
  {
    std::lock_guard lk(s->mu);
    bool ready = s->finished;
    if (kind == wait_kind::open) ready = ready || s->acked;
    if (kind == wait_kind::next) ready = ready || !s->responses.empty();
    if (kind == wait_kind::send) ready = ready || s->credits > 0;
    if (ready) now.h.emplace(std::move(h));
    else arm(s->waits[static_cast<int>(kind)], std::move(h), client_cancel_fn{s});
  }
  wake(std::move(now));
}

COGRID_DECL asio::awaitable<call_result<std::shared_ptr<client_stream_state>>> open_stream(
    std::shared_ptr<connection> c, handler_id h, std::optional<subroute_id> sub, payload_view initial,
    stream_capacity cap, stream_options opt) {
  if (static_cast<std::uint8_t>(h) == 0) co_return call_error(errc::invalid_handler);
  if (cap.out == 0) co_return call_error(errc::invalid_value, "a stream needs an out capacity of at least 1");
  if (opt.timeout.count() < 0 || (opt.timeout.count() > 0 && opt.timeout < std::chrono::milliseconds(1)))
    co_return call_error(errc::timeout);
  if (c->stopping()) co_return call_error(errc::shutdown);
  if (c->state() != connection_state::connected) co_return call_error(errc::disconnected);
  auto s = std::allocate_shared<client_stream_state>(pool_allocator<client_stream_state>(), c->get_executor());
  s->conn = c;
  s->session = c->session_id();
  s->mux = c->mux().next_id.fetch_add(1, std::memory_order_relaxed) + 1;
  s->cap = cap;
  s->timeout = opt.timeout;
  s->responses.init(cap.out);
  s->last_heard = steady_clock::now();
  s->meter.begin(c->shared().metrics.called(call_kind::stream, h, sub));
  c->mux().calls_made.fetch_add(1, std::memory_order_relaxed);
  if (initial) s->bytes_out += initial->size();
  {
    std::lock_guard lk(c->mux().mu);
    c->mux().streams_out.put(s->mux, s);
  }
  message m = mux_message(s->mux, op_code::connect_mux, cap.in == 0 ? msg_flags::eof : msg_flags::none);
  m.deadline_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(opt.timeout.count(), 0xffffffffLL));
  m.handler = h;
  m.payload = initial;
  m.subroute = sub;
  std::error_code ec;
  {
    std::lock_guard lk(s->mu);
    m.seq = s->send_seq;
    ec = c->send(m); // the one stream message a full queue refuses: nothing is promised yet
    if (!ec) ++s->send_seq;
  }
  if (ec) {
    client_finish(s, call_error(ec), false);
    co_return call_error(ec);
  }
  co_await stream_wait(s, wait_kind::open); // also arms the stream's timers
  std::lock_guard lk(s->mu);
  if (!s->acked) co_return s->err ? s->err : call_error(errc::disconnected);
  co_return s;
}

COGRID_DECL asio::awaitable<call_error> stream_send(std::shared_ptr<client_stream_state> s, payload_view req) {
  for (;;) {
    {
      std::lock_guard lk(s->mu);
      if (s->finished) co_return s->err ? s->err : call_error(errc::stream_closed, "the stream has ended");
      if (s->send_closed || s->cap.in == 0) co_return call_error(errc::stream_closed);
      if (s->waits[static_cast<int>(wait_kind::send)].h) co_return call_error(errc::invalid_value, "one send at a time on a stream");
      if (s->credits > 0) {
        auto c = s->conn.lock();
        if (!c) co_return call_error(errc::disconnected);
        message m = mux_message(s->mux, op_code::mux_client_msg);
        m.payload = req;
        if (std::error_code ec = send_numbered(*c, m, s->send_seq)) co_return call_error(ec);
        --s->credits;
        if (req) s->bytes_out += req->size();
        co_return call_error();
      }
    }
    co_await stream_wait(s, wait_kind::send);
  }
}

COGRID_DECL call_error stream_close_send(client_stream_state& s) {
  std::lock_guard lk(s.mu);
  if (s.send_closed || s.cap.in == 0) return call_error();
  s.send_closed = true;
  if (s.finished) return call_error();
  auto c = s.conn.lock();
  if (!c) return call_error(errc::disconnected);
  message m = mux_message(s.mux, op_code::mux_client_msg, msg_flags::eof);
  return call_error(send_numbered(*c, m, s.send_seq));
}

COGRID_DECL int stream_try_next(client_stream_state& s, payload& out) {
  std::lock_guard lk(s.mu);
  if (!s.responses.empty()) {
    s.responses.pop(out);
    if (!s.finished) {
      if (auto c = s.conn.lock()) {
        message m = mux_message(s.mux, op_code::unblock_srv_mux);
        (void)send_numbered(*c, m, s.send_seq);
      }
    }
    return 1;
  }
  return s.finished ? 0 : -1;
}

inline std::shared_ptr<client_stream_state> find_client_stream(connection& c, std::uint64_t mux) {
  std::lock_guard lk(c.mux().mu);
  std::shared_ptr<client_stream_state>* found = c.mux().streams_out.find(mux);
  return found ? *found : nullptr;
}

// A message for a client stream: ack, data, credit, disconnect, pong, connect error.
inline bool client_on_message(connection& c, const message& m) {
  auto sp = find_client_stream(c, m.mux_id);
  if (!sp) {
    if ((m.op == op_code::mux_server_msg && !has(m.flags, msg_flags::eof)) || m.op == op_code::ack_mux) {
      // The handler runs for a stream we no longer hold: tell it to stop.
      message reply = mux_message(m.mux_id, op_code::disconnect_server_mux);
      (void)c.send_control(reply);
    }
    return false;
  }
  client_stream_state& s = *sp;
  switch (m.op) {
  case op_code::mux_connect_error: {
    mux_connect_error e;
    if (!m.payload || decode(*m.payload, e)) e.error = "unknown mux handler";
    client_finish(sp, call_error(errc::unknown_handler, e.error), false);
    return true;
  }
  case op_code::disconnect_client_mux:
    if (has(m.flags, msg_flags::payload_is_err)) client_finish(sp, call_error(errc::remote_error, text_of(m)), false);
    else client_finish(sp, call_error(errc::disconnected), false);
    return true;
  case op_code::pong: {
    pong_msg pong;
    const bool bad = !m.payload || static_cast<bool>(decode(*m.payload, pong));
    {
      std::lock_guard lk(s.mu);
      s.last_heard = steady_clock::now();
    }
    if (bad) return true;
    if (pong.not_found) client_finish(sp, call_error(errc::disconnected, "remote terminated call"), false);
    else if (pong.error) client_finish(sp, call_error(errc::remote_error, *pong.error), true);
    return true;
  }
  default:
    break;
  }
  // Numbered messages: ack, data, credit.
  waiter w;
  std::optional<call_error> end;
  std::optional<call_error> violation;
  {
    std::lock_guard lk(s.mu);
    if (s.finished) return true;
    if (m.seq != s.recv_seq) {
      violation = call_error(errc::out_of_sequence, "out-of-sequence item received: want " + std::to_string(s.recv_seq) +
                                                        ", got " + std::to_string(m.seq));
    } else {
      ++s.recv_seq;
      s.last_heard = steady_clock::now();
      if (m.op == op_code::ack_mux) {
        s.acked = true;
        s.credits = s.cap.in;
        take_waiter(s.waits[static_cast<int>(wait_kind::open)], w);
      } else if (m.op == op_code::unblock_cl_mux) {
        if (s.credits < s.cap.in) ++s.credits;
        take_waiter(s.waits[static_cast<int>(wait_kind::send)], w);
      } else if (has(m.flags, msg_flags::eof)) { // buffered responses stay readable (MinIO #21122)
        end = has(m.flags, msg_flags::payload_is_err) ? call_error(errc::remote_error, text_of(m)) : call_error();
      } else if (s.responses.full()) {
        violation = call_error(errc::credit_violation, "response without credit (Response was blocked)");
      } else {
        s.responses.push(m.payload);
        if (m.payload) s.bytes_in += m.payload->size();
        take_waiter(s.waits[static_cast<int>(wait_kind::next)], w);
      }
    }
  }
  wake(std::move(w));
  if (violation) {
    if (auto cp = s.conn.lock()) cp->mux().stream_errors.fetch_add(1, std::memory_order_relaxed);
    client_finish(sp, std::move(*violation), true);
  } else if (end) {
    client_finish(sp, std::move(*end), false);
  }
  return true;
}

COGRID_DECL bool stream_on_message(mux_core& core, connection& c, const message& m) {
  switch (m.op) {
  case op_code::connect_mux:
    server_open(core, c, m);
    return true;
  case op_code::mux_client_msg:
    server_on_request(c, m);
    return true;
  case op_code::unblock_srv_mux:
    server_on_credit(c, m);
    return true;
  case op_code::disconnect_server_mux:
    server_on_disconnect(c, m);
    return true;
  case op_code::ping:
    server_on_ping(c, m);
    return true;
  case op_code::ack_mux:
  case op_code::mux_server_msg:
  case op_code::unblock_cl_mux:
  case op_code::disconnect_client_mux:
  case op_code::pong:
  case op_code::mux_connect_error:
    if (!client_on_message(c, m)) c.mux().unknown_mux.fetch_add(1, std::memory_order_relaxed);
    return true;
  default:
    return false;
  }
}

COGRID_DECL void stream_on_session_end(connection& c, std::uint64_t session) {
  std::vector<std::shared_ptr<client_stream_state>> out;
  std::vector<std::shared_ptr<server_stream>> in;
  {
    std::lock_guard lk(c.mux().mu);
    c.mux().streams_out.for_each([&](std::uint64_t, const std::shared_ptr<client_stream_state>& s) {
      if (s->session <= session) out.push_back(s);
    });
    c.mux().streams_in.for_each([&](std::uint64_t, const std::shared_ptr<server_stream>& s) {
      if (s->session <= session) in.push_back(s);
    });
  }
  for (auto& s : out) client_finish(s, call_error(errc::disconnected), false);
  for (auto& s : in) server_cancel(s, std::string());
}

COGRID_DECL void abandon_streams(connection& c, asio::execution_context& ctx) {
  std::vector<std::shared_ptr<client_stream_state>> out;
  std::vector<std::shared_ptr<server_stream>> in;
  {
    std::lock_guard lk(c.mux().mu);
    c.mux().streams_out.for_each([&](std::uint64_t, const std::shared_ptr<client_stream_state>& s) { out.push_back(s); });
    c.mux().streams_in.for_each([&](std::uint64_t, const std::shared_ptr<server_stream>& s) { in.push_back(s); });
    c.mux().streams_out.clear();
    c.mux().streams_in.clear(); // each held its connection
  }
  for (auto& s : out) {
    waiter parked[3];
    {
      std::lock_guard lk(s->mu);
      if (!s->finished) s->err = call_error(errc::shutdown);
      s->finished = true;
      for (int i = 0; i < 3; ++i) take_waiter(s->waits[i], parked[i]);
    }
    for (auto& w : parked) let_go(std::move(w), ctx, [](waiter&& other) { wake(std::move(other)); }); // finds the stream ended
  }
  for (auto& s : in) {
    std::coroutine_handle<> parked;
    {
      std::lock_guard lk(s->mu);
      s->cancelled = s->finished = true;
      parked = std::exchange(s->input_waiter, nullptr);
      if (!parked) parked = std::exchange(s->yield_waiter, nullptr);
      if (parked) s->gen = nullptr; // its promise goes with the frame
    }
    owned_resume frame(parked); // destroyed here, outside the lock: the generator parked in the stream
  }
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_STREAM_IPP
