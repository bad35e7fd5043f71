// cogrid/impl/stream_serve.ipp — definitions for cogrid/detail/stream_core.hpp: the streams' side of a
// connection's reader (opening served streams, routing stream messages both ways, the ends of
// sessions). Part of what impl/node.ipp brings in.
#ifndef COGRID_IMPL_STREAM_SERVE_IPP
#define COGRID_IMPL_STREAM_SERVE_IPP

#include <cogrid/impl/stream.ipp>
#include <cogrid/impl/mux_serve.ipp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/post.hpp>

namespace cogrid::detail {

COGRID_DECL server_stream::server_stream(std::shared_ptr<connection> c, asio::any_io_executor s)
    : conn(std::move(c)), strand(std::move(s)), deadline_timer(strand), ping_timer(strand) {}

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

} // namespace cogrid::detail

#endif // COGRID_IMPL_STREAM_SERVE_IPP
