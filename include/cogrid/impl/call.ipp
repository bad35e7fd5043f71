// cogrid/impl/call.ipp — definitions for cogrid/detail/mux.hpp: unary calls on both sides (a caller
// waiting for its response, with deadline and cancellation; a request served by its handler) and the
// routing of every mux message of a connection (stream messages go to stream.ipp).
#ifndef COGRID_IMPL_CALL_IPP
#define COGRID_IMPL_CALL_IPP

#include <cogrid/control.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/handoff.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/stream_core.hpp>

#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace cogrid::detail {

using steady_clock = std::chrono::steady_clock;

/// How a caller waits for its call's result: the handler of `co_await call_raw(...)`, which receives it.
using call_handler = asio::async_result<asio::use_awaitable_t<>, void(result<payload>)>::handler_type;

/// A single request this node sent and waits on. Allocated from the per-thread block pool.
///
/// Completion is decided once, by whoever flips `done` first (the response, the deadline, the caller's
/// cancellation or the end of the session); the winner writes `err` and `resp`, then, under the
/// connection's mux lock, takes the call off the connection, sets `finished` and wakes the caller. The
/// caller's pending operation (its `call_initiation`) holds the connection until the caller resumes, so
/// `conn` outlives every winner.
struct pending_call {
  std::atomic<bool> done{false};
  bool finished = false;           // mux lock: err and resp are written
  basic_waiter<call_handler> w;    // mux lock
  std::uint64_t mux = 0, session = 0;
  connection* conn = nullptr;
  steady_clock::time_point deadline;
  pending_call* prev = nullptr;    // mux lock: the connection's deadline list
  pending_call* next = nullptr;
  bool listed = false;
  error err;
  payload resp;
  call_meter meter;                // begun by the initiation, ended by call_done
  std::size_t req_bytes = 0;
};

// Resumes the caller with its call's result (on the caller's executor): ends the call's meter and hands
// over the response or the error.
struct call_done {
  call_handler h;
  asio::cancellation_slot slot;
  std::shared_ptr<pending_call> p;
  void operator()() {
    if (slot.is_connected()) slot.clear();
    pending_call& pc = *p;
    connection& c = *pc.conn; // held by the caller's operation until `h` runs
    pc.meter.end(connection_access::shared(c).trace, c.remote(), pc.err.code, pc.resp ? pc.resp->size() : 0, pc.req_bytes);
    result<payload> r = pc.err ? result<payload>(std::move(pc.err)) : result<payload>(std::move(pc.resp));
    p.reset();
    std::move(h)(std::move(r));
  }
};

inline void wake_call(basic_waiter<call_handler>&& w, std::shared_ptr<pending_call> p, handoff how) {
  if (!w.h) return;
  auto ex = asio::get_associated_executor(*w.h);
  hand_off(ex, call_done{std::move(*w.h), w.slot, std::move(p)}, how);
}

// A call that ended before it was sent (not connected, a bad deadline or handler): its error, posted.
struct call_refused {
  call_handler h;
  error err;
  void operator()() { std::move(h)(result<payload>(std::move(err))); }
};

inline void send_disconnect_server_mux(connection& c, std::uint64_t mux, handoff how) {
  message m;
  m.mux_id = mux;
  m.op = op_code::disconnect_server_mux;
  (void)connection_access::send(c, m, true, how);
}

COGRID_DECL std::string describe_failure(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const exception& ce) {
    return ce.error().message();
  } catch (const std::system_error& se) {
    return se.code() == asio::error::operation_aborted ? std::string("handler cancelled") : std::string(se.what());
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "handler failed with a non-standard exception";
  }
}

// The deadline list (all under the mux lock).
inline void deadline_unlink(conn_mux& mx, pending_call* p) noexcept {
  if (!p->listed) return;
  (p->prev ? p->prev->next : mx.dl_head) = p->next;
  (p->next ? p->next->prev : mx.dl_tail) = p->prev;
  p->prev = p->next = nullptr;
  p->listed = false;
}

struct deadline_sweep;
inline void deadline_arm(connection& c, conn_mux& mx, steady_clock::time_point at);

