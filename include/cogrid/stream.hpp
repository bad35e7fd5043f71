// cogrid/stream.hpp — typed streams: handlers written as async generators (co_yield each response,
// co_await each request), callers holding a stream object, and credit-based flow control in both
// directions. Two shapes:
//
//   server_stream<Req, Resp>         one request in, a stream of responses out (gRPC's server streaming)
//   bidi_stream<Req, Resp[, Init]>   requests and responses both ways, with an optional initial payload
#ifndef COGRID_STREAM_HPP
#define COGRID_STREAM_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/pool.hpp>
#include <cogrid/detail/serialize.hpp>
#include <cogrid/detail/stream_core.hpp>

#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/this_coro.hpp>

#include <concepts>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace cogrid {

template <class T>
class stream_generator;
template <class Req, class Resp>
class client_stream;

namespace detail {
template <class Req, class Resp, class F>
struct server_stream_start;
template <class Req, class Resp, class Init, class F>
struct bidi_stream_start;
struct stream_input_access;
template <class Req, class Resp>
asio::awaitable<result<client_stream<Req, Resp>>> open_packed(std::shared_ptr<connection> c, handler_id id,
                                                              std::optional<subroute_id> sub, std::vector<std::byte> buf,
                                                              bool nil, stream_capacity cap, stream_options opt);

/// Awaitables a stream generator awaits as they are (everything else goes through `await_transform`).
struct gen_awaiter_tag {};

/// `co_yield v`: sends v when the caller has a credit, else suspends until it returns one.
struct yield_awaiter : gen_awaiter_tag {
  explicit yield_awaiter(served_stream* s) noexcept : s_(s) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) { return server_on_yield(*s_, h); }
  void await_resume() { server_check_cancelled(*s_); }

private:
  served_stream* s_;
};

/// `co_await in.next()`: the next request, or why there is none.
template <class Req>
struct input_awaiter : gen_awaiter_tag {
  input_awaiter(served_stream* s, payload* buf) noexcept : s_(s), buf_(buf) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) { return server_on_next(*s_, h); }
  result<Req> await_resume() {
    if (std::error_code ec = server_take_input(*s_, *buf_)) return ec;
    if constexpr (std::is_same_v<Req, payload>) {
      return std::move(*buf_);
    } else {
      Req r{};
      if (auto d = codec<Req>::unpack(view_of(*buf_), r); !d) return error(errc::bad_payload, "bad request payload: " + d.error().text);
      return r;
    }
  }

private:
  served_stream* s_;
  payload* buf_;
};

template <class T>
asio::awaitable<void> bridge_run(asio::awaitable<T> a, std::optional<T>* out) {
  out->emplace(co_await std::move(a));
}

template <class T>
struct bridge_awaiter;

template <class T>
struct bridge_slot {
  using type = std::optional<T>;
};
template <>
struct bridge_slot<void> {
  using type = char;
};

template <class T>
struct bridge_done {
  bridge_awaiter<T>* a;
  owned_resume resume;
  void operator()(std::exception_ptr e) {
    a->error = e;
    resume();
  }
};

/// `co_await some_asio_awaitable` inside a generator: runs it as its own coroutine on the stream's strand,
/// cancelled (terminal) when the stream is, and resumes the generator with its result.
template <class T>
struct bridge_awaiter : gen_awaiter_tag {
  bridge_awaiter(served_stream* s, asio::awaitable<T> a) : s_(s), a_(std::move(a)) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    try {
      server_check_cancelled(*s_);
    } catch (...) {
      error = std::current_exception();
      return false;
    }
    if constexpr (std::is_void_v<T>) {
      asio::co_spawn(s_->strand, std::move(a_),
                     asio::bind_cancellation_slot(s_->cancel_signal.slot(), bridge_done<T>{this, owned_resume(h)}));
    } else {
      asio::co_spawn(s_->strand, bridge_run<T>(std::move(a_), &value),
                     asio::bind_cancellation_slot(s_->cancel_signal.slot(), bridge_done<T>{this, owned_resume(h)}));
    }
    return true;
  }
  T await_resume() {
    if (error) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<T>) return std::move(*value);
  }

  std::exception_ptr error;
  typename bridge_slot<T>::type value{};

private:
  served_stream* s_;
  asio::awaitable<T> a_;
};

struct executor_awaiter : gen_awaiter_tag {
  asio::any_io_executor ex;
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  asio::any_io_executor await_resume() const { return ex; }
};

