// cogrid/impl/stream.ipp — definitions for cogrid/detail/stream_core.hpp: streams on both sides (a served
// stream's generator and its credits, a caller's opens, sends and receives) and the routing of stream
// messages of a connection.
//
// Wire rules (grid-protocol.md §3.1, §3.3, §3.4): the caller sends OpConnectMux (seq 0) and nothing else
// before the handler's OpAckMux; each side numbers every message it sends on the mux (connect, ack, data,
// EOF, unblocks, pings) and checks the numbers of data, unblock, ack and ping messages; a message that
// is delivered to the user returns one credit (OpUnblockSrvMux / OpUnblockClMux); the handler's EOF costs
// a credit, the caller's EOF does not. cogrid's handler puts its capacities in the ack (a payload MinIO
// ignores), so that a cogrid caller can tell a mismatch.
#ifndef COGRID_IMPL_STREAM_IPP
#define COGRID_IMPL_STREAM_IPP

#include <cogrid/control.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/manager_state.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/stream_core.hpp>
#include <cogrid/impl/call.ipp>

namespace cogrid::detail {

// Sends `m` numbered with `seq` and advances `seq` only when it was queued, so that a refused message
// leaves no gap. Stream messages are never refused for a full queue: credits bound them already.
inline result<void> send_numbered(connection& c, message& m, std::uint32_t& seq, handoff how) {
  m.seq = seq;
  result<void> r = connection_access::send(c, m, true, how);
  if (r) ++seq;
  return r;
}

inline message mux_message(std::uint64_t mux, op_code op, msg_flags flags = msg_flags::none) {
  message m;
  m.mux_id = mux;
  m.op = op;
  m.flags = flags;
  return m;
}

inline std::string seq_mismatch(std::uint32_t want, std::uint32_t got) {
  return "receive sequence number mismatch. want " + std::to_string(want) + ", got " + std::to_string(got);
}

// -- the serving side -----------------------------------------------------------------------------------

COGRID_DECL served_stream::served_stream(std::shared_ptr<connection> c, asio::any_io_executor s)
    : conn(std::move(c)), strand(std::move(s)), deadline_timer(strand), ping_timer(strand) {}

// Takes the stream off its connection (once) and records how it ended. Called without s.mu held.
inline void server_unlist(served_stream& s) {
  conn_mux& mx = connection_access::mux(*s.conn);
  {
    std::lock_guard lk(mx.mu);
    std::shared_ptr<served_stream>* found = mx.streams_in.find(s.mux);
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
  meter.end(connection_access::shared(*s.conn).trace, s.conn->remote(), status, in, out);
}

// On the stream's strand: stops what the generator awaits and the stream's timers.
inline void stop_server_timers(served_stream& s) {
  s.cancel_signal.emit(asio::cancellation_type::terminal);
  s.deadline_timer.cancel();
  s.ping_timer.cancel();
}

struct stop_server_timers_fn {
  std::shared_ptr<served_stream> s;
  void operator()() const { stop_server_timers(*s); }
};

// Under s.mu: the current value of the generator, as OpMuxServerMsg.
// Returns the text for the caller when the value is over the caller's size limit (then nothing was sent).
inline std::string send_value(served_stream& s, handoff how) {
  s.scratch.clear();
  message m = mux_message(s.mux, op_code::mux_server_msg);
  m.payload = s.gen->encode(*s.gen, s.scratch);
  if (m.payload) s.bytes_out += m.payload->size();
  const result<void> sent = send_numbered(*s.conn, m, s.send_seq, how);
  if (!sent && sent.error() == errc::payload_too_large) return "a stream response " + sent.error().message();
  return {};
}

// Under s.mu: the handler's end, OpMuxServerMsg|EOF (|PayloadIsErr with its text).
inline void send_eof(served_stream& s, handoff how) {
  message m = mux_message(s.mux, op_code::mux_server_msg, msg_flags::eof);
  if (s.eof_is_error) {
    m.flags |= msg_flags::payload_is_err;
    m.payload = std::as_bytes(std::span(s.eof_text.data(), s.eof_text.size()));
  }
  (void)send_numbered(*s.conn, m, s.send_seq, how);
}

// Stops the handler: its generator is resumed (to throw operation_aborted) or its awaited operation is
// cancelled. With a non-empty `tell`, the caller gets OpDisconnectClientMux carrying that error. True when
// a running handler was stopped (not one that had returned and waits to send its EOF).
inline bool server_cancel(const std::shared_ptr<served_stream>& sp, const std::string& tell) {
  served_stream& s = *sp;
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
      (void)send_numbered(*s.conn, m, s.send_seq, handoff::continuation);
    }
    w = std::exchange(s.input_waiter, nullptr);
    if (!w) w = std::exchange(s.yield_waiter, nullptr);
  }
  server_unlist(s);
  if (w) hand_off(s.strand, owned_resume(w), handoff::continuation);
  hand_off(s.strand, stop_server_timers_fn{sp}, handoff::continuation);
  return running;
}

