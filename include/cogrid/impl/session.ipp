// cogrid/impl/session.ipp — one established WebSocket session of a connection: its reader (frames in,
// grid messages out to the call layer), its writer (everything queued since the last write, framed in
// merged batches, one socket write) and its health loop (pings, pong and write deadlines).
#ifndef COGRID_IMPL_SESSION_IPP
#define COGRID_IMPL_SESSION_IPP

#include <cogrid/connection.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/idle_spin.hpp>
#include <cogrid/detail/websocket.hpp>

#include <asio/async_result.hpp>
#include <asio/defer.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace cogrid::detail {

using steady = std::chrono::steady_clock;

struct session_join;

/// One established WebSocket session of a connection. Lives on the connection's strand.
struct session {
  session(connection& c, std::uint64_t id_, std::unique_ptr<ws_stream> ws_, node_id remote)
      : conn(&c), id(id_), ws(std::move(ws_)), remote_id(remote), tick(c.strand_) {}

  /// Ends the session once: closes the transport (the reader and writer then stop) and wakes the others.
  void fail(std::error_code ec, std::string text = {}) {
    if (failed) return;
    failed = true;
    why = ec;
    why_text = text.empty() ? ec.message() : std::move(text);
    ws->lower().close();
    conn->out_.wake_writer(handoff::continuation);
    tick.cancel();
  }

  /// The three loops, each its own coroutine; run_session joins them.
  template <class Tag>
  static asio::awaitable<void> read_loop(std::shared_ptr<session> s);
  template <class Tag>
  static asio::awaitable<void> write_loop(std::shared_ptr<session> s);
  static void frame_piece(session& s, outbox::piece& p, bool mask);
  template <class Tag>
  static asio::awaitable<void> health_loop(std::shared_ptr<session> s);
  /// One grid message from the remote: connection pings and pongs here, everything else to the sink.
  template <class Tag>
  void handle(const message& m);
  /// Parks the writer in the connection's outbox until there is work.
  void park_writer(wait_handler h) { conn->out_.park(std::move(h), failed); }

  // The connection, held by run_session while the loops run (a shared_ptr here would make connection ->
  // session -> connection a cycle if the io_context went without a shutdown).
  connection* conn;
  std::uint64_t id;
  std::unique_ptr<ws_stream> ws;
  node_id remote_id;
  asio::steady_timer tick; // the health loop's clock
  bool failed = false;
  std::error_code why;
  std::string why_text;
  bool writing = false;
  steady::time_point write_started{};
  bool parked = false;            // the writer sleeps: the health loop may give back its buffers
  steady::time_point parked_at{};
  /// The writer's buffers are over `keep` bytes after a burst of large messages: memory given back.
  void release_write_buffers(std::size_t keep) {
    if (wbuf.capacity() > keep) std::vector<std::byte>().swap(wbuf);
    if (container.capacity() > keep) std::vector<std::byte>().swap(container);
    if (wqueue.capacity() > keep) std::vector<std::byte>().swap(wqueue);
  }
  steady::time_point last_pong = steady::now();
  steady::time_point last_ping_sent = steady::now();
  read_buffer rbuf;
  std::vector<std::byte> wbuf, wqueue, container, scratch;
  std::vector<frame_part> wparts; // the runs of wbuf and wqueue that make up one write
  std::vector<std::size_t> wends;
  std::size_t handed_out = 0; // messages the reader dispatched since it last let the writer take a turn
  /// A payload arriving in pieces (a call's or stream's large message), gathered until its last piece.
  struct partial {
    std::uint64_t key = 0;          // flow_key of its call or stream
    std::vector<std::byte> data;
    bool refused = false;           // over a limit: its pieces are dropped until the last one
  };
  std::vector<partial> partials;
  std::size_t partial_bytes = 0;    // held in `partials`
  /// Pieces of several payloads at once are allowed (a node sends one payload's pieces after another
  /// per direction, but calls and streams of both directions share the link), up to this many.
  static constexpr std::size_t max_partials = 16;
  /// One grid message from the remote, pieces put together first.
  template <class Tag>
  void dispatch(const message& m);
  template <class Tag>
  void refuse(const message& m, partial& p, std::string why);
  /// Tells the peer that `n` bytes of its pieces were taken (taken or dropped: either way they left the
  /// sockets), so that it may send more (connection_options::piece_window_bytes).
  void acknowledge(std::size_t n);
  /// Messages the reader dispatches from one large batch before the writer takes a turn.
  static constexpr std::size_t turn_messages = 100;
};

