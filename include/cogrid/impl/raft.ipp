// cogrid/impl/raft.ipp — the raft transport's pipeline and snapshot hand-off.
#ifndef COGRID_IMPL_RAFT_IPP
#define COGRID_IMPL_RAFT_IPP

#include <cogrid/raft.hpp>

#include <asio/execution/context.hpp>
#include <asio/execution_context.hpp>
#include <asio/query.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <cstring>
#include <exception>

namespace cogrid::raft {
namespace detail {

/// Tells the hand-offs of one io_context that it is shutting down. Created right after the first
/// hand-off's channel, so that Asio, which shuts services down newest first, shuts it down before the
/// channels' own service: once that service has let the channels' waiters go, a channel must not be
/// sent to, and the frames destroyed after it (a consumer's, whose guard tells the other side it is
/// gone) find this flag set instead.
class handoff_service final : public asio::execution_context::service {
public:
  inline static asio::execution_context::id id;
  explicit handoff_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}
  bool closing() const noexcept { return closing_.load(std::memory_order_acquire); }

private:
  void shutdown() override { closing_.store(true, std::memory_order_release); }
  std::atomic<bool> closing_{false};
};

/// A wake-up that is never lost: `notify` leaves one pending when nobody waits (a channel of capacity
/// 1), and a waiter checks its condition under the lock before waiting, and again after. It lives in
/// the connection's io_context; from that context's shutdown on, `notify` does nothing.
class wakeup {
public:
  explicit wakeup(const asio::any_io_executor& ex)
      : ch_(ex, 1), svc_(asio::use_service<handoff_service>(asio::query(ex, asio::execution::context))) {}
  void notify() {
    if (!svc_.closing()) ch_.try_send(std::error_code(), 0);
  }
  /// Waits for `notify` (on the awaiting coroutine's executor); an error when the wait is cancelled.
  asio::awaitable<std::error_code> wait() {
    std::error_code ec;
    co_await ch_.async_receive(asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }

private:
  cogrid::detail::wait_channel ch_;
  handoff_service& svc_;
};

// -- the pipeline ---------------------------------------------------------------------------------------

struct pipeline_state {
  pipeline_state(client_stream<append_entries_request, append_entries_response> s, std::uint32_t depth,
                 asio::any_io_executor ex)
      : stream(std::move(s)), ring(depth), room(ex), ready(ex) {}

  client_stream<append_entries_request, append_entries_response> stream;
  std::mutex mu;
  std::vector<append_sent> ring; // requests in flight, oldest at `head` (no allocation per request)
  std::size_t head = 0, count = 0;
  std::optional<error> failed;
  bool closed = false;
  wakeup room;        // the appender waits here for a slot
  wakeup ready;       // the taker waits here for a request to answer