inline void deadline_insert(connection& c, conn_mux& mx, pending_call* p) {
  pending_call* after = mx.dl_tail; // the common case: the latest deadline so far
  if (after && after->deadline > p->deadline) {
    // Earlier than the latest: walk from the end it is nearer to in time, so that a short timeout among
    // many long ones (or the reverse) passes only the calls of its own kind.
    if (p->deadline - mx.dl_head->deadline < after->deadline - p->deadline) {
      after = nullptr; // from the head: after the last call due no later than p
      for (pending_call* q = mx.dl_head; q && q->deadline <= p->deadline; q = q->next) after = q;
    } else {
      while (after && after->deadline > p->deadline) after = after->prev;
    }
  }
  p->prev = after;
  p->next = after ? after->next : mx.dl_head;
  (p->next ? p->next->prev : mx.dl_tail) = p;
  (after ? after->next : mx.dl_head) = p;
  p->listed = true;
  if (p->deadline < mx.timer_at) deadline_arm(c, mx, p->deadline);
}

// Completes `p` once (later attempts return false): takes it off its connection and resumes the caller
// on the caller's executor. With `cancel_remote` the remote is told to stop the handler, before the
// caller resumes (and may let the connection go).
inline bool complete(const std::shared_ptr<pending_call>& p, error err, payload resp, bool cancel_remote, handoff how) {
  if (p->done.exchange(true, std::memory_order_acq_rel)) return false;
  p->err = std::move(err);
  p->resp = std::move(resp);
  connection& c = *p->conn;
  conn_mux& mx = connection_access::mux(c);
  basic_waiter<call_handler> w;
  std::shared_ptr<pending_call> listed;
  {
    std::lock_guard lk(mx.mu);
    listed = mx.outgoing.take(p->mux);
    deadline_unlink(mx, p.get());
    p->finished = true;
    take_waiter(p->w, w);
  }
  if (cancel_remote) send_disconnect_server_mux(c, p->mux, how);
  wake_call(std::move(w), p, how);
  return true;
}

// The deadline timer fired: times out every call whose deadline has passed, re-arms for the next one.
struct deadline_sweep {
  std::weak_ptr<connection> conn;
  void operator()(std::error_code ec) const {
    if (ec) return; // re-armed for an earlier deadline, or shut down
    std::shared_ptr<connection> c = conn.lock();
    if (!c) return;
    conn_mux& mx = connection_access::mux(*c);
    std::vector<std::shared_ptr<pending_call>> expired;
    {
      std::lock_guard lk(mx.mu);
      mx.timer_at = steady_clock::time_point::max();
      const auto now = steady_clock::now();
      while (mx.dl_head && mx.dl_head->deadline <= now) {
        pending_call* p = mx.dl_head;
        deadline_unlink(mx, p);
        if (std::shared_ptr<pending_call>* sp = mx.outgoing.find(p->mux)) expired.push_back(*sp);
      }
      if (mx.dl_head) deadline_arm(*c, mx, mx.dl_head->deadline);
    }
    for (auto& p : expired) complete(p, error(errc::timeout), std::nullopt, true, handoff::continuation);
  }
};

inline void deadline_arm(connection& c, conn_mux& mx, steady_clock::time_point at) {
  // Once shutdown() has cancelled the timer, nothing arms it again (a timer left waiting would keep the
  // io_context's run() going for a call's whole timeout): the session's end completes the calls left.
  if (connection_access::stopping(c)) return;
  mx.timer_at = at;
  mx.deadline_timer.expires_at(at); // cancels a wait set for a later time (its sweep sees the error)
  mx.deadline_timer.async_wait(deadline_sweep{c.weak_from_this()});
}

struct call_cancel_fn {
  std::shared_ptr<pending_call> p;
  void operator()(asio::cancellation_type) const {
    complete(p, error(asio::error::operation_aborted), std::nullopt, true, handoff::fresh);
  }
};

// Starts a call once the caller is suspended: sends the request, then stores the caller's handler (or
// completes it at once when the call already ended: the send failed, or the response came first). This
// object lives in the caller's pending operation and keeps the connection alive until the caller
// resumes; once the handler is stored and the lock released, the caller may resume on another thread
// and destroy it: from there on only locals are used. A named type, not a lambda: GCC 12 miscompiles
// capturing lambdas passed into coroutines (Asio's use_awaitable initiate is one).
struct call_initiation {
  std::shared_ptr<connection> c;
  handler_id h{};
  std::optional<subroute_id> sub;
  std::vector<std::byte> req;
  bool nil = false;
  call_options opt;