template <class T>
struct is_asio_awaitable : std::false_type {};
template <class T>
struct is_asio_awaitable<asio::awaitable<T, asio::any_io_executor>> : std::true_type {
  using value_type = T;
};

template <class>
inline constexpr bool always_false = false;

/// Runs at the generator's end: hands its outcome to the stream (EOF, or EOF with the error), then frees
/// the frame.
struct final_awaiter {
  bool await_ready() const noexcept { return false; }
  template <class P>
  void await_suspend(std::coroutine_handle<P> h) const noexcept {
    gen_promise_base& p = h.promise();
    std::shared_ptr<served_stream> s = std::move(p.stream);
    std::exception_ptr e = std::move(p.error);
    if (s) server_on_finished(*s, std::move(e));
    h.destroy();
  }
  void await_resume() const noexcept {}
};

} // namespace detail

/// The return type of a stream handler: a coroutine that `co_yield`s each response (of type `T`) and
/// `co_await`s requests (`co_await in.next()`) and any `asio::awaitable` (timers, calls to other nodes,
/// `asio::this_coro::executor`). Returning ends the stream cleanly (the caller's `next()` then gives
/// `errc::end_of_stream`); throwing ends it with the exception's text as the caller's
/// `errc::remote_error`.
///
/// @par Flow control
/// `co_yield` sends at once when the caller has a credit, and otherwise suspends until it returns one, so a
/// handler never buffers more than the stream's out capacity.
/// @par Cancellation
/// When the caller cancels or drops the stream, its deadline passes, its pings stop, or the connection
/// goes: the awaited operation is cancelled (terminal), `in.next()` gives `operation_aborted`, and the
/// next `co_yield` throws `std::system_error(asio::error::operation_aborted)`.
/// @par Thread safety
/// The generator runs on a strand of its own; it must not be awaited from anywhere else.
template <class T>
class stream_generator {
public:
  /// The coroutine's promise: how a handler's `co_yield`, `co_await` and end reach its stream (the
  /// compiler uses it; user code does not).
  struct promise_type : detail::gen_promise_base {
    std::optional<T> owned;     ///< a yielded temporary (or converted value), kept until the next co_yield
    const T* current = nullptr; ///< the value being sent

    promise_type() noexcept { encode = &encode_current; }
    /// Frames come from a per-thread pool: a stream per call would otherwise allocate one each.
    static void* operator new(std::size_t n) { return detail::frame_pool::allocate(n); }
    /// Gives the frame back to the pool.
    static void operator delete(void* p, std::size_t n) noexcept { detail::frame_pool::deallocate(p, n); }
    /// The generator that owns this coroutine.
    stream_generator get_return_object() noexcept { return stream_generator(std::coroutine_handle<promise_type>::from_promise(*this)); }
    /// Starts suspended: the stream runs it once it is set up.
    std::suspend_always initial_suspend() const noexcept { return {}; }
    /// Ends the stream (EOF, or the error below) when the handler returns.
    detail::final_awaiter final_suspend() const noexcept { return {}; }
    /// Keeps the handler's exception: the caller gets its text as a remote error.
    void unhandled_exception() noexcept { error = std::current_exception(); }
    /// Returning ends the stream.
    void return_void() const noexcept {}

    /// `co_yield value`: an lvalue is sent from where it is (it outlives the suspension), without a copy.
    detail::yield_awaiter yield_value(const T& v) noexcept {
      current = &v;
      return detail::yield_awaiter(stream.get());
    }
    /// `co_yield` of a temporary or of a value convertible to `T`: kept in `owned` until the next one.
    template <class U>
      requires(std::constructible_from<T, U &&> && !std::is_same_v<std::remove_cvref_t<U>, T>) || std::is_same_v<U, T>
    detail::yield_awaiter yield_value(U&& v) {
      owned.emplace(std::forward<U>(v));
      current = &*owned;
      return detail::yield_awaiter(stream.get());
    }