  void fail(error e) {
    {
      std::lock_guard lk(mu);
      if (!failed) failed = std::move(e);
    }
    room.notify();
    ready.notify();
  }
};

} // namespace detail

COGRID_DECL append_pipeline::append_pipeline(client_stream<append_entries_request, append_entries_response> s,
                                             std::uint32_t depth, asio::any_io_executor ex)
    : st_(std::make_shared<detail::pipeline_state>(std::move(s), depth, std::move(ex))), depth_(depth) {}

COGRID_DECL append_pipeline& append_pipeline::operator=(append_pipeline&& o) noexcept {
  if (this != &o) {
    if (st_) cancel();
    st_ = std::move(o.st_);
    depth_ = o.depth_;
  }
  return *this;
}

COGRID_DECL append_pipeline::~append_pipeline() {
  if (st_) cancel();
}

COGRID_DECL asio::awaitable<result<void>> append_pipeline::append(const append_entries_request& req) {
  const std::shared_ptr<detail::pipeline_state> st = st_;
  append_sent rec;
  rec.term = req.term;
  rec.prev_log_entry = req.prev_log_entry;
  rec.prev_log_term = req.prev_log_term;
  rec.leader_commit_index = req.leader_commit_index;
  rec.entries = req.entries.size();
  rec.last_index = req.entries.empty() ? req.prev_log_entry : req.entries.back().index;
  for (;;) {
    std::optional<error> refused;
    bool placed = false;
    {
      std::lock_guard lk(st->mu);
      if (st->failed) {
        refused = *st->failed;
      } else if (st->closed) {
        refused = error(errc::stream_closed, "append on a closed raft pipeline");
      } else if (st->count < st->ring.size()) {
        rec.sent_at = std::chrono::steady_clock::now();
        st->ring[(st->head + st->count) % st->ring.size()] = rec;
        ++st->count;
        placed = true;
      }
    }
    if (refused) co_return *refused;
    if (placed) break;
    const std::error_code ec = co_await st->room.wait();
    if (ec) co_return error(asio::error::operation_aborted, "a raft pipeline append was cancelled");
  }
  st->ready.notify();
  auto sent = co_await st->stream.send(req);
  if (!sent) {
    st->fail(sent.error());
    co_return sent.error();
  }
  co_return result<void>();
}

COGRID_DECL asio::awaitable<result<append_completion>> append_pipeline::next() {
  const std::shared_ptr<detail::pipeline_state> st = st_;
  append_sent rec;
  for (;;) {
    std::optional<error> out;
    bool have = false;
    {
      std::lock_guard lk(st->mu);
      if (st->failed) {
        out = *st->failed;
      } else if (st->count > 0) {
        rec = st->ring[st->head];
        have = true;
      } else if (st->closed) {
        out = error(errc::end_of_stream, "the raft pipeline is closed and every answer was given");
      }
    }
    if (out) co_return *out;
    if (have) break;
    const std::error_code ec = co_await st->ready.wait();
    if (ec) co_return error(asio::error::operation_aborted, "waiting on a raft pipeline was cancelled");
  }
  auto r = co_await st->stream.next();
  if (!r) {
    error e = r.error();
    if (e == errc::end_of_stream)
      e = error(errc::remote_error, "the peer ended the raft pipeline with requests in flight");
    st->fail(e);
    co_return e;
  }
  {
    std::lock_guard lk(st->mu);
    st->head = (st->head + 1) % st->ring.size();
    --st->count;
  }
  st->room.notify();
  append_completion done;
  done.request = rec;
  done.response = std::move(*r);
  co_return done;
}

COGRID_DECL void append_pipeline::close() {
  {
    std::lock_guard lk(st_->mu);
    if (st_->closed) return;
    st_->closed = true;
  }
  (void)st_->stream.close_send();
  st_->ready.notify();
  st_->room.notify();
}

COGRID_DECL void append_pipeline::cancel() {
  {
    std::lock_guard lk(st_->mu);
    if (st_->failed || (st_->closed && st_->count == 0)) return; // it has ended already
  }
  st_->stream.cancel();
  st_->fail(error(asio::error::operation_aborted, "the raft pipeline was cancelled"));
}

COGRID_DECL std::size_t append_pipeline::in_flight() const {
  std::lock_guard lk(st_->mu);
  return st_->count;
}

COGRID_DECL asio::awaitable<result<append_pipeline>> transport::pipeline(connection& c, std::uint32_t depth,
                                                                         stream_options opt) const {
  if (auto v = validate(); !v) co_return v.error();
  if (depth == 0 || depth > opts_.max_pipeline)
    co_return error(errc::invalid_value, "raft pipeline: a depth of " + std::to_string(depth) + " is not within 1 to " +
                                             std::to_string(opts_.max_pipeline));
  auto s = co_await pipeline_.open(c, opt);
  if (!s) co_return s.error();
  const asio::any_io_executor ex = co_await asio::this_coro::executor;
  append_pipeline p(std::move(*s), depth, ex);
  co_return std::move(p);
}

// -- the pipeline's receiving side ---------------------------------------------------------------------

namespace detail {

/// A pipeline's requests on their way to the consumer's coroutine, and its answers on their way back.
struct pipeline_queue {
  explicit pipeline_queue(const asio::any_io_executor& ex) : to_consumer(ex), to_producer(ex) {}
  std::mutex mu;
  std::deque<append_entries_request> requests;
  std::deque<result<append_entries_response>> answers;
  bool closed = false;        // the handler has gone: the consumer stops
  bool consumer_gone = false; // the consumer's coroutine has ended (its executor stopped): no more answers
  wakeup to_consumer; // a request is queued, or closed
  wakeup to_producer; // an answer is queued
};

/// On every way out of the handler: the consumer's coroutine drops what is queued and ends.
struct pipeline_close_guard {
  std::shared_ptr<pipeline_queue> q;
  explicit pipeline_close_guard(std::shared_ptr<pipeline_queue> queue) noexcept : q(std::move(queue)) {}
  pipeline_close_guard(const pipeline_close_guard&) = delete;
  pipeline_close_guard& operator=(const pipeline_close_guard&) = delete;
  ~pipeline_close_guard() {
    {
      std::lock_guard lk(q->mu);
      q->closed = true;
      q->requests.clear();
    }
    q->to_consumer.notify();
  }
};

/// On every way out of the consumer's coroutine (its frame destroyed with a stopped executor included):
/// the handler stops waiting for answers.
struct pipeline_consumer_guard {
  std::shared_ptr<pipeline_queue> q;
  explicit pipeline_consumer_guard(std::shared_ptr<pipeline_queue> queue) noexcept : q(std::move(queue)) {}
  pipeline_consumer_guard(const pipeline_consumer_guard&) = delete;
  pipeline_consumer_guard& operator=(const pipeline_consumer_guard&) = delete;
  ~pipeline_consumer_guard() {
    {
      std::lock_guard lk(q->mu);
      q->consumer_gone = true;
    }
    q->to_producer.notify();
  }
};

inline asio::awaitable<void> pipeline_consume(std::shared_ptr<consumer> c, peer_info from, std::shared_ptr<pipeline_queue> q) {
  const pipeline_consumer_guard gone(q);
  for (;;) {
    std::optional<append_entries_request> req;
    bool closed = false;
    {
      std::lock_guard lk(q->mu);
      if (q->closed) {
        closed = true;
      } else if (!q->requests.empty()) {
        req.emplace(std::move(q->requests.front()));
        q->requests.pop_front();
      }
    }
    if (closed) co_return;
    if (!req) {
      const std::error_code ec = co_await q->to_consumer.wait();
      if (ec) co_return;
      continue;
    }
    result<append_entries_response> answer = error(errc::remote_error, "the consumer failed");
    try {
      auto r = co_await c->append_entries(from, std::move(*req));
      answer = std::move(r);
    } catch (...) { // told as the unary handlers' failures are
      answer = remote_error(cogrid::detail::describe_failure(std::current_exception()));
    }
    {
      std::lock_guard lk(q->mu);
      q->answers.push_back(std::move(answer));
    }
    q->to_producer.notify();
  }
}

COGRID_DECL stream_generator<append_entries_response> pipeline_run(std::shared_ptr<consumer_binding> b, peer_info from,
                                                                  stream_input<append_entries_request> in,
                                                                  std::uint32_t max_in_flight) {
  // The hand-off's channels live in the connection's io_context, which outlives this frame; the
  // consumer's executor is the user's and may go first.
  const asio::any_io_executor io = co_await asio::this_coro::executor;
  const auto q = std::make_shared<pipeline_queue>(io);
  const pipeline_close_guard guard(q);
  asio::co_spawn(b->ex, pipeline_consume(b->c, std::move(from), q), asio::detached);
  cogrid::detail::served_stream& s = *cogrid::detail::stream_input_access::state(in);
  std::size_t outstanding = 0;
  bool input_open = true;
  for (;;) {
    // Every request already here goes to the consumer (up to the pipeline's capacity: a peer that sends
    // more without taking answers waits for them); wait for one only when no answer is due.
    while (input_open && (outstanding == 0 || (outstanding < max_in_flight && cogrid::detail::server_input_ready(s)))) {
      auto r = co_await in.next();
      if (!r) {
        if (r.error() != errc::end_of_stream) throw cogrid::exception(r.error()); // cancelled, or undecodable
        input_open = false;
        break;
      }
      {
        std::lock_guard lk(q->mu);
        q->requests.push_back(std::move(*r));
      }
      q->to_consumer.notify();
      ++outstanding;
    }
    if (outstanding == 0) break; // the input ended and every answer was sent
    std::optional<result<append_entries_response>> answer;
    {
      std::lock_guard lk(q->mu);
      if (!q->answers.empty()) {
        answer.emplace(std::move(q->answers.front()));
        q->answers.pop_front();
      } else if (q->consumer_gone) {
        answer.emplace(error(errc::remote_error, "the raft consumer stopped with requests unanswered"));
      }
    }
    if (!answer) {
      const std::error_code ec = co_await q->to_producer.wait();
      if (ec) co_return;
      continue;
    }
    --outstanding;
    if (!*answer) throw cogrid::exception(answer->error());
    const append_entries_response& resp = **answer;
    co_yield resp;
  }
}

} // namespace detail

// -- the snapshot ----------------------------------------------------------------------------------------

namespace detail {

/// A snapshot's chunks on their way from the stream's handler (the producer, on the connection's side)
/// to the consumer's reader (on the consumer's executor). One chunk at a time is lent to the reader; its
/// buffer belongs to the pipe, so the reader never sees memory the stream has reused.
struct snapshot_pipe {
  explicit snapshot_pipe(const asio::any_io_executor& ex) : to_consumer(ex), to_producer(ex) {}