// The caller gave up (cancel, deadline, lost pings): the handler stops and is counted as cancelled.
inline void server_abandon(const std::shared_ptr<served_stream>& sp, const std::string& tell) {
  if (server_cancel(sp, tell)) connection_access::mux(*sp->conn).cancelled.fetch_add(1, std::memory_order_relaxed);
}

// The caller broke the stream's rules: the stream ends with `text` told to the caller; the connection stays.
inline void server_violation(const std::shared_ptr<served_stream>& sp, const std::string& text) {
  connection_access::mux(*sp->conn).stream_errors.fetch_add(1, std::memory_order_relaxed);
  server_cancel(sp, text);
}

COGRID_DECL void server_fail(served_stream& s, const std::string& text) { server_violation(s.shared_from_this(), text); }

COGRID_DECL bool server_on_yield(served_stream& s, std::coroutine_handle<> h) {
  std::string too_large;
  {
    std::lock_guard lk(s.mu);
    if (s.cancelled) return false;
    if (s.credits == 0) {
      s.yield_waiter = h;
      return true;
    }
    --s.credits;
    too_large = send_value(s, handoff::continuation);
  }
  // A value over the caller's limit ends the stream: the caller hears why, the handler stops (it
  // resumes into operation_aborted).
  if (!too_large.empty()) server_cancel(s.shared_from_this(), too_large);
  return false;
}

COGRID_DECL bool server_on_next(served_stream& s, std::coroutine_handle<> h) {
  std::lock_guard lk(s.mu);
  if (s.cancelled || !s.input.empty() || s.input_closed) return false;
  s.input_waiter = h;
  return true;
}

COGRID_DECL bool server_input_ready(served_stream& s) {
  std::lock_guard lk(s.mu);
  return s.cancelled || !s.input.empty() || s.input_closed;
}

COGRID_DECL void server_check_cancelled(served_stream& s) {
  std::lock_guard lk(s.mu);
  if (s.cancelled) throw std::system_error(asio::error::operation_aborted);
}

COGRID_DECL std::error_code server_take_input(served_stream& s, payload& out) {
  std::lock_guard lk(s.mu);
  if (s.cancelled) return asio::error::operation_aborted;
  if (s.input.empty()) return errc::end_of_stream; // input closed
  s.input.pop(out);
  message m = mux_message(s.mux, op_code::unblock_cl_mux);
  (void)send_numbered(*s.conn, m, s.send_seq, handoff::continuation);
  return {};
}

COGRID_DECL void server_on_finished(served_stream& s, std::exception_ptr error) {
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
        send_eof(s, handoff::continuation);
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
  std::shared_ptr<served_stream> s;
  void operator()(std::error_code ec) const {
    if (ec) return;
    // The caller has its own deadline and ends the stream there; the handler stops, nothing is sent.
    server_abandon(s, std::string());
  }
};