    /// What a handler may `co_await`: its stream input and any `asio::awaitable` (run on the stream's
    /// strand, cancelled with the stream), and `asio::this_coro::executor`.
    template <class A>
    decltype(auto) await_transform(A&& a) {
      using D = std::remove_cvref_t<A>;
      if constexpr (std::is_base_of_v<detail::gen_awaiter_tag, D>) {
        return std::forward<A>(a);
      } else if constexpr (detail::is_asio_awaitable<D>::value) {
        return detail::bridge_awaiter<typename detail::is_asio_awaitable<D>::value_type>(stream.get(), std::move(a));
      } else if constexpr (std::is_same_v<D, asio::this_coro::executor_t>) {
        return detail::executor_awaiter{{}, stream->strand};
      } else {
        static_assert(detail::always_false<D>, "a stream generator awaits stream inputs and asio::awaitable<T> only");
      }
    }

    /// The value being sent, packed into `scratch` (or viewed in place for raw payloads).
    static detail::payload_view encode_current(detail::gen_promise_base& b, std::vector<std::byte>& scratch) {
      auto& self = static_cast<promise_type&>(b);
      if constexpr (std::is_same_v<T, payload>) {
        return detail::view_of(*self.current);
      } else {
        if (!detail::codec<T>::pack(*self.current, scratch)) return std::nullopt;
        return std::span<const std::byte>(scratch);
      }
    }
  };