// The reader, writer and health loops are separate coroutines joined here, not a parallel group: each
// ends by itself once the session fails (fail() closes the transport, wakes the writer and cancels the
// health clock), so none needs a cancellation slot, and with none connected their socket operations
// allocate no cancellation handlers (Asio allocates one per operation on a connected slot). A loop
// that throws fails the session, so the others end too.
//
// The join is owned by the three loops' completion handlers only, never by run_session's frame (which
// holds the session): if the io_context is destroyed while the loops wait in it, their handlers go, the
// join goes, and with it the stored handler of run_session and its frame. A writer parked in the
// connection's outbox is not in the io_context, though: its handler (and through it the join and
// run_session, which holds the connection) stays reachable from the connection, a cycle that shutdown()
// breaks, or else connection::abandon() when the io_context is destroyed (detail/abandon.hpp).
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
      wake(std::move(w), handoff::continuation);
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
      wake(std::move(now), handoff::continuation);
    } else {
      join->done.h.emplace(std::move(h)); // not cancellable: the loops end once the session fails
    }
  }
};

// Parks the writer in the outbox until there is work (on the strand, inside the writer's co_await).
struct writer_park {
  session* s;
  void operator()(wait_handler h) const { s->park_writer(std::move(h)); }
};

template <class Tag>
asio::awaitable<void> session::read_loop(std::shared_ptr<session> s) {
  connection& c = *s->conn;
  while (!s->failed) {
    const std::error_code ec = co_await s->ws->read_message(s->rbuf);
    if (ec) {
      if (ec == condition::protocol_violation && !s->failed) { // a bad frame, or one over the size limit
        {
          std::lock_guard lk(c.st_mu_);
          ++c.st_.protocol_errors;
        }
        c.log(log_level::error, "malformed WebSocket frame from remote: " + ec.message());
        s->fail(ec, "malformed WebSocket frame from remote: " + ec.message());
      } else {
        s->fail(ec);
      }
      break;
    }
    idle_spin::activity(); // more is likely to follow soon: this thread polls a while before it sleeps
    c.bytes_in_.fetch_add(s->rbuf.size(), std::memory_order_relaxed);
    if (c.block_inbound_.load(std::memory_order_relaxed)) continue;
    const result<void> parsed = for_each_message(s->rbuf, [&](const message& m) {
      c.messages_in_.fetch_add(1, std::memory_order_relaxed);
      ++s->handed_out;
      if (!s->failed) s->template dispatch<Tag>(m);
    });
    if (!parsed) {
      const std::error_code perr = parsed.error().code;
      {
        std::lock_guard lk(c.st_mu_);
        ++c.st_.protocol_errors;
      }
      c.log(log_level::error, "malformed message from remote: " + perr.message());
      s->fail(perr, "malformed message from remote: " + perr.message());
    }
    // A large batch already read (more frames buffered): once about two merged frames' worth of messages
    // was handed out, the work they started runs and the writer (woken by it) sends what they produced
    // before the next frames are handled, so that replies leave while the rest of the batch is worked on
    // and the peer starts on them: without this, two nodes trading batches of small messages take turns
    // instead of working at once. Every turn costs a socket write, hence not after every frame.
    if (s->handed_out >= session::turn_messages && s->ws->buffered() && !s->failed) {
      s->handed_out = 0;
      co_await yield_turn(c.strand_);
    }
  }
}

