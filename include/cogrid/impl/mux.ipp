// cogrid/impl/mux.ipp — definitions for cogrid/detail/mux.hpp: the calling side of unary calls and
// handler registration. Serving requests is in mux_serve.ipp.
#ifndef COGRID_IMPL_MUX_IPP
#define COGRID_IMPL_MUX_IPP

#include <cogrid/detail/mux.hpp>
#include <cogrid/control.hpp>

#include <asio/async_result.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace cogrid::detail {

/// How a caller waits for its call's result: the handler of `co_await call_raw(...)`, which receives it.
using call_handler = asio::async_result<asio::use_awaitable_t<>, void(call_result<payload>)>::handler_type;

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
  std::chrono::steady_clock::time_point deadline;
  pending_call* prev = nullptr;    // mux lock: the connection's deadline list
  pending_call* next = nullptr;
  bool listed = false;
  call_error err;
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
    pc.meter.end(c.shared().trace, c.remote(), pc.err.code, pc.resp ? pc.resp->size() : 0, pc.req_bytes);
    call_result<payload> r = pc.err ? call_result<payload>(std::move(pc.err)) : call_result<payload>(std::move(pc.resp));
    p.reset();
    resuming by_us(h);
    std::move(h)(std::move(r));
  }
};

inline void wake_call(basic_waiter<call_handler>&& w, std::shared_ptr<pending_call> p) {
  if (!w.h) return;
  auto ex = asio::get_associated_executor(*w.h);
  post_continuation(ex, call_done{std::move(*w.h), w.slot, std::move(p)});
}

// A call that ended before it was sent (not connected, a bad deadline or handler): its error, posted.
struct call_refused {
  call_handler h;
  call_error err;
  void operator()() {
    resuming by_us(h);
    std::move(h)(call_result<payload>(std::move(err)));
  }
};

inline void send_disconnect_server_mux(connection& c, std::uint64_t mux) {
  message m;
  m.mux_id = mux;
  m.op = op_code::disconnect_server_mux;
  (void)c.send(m);
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

// The deadline list (all under the mux lock).
inline void deadline_unlink(conn_mux& mx, pending_call* p) noexcept {
  if (!p->listed) return;
  (p->prev ? p->prev->next : mx.dl_head) = p->next;
  (p->next ? p->next->prev : mx.dl_tail) = p->prev;
  p->prev = p->next = nullptr;
  p->listed = false;
}

struct deadline_sweep;
inline void deadline_arm(connection& c, conn_mux& mx, std::chrono::steady_clock::time_point at);

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
inline bool complete(const std::shared_ptr<pending_call>& p, call_error err, payload resp = std::nullopt,
                     bool cancel_remote = false) {
  if (p->done.exchange(true, std::memory_order_acq_rel)) return false;
  p->err = std::move(err);
  p->resp = std::move(resp);
  connection& c = *p->conn;
  conn_mux& mx = c.mux();
  basic_waiter<call_handler> w;
  std::shared_ptr<pending_call> listed;
  {
    std::lock_guard lk(mx.mu);
    listed = mx.outgoing.take(p->mux);
    deadline_unlink(mx, p.get());
    p->finished = true;
    take_waiter(p->w, w);
  }
  if (cancel_remote) send_disconnect_server_mux(c, p->mux);
  wake_call(std::move(w), p);
  return true;
}

// The deadline timer fired: times out every call whose deadline has passed, re-arms for the next one.
struct deadline_sweep {
  std::weak_ptr<connection> conn;
  void operator()(std::error_code ec) const {
    if (ec) return; // re-armed for an earlier deadline, or shut down
    std::shared_ptr<connection> c = conn.lock();
    if (!c) return;
    conn_mux& mx = c->mux();
    std::vector<std::shared_ptr<pending_call>> expired;
    {
      std::lock_guard lk(mx.mu);
      mx.timer_at = std::chrono::steady_clock::time_point::max();
      const auto now = std::chrono::steady_clock::now();
      while (mx.dl_head && mx.dl_head->deadline <= now) {
        pending_call* p = mx.dl_head;
        deadline_unlink(mx, p);
        if (std::shared_ptr<pending_call>* sp = mx.outgoing.find(p->mux)) expired.push_back(*sp);
      }
      if (mx.dl_head) deadline_arm(*c, mx, mx.dl_head->deadline);
    }
    for (auto& p : expired) complete(p, call_error(errc::timeout), std::nullopt, true);
  }
};

inline void deadline_arm(connection& c, conn_mux& mx, std::chrono::steady_clock::time_point at) {
  // Once shutdown() has cancelled the timer, nothing arms it again (a timer left waiting would keep the
  // io_context's run() going for a call's whole timeout): the session's end completes the calls left.
  if (c.stopping()) return;
  mx.timer_at = at;
  mx.deadline_timer.expires_at(at); // cancels a wait set for a later time (its sweep sees the error)
  mx.deadline_timer.async_wait(deadline_sweep{c.weak_from_this()});
}

struct call_cancel_fn {
  std::shared_ptr<pending_call> p;
  void operator()(asio::cancellation_type) const { complete(p, call_error(asio::error::operation_aborted), std::nullopt, true); }
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
    handoff_scope handing_off(resumed_by_us(handler)); // then our posts may wait for this to return
    connection& conn = *c;
    std::error_code early;
    if (static_cast<std::uint8_t>(h) == 0) early = errc::invalid_handler;
    else if (conn.stopping()) early = errc::shutdown;
    else if (conn.state() != connection_state::connected) early = errc::disconnected;
    else if (opt.timeout < std::chrono::milliseconds(1)) early = errc::timeout;
    if (early) {
      if (early != errc::invalid_handler) {
        call_meter meter;
        meter.begin(conn.shared().metrics.called(call_kind::unary, h, sub));
        meter.end(conn.shared().trace, conn.remote(), early, 0, 0);
      }
      buffer_cache::give(std::move(req));
      auto ex = asio::get_associated_executor(handler);
      post_continuation(ex, call_refused{std::move(handler), call_error(early)});
      return;
    }
    conn_mux& mx = conn.mux();
    mx.calls_made.fetch_add(1, std::memory_order_relaxed);
    auto p = std::allocate_shared<pending_call>(pool_allocator<pending_call>());
    p->meter.begin(conn.shared().metrics.called(call_kind::unary, h, sub));
    p->req_bytes = nil ? 0 : req.size();
    p->conn = &conn;
    p->session = conn.session_id();
    p->mux = mx.next_id.fetch_add(1, std::memory_order_relaxed) + 1;
    p->deadline = std::chrono::steady_clock::now() + opt.timeout;
    bool stopping = false;
    {
      std::lock_guard lk(mx.mu); // shutdown() sets stopping, then cancels the deadline timer under this lock
      stopping = conn.stopping();
      if (!stopping) {
        mx.outgoing.put(p->mux, p);
        deadline_insert(conn, mx, p.get());
      }
    }
    if (stopping) {
      complete(p, call_error(errc::shutdown));
    } else {
      message m;
      m.mux_id = p->mux;
      m.deadline_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(opt.timeout.count(), 0xffffffffLL));
      m.handler = h;
      m.op = op_code::request;
      m.flags = msg_flags::eof;
      if (!nil) m.payload = std::span<const std::byte>(req);
      m.subroute = sub;
      const std::error_code sent = conn.send(m); // encoded (copied) at once
      if (sent) complete(p, call_error(sent));
    }
    buffer_cache::give(std::move(req));
    basic_waiter<call_handler> now;
    {
      std::lock_guard lk(mx.mu);
      arm(p->w, std::move(handler), call_cancel_fn{p});
      if (p->finished) take_waiter(p->w, now); // ended before we stored the handler
    }
    wake_call(std::move(now), std::move(p));
  }
};

