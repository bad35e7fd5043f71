// cogrid/impl/mux.ipp — definitions for cogrid/detail/mux.hpp.
#ifndef COGRID_IMPL_MUX_IPP
#define COGRID_IMPL_MUX_IPP

#include <cogrid/detail/mux.hpp>
#include <cogrid/control.hpp>

#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace cogrid::detail {

/// A single request this node sent and waits on.
struct pending_call {
  explicit pending_call(const connection::executor_type& ex) : timer(ex) {}
  std::mutex mu;
  bool done = false;
  waiter w;
  std::uint64_t mux = 0, session = 0;
  std::weak_ptr<connection> conn;
  asio::steady_timer timer; // the deadline, on the connection's strand
  call_error err;
  payload resp;
};

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

inline payload copy_payload(const message& m) {
  if (!m.payload) return std::nullopt;
  return std::vector<std::byte>(m.payload->begin(), m.payload->end());
}

inline void send_disconnect_server_mux(connection& c, std::uint64_t mux) {
  message m;
  m.mux_id = mux;
  m.op = op_code::disconnect_server_mux;
  (void)c.send(m);
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

// The text a failed handler (unary or stream) sends back: a `handler_error` thrown as is, the what() of
// a standard exception, "handler cancelled" for operation_aborted.
inline std::string describe_failure(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const handler_error& he) {
    return he.text;
  } catch (const std::system_error& se) {
    return se.code() == asio::error::operation_aborted ? std::string("handler cancelled") : std::string(se.what());
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "handler failed with a non-standard exception";
  }
}

// Completes `p` once (later attempts return false): removes it from its connection, stops its deadline,
// and resumes the caller on the caller's executor.
inline bool complete(const std::shared_ptr<pending_call>& p, call_error err, payload resp = std::nullopt) {
  waiter w;
  {
    std::lock_guard lk(p->mu);
    if (p->done) return false;
    p->done = true;
    p->err = std::move(err);
    p->resp = std::move(resp);
    take_waiter(p->w, w);
  }
  if (auto c = p->conn.lock()) {
    {
      std::lock_guard lk(c->mux().mu);
      c->mux().outgoing.erase(p->mux);
    }
    asio::post(c->get_executor(), [p] { p->timer.cancel(); });
  }
  wake(std::move(w));
  return true;
}

struct call_cancel_fn {
  std::shared_ptr<pending_call> p;
  void operator()(asio::cancellation_type) const {
    if (complete(p, call_error(asio::error::operation_aborted)))
      if (auto c = p->conn.lock()) send_disconnect_server_mux(*c, p->mux);
  }
};

struct call_deadline_fn {
  std::shared_ptr<pending_call> p;
  void operator()(std::error_code ec) const {
    if (ec) return; // cancelled: the call completed otherwise
    if (complete(p, call_error(errc::timeout)))
      if (auto c = p->conn.lock()) send_disconnect_server_mux(*c, p->mux);
  }
};

// Sends the request, then stores the caller's handler (or completes it at once when the call already
// ended: the send failed, or the response came first), then arms the deadline. Once the handler is stored
// and the lock released, the caller may resume on another thread and destroy this object and `*m` (both
// live in its coroutine frames): from there on only locals are used. A named type, not a lambda: GCC 12
// miscompiles capturing lambdas passed into coroutines (Asio's use_awaitable initiate is one).
struct call_initiation {
  std::shared_ptr<pending_call> p;
  std::shared_ptr<connection> c;
  const message* m;
  std::chrono::milliseconds timeout;

  void operator()(wait_handler h) const {
    std::shared_ptr<pending_call> pp = p;
    std::shared_ptr<connection> cc = c;
    const auto d = timeout;
    if (std::error_code ec = cc->send(*m)) complete(pp, call_error(ec));
    waiter now;
    {
      std::lock_guard lk(pp->mu);
      arm(pp->w, std::move(h), call_cancel_fn{pp});
      if (pp->done) take_waiter(pp->w, now); // ended before we stored the handler
    }
    if (now.h) {
      wake(std::move(now));
      return;
    }
    asio::post(cc->get_executor(), [pp, d] {
      {
        std::lock_guard lk(pp->mu);
        if (pp->done) return; // completed before the arm; else complete()'s cancel runs after this arm
      }
      pp->timer.expires_after(d);
      pp->timer.async_wait(call_deadline_fn{pp});
    });
  }
};

COGRID_DECL asio::awaitable<call_result<payload>> call_raw(std::shared_ptr<connection> c, handler_id h,
                                                           std::optional<subroute_id> sub,
                                                           std::optional<std::span<const std::byte>> req,
                                                           call_options opt) {
  if (static_cast<std::uint8_t>(h) == 0) co_return call_error(errc::invalid_handler);
  call_meter meter;
  meter.begin(c->shared().metrics.called(call_kind::unary, h, sub));
  const std::size_t req_bytes = req ? req->size() : 0;
  std::error_code early;
  if (c->state() != connection_state::connected) early = errc::disconnected;
  else if (opt.timeout < std::chrono::milliseconds(1)) early = errc::timeout;
  if (early) {
    meter.end(c->shared().trace, c->remote(), early, 0, 0);
    co_return call_error(early);
  }
  c->mux().calls_made.fetch_add(1, std::memory_order_relaxed);
  auto p = std::make_shared<pending_call>(c->get_executor());
  p->conn = c;
  p->session = c->session_id();
  p->mux = c->mux().next_id.fetch_add(1, std::memory_order_relaxed) + 1;
  {
    std::lock_guard lk(c->mux().mu);
    c->mux().outgoing.emplace(p->mux, p);
  }
  message m;
  m.mux_id = p->mux;
  m.deadline_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(opt.timeout.count(), 0xffffffffLL));
  m.handler = h;
  m.op = op_code::request;
  m.flags = msg_flags::eof;
  m.payload = req;
  m.subroute = sub;
  call_initiation init{p, c, &m, opt.timeout};
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(std::move(init), asio::use_awaitable);
  std::unique_lock lk(p->mu);
  call_error err = std::move(p->err);
  payload resp = std::move(p->resp);
  lk.unlock();
  meter.end(c->shared().trace, c->remote(), err.code, resp ? resp->size() : 0, req_bytes);
  if (err) co_return err;
  co_return resp;
}