template <class Tag>
void session::dispatch(const message& m) {
  if (m.mux_id == 0 || (!has(m.flags, msg_flags::more) && partials.empty())) {
    handle<Tag>(m); // the usual case: no payload in pieces on the link
    return;
  }
  const std::uint64_t key = flow_key(m.mux_id, m.op);
  auto it = std::find_if(partials.begin(), partials.end(), [&](const partial& p) { return p.key == key; });
  if (m.op == op_code::disconnect_server_mux || m.op == op_code::disconnect_client_mux) {
    if (it != partials.end()) { // its sender gave up on the payload: the pieces go
      partial_bytes -= it->data.size();
      partials.erase(it);
    }
    handle<Tag>(m);
    return;
  }
  if (it == partials.end()) {
    if (!has(m.flags, msg_flags::more)) {
      handle<Tag>(m); // a whole message of a call or stream, with pieces of others on the way
      return;
    }
    if (partials.size() >= 4 * max_partials) { // refused ones included: a peer that only starts payloads
      fail(make_error_code(errc::unexpected_message), "the remote started more than " +
                                                           std::to_string(4 * max_partials) + " payloads in pieces at once");
      return;
    }
    partials.push_back(partial{key, {}, false});
    it = partials.end() - 1;
    if (partials.size() > max_partials) {
      refuse<Tag>(m, *it, "more than " + std::to_string(max_partials) + " payloads in pieces at once");
      acknowledge(m.payload ? m.payload->size() : 0);
      return;
    }
  }
  const bool last = !has(m.flags, msg_flags::more);
  const connection_options& opt = conn->shared_->opt;
  const std::size_t n = m.payload ? m.payload->size() : 0;
  if (!it->refused) {
    if (opt.piece_bytes == 0) {
      refuse<Tag>(m, *it, "a payload in pieces, which this node does not take");
    } else if (n > opt.piece_bytes) {
      refuse<Tag>(m, *it, "a piece of " + std::to_string(n) + " bytes, over this node's piece size of " +
                              std::to_string(opt.piece_bytes) + " bytes");
    } else if (it->data.size() + n > opt.max_message_bytes) {
      refuse<Tag>(m, *it, "a payload of more than " + std::to_string(it->data.size() + n) + " bytes, over this node's limit of " +
                              std::to_string(opt.max_message_bytes) + " bytes");
    } else if (partial_bytes + n > 2 * opt.max_message_bytes) {
      refuse<Tag>(m, *it, "payloads in pieces holding more than " + std::to_string(2 * opt.max_message_bytes) +
                              " bytes at once (twice this node's message limit)");
    } else {
      // On its first piece: the buffer of a large payload this node sent, when one is kept (its memory is
      // resident already). Else, and when that one is outgrown, one reserved for the largest payload, up
      // to 64 MiB (reserved, not resident: only what arrives is written), so that it does not move while
      // it grows; past that, it doubles.
      if (it->data.capacity() == 0) it->data = conn->out_.take_spare();
      if (it->data.size() + n > it->data.capacity())
        reserve_large(it->data, std::min(opt.max_message_bytes,
                                         std::max({it->data.size() + n, 2 * it->data.capacity(), std::size_t{64} << 20})));
      if (n) it->data.insert(it->data.end(), m.payload->begin(), m.payload->end());
      partial_bytes += n;
    }
  }
  acknowledge(n);
  if (!last) return;
  partial done = std::move(*it);
  partials.erase(it);
  partial_bytes -= done.data.size();
  if (done.refused) return;
  message whole = m;
  whole.flags &= ~msg_flags::more;
  whole.payload = std::span<const std::byte>(done.data);
  whole.reassembled = &done.data;
  handle<Tag>(whole);
}

// The acknowledgement of pieces: OpAckMux on mux 0 with the `more` flag, its payload the byte count
// (8 bytes, little endian). Only a node that sent pieces gets it, so never a MinIO node.
inline void session::acknowledge(std::size_t n) {
  std::array<std::byte, 8> count;
  for (std::size_t i = 0; i < 8; ++i) count[i] = static_cast<std::byte>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xff);
  message ack;
  ack.op = op_code::ack_mux;
  ack.flags = msg_flags::more;
  ack.payload = std::span<const std::byte>(count);
  (void)conn->enqueue(ack, true, handoff::continuation);
}

// A payload in pieces broke a limit: its pieces go, its call or stream ends (told by the sink), and the
// rest of its pieces are dropped as they come.
template <class Tag>
void session::refuse(const message& m, partial& p, std::string why) {
  connection& c = *conn;
  partial_bytes -= p.data.size();
  std::vector<std::byte>().swap(p.data);
  p.refused = true;
  c.refused_in_.fetch_add(1, std::memory_order_relaxed);
  c.log(log_level::warning, "refused " + std::string(to_string(m.op)) + " mux=" + std::to_string(m.mux_id) + " from remote: " + why);
  message head = m;
  head.payload.reset();
  head.flags &= ~msg_flags::more;
  if (message_sink* sink = c.shared_->sink.load(std::memory_order_acquire)) sink->on_refused(c, head, why);
}