  enum class slot_state { empty, full, lent };

  std::mutex mu;
  slot_state state = slot_state::empty;
  payload slot;          // the chunk handed over (its bytes, moved out of the stream)
  std::size_t size = 0;  // its size
  std::optional<error> input_end;   // why no more chunks will come
  bool consumer_done = false;       // the consumer has returned: `outcome` holds its answer
  result<install_snapshot_response> outcome = error(errc::remote_error, "the snapshot's consumer stopped without an answer");
  wakeup to_consumer; // a chunk or the end is there
  wakeup to_producer; // the slot is free again, or the consumer is done
};

/// On every way out of the producer: the reader learns that no more chunks will come.
struct snapshot_end_guard {
  std::shared_ptr<snapshot_pipe> p;
  explicit snapshot_end_guard(std::shared_ptr<snapshot_pipe> pipe) noexcept : p(std::move(pipe)) {}
  snapshot_end_guard(const snapshot_end_guard&) = delete;
  snapshot_end_guard& operator=(const snapshot_end_guard&) = delete;
  ~snapshot_end_guard() {
    {
      std::lock_guard lk(p->mu);
      if (!p->input_end) p->input_end = error(asio::error::operation_aborted, "the snapshot's transfer was cut off");
    }
    p->to_consumer.notify();
  }
};

/// On every way out of the snapshot's consumer (its frame destroyed with a stopped executor included):
/// the handler stops waiting, with the consumer's answer or, when it has none, an error.
struct snapshot_consumer_guard {
  std::shared_ptr<snapshot_pipe> p;
  explicit snapshot_consumer_guard(std::shared_ptr<snapshot_pipe> pipe) noexcept : p(std::move(pipe)) {}
  snapshot_consumer_guard(const snapshot_consumer_guard&) = delete;
  snapshot_consumer_guard& operator=(const snapshot_consumer_guard&) = delete;
  ~snapshot_consumer_guard() {
    {
      std::lock_guard lk(p->mu);
      p->consumer_done = true;
    }
    p->to_producer.notify();
  }
};

inline asio::awaitable<void> snapshot_consume(std::shared_ptr<consumer> c, peer_info from, install_snapshot_request req,
                                              std::shared_ptr<snapshot_pipe> p) {
  const snapshot_consumer_guard done(p);
  result<install_snapshot_response> out = error(errc::remote_error, "the snapshot's consumer failed");
  {
    snapshot_reader reader(p);
    try {
      auto r = co_await c->install_snapshot(std::move(from), std::move(req), reader);
      out = std::move(r);
    } catch (...) { // told as the unary handlers' failures are
      out = remote_error(cogrid::detail::describe_failure(std::current_exception()));
    }
  }
  std::lock_guard lk(p->mu);
  p->outcome = std::move(out);
}

COGRID_DECL stream_generator<install_snapshot_response> snapshot_run(std::shared_ptr<consumer_binding> b, peer_info from,
                                                                     install_snapshot_request req, bulk_input in) {
  const asio::any_io_executor io = co_await asio::this_coro::executor; // see pipeline_run
  const auto p = std::make_shared<snapshot_pipe>(io);
  const snapshot_end_guard guard(p);
  asio::co_spawn(b->ex, snapshot_consume(b->c, std::move(from), std::move(req), p), asio::detached);
  for (bool more = true; more;) {
    auto c = co_await in.next();
    // Hand the chunk (or the end) over once the reader is done with the one before.
    for (;;) {
      bool placed = false;
      {
        std::lock_guard lk(p->mu);
        if (p->consumer_done) {
          more = false;
          placed = true;
        } else if (p->state == snapshot_pipe::slot_state::empty) {
          if (c) {
            std::swap(p->slot, cogrid::detail::bulk_input_access::buffer(in)); // the stream reuses the old slot's buffer
            p->size = c->size();
            p->state = snapshot_pipe::slot_state::full;
          } else {
            p->input_end = c.error();
            more = false;
          }
          placed = true;
        }
      }
      if (placed) break;
      const std::error_code ec = co_await p->to_producer.wait();
      if (ec) co_return; // the stream was cancelled: the guard tells the reader
    }
    p->to_consumer.notify();
  }
  for (;;) {
    {
      std::lock_guard lk(p->mu);
      if (p->consumer_done) break;
    }
    const std::error_code ec = co_await p->to_producer.wait();
    if (ec) co_return;
  }
  result<install_snapshot_response> out = error(errc::end_of_stream);
  bool cut_off = false;
  {
    std::lock_guard lk(p->mu);
    out = std::move(p->outcome);
    cut_off = p->input_end && *p->input_end != errc::end_of_stream;
  }
  if (cut_off && !in.complete()) co_return; // the sender is gone or failed: nobody waits for an answer
  if (!out) throw cogrid::exception(out.error());
  co_yield *out;
}

} // namespace detail

COGRID_DECL asio::awaitable<result<std::span<const std::byte>>> snapshot_reader::next() {
  if (!rest_.empty()) { // what read_some left of the current chunk comes first
    const std::span<const std::byte> left = std::exchange(rest_, std::span<const std::byte>());
    co_return left;
  }
  detail::snapshot_pipe& p = *p_;
  bool returned = false;
  {
    std::lock_guard lk(p.mu);
    if (p.state == detail::snapshot_pipe::slot_state::lent) {
      p.state = detail::snapshot_pipe::slot_state::empty;
      returned = true;
    }
  }
  if (returned) p.to_producer.notify();
  for (;;) {
    std::optional<error> end;
    bool have = false;
    std::span<const std::byte> chunk;
    {
      std::lock_guard lk(p.mu);
      if (p.state == detail::snapshot_pipe::slot_state::full) {
        p.state = detail::snapshot_pipe::slot_state::lent;
        if (p.slot) chunk = std::span<const std::byte>(p.slot->data(), p.size);
        have = true;
      } else if (p.input_end) {
        end = *p.input_end;
      }
    }
    if (have) {
      bytes_ += chunk.size();
      co_return chunk;
    }
    if (end) {
      if (*end == errc::end_of_stream) complete_ = true;
      co_return *end;
    }
    const std::error_code ec = co_await p.to_consumer.wait();
    if (ec) co_return error(asio::error::operation_aborted, "reading the snapshot was cancelled");
  }
}

COGRID_DECL asio::awaitable<result<std::size_t>> snapshot_reader::read_some(std::span<std::byte> out) {
  if (out.empty()) co_return std::size_t{0};
  while (rest_.empty()) {
    auto c = co_await next();
    if (!c) {
      if (c.error() == errc::end_of_stream) co_return std::size_t{0};
      co_return c.error();
    }
    rest_ = *c;
  }
  const std::size_t n = std::min(out.size(), rest_.size());
  std::memcpy(out.data(), rest_.data(), n);
  rest_ = rest_.subspan(n);
  co_return n;
}

} // namespace cogrid::raft

#endif // COGRID_IMPL_RAFT_IPP
