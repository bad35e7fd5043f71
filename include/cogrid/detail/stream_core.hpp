// cogrid/detail/stream_core.hpp — the type-erased core of streams: both ends' state, credits, sequence
// numbers, liveness and the routing of stream messages. Compiled once; stream.hpp only packs and unpacks.
#ifndef COGRID_DETAIL_STREAM_CORE_HPP
#define COGRID_DETAIL_STREAM_CORE_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/message.hpp>
#include <cogrid/metrics.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/handoff.hpp>
#include <cogrid/detail/pool.hpp>
#include <cogrid/detail/registry.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace cogrid::detail {

using payload_view = std::optional<std::span<const std::byte>>;

/// A fixed ring of payloads whose byte buffers are reused: after warm-up, buffering a message allocates
/// nothing. Holds at most `capacity` messages (a stream's credits bound what a peer may send).
class payload_ring {
public:
  void init(std::size_t capacity) { slots_.resize(capacity == 0 ? 1 : capacity); }
  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  bool full() const noexcept { return count_ == slots_.size(); }
  void push(const payload_view& v) {
    slot& s = slots_[(head_ + count_) % slots_.size()];
    s.nil = !v;
    if (v) {
      if (s.bytes.capacity() == 0) s.bytes = buffer_cache::take(); // its last buffer went to the user
      s.bytes.assign(v->begin(), v->end());
    }
    ++count_;
  }
  /// Moves the oldest payload into `out`, swapping buffers so that capacity circulates.
  void pop(payload& out) {
    slot& s = slots_[head_];
    if (s.nil) {
      out.reset();
    } else {
      if (!out) out.emplace();
      out->swap(s.bytes);
    }
    s.bytes.clear();
    head_ = (head_ + 1) % slots_.size();
    --count_;
  }

private:
  struct slot {
    std::vector<std::byte> bytes;
    bool nil = false;
  };
  std::vector<slot> slots_;
  std::size_t head_ = 0, count_ = 0;
};

/// A coroutine handle that destroys its frame unless it was resumed: handed to Asio so that a frame whose
/// resumption is dropped (the io_context destroyed with handlers queued) is not leaked.
class owned_resume {
public:
  owned_resume() = default;
  explicit owned_resume(std::coroutine_handle<> h) noexcept : h_(h) {}
  owned_resume(owned_resume&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  owned_resume& operator=(owned_resume&&) = delete;
  ~owned_resume() {
    if (h_) h_.destroy();
  }
  void operator()() {
    if (auto h = std::exchange(h_, nullptr)) h.resume();
  }

private:
  std::coroutine_handle<> h_;
};

/// The type-erased part of a stream generator's promise.
struct gen_promise_base {
  std::shared_ptr<served_stream> stream; // keeps the stream alive while the frame lives
  std::exception_ptr error;
  /// Encodes the value at the current co_yield (into `scratch` when it needs bytes of its own).
  payload_view (*encode)(gen_promise_base&, std::vector<std::byte>& scratch) = nullptr;
};

// -- the serving side -----------------------------------------------------------------------------------

/// One stream this node serves. Messages from the caller arrive on the connection's strand; the handler's
/// generator runs on `strand`; the mutex guards what both touch.
struct served_stream : std::enable_shared_from_this<served_stream> {
  COGRID_DECL served_stream(std::shared_ptr<connection> c, asio::any_io_executor s);

  std::shared_ptr<connection> conn;
  asio::any_io_executor strand;            // a handler strand
  asio::cancellation_signal cancel_signal; // strand only: cancels what the generator awaits
  asio::steady_timer deadline_timer;       // strand
  asio::steady_timer ping_timer;           // strand

  std::mutex mu;
  std::uint64_t mux = 0, session = 0;
  std::uint32_t send_seq = 0, recv_seq = 0;
  stream_capacity cap;
  std::uint32_t deadline_ms = 0;
  std::uint32_t credits = 0;                  // responses we may send now
  payload_ring input;
  bool input_closed = false;
  bool cancelled = false;                     // the handler must stop (caller gone, deadline, error)
  bool finished = false;                      // the generator returned
  bool eof_pending = false;                   // the EOF waits for a credit
  bool eof_is_error = false;
  std::string eof_text;
  std::coroutine_handle<> input_waiter;       // the generator, waiting for a request
  std::coroutine_handle<> yield_waiter;       // the generator, waiting for a credit
  gen_promise_base* gen = nullptr;
  std::vector<std::byte> scratch;             // encoding of the current response
  payload input_buf;                          // strand: the request being decoded, reused
  std::chrono::steady_clock::time_point last_ping;
  call_meter meter;                           // under mu; ended when the stream leaves the connection
  std::size_t bytes_in = 0, bytes_out = 0;    // under mu
  std::size_t max_in_bytes = 0;              // under mu: a larger inbound message ends the stream (0: none)
};

/// The generator asks to send its current value (at a co_yield). True: suspend until a credit comes.
COGRID_DECL bool server_on_yield(served_stream& s, std::coroutine_handle<> h);
/// The generator asks for the next request. True: suspend until one (or the end of input) arrives.
COGRID_DECL bool server_on_next(served_stream& s, std::coroutine_handle<> h);
/// True when the generator's next `in.next()` would not wait: a request is there, or the input ended, or
/// the stream was cancelled.
COGRID_DECL bool server_input_ready(served_stream& s);
/// Takes the next request into `out` (returning one credit to the caller): no error when it did;
/// `errc::end_of_stream` at the end of input; `operation_aborted` when the stream was cancelled.
COGRID_DECL std::error_code server_take_input(served_stream& s, payload& out);
/// Throws std::system_error(operation_aborted) when the stream was cancelled.
COGRID_DECL void server_check_cancelled(served_stream& s);
/// The generator returned (or threw `error`): sends the EOF and closes the stream.
COGRID_DECL void server_on_finished(served_stream& s, std::exception_ptr error);
/// The caller broke a rule of the typed layer above the stream (e.g. a bulk chunk over its declared
/// size): the stream ends with `text` told to the caller (as its `errc::remote_error`), the handler is
/// cancelled, the connection stays. Counted in `stream_errors`. Called on the stream's strand.
COGRID_DECL void server_fail(served_stream& s, const std::string& text);

// -- the calling side -----------------------------------------------------------------------------------

/// What a caller of a stream waits for.
enum class wait_kind { open = 0, next = 1, send = 2 };

/// One stream this node opened.
struct client_stream_state : std::enable_shared_from_this<client_stream_state> {
  explicit client_stream_state(const asio::any_io_executor& ex) : ping_timer(ex), deadline_timer(ex) {}

