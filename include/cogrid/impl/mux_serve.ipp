// cogrid/impl/mux_serve.ipp — definitions for cogrid/detail/mux.hpp: the mux layer's side of a
// connection's reader (responses to our calls, requests to serve, the ends of sessions). Part of what
// impl/node.ipp brings in.
#ifndef COGRID_IMPL_MUX_SERVE_IPP
#define COGRID_IMPL_MUX_SERVE_IPP

#include <cogrid/impl/mux.ipp>

#include <asio/co_spawn.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/detached.hpp>

namespace cogrid::detail {

/// A single request this node serves.
struct server_call {
  server_call(std::shared_ptr<connection> c, asio::any_io_executor s)
      : conn(std::move(c)), strand(std::move(s)), deadline(strand) {}
  std::shared_ptr<connection> conn;
  asio::any_io_executor strand;               // the handler's coroutine runs here (a strand)
  asio::cancellation_signal cancel;           // emitted on `strand` only
  asio::steady_timer deadline;                // strand: cancels the handler when the caller's deadline passes
  std::atomic<bool> cancelled{false};
  bool timed_out = false;                     // strand
  std::uint64_t mux = 0, session = 0;
  std::uint32_t seq = 0, deadline_ms = 0;
  handler_id handler{};
  std::optional<subroute_id> subroute;
  call_meter meter; // the handler's strand
};

inline std::string text_of(const message& m) {
  return m.payload ? std::string(reinterpret_cast<const char*>(m.payload->data()), m.payload->size()) : std::string();
}

// A copy of the message's payload in a recycled buffer (the read buffer is reused for the next frame).
inline payload copy_payload(const message& m) {
  if (!m.payload) return std::nullopt;
  return buffer_cache::copy(m.payload->data(), m.payload->size());
}

// Refuses a request or stream for a handler this node does not have. MinIO's answer: the request message
// re-used as OpMuxConnectError (same mux, seq, handler and deadline; subroute cleared) with the reason.
inline void reply_unknown_handler(connection& c, const message& m, std::string reason = {}) {
  mux_connect_error e;
  if (!reason.empty()) e.error = std::move(reason);
  else if (static_cast<std::uint8_t>(m.handler) == 0) e.error = "Invalid Handler";
  else if (m.subroute) e.error = "Invalid Handler for type: " + m.subroute->to_hex();
  else e.error = "Invalid Handler for type: " + std::to_string(static_cast<unsigned>(m.handler));
  std::vector<std::byte> body;
  encode_append(e, body);
  message reply;
  reply.mux_id = m.mux_id;
  reply.seq = m.seq;
  reply.deadline_ms = m.deadline_ms;
  reply.handler = m.handler;
  reply.op = op_code::mux_connect_error;
  reply.payload = std::span<const std::byte>(body);
  (void)c.send_control(reply);
}

COGRID_DECL std::shared_ptr<const stream_entry> mux_core::find_stream(const message& m) {
  if (static_cast<std::uint8_t>(m.handler) == 0) return nullptr;
  std::shared_lock lk(reg_mu_);
  if (m.subroute) {
    auto it = streams_sub_.find(m.subroute->bytes);
    return it == streams_sub_.end() ? nullptr : it->second;
  }
  auto it = streams_.find(static_cast<std::uint8_t>(m.handler));
  return it == streams_.end() ? nullptr : it->second;
}

COGRID_DECL std::shared_ptr<const unary_entry> mux_core::find_unary(const message& m) {
  std::shared_lock lk(reg_mu_);
  if (m.subroute) {
    auto it = unary_sub_.find(m.subroute->bytes);
    return it == unary_sub_.end() ? nullptr : it->second;
  }
  auto it = unary_.find(static_cast<std::uint8_t>(m.handler));
  return it == unary_.end() ? nullptr : it->second;
}

COGRID_DECL void mux_core::on_message(connection& c, const message& m) {
  conn_mux& mx = c.mux();
  switch (m.op) {
  case op_code::request:
    serve_request(c, m);
    return;
  case op_code::response:
  case op_code::mux_connect_error: {
    std::shared_ptr<pending_call> p;
    {
      std::lock_guard lk(mx.mu);
      if (std::shared_ptr<pending_call>* found = mx.outgoing.find(m.mux_id)) p = *found;
    }
    if (!p && m.op == op_code::mux_connect_error && stream_on_message(*this, c, m)) return;
    if (!p) { // a response to a call that gave up (timeout, cancel): counted, not an error
      mx.late_responses.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (m.op == op_code::mux_connect_error) {
      mux_connect_error e;
      if (!m.payload || decode(*m.payload, e)) e.error = "unknown mux handler";
      complete(p, call_error(errc::unknown_handler, e.error));
    } else if (has(m.flags, msg_flags::payload_is_err)) {
      complete(p, call_error(errc::remote_error, text_of(m)));
    } else {
      complete(p, call_error(), copy_payload(m));
    }
    return;
  }
  case op_code::disconnect_server_mux: {
    std::shared_ptr<server_call> sc;
    {
      std::lock_guard lk(mx.mu);
      if (std::shared_ptr<server_call>* found = mx.incoming.find(m.mux_id)) sc = *found;
    }
    if (!sc) {
      (void)stream_on_message(*this, c, m);
      return;
    }
    if (!sc->cancelled.exchange(true)) asio::post(sc->strand, [sc] { sc->cancel.emit(asio::cancellation_type::terminal); });
    return;
  }
  default:
    if (stream_on_message(*this, c, m)) return;
    mx.unknown_mux.fetch_add(1, std::memory_order_relaxed);
    return;
  }
}

// Sends a served call's response (or nothing when the caller gave up or its session is gone) and
// records how the call ended. Recycles the response's buffer.
inline void finish_served(connection& c, call_meter& meter, std::uint64_t session, std::uint64_t mux, std::uint32_t seq,
                          handler_id handler, handler_result<payload> r, std::size_t req_bytes, bool timed_out) {
  conn_mux& mx = c.mux();
  const trace_hook& hook = c.shared().trace;
  if (timed_out) { // the caller has given up: count it, send nothing (MinIO drops it silently)
    mx.late_responses.fetch_add(1, std::memory_order_relaxed);
    meter.end(hook, c.remote(), make_error_code(errc::timeout), req_bytes, 0);
    if (r) buffer_cache::give(std::move(*r));
    return;
  }
  meter.end(hook, c.remote(), r ? std::error_code() : make_error_code(errc::remote_error), req_bytes,
            r ? (*r ? (*r)->size() : 0) : r.error().text.size());
  if (c.session_id() != session) return; // the caller's session is gone
  message out;
  out.mux_id = mux;
  out.seq = seq;
  out.handler = handler;
  out.op = op_code::response;
  out.flags = msg_flags::eof;
  std::string err_text;
  if (r) {
    if (*r) out.payload = std::span<const std::byte>(**r);
  } else {
    err_text = r.error().text;
    out.flags |= msg_flags::payload_is_err;
    out.payload = std::as_bytes(std::span(err_text.data(), err_text.size()));
  }
  (void)c.send_control(out); // encoded (copied) at once
  if (r) buffer_cache::give(std::move(*r));
}

// A request for a plain-function handler: posted to the io_context and run there as is.
struct sync_call {
  std::shared_ptr<connection> conn;
  std::shared_ptr<const unary_entry> fn;
  payload req;
  std::uint64_t mux = 0, session = 0;
  std::uint32_t seq = 0, deadline_ms = 0;
  handler_id handler{};
  std::optional<subroute_id> subroute;
  call_meter meter;
  bool alone = false; // posted to an io_context's own executor: nothing else runs in this turn (runs_alone)

  void operator()() {
    call_context ctx;
    ctx.conn = conn.get();
    ctx.handler = handler;
    ctx.subroute = subroute;
    if (deadline_ms) ctx.deadline = meter.started + std::chrono::milliseconds(deadline_ms);
    const std::size_t req_bytes = req ? req->size() : 0;
    handler_result<payload> r = payload(); // set below (no error text built up front: a call allocates nothing here)
    try {
      r = fn->sync(ctx, std::move(req));
    } catch (...) {
      r = handler_error{describe_failure(std::current_exception())};
    }
    conn->mux().sync_in.fetch_sub(1, std::memory_order_relaxed);
    const bool late = deadline_ms && std::chrono::steady_clock::now() > ctx.deadline;
    handoff_scope handing_off(alone); // the user's function has returned: only ours runs from here
    finish_served(*conn, meter, session, mux, seq, handler, std::move(r), req_bytes, late);
  }
};

COGRID_DECL void mux_core::serve_request(connection& c, const message& m) {
  std::shared_ptr<const unary_entry> fn = static_cast<std::uint8_t>(m.handler) == 0 ? nullptr : find_unary(m);
  if (!fn) {
    reply_unknown_handler(c, m);
    return;
  }
  c.mux().calls_served.fetch_add(1, std::memory_order_relaxed);
  if (fn->sync) {
    sync_call call;
    call.meter.begin(*fn->metrics);
    call.conn = c.shared_from_this();
    call.fn = std::move(fn);
    call.req = copy_payload(m);
    call.mux = m.mux_id;
    call.session = c.session_id();
    call.seq = m.seq;
    call.deadline_ms = m.deadline_ms;
    call.handler = m.handler;
    call.subroute = m.subroute;
    call.alone = runs_alone(ex_);
    c.mux().sync_in.fetch_add(1, std::memory_order_relaxed);
    post_continuation(ex_, std::move(call));
    return;
  }
  auto sc = std::allocate_shared<server_call>(pool_allocator<server_call>(), c.shared_from_this(), handler_strand());
  sc->mux = m.mux_id;
  sc->seq = m.seq;
  sc->deadline_ms = m.deadline_ms;
  sc->handler = m.handler;
  sc->subroute = m.subroute;
  sc->session = c.session_id();
  {
    std::lock_guard lk(c.mux().mu);
    std::shared_ptr<server_call>* live = c.mux().incoming.find(m.mux_id);
    if (live && (*live)->session == sc->session) {
      // A second request for a mux whose handler still runs (a broken peer: ids are never reused within
      // a session): ignored, like a second connect of a stream. The first stays cancellable; its
      // response answers the caller's one call with this id. (One from an ended session, cancelled and
      // unwinding, gives way: a restarted peer numbers its calls from 1 again.)
      c.mux().unknown_mux.fetch_add(1, std::memory_order_relaxed);
      c.mux().calls_served.fetch_sub(1, std::memory_order_relaxed); // counted above, not served
      return;
    }
    c.mux().incoming.put(m.mux_id, sc);
  }
  sc->meter.begin(*fn->metrics);
  auto strand = sc->strand;
  auto slot = sc->cancel.slot();
  asio::co_spawn(strand, run_server_call(sc, std::move(fn), copy_payload(m)),
                 asio::bind_cancellation_slot(slot, asio::detached));
}

struct server_call_deadline_fn {
  std::shared_ptr<server_call> sc;
  void operator()(std::error_code ec) const {
    if (ec) return; // the handler finished first
    sc->timed_out = true;
    if (!sc->cancelled.load()) sc->cancel.emit(asio::cancellation_type::terminal); // we run on sc->strand
  }
};

COGRID_DECL asio::awaitable<void> mux_core::run_server_call(std::shared_ptr<server_call> sc,
                                                            std::shared_ptr<const unary_entry> fn, payload req) {
  call_context ctx;
  ctx.conn = sc->conn.get();
  ctx.handler = sc->handler;
  ctx.subroute = sc->subroute;
  if (sc->deadline_ms) ctx.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(sc->deadline_ms);
  handler_result<payload> r = payload(); // set below (no error text built up front: a call allocates nothing here)
  // The deadline is a timer that cancels the handler (not `handler || timer`: Asio's awaitable operators
  // cost a parallel group and an exception in the loser on every call).
  if (sc->deadline_ms) {
    sc->deadline.expires_after(std::chrono::milliseconds(sc->deadline_ms));
    sc->deadline.async_wait(server_call_deadline_fn{sc});
  }
  std::exception_ptr failed;
  const std::size_t req_bytes = req ? req->size() : 0;
  try {
    r = co_await fn->fn(ctx, std::move(req));
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed) r = handler_error{describe_failure(failed)};
  sc->deadline.cancel();
  conn_mux& mx = sc->conn->mux();
  {
    std::lock_guard lk(mx.mu);
    if (std::shared_ptr<server_call>* found = mx.incoming.find(sc->mux); found && *found == sc) mx.incoming.take(sc->mux);
  }
  if (sc->cancelled) {
    mx.cancelled.fetch_add(1, std::memory_order_relaxed);
    sc->meter.end(sc->conn->shared().trace, sc->conn->remote(), asio::error::operation_aborted, req_bytes, 0);
    if (r) buffer_cache::give(std::move(*r));
    co_return;
  }
  finish_served(*sc->conn, sc->meter, sc->session, sc->mux, sc->seq, sc->handler, std::move(r), req_bytes, sc->timed_out);
}

COGRID_DECL void mux_core::on_session_end(connection& c, std::uint64_t session, std::error_code) {
  std::vector<std::shared_ptr<pending_call>> calls;
  std::vector<std::shared_ptr<server_call>> served;
  {
    std::lock_guard lk(c.mux().mu);
    c.mux().outgoing.for_each([&](std::uint64_t, const std::shared_ptr<pending_call>& p) {
      if (p->session <= session) calls.push_back(p);
    });
    c.mux().incoming.for_each([&](std::uint64_t, const std::shared_ptr<server_call>& sc) {
      if (sc->session <= session) served.push_back(sc);
    });
  }
  for (auto& p : calls) complete(p, call_error(errc::disconnected));
  for (auto& sc : served)
    if (!sc->cancelled.exchange(true)) asio::post(sc->strand, [sc] { sc->cancel.emit(asio::cancellation_type::terminal); });
  stream_on_session_end(c, session);
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_MUX_SERVE_IPP