  void operator()(call_handler handler) {
    connection& conn = *c;
    grid_shared& shared = connection_access::shared(conn);
    std::error_code early;
    if (static_cast<std::uint8_t>(h) == 0) early = errc::invalid_handler;
    else if (connection_access::stopping(conn)) early = errc::shutdown;
    else if (conn.state() != connection_state::connected) early = errc::disconnected;
    else if (opt.timeout < std::chrono::milliseconds(1)) early = errc::timeout;
    if (early) {
      if (early != errc::invalid_handler) {
        call_meter meter;
        meter.begin(shared.metrics.called(call_kind::unary, h, sub));
        meter.end(shared.trace, conn.remote(), early, 0, 0);
      }
      buffer_cache::give(std::move(req));
      auto ex = asio::get_associated_executor(handler);
      hand_off(ex, call_refused{std::move(handler), error(early)}, handoff::fresh);
      return;
    }
    conn_mux& mx = connection_access::mux(conn);
    mx.calls_made.fetch_add(1, std::memory_order_relaxed);
    auto p = std::allocate_shared<pending_call>(pool_allocator<pending_call>());
    p->meter.begin(shared.metrics.called(call_kind::unary, h, sub));
    p->req_bytes = nil ? 0 : req.size();
    p->conn = &conn;
    p->session = conn.session_id();
    p->mux = mx.next_id.fetch_add(1, std::memory_order_relaxed) + 1;
    p->deadline = steady_clock::now() + opt.timeout;
    bool stopping = false;
    {
      std::lock_guard lk(mx.mu); // shutdown() sets stopping, then cancels the deadline timer under this lock
      stopping = connection_access::stopping(conn);
      if (!stopping) {
        mx.outgoing.put(p->mux, p);
        deadline_insert(conn, mx, p.get());
      }
    }
    if (stopping) {
      complete(p, error(errc::shutdown), std::nullopt, false, handoff::fresh);
    } else {
      message m;
      m.mux_id = p->mux;
      m.deadline_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(opt.timeout.count(), 0xffffffffLL));
      m.handler = h;
      m.op = op_code::request;
      m.flags = msg_flags::eof;
      if (!nil) m.payload = std::span<const std::byte>(req);
      m.subroute = sub;
      // Encoded (copied) at once, or a large payload moved to the connection's large lane.
      const result<void> sent = connection_access::send(conn, m, false, handoff::fresh, nil ? nullptr : &req);
      if (!sent) {
        error why = sent.error();
        if (why == errc::payload_too_large) why.text += "; send data this large with cogrid::bulk_upload";
        complete(p, std::move(why), std::nullopt, false, handoff::fresh);
      }
    }
    buffer_cache::give(std::move(req));
    basic_waiter<call_handler> now;
    {
      std::lock_guard lk(mx.mu);
      arm(p->w, std::move(handler), call_cancel_fn{p});
      if (p->finished) take_waiter(p->w, now); // ended before we stored the handler
    }
    wake_call(std::move(now), std::move(p), handoff::fresh);
  }
};

COGRID_DECL asio::awaitable<result<payload>> call_raw(std::shared_ptr<connection> c, handler_id h, std::optional<subroute_id> sub,
                                                      std::vector<std::byte> req, bool nil, call_options opt) {
  // One Asio operation, no coroutine of ours around it: a call costs the caller one frame (Asio's).
  call_initiation init{std::move(c), h, sub, std::move(req), nil, opt};
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(result<payload>)>(std::move(init), asio::use_awaitable);
}

COGRID_DECL void abandon_calls(connection& c, asio::execution_context& ctx) {
  conn_mux& mx = connection_access::mux(c);
  std::vector<std::shared_ptr<pending_call>> calls;
  std::vector<std::shared_ptr<server_call>> served; // each holds its connection: released after the lock
  std::vector<basic_waiter<call_handler>> parked;
  {
    std::lock_guard lk(mx.mu);
    mx.outgoing.for_each([&](std::uint64_t, const std::shared_ptr<pending_call>& p) { calls.push_back(p); });
    mx.incoming.for_each([&](std::uint64_t, const std::shared_ptr<server_call>& sc) { served.push_back(sc); });
    mx.outgoing.clear();
    mx.incoming.clear();
    for (auto& p : calls) {
      p->done.store(true, std::memory_order_relaxed); // nothing completes it any more
      deadline_unlink(mx, p.get());
      p->finished = true;
      p->err = error(errc::shutdown);
      parked.emplace_back();
      take_waiter(p->w, parked.back());
    }
  }
  for (std::size_t i = 0; i < parked.size(); ++i)
    let_go(std::move(parked[i]), ctx,
           [&](basic_waiter<call_handler>&& w) { wake_call(std::move(w), calls[i], handoff::fresh); });
  abandon_streams(c, ctx);
}