  std::mutex mu;
  std::weak_ptr<connection> conn;
  std::uint64_t mux = 0, session = 0;
  std::uint32_t send_seq = 0, recv_seq = 0;
  stream_capacity cap;
  std::chrono::milliseconds timeout{0};
  bool acked = false;
  bool finished = false;     // nothing more will arrive; the mux is closed
  bool send_closed = false;  // close_send() was called
  error err;                 // why it finished (errc::end_of_stream after the handler's EOF)
  std::uint32_t credits = 0; // requests we may send now
  payload_ring responses;
  waiter waits[3];           // indexed by wait_kind: open, next, send
  asio::steady_timer ping_timer;     // connection strand
  asio::steady_timer deadline_timer; // connection strand
  std::chrono::steady_clock::time_point last_heard;
  call_meter meter;                           // under mu; ended in client_finish
  std::size_t bytes_in = 0, bytes_out = 0;    // under mu
  std::size_t max_in_bytes = 0;               // a larger response ends the stream on arrival (0: none)
};

/// Opens a stream and completes when the remote acknowledged it (or refused it).
COGRID_DECL asio::awaitable<result<std::shared_ptr<client_stream_state>>> open_stream(
    std::shared_ptr<connection> c, handler_id h, std::optional<subroute_id> sub, payload_view initial,
    stream_capacity cap, stream_options opt, std::size_t max_in_bytes = 0);
/// Sends one request, waiting for a credit when there is none.
COGRID_DECL asio::awaitable<result<void>> stream_send(std::shared_ptr<client_stream_state> s, payload_view req);
/// Ends the stream's input (EOF); no credit needed.
COGRID_DECL result<void> stream_close_send(client_stream_state& s);
/// Takes the next response into `out` (returning a credit): 1; 0 once the stream has ended (see
/// `stream_error`); -1 when none has arrived yet (wait with `stream_wait(s, wait_kind::next)`, then again).
COGRID_DECL int stream_try_next(client_stream_state& s, payload& out);

/// Stores the awaiting coroutine's handler until the stream is ready for `kind` (or completes it at once).
struct client_wait_init {
  std::shared_ptr<client_stream_state> s;
  wait_kind kind;
  COGRID_DECL void operator()(wait_handler h) const;
};

/// Waits until the stream is ready for `kind`: one Asio operation awaited in the caller's own frame.
inline auto stream_wait(std::shared_ptr<client_stream_state> s, wait_kind kind) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(client_wait_init{std::move(s), kind},
                                                                                    asio::use_awaitable);
}
/// Why the stream ended: `errc::end_of_stream` after the handler's clean end; no error while it runs.
COGRID_DECL error stream_error(client_stream_state& s);
/// Ends the stream with `operation_aborted` and cancels the remote handler (no-op once ended).
COGRID_DECL void stream_cancel(client_stream_state& s);
/// Ends the stream with `why` and cancels the remote handler (no-op once ended).
COGRID_DECL void stream_fail(client_stream_state& s, error why);

class mux_core;
/// Routes a stream message (ops 5, 7-13 and stream pings/pongs); false when `m` is not a stream message.
COGRID_DECL bool stream_on_message(mux_core& core, connection& c, const message& m);
/// A stream message from the remote was refused (see message_sink::on_refused): its stream ends.
COGRID_DECL void stream_on_refused(connection& c, const message& head, const std::string& why);
/// The session ended: every stream of it fails (callers) or is cancelled (handlers).
COGRID_DECL void stream_on_session_end(connection& c, std::uint64_t session);
/// The connection's execution context `ctx` is shutting down: every stream's parked handler in `ctx` or
/// generator is destroyed (not resumed), a waiter in another context is woken to find the stream ended
/// with `errc::shutdown`, and the connection's stream tables are emptied (see abandon.hpp).
COGRID_DECL void abandon_streams(connection& c, asio::execution_context& ctx);

/// Registers a stream handler on `m` (the typed layer's way in: see stream.hpp).
COGRID_DECL result<void> register_stream(manager& m, handler_id h, const std::optional<subroute_id>& sub, std::string_view route,
                                         stream_capacity cap, raw_stream_start start);

} // namespace cogrid::detail

#endif // COGRID_DETAIL_STREAM_CORE_HPP