COGRID_DECL asio::awaitable<call_result<payload>> call_raw(std::shared_ptr<connection> c, handler_id h,
                                                           std::optional<subroute_id> sub, std::vector<std::byte> req,
                                                           bool nil, call_options opt) {
  // One Asio operation, no coroutine of ours around it: a call costs the caller one frame (Asio's).
  call_initiation init{std::move(c), h, sub, std::move(req), nil, opt};
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(call_result<payload>)>(std::move(init),
                                                                                           asio::use_awaitable);
}

COGRID_DECL std::error_code mux_core::add_unary(handler_id h, std::optional<subroute_id> sub,
                                                std::shared_ptr<const unary_entry> f) {
  if (static_cast<std::uint8_t>(h) == 0) return errc::invalid_handler;
  std::unique_lock lk(reg_mu_);
  if (sub) {
    if (!unary_sub_.emplace(sub->bytes, std::move(f)).second) return errc::handler_exists;
  } else if (!unary_.emplace(static_cast<std::uint8_t>(h), std::move(f)).second) {
    return errc::handler_exists;
  }
  return {};
}

COGRID_DECL std::error_code mux_core::register_unary(handler_id h, std::optional<subroute_id> sub, std::string_view route,
                                                     raw_unary_handler fn) {
  if (static_cast<std::uint8_t>(h) == 0) return errc::invalid_handler;
  return add_unary(h, sub, std::make_shared<const unary_entry>(unary_entry{std::move(fn), {}, &metrics_.served(call_kind::unary, h, sub, route)}));
}

COGRID_DECL std::error_code mux_core::register_unary(handler_id h, std::optional<subroute_id> sub, std::string_view route,
                                                     sync_unary_handler fn) {
  if (static_cast<std::uint8_t>(h) == 0) return errc::invalid_handler;
  return add_unary(h, sub, std::make_shared<const unary_entry>(unary_entry{{}, std::move(fn), &metrics_.served(call_kind::unary, h, sub, route)}));
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

COGRID_DECL void abandon_calls(connection& c, asio::execution_context& ctx) {
  conn_mux& mx = c.mux();
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
      p->err = call_error(errc::shutdown);
      parked.emplace_back();
      take_waiter(p->w, parked.back());
    }
  }
  for (std::size_t i = 0; i < parked.size(); ++i)
    let_go(std::move(parked[i]), ctx, [&](basic_waiter<call_handler>&& w) { wake_call(std::move(w), calls[i]); });
  abandon_streams(c, ctx);
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_MUX_IPP
