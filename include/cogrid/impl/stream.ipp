// cogrid/impl/stream.ipp — definitions for cogrid/detail/stream_core.hpp: what a stream handler's
// generator and a stream's caller reach. Opening served streams and routing their messages is in
// stream_serve.ipp.
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
  // The callers parked in those streams, taken under each stream's lock and let go outside it. (Kept in
  // a vector: in a local array, or one local at a time, GCC 12 at -O3 warns, wrongly, that an empty
  // optional's handler "may be used uninitialized" in its destructor.)
  std::vector<waiter> callers;
  for (auto& s : out) {
    std::lock_guard lk(s->mu);
    if (!s->finished) s->err = call_error(errc::shutdown);
    s->finished = true; // from here on nothing parks in s->waits
    for (auto& slot : s->waits)
      if (slot.h) take_waiter(slot, callers.emplace_back());
  }
  for (auto& w : callers) let_go(std::move(w), ctx, [](waiter&& other) { wake(std::move(other)); }); // finds the stream ended
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