template <class Tag>
void session::handle(const message& m) {
  connection& c = *conn;
  if (m.mux_id == 0 && m.op == op_code::ping) {
    ping_msg ping;
    if (m.payload) (void)decode(*m.payload, ping);
    pong_msg pong;
    pong.time = ping.time;
    scratch.clear();
    encode_append(pong, scratch);
    message reply;
    reply.seq = m.seq;
    reply.deadline_ms = m.deadline_ms;
    reply.op = op_code::pong;
    reply.payload = std::span<const std::byte>(scratch);
    (void)c.enqueue(reply, true, handoff::continuation);
    return;
  }
  if (m.mux_id == 0 && m.op == op_code::pong) {
    pong_msg pong;
    if (m.payload && decode(*m.payload, pong)) {
      last_pong = steady::now();
      const auto now = std::chrono::system_clock::now();
      std::lock_guard lk(c.st_mu_);
      c.st_.last_pong = now;
      ++c.st_.pongs_received;
      // The pong echoes our ping's time; a peer may echo anything: only a time in the last hour counts.
      const std::int64_t now_ns = wire_time::now().unix_nanos(), sent_ns = pong.time.unix_nanos();
      if (!pong.time.is_zero() && sent_ns <= now_ns && abs_diff(now_ns, sent_ns) < 3'600'000'000'000ULL)
      {
        c.st_.last_ping_rtt = std::chrono::microseconds((now_ns - sent_ns) / 1000);
        c.st_.max_ping_rtt = std::max(c.st_.max_ping_rtt, c.st_.last_ping_rtt);
      }
    } else {
      c.unhandled_.fetch_add(1, std::memory_order_relaxed);
    }
    return;
  }
  if (m.mux_id == 0 && m.op == op_code::ack_mux && has(m.flags, msg_flags::more)) { // pieces taken by the peer
    std::uint64_t n = 0;
    if (m.payload && m.payload->size() == 8)
      for (std::size_t i = 8; i-- > 0;) n = (n << 8) | static_cast<std::uint8_t>((*m.payload)[i]);
    c.out_.acknowledged(static_cast<std::size_t>(n), handoff::continuation);
    return;
  }
  if (m.op == op_code::connect || m.op == op_code::connect_response || m.op == op_code::disconnect) {
    c.unhandled_.fetch_add(1, std::memory_order_relaxed);
    c.log(log_level::warning, std::string("unexpected ") + to_string(m.op) + " on an established connection");
    return;
  }
  if (message_sink* sink = c.shared_->sink.load(std::memory_order_acquire)) {
    sink->on_message(c, m);
  } else {
    c.unhandled_.fetch_add(1, std::memory_order_relaxed);
  }
}

template <class Tag>
asio::awaitable<void> session::write_loop(std::shared_ptr<session> s) {
  connection& c = *s->conn;
  const connection_options& opt = c.shared_->opt;
  const merge_limits limits{opt.merge_max_messages, opt.merge_max_bytes};
  const bool mask = s->ws->role() == ws_role::client;
  constexpr std::size_t write_slice = 1u << 20;
  constexpr std::size_t in_place_min = 64u << 10; // a message this large is written from the queue, not copied
  bool yielded = false;
  outbox::piece piece; // a piece of a large payload, written from the payload's buffer
  while (!s->failed) {
    s->wqueue.clear();
    s->wends.clear();
    c.out_.take(s->wqueue, s->wends, yielded, piece); // and one piece of a large payload; after one yield, producers must wake us
    s->wbuf.clear();
    const bool control = s->ws->take_control_output(s->wbuf);
    if (s->wends.empty() && !control && !piece) {
      if (!yielded) {
        // Give producers on this strand one turn before sleeping, so their messages merge (MinIO's Gosched).
        yielded = true;
        co_await yield_turn(c.strand_);
        continue;
      }
      yielded = false;
      // Park until a producer or fail() wakes us: one hand-off, no timer. The buffers a burst of large
      // messages grew stay while data keeps coming (reused, not taken and faulted in again per batch);
      // the health loop gives them back once the writer has slept for a while.
      s->parked = true;
      s->parked_at = steady::now();
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(writer_park{s.get()}, asio::use_awaitable);
      s->parked = false;
      continue;
    }
    yielded = false;
    // All frames leave in one write, except that a large message's bytes go from the queue itself (a write
    // of their own, without a copy into wbuf).
    s->wparts.clear();
    frame_batch(s->wqueue, s->wends, limits, mask, s->container, s->wbuf, s->wparts, in_place_min);
    if (piece) frame_piece(*s, piece, mask);
    std::size_t total = 0;
    for (const frame_part& p : s->wparts) total += p.end - p.begin;
    c.messages_out_.fetch_add(s->wends.size() + (piece ? 1 : 0), std::memory_order_relaxed);
    c.bytes_out_.fetch_add(total, std::memory_order_relaxed);
    s->writing = true;
    std::error_code ec = make_error_code(errc::disconnected);
    if (s->ws->begin_write()) {
      // The write deadline measures progress: a large batch (a whole large message to a peer that takes
      // no pieces) goes in slices, each with the full write_timeout.
      std::error_code transport_ec;
      for (const frame_part& p : s->wparts) {
        const std::byte* base = p.data ? p.data : p.from_queue ? s->wqueue.data() : s->wbuf.data();
        for (std::size_t at = p.begin; at < p.end && !transport_ec;) {
          const std::size_t n = std::min(p.end - at, write_slice);
          s->write_started = steady::now();
          co_await s->ws->lower().write_all(asio::buffer(base + at, n), transport_ec);
          at += n;
        }
        if (transport_ec) break;
      }
      ec = s->ws->end_write(transport_ec);
    }
    s->writing = false;
    idle_spin::activity(); // an answer is likely to come soon
    c.out_.written(piece);
    c.writes_.fetch_add(1, std::memory_order_relaxed);
    if (ec) s->fail(ec);
  }
  c.out_.written(piece);
}