// -- the serving side ---------------------------------------------------------------------------------

/// A single request this node serves with a coroutine handler.
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
  if (m.reassembled) return std::move(*m.reassembled); // put together from pieces: taken, not copied
  return buffer_cache::copy(m.payload->data(), m.payload->size());
}

// The error a caller reports for a refusal whose text is `text`: `errc::not_authorized` when an
// authorization hook refused it, else `otherwise`.
inline error refusal_error(errc otherwise, std::string text) {
  const bool hook = std::string_view(text).starts_with(not_authorized_prefix);
  return error(hook ? errc::not_authorized : otherwise, std::move(text));
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
  (void)connection_access::send(c, reply, true, handoff::continuation);
}

struct emit_cancel_fn {
  std::shared_ptr<server_call> sc;
  void operator()() const { sc->cancel.emit(asio::cancellation_type::terminal); }
};

COGRID_DECL const asio::any_io_executor& mux_core::handler_strand(connection& c) {
  auto& set = strands_[connection_access::home_index(c) % strands_.size()];
  return set[connection_access::mux(c).next_strand++ % set.size()];
}

// Answers request `m` with a failure whose text is `text`, as a failed handler's response.
inline void reply_failure(connection& c, const message& m, const std::string& text) {
  message reply;
  reply.mux_id = m.mux_id;
  reply.seq = m.seq;
  reply.handler = m.handler;
  reply.op = op_code::response;
  reply.flags = msg_flags::eof | msg_flags::payload_is_err;
  reply.payload = std::as_bytes(std::span(text.data(), text.size()));
  (void)connection_access::send(c, reply, true, handoff::continuation);
}

// Puts the caller of `m` (a request or stream open) to the handler's authorization hook; a refused
// caller is answered here (and false returned).
inline bool admitted(connection& c, const message& m, const handler_entry& e) {
  std::string why;
  try {
    const std::string identity = c.identity();
    caller_info who;
    who.host = c.remote();
    who.identity = identity;
    who.handler = m.handler;
    who.subroute = m.subroute;
    const result<void> r = e.authorize(who);
    if (r) return true;
    why = r.error().text.empty() ? r.error().code.message() : r.error().text;
  } catch (const std::exception& ex) {
    why = ex.what();
  } catch (...) {
    why = "the authorization hook failed";
  }
  const std::string text = std::string(not_authorized_prefix) + why;
  if (m.op == op_code::request) reply_failure(c, m, text);
  else reply_unknown_handler(c, m, text);
  return false;
}

COGRID_DECL void mux_core::on_refused(connection& c, const message& m, const std::string& why) {
  switch (m.op) {
  case op_code::request: // the caller hears why, as from a failed handler
    reply_failure(c, m, "request refused: " + why);
    return;
  case op_code::connect_mux:
    reply_unknown_handler(c, m, "stream refused: " + why);
    return;
  case op_code::response: {
    conn_mux& mx = connection_access::mux(c);
    std::shared_ptr<pending_call> p;
    {
      std::lock_guard lk(mx.mu);
      if (std::shared_ptr<pending_call>* found = mx.outgoing.find(m.mux_id)) p = *found;
    }
    if (p) complete(p, error(errc::payload_too_large, "response refused: " + why), std::nullopt, false, handoff::continuation);
    return;
  }
  default:
    stream_on_refused(c, m, why);
    return;
  }
}