COGRID_DECL std::error_code mux_core::register_unary(handler_id h, std::optional<subroute_id> sub, std::string_view route,
                                                     raw_unary_handler fn) {
  if (static_cast<std::uint8_t>(h) == 0) return errc::invalid_handler;
  auto f = std::make_shared<const unary_entry>(unary_entry{std::move(fn), &metrics_.served(call_kind::unary, h, sub, route)});
  std::unique_lock lk(reg_mu_);
  if (sub) {
    if (!unary_sub_.emplace(sub->bytes, std::move(f)).second) return errc::handler_exists;
  } else if (!unary_.emplace(static_cast<std::uint8_t>(h), std::move(f)).second) {
    return errc::handler_exists;
  }
  return {};
}

COGRID_DECL std::error_code mux_core::register_stream(handler_id h, std::optional<subroute_id> sub, std::string_view route,
                                                      stream_entry e) {
  if (static_cast<std::uint8_t>(h) == 0) return errc::invalid_handler;
  if (e.cap.out == 0 || !e.start) return errc::invalid_value;
  e.metrics = &metrics_.served(call_kind::stream, h, sub, route);
  auto f = std::make_shared<const stream_entry>(std::move(e));
  std::unique_lock lk(reg_mu_);
  if (sub) {
    if (!streams_sub_.emplace(sub->bytes, std::move(f)).second) return errc::handler_exists;
  } else if (!streams_.emplace(static_cast<std::uint8_t>(h), std::move(f)).second) {
    return errc::handler_exists;
  }
  return {};
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
      auto it = mx.outgoing.find(m.mux_id);
      if (it != mx.outgoing.end()) p = it->second;
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
      auto it = mx.incoming.find(m.mux_id);
      if (it != mx.incoming.end()) sc = it->second;
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

COGRID_DECL void mux_core::serve_request(connection& c, const message& m) {
  std::shared_ptr<const unary_entry> fn = static_cast<std::uint8_t>(m.handler) == 0 ? nullptr : find_unary(m);
  if (!fn) {
    reply_unknown_handler(c, m);
    return;
  }
  auto sc = std::make_shared<server_call>(c.shared_from_this(), handler_strand());
  sc->mux = m.mux_id;
  sc->seq = m.seq;
  sc->deadline_ms = m.deadline_ms;
  sc->handler = m.handler;
  sc->subroute = m.subroute;
  sc->session = c.session_id();
  sc->meter.begin(*fn->metrics);
  c.mux().calls_served.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lk(c.mux().mu);
    c.mux().incoming[m.mux_id] = sc;
  }
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
  handler_result<payload> r = handler_error{"handler produced no result"};
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
  const bool timed_out = sc->timed_out;
  conn_mux& mx = sc->conn->mux();
  {
    std::lock_guard lk(mx.mu);
    auto it = mx.incoming.find(sc->mux);
    if (it != mx.incoming.end() && it->second == sc) mx.incoming.erase(it);
  }
  const trace_hook& hook = sc->conn->shared().trace;
  if (sc->cancelled) {
    mx.cancelled.fetch_add(1, std::memory_order_relaxed);
    sc->meter.end(hook, sc->conn->remote(), asio::error::operation_aborted, req_bytes, 0);
    co_return;
  }
  if (timed_out) { // the caller has given up: count it, send nothing (MinIO drops it silently)
    mx.late_responses.fetch_add(1, std::memory_order_relaxed);
    sc->meter.end(hook, sc->conn->remote(), make_error_code(errc::timeout), req_bytes, 0);
    co_return;
  }
  sc->meter.end(hook, sc->conn->remote(), r ? std::error_code() : make_error_code(errc::remote_error), req_bytes,
                r ? (*r ? (*r)->size() : 0) : r.error().text.size());
  if (sc->conn->session_id() != sc->session) co_return; // the caller's session is gone
  message out;
  out.mux_id = sc->mux;
  out.seq = sc->seq;
  out.handler = sc->handler;
  out.op = op_code::response;
  out.flags = msg_flags::eof;
  const std::string err_text = r ? std::string() : r.error().text;
  if (r) {
    if (*r) out.payload = std::span<const std::byte>(**r);
  } else {
    out.flags |= msg_flags::payload_is_err;
    out.payload = std::as_bytes(std::span(err_text.data(), err_text.size()));
  }
  (void)sc->conn->send_control(out);
}

COGRID_DECL void mux_core::on_session_end(connection& c, std::uint64_t session, std::error_code) {
  std::vector<std::shared_ptr<pending_call>> calls;
  std::vector<std::shared_ptr<server_call>> served;
  {
    std::lock_guard lk(c.mux().mu);
    for (auto& [id, p] : c.mux().outgoing)
      if (p->session <= session) calls.push_back(p);
    for (auto& [id, sc] : c.mux().incoming)
      if (sc->session <= session) served.push_back(sc);
  }
  for (auto& p : calls) complete(p, call_error(errc::disconnected));
  for (auto& sc : served)
    if (!sc->cancelled.exchange(true)) asio::post(sc->strand, [sc] { sc->cancel.emit(asio::cancellation_type::terminal); });
  stream_on_session_end(c, session);
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_MUX_IPP