// The frame of one piece of a large payload, after the batch's other frames: its frame header and the
// message's bytes before the payload in wbuf, then the payload where it is (masked in place), then the
// message's trailers in wbuf. Three runs, so the piece is never copied.
inline void session::frame_piece(session& s, outbox::piece& p, bool mask) {
  const split_message m = encode_split(p.head);
  const std::size_t header_at = s.wbuf.size();
  const auto key = append_frame_header(m.head_size + p.size + m.tail_size, mask, s.wbuf);
  const std::size_t head_at = s.wbuf.size();
  s.wbuf.insert(s.wbuf.end(), m.head.data(), m.head.data() + m.head_size);
  std::size_t phase = 0;
  if (mask) {
    phase = ws_mask(s.wbuf.data() + head_at, m.head_size, key, 0);
    phase = ws_mask(p.data, p.size, key, phase);
  }
  frame_part& last = s.wparts.empty() ? s.wparts.emplace_back() : s.wparts.back();
  if (!last.from_queue && !last.data && last.end == header_at) last.end = s.wbuf.size(); // joins the batch's last run
  else s.wparts.push_back({false, header_at, s.wbuf.size(), nullptr});
  s.wparts.push_back({false, 0, p.size, p.data});
  if (m.tail_size == 0) return;
  const std::size_t tail_at = s.wbuf.size();
  s.wbuf.insert(s.wbuf.end(), m.tail.data(), m.tail.data() + m.tail_size);
  if (mask) ws_mask(s.wbuf.data() + tail_at, m.tail_size, key, phase);
  s.wparts.push_back({false, tail_at, s.wbuf.size(), nullptr});
}

template <class Tag>
asio::awaitable<void> session::health_loop(std::shared_ptr<session> s) {
  connection& c = *s->conn;
  const connection_options& opt = c.shared_->opt;
  const auto tick = std::clamp(std::min({opt.ping_interval, opt.pong_timeout, opt.write_timeout}) / 4,
                               std::chrono::milliseconds(1), std::chrono::milliseconds(1000));
  std::vector<std::byte> payload;
  while (!s->failed) {
    s->tick.expires_after(tick);
    std::error_code ec;
    co_await s->tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (s->failed) break;
    const auto now = steady::now();
    // A writer asleep for a tick gives back what a burst grew (MinIO keeps merge buffers <= 256 KiB);
    // buffers the size of a piece stay, so that a large payload's pieces do not each take fresh memory.
    if (s->parked && now - s->parked_at >= tick) {
      const std::size_t keep = std::max<std::size_t>(256u << 10, 2 * opt.piece_bytes + (64u << 10));
      s->release_write_buffers(keep);
      c.out_.shrink(keep);
    }
    if (s->writing && now - s->write_started > opt.write_timeout) {
      c.log(log_level::warning, "write timeout: the remote stopped reading");
      s->fail(make_error_code(errc::timeout), "write timeout: the remote stopped reading");
      break;
    }
    if (now - s->last_pong > opt.pong_timeout) {
      c.log(log_level::warning, "no pong within the timeout: the remote is not answering");
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
      if (c.enqueue(ping, true, handoff::continuation)) {
        std::lock_guard lk(c.st_mu_);
        ++c.st_.pings_sent;
      }
    }
  }
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_SESSION_IPP