COGRID_DECL void mux_core::on_message(connection& c, const message& m) {
  conn_mux& mx = connection_access::mux(c);
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
      if (!m.payload || !decode(*m.payload, e)) e.error = "unknown mux handler";
      complete(p, refusal_error(errc::unknown_handler, std::move(e.error)), std::nullopt, false, handoff::continuation);
    } else if (has(m.flags, msg_flags::payload_is_err)) {
      complete(p, refusal_error(errc::remote_error, text_of(m)), std::nullopt, false, handoff::continuation);
    } else {
      complete(p, error(), copy_payload(m), false, handoff::continuation);
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
    if (!sc->cancelled.exchange(true)) hand_off(sc->strand, emit_cancel_fn{sc}, handoff::continuation);
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
                          handler_id handler, result<payload> r, std::size_t req_bytes, bool timed_out) {
  conn_mux& mx = connection_access::mux(c);
  const trace_hook& hook = connection_access::shared(c).trace;
  if (timed_out) { // the caller has given up: count it, send nothing (MinIO drops it silently)
    mx.late_responses.fetch_add(1, std::memory_order_relaxed);
    meter.end(hook, c.remote(), make_error_code(errc::timeout), req_bytes, 0);
    if (r) buffer_cache::give(std::move(*r));
    return;
  }
  const std::string err_text = r ? std::string() : r.error().message();
  meter.end(hook, c.remote(), r ? std::error_code() : make_error_code(errc::remote_error), req_bytes,
            r ? (*r ? (*r)->size() : 0) : err_text.size());
  if (c.session_id() != session) return; // the caller's session is gone
  message out;
  out.mux_id = mux;
  out.seq = seq;
  out.handler = handler;
  out.op = op_code::response;
  out.flags = msg_flags::eof;
  if (r) {
    if (*r) out.payload = std::span<const std::byte>(**r);
  } else {
    out.flags |= msg_flags::payload_is_err;
    out.payload = std::as_bytes(std::span(err_text.data(), err_text.size()));
  }
  // Encoded (copied) at once, or a large payload moved to the connection's large lane.
  const result<void> sent = connection_access::send(c, out, true, handoff::continuation, r && *r ? &**r : nullptr);
  if (!sent && sent.error() == errc::payload_too_large) {
    // Too large for the caller: the call fails with why, the link stays.
    const std::string why = "the response " + sent.error().message();
    out.flags |= msg_flags::payload_is_err;
    out.payload = std::as_bytes(std::span(why.data(), why.size()));
    (void)connection_access::send(c, out, true, handoff::continuation);
    connection_access::log(c, log_level::warning, "handler " + std::to_string(static_cast<unsigned>(handler)) + ": " + why);
  }
  if (r) buffer_cache::give(std::move(*r));
}

// A request for a plain-function handler: run as a handler of the connection's executor.
struct sync_call {
  std::shared_ptr<connection> conn;
  const handler_entry* fn = nullptr;
  payload req;
  std::uint64_t mux = 0, session = 0;
  std::uint32_t seq = 0, deadline_ms = 0;
  handler_id handler{};
  std::optional<subroute_id> subroute;
  call_meter meter;

  void operator()() {
    call_context ctx;
    ctx.conn = conn.get();
    ctx.handler = handler;
    ctx.subroute = subroute;
    if (deadline_ms) ctx.deadline = meter.started + std::chrono::milliseconds(deadline_ms);
    const std::size_t req_bytes = req ? req->size() : 0;
    result<payload> r = payload(); // set below (no error text built up front: a call allocates nothing here)
    try {
      r = fn->sync(ctx, std::move(req));
    } catch (...) {
      r = remote_error(describe_failure(std::current_exception()));
    }
    connection_access::mux(*conn).sync_in.fetch_sub(1, std::memory_order_relaxed);
    const bool late = deadline_ms && steady_clock::now() > ctx.deadline;
    finish_served(*conn, meter, session, mux, seq, handler, std::move(r), req_bytes, late);
  }
};

struct server_call_deadline_fn {
  std::shared_ptr<server_call> sc;
  void operator()(std::error_code ec) const {
    if (ec) return; // the handler finished first
    sc->timed_out = true;
    if (!sc->cancelled.load()) sc->cancel.emit(asio::cancellation_type::terminal); // we run on sc->strand
  }
};