  /// Move-only: the generator owns its coroutine.
  stream_generator(stream_generator&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  stream_generator& operator=(stream_generator&&) = delete;
  ~stream_generator() {
    if (h_) h_.destroy();
  }

private:
  template <class, class, class>
  friend struct detail::server_stream_start;
  template <class, class, class, class>
  friend struct detail::bidi_stream_start;

  // For the stream core: gives up the (not yet started) frame.
  detail::gen_start release() noexcept {
    detail::gen_start g;
    g.promise = &h_.promise();
    g.handle = std::exchange(h_, nullptr);
    return g;
  }

  explicit stream_generator(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

/// The requests a bidirectional stream's handler receives: `while (auto r = co_await in.next())`. Each
/// request taken returns one credit to the caller. `next()` gives the request, or `errc::end_of_stream`
/// once the caller closed its side, `errc::bad_payload` for a request that does not decode as `Req`,
/// `operation_aborted` when the stream was cancelled. With GCC 12 bind the result (`while (auto r = co_await
/// in.next())`): `while (co_await in.next())` is miscompiled (a non-trivial co_await result used as a loop
/// condition).
template <class Req>
class stream_input {
public:
  /// Awaitable (inside the generator only) yielding `result<Req>`.
  detail::input_awaiter<Req> next() noexcept { return detail::input_awaiter<Req>(s_.get(), &s_->input_buf); }

private:
  template <class, class, class, class>
  friend struct detail::bidi_stream_start;
  friend struct detail::stream_input_access;
  explicit stream_input(std::shared_ptr<detail::served_stream> s) : s_(std::move(s)) {}
  std::shared_ptr<detail::served_stream> s_;
};

/// The caller's end of an open stream: receives `Resp`s, and sends `Req`s on a bidirectional stream
/// (`Req` is `void` for a `server_stream`'s). Move-only; destroying it (or `cancel()`) before the stream
/// ended cancels the remote handler.
///
/// @code
/// auto s = co_await echo.open(*conn);            // result<client_stream<item, item>>
/// co_await s->send(req);                         // waits for a credit
/// s->close_send();
/// for (;;) {
///   auto r = co_await s->next();                 // a response, or why there is none
///   if (!r) { if (r.error() != cogrid::errc::end_of_stream) log(r.error().message()); break; }
///   use(*r);
/// }
/// @endcode
/// @par Thread safety
/// One coroutine sends and one receives at a time (they may be different coroutines).
template <class Req, class Resp>
class client_stream {
public:
  /// Move-only: the object owns its stream.
  client_stream(client_stream&&) noexcept = default;
  /// Move-only; the stream this object had is cancelled.
  client_stream& operator=(client_stream&& o) noexcept {
    if (this != &o) {
      if (s_) detail::stream_cancel(*s_);
      s_ = std::move(o.s_);
      buf_ = std::move(o.buf_);
      out_ = std::move(o.out_);
    }
    return *this;
  }
  ~client_stream() {
    if (s_) detail::stream_cancel(*s_);
  }

  /// Sends one request, suspending while the handler has no credit left for us.
  /// @par Errors
  /// `errc::stream_closed` after `close_send()`; the stream's own error once it has ended;
  /// `errc::disconnected`.
  /// @par Cancellation
  /// Cancelling a waiting send cancels the whole stream (`operation_aborted`).
  template <class R = Req>
    requires(!std::is_void_v<R> && std::is_same_v<R, Req>)
  asio::awaitable<result<void>> send(const std::type_identity_t<R>& r) {
    out_.clear();
    detail::payload_view v;
    if (detail::codec<R>::pack(r, out_)) v = std::span<const std::byte>(out_);
    return detail::stream_send(s_, v);
  }

  /// Ends the requests (EOF). Idempotent.
  result<void> close_send()
    requires(!std::is_void_v<Req>)
  {
    return detail::stream_close_send(*s_);
  }

  /// The next response, or why there is none: `errc::end_of_stream` after the handler's clean end (every
  /// response it sent before is delivered first), `errc::remote_error` with the handler's text,
  /// `errc::bad_payload` for a response that does not decode as `Resp` (the stream is cancelled), or the
  /// stream's failure (`disconnected`, `timeout`, `operation_aborted`, ...).
  /// @par Cancellation
  /// Cancelling a waiting `next()` cancels the whole stream (`operation_aborted`).
  asio::awaitable<result<Resp>> next() {
    int got = detail::stream_try_next(*s_, buf_);
    while (got < 0) {
      co_await detail::stream_wait(s_, detail::wait_kind::next);
      got = detail::stream_try_next(*s_, buf_);
    }
    if (!got) co_return detail::stream_error(*s_);
    co_return take();
  }

  /// Ends the stream now with `operation_aborted` and cancels the remote handler.
  void cancel() { detail::stream_cancel(*s_); }

private:
  template <class R, class P>
  friend asio::awaitable<result<client_stream<R, P>>> detail::open_packed(std::shared_ptr<connection>, handler_id,
                                                                         std::optional<subroute_id>, std::vector<std::byte>,
                                                                         bool, stream_capacity, stream_options);
  explicit client_stream(std::shared_ptr<detail::client_stream_state> s) : s_(std::move(s)) {}

  result<Resp> take() {
    if constexpr (std::is_same_v<Resp, payload>) {
      return std::move(buf_);
    } else {
      Resp r{};
      if (auto d = detail::codec<Resp>::unpack(detail::view_of(buf_), r); !d) {
        detail::stream_fail(*s_, d.error());
        return d.error();
      }
      return r;
    }
  }

  std::shared_ptr<detail::client_stream_state> s_;
  payload buf_;                 // reused across responses
  std::vector<std::byte> out_;  // reused across requests
};

namespace detail {

/// For layers built on streams (bulk.hpp): the served stream behind a handler's input.
struct stream_input_access {
  template <class Req>
  static const std::shared_ptr<served_stream>& state(const stream_input<Req>& in) noexcept {
    return in.s_;
  }
};

template <class T>
payload_view pack_into(const T& v, std::vector<std::byte>& buf) {
  if (!codec<T>::pack(v, buf)) return std::nullopt;
  return std::span<const std::byte>(buf);
}

template <class Req, class Resp>
asio::awaitable<result<client_stream<Req, Resp>>> open_packed(std::shared_ptr<connection> c, handler_id id,
                                                              std::optional<subroute_id> sub, std::vector<std::byte> buf,
                                                              bool nil, stream_capacity cap, stream_options opt) {
  payload_view view;
  if (!nil) view = std::span<const std::byte>(buf);
  auto r = co_await open_stream(std::move(c), id, sub, view, cap, opt);
  if (!r) co_return r.error();
  co_return client_stream<Req, Resp>(std::move(*r));
}

// Builds the generator of a one-way stream's handler: `fn([call_context,] Req)`.
template <class Req, class Resp, class F>
struct server_stream_start {
  std::shared_ptr<F> fn;
  gen_start operator()(call_context ctx, payload initial, const std::shared_ptr<served_stream>&) const {
    Req r{};
    if constexpr (std::is_same_v<Req, payload>) {
      r = std::move(initial);
    } else if (auto d = codec<Req>::unpack(view_of(initial), r); !d) {
      throw exception(error(errc::bad_payload, "bad stream request: " + d.error().text));
    }
    if constexpr (std::is_invocable_v<F&, call_context, Req>) return stream_generator<Resp>((*fn)(std::move(ctx), std::move(r))).release();
    else if constexpr (std::is_invocable_v<F&, Req>) return stream_generator<Resp>((*fn)(std::move(r))).release();
    else static_assert(always_false<F>, "a server_stream handler takes ([call_context,] Req) and returns stream_generator<Resp>");
  }
};

// Builds the generator of a bidirectional stream's handler: `fn([call_context,] [Init,] stream_input<Req>)`.
template <class Req, class Resp, class Init, class F>
struct bidi_stream_start {
  std::shared_ptr<F> fn;
  gen_start operator()(call_context ctx, payload initial, const std::shared_ptr<served_stream>& s) const {
    if constexpr (std::is_void_v<Init>) {
      (void)initial; // a stream without an initial payload ignores one a peer sends anyway
      if constexpr (std::is_invocable_v<F&, call_context, stream_input<Req>>)
        return stream_generator<Resp>((*fn)(std::move(ctx), stream_input<Req>(s))).release();
      else if constexpr (std::is_invocable_v<F&, stream_input<Req>>)
        return stream_generator<Resp>((*fn)(stream_input<Req>(s))).release();
      else
        static_assert(always_false<F>, "a bidi_stream handler takes ([call_context,] stream_input<Req>) and returns "
                                       "stream_generator<Resp>");
    } else {
      Init p{};
      if constexpr (std::is_same_v<Init, payload>) {
        p = std::move(initial);
      } else if (auto d = codec<Init>::unpack(view_of(initial), p); !d) {
        throw exception(error(errc::bad_payload, "bad stream payload: " + d.error().text));
      }
      if constexpr (std::is_invocable_v<F&, call_context, Init, stream_input<Req>>)
        return stream_generator<Resp>((*fn)(std::move(ctx), std::move(p), stream_input<Req>(s))).release();
      else if constexpr (std::is_invocable_v<F&, Init, stream_input<Req>>)
        return stream_generator<Resp>((*fn)(std::move(p), stream_input<Req>(s))).release();
      else
        static_assert(always_false<F>, "a bidi_stream handler with an initial payload takes ([call_context,] Init, "
                                       "stream_input<Req>) and returns stream_generator<Resp>");
    }
  }
};

} // namespace detail

/// A one-way stream handler: the caller sends one request (`Req`), the handler yields responses
/// (`Resp`). Types are msgpack-cxx types, or `cogrid::payload` for raw bytes. The request travels as
/// MinIO's stream payload, and the stream takes no further input (a MinIO handler registered without
/// input and with a payload).
///
/// @par Example
/// @code
/// inline const cogrid::server_stream<list_req, entry> list{cogrid::handler_id{80}};
/// cogrid::stream_generator<entry> list_fn(list_req r) { for (auto& e : find(r)) co_yield e; }
/// auto served = list.serve(m, list_fn);                      // on every node
/// auto s = co_await list.open(*conn, req);                    // result<client_stream<void, entry>>
/// while (auto e = co_await s->next()) use(*e);
/// @endcode
/// A handler is any callable taking `([call_context,] Req)` and returning `stream_generator<Resp>`. A
/// coroutine lambda must not capture (its captures would not outlive the call); use parameters or a
/// named function object.
///
/// @par Thread safety
/// Immutable: use from any thread. Must outlive the streams opened through it.
template <class Req, class Resp>
class server_stream {
public:
  /// `out`: how many responses may be in flight unacknowledged (the stream's out capacity).
  explicit server_stream(handler_id id, std::uint32_t out = 1) : id_(id), cap_{0, out} {}
  /// The same on the subroute `route`.
  server_stream(handler_id id, std::string_view route, std::uint32_t out = 1)
      : id_(id), route_(route), sub_(make_subroute_id(id, route)), cap_{0, out} {}

  /// The handler id.
  handler_id id() const noexcept { return id_; }
  /// The subroute, when one was given.
  const std::optional<subroute_id>& subroute() const noexcept { return sub_; }
  /// The capacities this side declares.
  stream_capacity capacity() const noexcept { return cap_; }

  /// Registers `fn` on `m`.
  /// @par Errors
  /// `errc::handler_exists`, `errc::invalid_handler`, `errc::invalid_value` (out capacity 0).
  template <class F>
  [[nodiscard]] result<void> serve(manager& m, F fn) const {
    return detail::register_stream(m, id_, sub_, route_, cap_,
                                   detail::server_stream_start<Req, Resp, F>{std::make_shared<F>(std::move(fn))});
  }

  /// Opens a stream on `c` with request `r`; completes when the remote acknowledged it.
  /// @par Errors
  /// `errc::unknown_handler` (with the remote's text) when the remote has no such handler,
  /// `errc::capacity_mismatch`, `errc::disconnected`, `errc::queue_full`, `errc::timeout`, `operation_aborted`.
  asio::awaitable<result<client_stream<void, Resp>>> open(connection& c, const Req& r, stream_options opt = {}) const {
    std::vector<std::byte> buf;
    const bool nil = !detail::codec<Req>::pack(r, buf);
    return detail::open_packed<void, Resp>(c.shared_from_this(), id_, sub_, std::move(buf), nil, cap_, opt);
  }

private:
  handler_id id_;
  std::string route_;
  std::optional<subroute_id> sub_;
  stream_capacity cap_;
};

/// A bidirectional stream handler: the caller sends requests (`Req`) and the handler yields responses
/// (`Resp`), each direction with its own capacity; `Init`, when not `void`, is an initial payload the
/// caller sends with the open (MinIO's stream payload).
///
/// @par Example
/// @code
/// inline const cogrid::bidi_stream<item, item> echo{cogrid::handler_id{78}, "echo"};
/// cogrid::stream_generator<item> echo_fn(cogrid::stream_input<item> in) {
///   while (auto r = co_await in.next()) co_yield *r;
/// }
/// auto served = echo.serve(m, echo_fn);                     // on every node
/// auto s = co_await echo.open(*conn);                        // result<client_stream<item, item>>
/// @endcode
/// A handler is any callable taking `([call_context,] [Init,] stream_input<Req>)` and returning
/// `stream_generator<Resp>`; the same rules for coroutine lambdas as for `server_stream`.
///
/// @par Thread safety
/// Immutable: use from any thread. Must outlive the streams opened through it.
template <class Req, class Resp, class Init = void>
class bidi_stream {
public:
  /// `cap`: requests (`in`, at least 1) and responses (`out`, at least 1) in flight in each direction.
  explicit bidi_stream(handler_id id, stream_capacity cap = {}) : id_(id), cap_(cap) {}
  /// The same on the subroute `route`.
  bidi_stream(handler_id id, std::string_view route, stream_capacity cap = {})
      : id_(id), route_(route), sub_(make_subroute_id(id, route)), cap_(cap) {}

  /// The handler id.
  handler_id id() const noexcept { return id_; }
  /// The subroute, when one was given.
  const std::optional<subroute_id>& subroute() const noexcept { return sub_; }
  /// The capacities this side declares.
  stream_capacity capacity() const noexcept { return cap_; }

  /// Registers `fn` on `m`.
  /// @par Errors
  /// `errc::handler_exists`, `errc::invalid_handler`, `errc::invalid_value` (a capacity of 0).
  template <class F>
  [[nodiscard]] result<void> serve(manager& m, F fn) const {
    if (cap_.in == 0) return error(errc::invalid_value, "a bidirectional stream needs an in capacity of at least 1");
    return detail::register_stream(m, id_, sub_, route_, cap_,
                                   detail::bidi_stream_start<Req, Resp, Init, F>{std::make_shared<F>(std::move(fn))});
  }

  /// Opens a stream on `c`; completes when the remote acknowledged it.
  /// @par Errors
  /// As `server_stream::open`.
  asio::awaitable<result<client_stream<Req, Resp>>> open(connection& c, stream_options opt = {}) const
    requires std::is_void_v<Init>
  {
    return detail::open_packed<Req, Resp>(c.shared_from_this(), id_, sub_, {}, true, cap_, opt);
  }

  /// Opens a stream on `c` with initial payload `init`.
  template <class I = Init>
    requires(!std::is_void_v<I>)
  asio::awaitable<result<client_stream<Req, Resp>>> open(connection& c, const I& init, stream_options opt = {}) const {
    std::vector<std::byte> buf;
    const bool nil = !detail::codec<I>::pack(init, buf);
    return detail::open_packed<Req, Resp>(c.shared_from_this(), id_, sub_, std::move(buf), nil, cap_, opt);
  }

private:
  handler_id id_;
  std::string route_;
  std::optional<subroute_id> sub_;
  stream_capacity cap_;
};

/// One-way and bidirectional streams in raw bytes (nil and empty kept apart), for users with their own
/// serialization; the raw bidirectional stream carries MinIO's initial payload too.
using server_stream_raw = server_stream<payload, payload>;
using bidi_stream_raw = bidi_stream<payload, payload, payload>;

} // namespace cogrid

#endif // COGRID_STREAM_HPP