struct server_ping_check_fn {
  std::shared_ptr<served_stream> s;
  void operator()(std::error_code ec) const {
    if (ec) return;
    const connection_options& o = connection_access::options(*s->conn);
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
  std::shared_ptr<served_stream> s;
  void operator()() const {
    const connection_options& o = connection_access::options(*s->conn);
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

// OpConnectMux: find the handler, acknowledge (with our capacities), start the generator on its strand.
inline void server_open(mux_core& core, connection& c, const message& m) {
  if (has(m.flags, msg_flags::stateless)) {
    reply_unknown_handler(c, m, "Stateless streams not supported");
    return;
  }
  const handler_entry* entry = core.handlers().find(handler_kind::stream, m);
  if (!entry) {
    reply_unknown_handler(c, m);
    return;
  }
  if (entry->authorize && !admitted(c, m, *entry)) return;
  conn_mux& mx = connection_access::mux(c);
  auto s = std::allocate_shared<served_stream>(pool_allocator<served_stream>(), c.shared_from_this(), core.handler_strand(c));
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
    std::lock_guard lk(mx.mu);
    if (mx.streams_in.find(m.mux_id)) { // a second connect for a live mux: ignored
      mx.unknown_mux.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    mx.streams_in.put(m.mux_id, s);
  }
  s->meter.begin(*entry->metrics);
  mx.calls_served.fetch_add(1, std::memory_order_relaxed);
  if (m.payload) s->bytes_in += m.payload->size();
  call_context ctx;
  ctx.conn = &c;
  ctx.handler = m.handler;
  ctx.subroute = m.subroute;
  if (m.deadline_ms) ctx.deadline = steady_clock::now() + std::chrono::milliseconds(m.deadline_ms);
  {
    std::lock_guard lk(s->mu);
    message ack = mux_message(s->mux, op_code::ack_mux);
    ack.payload = std::span<const std::byte>(entry->ack);
    (void)send_numbered(c, ack, s->send_seq, handoff::continuation);
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
  hand_off(s->strand, owned_resume(g.handle), handoff::continuation);
  hand_off(s->strand, server_arm_fn{s}, handoff::continuation);
}

inline std::shared_ptr<served_stream> find_served_stream(connection& c, std::uint64_t mux) {
  conn_mux& mx = connection_access::mux(c);
  std::lock_guard lk(mx.mu);
  std::shared_ptr<served_stream>* found = mx.streams_in.find(mux);
  return found ? *found : nullptr;
}

// OpMuxClientMsg: a request (or the end of input) for a stream we serve.
inline void server_on_request(connection& c, const message& m) {
  auto sp = find_served_stream(c, m.mux_id);
  if (!sp) { // MinIO's answer to data for a mux it does not hold
    connection_access::mux(c).unknown_mux.fetch_add(1, std::memory_order_relaxed);
    message reply = mux_message(m.mux_id, op_code::disconnect_client_mux);
    (void)connection_access::send(c, reply, true, handoff::continuation);
    return;
  }
  served_stream& s = *sp;
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
      } else if (s.max_in_bytes != 0 && m.payload && m.payload->size() > s.max_in_bytes) {
        // Refused as it arrives, not when the handler takes it: buffering whole windows of oversized
        // messages first would break the memory bound the limit exists for (bulk chunks).
        violation = "a bulk chunk of " + std::to_string(m.payload->size()) + " bytes is over the chunk size of " +
                    std::to_string(s.max_in_bytes) + " bytes the handler declares";
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
  if (w) hand_off(s.strand, owned_resume(w), handoff::continuation);
}

// OpUnblockSrvMux: the caller consumed a response; one more may be sent.
inline void server_on_credit(connection& c, const message& m) {
  auto sp = find_served_stream(c, m.mux_id);
  if (!sp) return; // MinIO ignores unblocks for unknown muxes
  served_stream& s = *sp;
  std::string violation, too_large;
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
        send_eof(s, handoff::continuation);
        closed = true;
      } else if (s.yield_waiter) {
        too_large = send_value(s, handoff::continuation);
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
  if (!too_large.empty()) server_cancel(sp, too_large); // before the handler resumes into operation_aborted
  if (w) hand_off(s.strand, owned_resume(w), handoff::continuation);
  if (closed) {
    server_unlist(s);
    hand_off(s.strand, stop_server_timers_fn{sp}, handoff::continuation);
  }
}

// OpPing with a mux id: the caller's liveness check of one stream.
inline void server_on_ping(connection& c, const message& m) {
  auto sp = find_served_stream(c, m.mux_id);
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
  (void)connection_access::send(c, reply, true, handoff::continuation);
  if (!violation.empty()) server_violation(sp, violation);
}

// OpDisconnectServerMux: the caller cancelled or dropped the stream.
inline void server_on_disconnect(connection& c, const message& m) {
  auto sp = find_served_stream(c, m.mux_id);
  if (sp) server_abandon(sp, std::string());
}

// -- the calling side -----------------------------------------------------------------------------------

struct stop_client_timers {
  std::shared_ptr<client_stream_state> s;
  void operator()() const {
    s->ping_timer.cancel();
    s->deadline_timer.cancel();
  }
};

// Ends the stream once: stores `why`, closes the mux (telling the handler to stop when `tell_server`),
// and wakes every waiter. False when it had ended already.
inline bool client_finish(const std::shared_ptr<client_stream_state>& sp, error why, bool tell_server, handoff how) {
  client_stream_state& s = *sp;
  waiter woken[3];
  std::shared_ptr<connection> c = s.conn.lock();
  call_meter meter;
  const std::error_code status = why == errc::end_of_stream ? std::error_code() : why.code;
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
      (void)send_numbered(*c, m, s.send_seq, how);
    }
    for (int i = 0; i < 3; ++i) take_waiter(s.waits[i], woken[i]);
  }
  if (c) {
    conn_mux& mx = connection_access::mux(*c);
    {
      std::lock_guard lk(mx.mu);
      std::shared_ptr<client_stream_state>* found = mx.streams_out.find(s.mux);
      if (found && *found == sp) mx.streams_out.take(s.mux);
    }
    hand_off(c->get_executor(), stop_client_timers{sp}, how);
    meter.end(connection_access::shared(*c).trace, c->remote(), status, in, out);
  } else {
    meter.end(trace_hook(), std::string_view(), status, in, out); // the connection is gone: counters only
  }
  for (auto& w : woken) wake(std::move(w), how);
  return true;
}

COGRID_DECL void stream_cancel(client_stream_state& s) {
  client_finish(s.shared_from_this(), error(asio::error::operation_aborted), true, handoff::fresh);
}

COGRID_DECL void stream_fail(client_stream_state& s, error why) { client_finish(s.shared_from_this(), std::move(why), true, handoff::fresh); }

COGRID_DECL error stream_error(client_stream_state& s) {
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
    if (!ec) client_finish(s, error(errc::timeout), true, handoff::continuation);
  }
};

struct client_ping_fn {
  std::shared_ptr<client_stream_state> s;
  void operator()(std::error_code ec) const {
    if (ec) return;
    auto c = s->conn.lock();
    if (!c) return;
    const connection_options& o = connection_access::options(*c);
    bool dead = false;
    {
      std::lock_guard lk(s->mu);
      if (s->finished) return;
      dead = steady_clock::now() - s->last_heard > o.stream_pong_timeout;
      if (!dead) {
        message ping = mux_message(s->mux, op_code::ping);
        ping.payload = std::span<const std::byte>(); // MinIO's stream ping: an empty payload
        (void)send_numbered(*c, ping, s->send_seq, handoff::continuation);
      }
    }
    if (dead) {
      client_finish(s,
                    error(errc::disconnected,
                          "no response or pong from the stream within " + std::to_string(o.stream_pong_timeout.count()) + " ms"),
                    true, handoff::continuation);
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
    const connection_options& o = connection_access::options(*c);
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
  if (kind == wait_kind::open) { // the stream is sent: its deadline and ping timers start
    if (auto c = s->conn.lock()) hand_off(c->get_executor(), client_arm_fn{s}, handoff::fresh);
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
  wake(std::move(now), handoff::fresh);
}

COGRID_DECL asio::awaitable<result<std::shared_ptr<client_stream_state>>> open_stream(
    std::shared_ptr<connection> c, handler_id h, std::optional<subroute_id> sub, payload_view initial,
    stream_capacity cap, stream_options opt, std::size_t max_in_bytes) {
  if (static_cast<std::uint8_t>(h) == 0) co_return error(errc::invalid_handler);
  if (cap.out == 0) co_return error(errc::invalid_value, "a stream needs an out capacity of at least 1");
  if (opt.timeout.count() < 0 || (opt.timeout.count() > 0 && opt.timeout < std::chrono::milliseconds(1)))
    co_return error(errc::timeout);
  if (connection_access::stopping(*c)) co_return error(errc::shutdown);
  if (c->state() != connection_state::connected) co_return error(errc::disconnected);
  conn_mux& mx = connection_access::mux(*c);
  auto s = std::allocate_shared<client_stream_state>(pool_allocator<client_stream_state>(), c->get_executor());
  s->conn = c;
  s->session = c->session_id();
  s->mux = mx.next_id.fetch_add(1, std::memory_order_relaxed) + 1;
  s->cap = cap;
  s->timeout = opt.timeout;
  s->responses.init(cap.out);
  s->max_in_bytes = max_in_bytes;
  s->last_heard = steady_clock::now();
  s->meter.begin(connection_access::shared(*c).metrics.called(call_kind::stream, h, sub));
  mx.calls_made.fetch_add(1, std::memory_order_relaxed);
  if (initial) s->bytes_out += initial->size();
  {
    std::lock_guard lk(mx.mu);
    mx.streams_out.put(s->mux, s);
  }
  message m = mux_message(s->mux, op_code::connect_mux, cap.in == 0 ? msg_flags::eof : msg_flags::none);
  m.deadline_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(opt.timeout.count(), 0xffffffffLL));
  m.handler = h;
  m.payload = initial;
  m.subroute = sub;
  result<void> sent;
  {
    std::lock_guard lk(s->mu);
    m.seq = s->send_seq;
    sent = connection_access::send(*c, m, false, handoff::fresh); // the one stream message a full queue refuses: nothing is promised yet
    if (sent) ++s->send_seq;
  }
  if (!sent) {
    client_finish(s, sent.error(), false, handoff::fresh);
    co_return sent.error();
  }
  co_await stream_wait(s, wait_kind::open); // also arms the stream's timers
  std::lock_guard lk(s->mu);
  // Acknowledged: the stream is the caller's, even when it ended before the caller resumed (its responses
  // and its end are read with next()).
  if (!s->acked) co_return s->err ? s->err : error(errc::disconnected);
  co_return s;
}

COGRID_DECL asio::awaitable<result<void>> stream_send(std::shared_ptr<client_stream_state> s, payload_view req) {
  for (;;) {
    {
      std::lock_guard lk(s->mu);
      if (s->finished) co_return s->err && s->err != errc::end_of_stream ? s->err : error(errc::stream_closed, "the stream has ended");
      if (s->send_closed || s->cap.in == 0) co_return error(errc::stream_closed);
      if (s->waits[static_cast<int>(wait_kind::send)].h) co_return error(errc::invalid_value, "one send at a time on a stream");
      if (s->credits > 0) {
        auto c = s->conn.lock();
        if (!c) co_return error(errc::disconnected);
        message m = mux_message(s->mux, op_code::mux_client_msg);
        m.payload = req;
        if (auto sent = send_numbered(*c, m, s->send_seq, handoff::fresh); !sent) co_return sent.error();
        --s->credits;
        if (req) s->bytes_out += req->size();
        co_return result<void>();
      }
    }
    co_await stream_wait(s, wait_kind::send);
  }
}

COGRID_DECL result<void> stream_close_send(client_stream_state& s) {
  std::lock_guard lk(s.mu);
  if (s.send_closed || s.cap.in == 0) return {};
  s.send_closed = true;
  if (s.finished) return {};
  auto c = s.conn.lock();
  if (!c) return errc::disconnected;
  message m = mux_message(s.mux, op_code::mux_client_msg, msg_flags::eof);
  return send_numbered(*c, m, s.send_seq, handoff::fresh);
}

COGRID_DECL int stream_try_next(client_stream_state& s, payload& out) {
  std::lock_guard lk(s.mu);
  if (!s.responses.empty()) {
    s.responses.pop(out);
    if (!s.finished) {
      if (auto c = s.conn.lock()) {
        message m = mux_message(s.mux, op_code::unblock_srv_mux);
        (void)send_numbered(*c, m, s.send_seq, handoff::fresh);
      }
    }
    return 1;
  }
  return s.finished ? 0 : -1;
}

inline std::shared_ptr<client_stream_state> find_client_stream(connection& c, std::uint64_t mux) {
  conn_mux& mx = connection_access::mux(c);
  std::lock_guard lk(mx.mu);
  std::shared_ptr<client_stream_state>* found = mx.streams_out.find(mux);
  return found ? *found : nullptr;
}

inline std::string describe(stream_capacity c) {
  return "in " + std::to_string(c.in) + ", out " + std::to_string(c.out);
}

// A message for a stream we opened: ack, data, credit, disconnect, pong, connect error.
inline bool client_on_message(connection& c, const message& m) {
  auto sp = find_client_stream(c, m.mux_id);
  if (!sp) {
    if ((m.op == op_code::mux_server_msg && !has(m.flags, msg_flags::eof)) || m.op == op_code::ack_mux) {
      // The handler runs for a stream we no longer hold: tell it to stop.
      message reply = mux_message(m.mux_id, op_code::disconnect_server_mux);
      (void)connection_access::send(c, reply, true, handoff::continuation);
    }
    return false;
  }
  client_stream_state& s = *sp;
  switch (m.op) {
  case op_code::mux_connect_error: {
    mux_connect_error e;
    if (!m.payload || !decode(*m.payload, e)) e.error = "unknown mux handler";
    client_finish(sp, refusal_error(errc::unknown_handler, std::move(e.error)), false, handoff::continuation);
    return true;
  }
  case op_code::disconnect_client_mux:
    if (has(m.flags, msg_flags::payload_is_err)) client_finish(sp, error(errc::remote_error, text_of(m)), false, handoff::continuation);
    else client_finish(sp, error(errc::disconnected), false, handoff::continuation);
    return true;
  case op_code::pong: {
    pong_msg pong;
    const bool good = m.payload && decode(*m.payload, pong);
    {
      std::lock_guard lk(s.mu);
      s.last_heard = steady_clock::now();
    }
    if (!good) return true;
    if (pong.not_found) client_finish(sp, error(errc::disconnected, "remote terminated call"), false, handoff::continuation);
    else if (pong.error) client_finish(sp, error(errc::remote_error, *pong.error), true, handoff::continuation);
    return true;
  }
  default:
    break;
  }
  // Numbered messages: ack, data, credit.
  waiter w;
  std::optional<error> end;
  std::optional<error> violation;
  {
    std::lock_guard lk(s.mu);
    if (s.finished) return true;
    if (m.seq != s.recv_seq) {
      violation = error(errc::out_of_sequence,
                        "out-of-sequence item received: want " + std::to_string(s.recv_seq) + ", got " + std::to_string(m.seq));
    } else {
      ++s.recv_seq;
      s.last_heard = steady_clock::now();
      if (m.op == op_code::ack_mux) {
        stream_ack theirs;
        if (m.payload && !m.payload->empty() && decode(*m.payload, theirs) &&
            (theirs.in != s.cap.in || theirs.out != s.cap.out)) {
          violation = error(errc::capacity_mismatch, "stream capacities differ: the caller declares " + describe(s.cap) +
                                                         ", the handler " + describe(stream_capacity{theirs.in, theirs.out}));
        } else {
          s.acked = true;
          s.credits = s.cap.in;
          take_waiter(s.waits[static_cast<int>(wait_kind::open)], w);
        }
      } else if (m.op == op_code::unblock_cl_mux) {
        if (s.credits < s.cap.in) ++s.credits;
        take_waiter(s.waits[static_cast<int>(wait_kind::send)], w);
      } else if (has(m.flags, msg_flags::eof)) { // buffered responses stay readable (MinIO #21122)
        end = has(m.flags, msg_flags::payload_is_err) ? error(errc::remote_error, text_of(m)) : error(errc::end_of_stream);
      } else if (s.responses.full()) {
        violation = error(errc::credit_violation, "response without credit (Response was blocked)");
      } else if (s.max_in_bytes != 0 && m.payload && m.payload->size() > s.max_in_bytes) {
        // Refused as it arrives, as the handler's side refuses oversized requests (stream.ipp's served
        // side): a window of oversized chunks must not be buffered first.
        violation = error(errc::bad_payload, "a bulk chunk of " + std::to_string(m.payload->size()) +
                                                 " bytes is over the chunk size of " + std::to_string(s.max_in_bytes) +
                                                 " bytes the reader declares");
      } else {
        s.responses.push(m.payload);
        if (m.payload) s.bytes_in += m.payload->size();
        take_waiter(s.waits[static_cast<int>(wait_kind::next)], w);
      }
    }
  }
  wake(std::move(w), handoff::continuation);
  if (violation) {
    connection_access::mux(c).stream_errors.fetch_add(1, std::memory_order_relaxed);
    client_finish(sp, std::move(*violation), true, handoff::continuation);
  } else if (end) {
    client_finish(sp, std::move(*end), false, handoff::continuation);
  }
  return true;
}

COGRID_DECL void stream_on_refused(connection& c, const message& m, const std::string& why) {
  if (m.op == op_code::mux_client_msg) {
    if (auto sp = find_served_stream(c, m.mux_id)) server_violation(sp, "stream message refused: " + why);
  } else if (m.op == op_code::mux_server_msg) {
    if (auto sp = find_client_stream(c, m.mux_id)) {
      connection_access::mux(c).stream_errors.fetch_add(1, std::memory_order_relaxed);
      client_finish(sp, error(errc::payload_too_large, "stream message refused: " + why), true, handoff::continuation);
    }
  }
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
    if (!client_on_message(c, m)) connection_access::mux(c).unknown_mux.fetch_add(1, std::memory_order_relaxed);
    return true;
  default:
    return false;
  }
}

COGRID_DECL void stream_on_session_end(connection& c, std::uint64_t session) {
  conn_mux& mx = connection_access::mux(c);
  std::vector<std::shared_ptr<client_stream_state>> out;
  std::vector<std::shared_ptr<served_stream>> in;
  {
    std::lock_guard lk(mx.mu);
    mx.streams_out.for_each([&](std::uint64_t, const std::shared_ptr<client_stream_state>& s) {
      if (s->session <= session) out.push_back(s);
    });
    mx.streams_in.for_each([&](std::uint64_t, const std::shared_ptr<served_stream>& s) {
      if (s->session <= session) in.push_back(s);
    });
  }
  for (auto& s : out) client_finish(s, error(errc::disconnected), false, handoff::continuation);
  for (auto& s : in) server_cancel(s, std::string());
}

COGRID_DECL void abandon_streams(connection& c, asio::execution_context& ctx) {
  conn_mux& mx = connection_access::mux(c);
  std::vector<std::shared_ptr<client_stream_state>> out;
  std::vector<std::shared_ptr<served_stream>> in;
  {
    std::lock_guard lk(mx.mu);
    mx.streams_out.for_each([&](std::uint64_t, const std::shared_ptr<client_stream_state>& s) { out.push_back(s); });
    mx.streams_in.for_each([&](std::uint64_t, const std::shared_ptr<served_stream>& s) { in.push_back(s); });
    mx.streams_out.clear();
    mx.streams_in.clear(); // each held its connection
  }
  // The callers parked in those streams, taken under each stream's lock and let go outside it. (Kept in
  // a vector: in a local array, or one local at a time, GCC 12 at -O3 warns, wrongly, that an empty
  // optional's handler "may be used uninitialized" in its destructor.)
  std::vector<waiter> callers;
  for (auto& s : out) {
    std::lock_guard lk(s->mu);
    if (!s->finished) s->err = error(errc::shutdown);
    s->finished = true; // from here on nothing parks in s->waits
    for (auto& slot : s->waits)
      if (slot.h) take_waiter(slot, callers.emplace_back());
  }
  for (auto& w : callers) let_go(std::move(w), ctx, [](waiter&& other) { wake(std::move(other), handoff::fresh); }); // finds the stream ended
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

COGRID_DECL result<void> register_stream(manager& m, handler_id h, const std::optional<subroute_id>& sub, std::string_view route,
                                         stream_capacity cap, raw_stream_start start) {
  if (cap.out == 0 || !start) return error(errc::invalid_value, "a stream handler needs an out capacity of at least 1");
  manager_state& st = manager_access::state(m);
  handler_entry e;
  e.kind = handler_kind::stream;
  e.cap = cap;
  e.start = std::move(start);
  encode_append(stream_ack{cap.in, cap.out}, e.ack);
  return st.mux->handlers().add(h, sub, route, std::move(e), st.mux->metrics());
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_STREAM_IPP