inline asio::awaitable<void> run_server_call(std::shared_ptr<server_call> sc, const handler_entry* fn, payload req) {
  call_context ctx;
  ctx.conn = sc->conn.get();
  ctx.handler = sc->handler;
  ctx.subroute = sc->subroute;
  if (sc->deadline_ms) ctx.deadline = steady_clock::now() + std::chrono::milliseconds(sc->deadline_ms);
  result<payload> r = payload(); // set below (no error text built up front: a call allocates nothing here)
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
  if (failed) r = remote_error(describe_failure(failed));
  sc->deadline.cancel();
  conn_mux& mx = connection_access::mux(*sc->conn);
  {
    std::lock_guard lk(mx.mu);
    if (std::shared_ptr<server_call>* found = mx.incoming.find(sc->mux); found && *found == sc) mx.incoming.take(sc->mux);
  }
  if (sc->cancelled) {
    mx.cancelled.fetch_add(1, std::memory_order_relaxed);
    sc->meter.end(connection_access::shared(*sc->conn).trace, sc->conn->remote(), asio::error::operation_aborted, req_bytes, 0);
    if (r) buffer_cache::give(std::move(*r));
    co_return;
  }
  finish_served(*sc->conn, sc->meter, sc->session, sc->mux, sc->seq, sc->handler, std::move(r), req_bytes, sc->timed_out);
}

COGRID_DECL void mux_core::serve_request(connection& c, const message& m) {
  const handler_entry* fn = handlers_.find(handler_kind::unary, m);
  if (!fn) {
    reply_unknown_handler(c, m);
    return;
  }
  if (fn->authorize && !admitted(c, m, *fn)) return;
  conn_mux& mx = connection_access::mux(c);
  mx.calls_served.fetch_add(1, std::memory_order_relaxed);
  if (fn->sync) {
    sync_call call;
    call.meter.begin(*fn->metrics);
    call.conn = c.shared_from_this();
    call.fn = fn;
    call.req = copy_payload(m);
    call.mux = m.mux_id;
    call.session = c.session_id();
    call.seq = m.seq;
    call.deadline_ms = m.deadline_ms;
    call.handler = m.handler;
    call.subroute = m.subroute;
    mx.sync_in.fetch_add(1, std::memory_order_relaxed);
    hand_off(connection_access::home(c), std::move(call), handoff::continuation);
    return;
  }
  auto sc = std::allocate_shared<server_call>(pool_allocator<server_call>(), c.shared_from_this(), handler_strand(c));
  sc->mux = m.mux_id;
  sc->seq = m.seq;
  sc->deadline_ms = m.deadline_ms;
  sc->handler = m.handler;
  sc->subroute = m.subroute;
  sc->session = c.session_id();
  {
    std::lock_guard lk(mx.mu);
    std::shared_ptr<server_call>* live = mx.incoming.find(m.mux_id);
    if (live && (*live)->session == sc->session) {
      // A second request for a mux whose handler still runs (a broken peer: ids are never reused within
      // a session): ignored, like a second connect of a stream. The first stays cancellable; its
      // response answers the caller's one call with this id. (One from an ended session, cancelled and
      // unwinding, gives way: a restarted peer numbers its calls from 1 again.)
      mx.unknown_mux.fetch_add(1, std::memory_order_relaxed);
      mx.calls_served.fetch_sub(1, std::memory_order_relaxed); // counted above, not served
      return;
    }
    mx.incoming.put(m.mux_id, sc);
  }
  sc->meter.begin(*fn->metrics);
  auto strand = sc->strand;
  auto slot = sc->cancel.slot();
  asio::co_spawn(strand, run_server_call(sc, fn, copy_payload(m)), asio::bind_cancellation_slot(slot, asio::detached));
}

COGRID_DECL void mux_core::on_session_end(connection& c, std::uint64_t session, std::error_code) {
  conn_mux& mx = connection_access::mux(c);
  std::vector<std::shared_ptr<pending_call>> calls;
  std::vector<std::shared_ptr<server_call>> served;
  {
    std::lock_guard lk(mx.mu);
    mx.outgoing.for_each([&](std::uint64_t, const std::shared_ptr<pending_call>& p) {
      if (p->session <= session) calls.push_back(p);
    });
    mx.incoming.for_each([&](std::uint64_t, const std::shared_ptr<server_call>& sc) {
      if (sc->session <= session) served.push_back(sc);
    });
  }
  for (auto& p : calls) complete(p, error(errc::disconnected), std::nullopt, false, handoff::continuation);
  for (auto& sc : served)
    if (!sc->cancelled.exchange(true)) hand_off(sc->strand, emit_cancel_fn{sc}, handoff::continuation);
  stream_on_session_end(c, session);
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_CALL_IPP
