// cogrid/stream.hpp — typed bidirectional streams: handlers written as async generators (co_yield each
// response, co_await each request), callers holding a stream object with send / close_send / next, and
// credit-based flow control in both directions.
#ifndef COGRID_STREAM_HPP
#define COGRID_STREAM_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/detail/service.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/serialize.hpp>
#include <cogrid/detail/pool.hpp>
#include <cogrid/detail/stream_core.hpp>

#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/this_coro.hpp>

#include <concepts>
#include <coroutine>
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

namespace detail {

/// Awaitables a stream generator awaits as they are (everything else goes through `await_transform`).
struct gen_awaiter_tag {};

/// `co_yield v`: sends v when the caller has a credit, else suspends until it returns one.
struct yield_awaiter : gen_awaiter_tag {
  explicit yield_awaiter(server_stream* s) noexcept : s_(s) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) { return server_on_yield(*s_, h); }
  void await_resume() { server_check_cancelled(*s_); }

private:
  server_stream* s_;
};

/// `co_await in.next()`: the next request, or nothing at the end of input.
template <class Req>
struct input_awaiter : gen_awaiter_tag {
  input_awaiter(server_stream* s, payload* buf) noexcept : s_(s), buf_(buf) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) { return server_on_next(*s_, h); }
  std::optional<Req> await_resume() {
    if (!server_take_input(*s_, *buf_)) return std::nullopt;
    if constexpr (std::is_same_v<Req, payload>) {
      return std::move(*buf_);
    } else {
      Req r{};
      if (auto err = codec<Req>::unpack(view_of(*buf_), r))
        throw call_exception(call_error(errc::bad_payload, "bad request payload: " + *err));
      return r;
    }
  }

private:
  server_stream* s_;
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
  bridge_awaiter(server_stream* s, asio::awaitable<T> a) : s_(s), a_(std::move(a)) {}
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
  server_stream* s_;
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
    std::shared_ptr<server_stream> s = std::move(p.stream);
    std::exception_ptr e = std::move(p.error);
    if (s) server_on_finished(*s, std::move(e));
    h.destroy();
  }
  void await_resume() const noexcept {}
};

template <class F, class... A>
struct invoke_traits {
  static constexpr bool ok = std::is_invocable_v<F&, A...>;
};

} // namespace detail

/// The return type of a stream handler: a coroutine that `co_yield`s each response (of type `T`) and
/// `co_await`s requests (`co_await in.next()`) and any `asio::awaitable` (timers, calls to other nodes,
/// `asio::this_coro::executor`). Returning ends the stream with EOF; throwing ends it with the exception's
/// text as the caller's remote error (`throw cogrid::handler_error{"..."}` works too).
///
/// @par Flow control
/// `co_yield` sends at once when the caller has a credit, and otherwise suspends until it returns one, so a
/// handler never buffers more than the stream's out capacity.
/// @par Cancellation
/// When the caller cancels or drops the stream, its deadline passes, its pings stop, or the connection
/// goes: the awaited operation is cancelled (terminal) and the next `co_yield` or `in.next()` throws
/// `std::system_error(asio::error::operation_aborted)`.
/// @par Thread safety
/// The generator runs on a strand of its own; it must not be awaited from anywhere else.
template <class T>
class stream_generator {
public:
  struct promise_type : detail::gen_promise_base {
    std::optional<T> owned;    // a yielded temporary (or converted value), kept until the next co_yield
    const T* current = nullptr; // the value being sent

    promise_type() noexcept { encode = &encode_current; }
    // Frames come from a per-thread pool: a stream per call would otherwise allocate one each.
    static void* operator new(std::size_t n) { return detail::frame_pool::allocate(n); }
    static void operator delete(void* p, std::size_t n) noexcept { detail::frame_pool::deallocate(p, n); }
    stream_generator get_return_object() noexcept { return stream_generator(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    detail::final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { error = std::current_exception(); }
    void return_void() const noexcept {}

    /// `co_yield value`: an lvalue is sent from where it is (it outlives the suspension), without a copy.
    detail::yield_awaiter yield_value(const T& v) noexcept {
      current = &v;
      return detail::yield_awaiter(stream.get());
    }
    template <class U>
      requires(std::constructible_from<T, U &&> && !std::is_same_v<std::remove_cvref_t<U>, T>) || std::is_same_v<U, T>
    detail::yield_awaiter yield_value(U&& v) {
      owned.emplace(std::forward<U>(v));
      current = &*owned;
      return detail::yield_awaiter(stream.get());
    }

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

  stream_generator(stream_generator&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  stream_generator& operator=(stream_generator&&) = delete;
  ~stream_generator() {
    if (h_) h_.destroy();
  }

  /// For the stream core: gives up the (not yet started) frame.
  detail::gen_start release() noexcept {
    detail::gen_start g;
    g.promise = &h_.promise();
    g.handle = std::exchange(h_, nullptr);
    return g;
  }

private:
  explicit stream_generator(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

/// The requests a stream handler receives: `while (auto r = co_await in.next())`. Each request taken
/// returns one credit to the caller. A request that does not decode as `Req` throws `call_exception`
/// (`errc::bad_payload`) from `next()`. With GCC 12 bind the result (`while (auto r = co_await in.next())`):
/// `while (co_await in.next())` is miscompiled (a non-trivial co_await result used as a loop condition).
template <class Req>
class stream_input {
public:
  explicit stream_input(std::shared_ptr<detail::server_stream> s) : s_(std::move(s)) {}
  /// Awaitable (inside the generator only) yielding `std::optional<Req>`: empty at the end of input.
  detail::input_awaiter<Req> next() noexcept { return detail::input_awaiter<Req>(s_.get(), &s_->input_buf); }

private:
  std::shared_ptr<detail::server_stream> s_;
};

/// The caller's end of an open stream. Move-only; destroying it (or `cancel()`) before the stream ended
/// cancels the remote handler.
///
/// @code
/// auto s = co_await echo.open(*conn, payload);   // call_result<client_stream<Req, Resp>>
/// co_await s->send(req);                         // waits for a credit
/// s->close_send();
/// while (auto r = co_await s->next()) use(*r);
/// if (s->error()) ...                            // why it ended, empty after the handler's EOF
/// @endcode
/// @par Thread safety
/// One coroutine sends and one receives at a time (they may be different coroutines).
template <class Req, class Resp>
class client_stream {
public:
  explicit client_stream(std::shared_ptr<detail::client_stream_state> s) : s_(std::move(s)) {}
  client_stream(client_stream&&) noexcept = default;
  client_stream& operator=(client_stream&& o) noexcept {
    if (this != &o) {
      if (s_) detail::stream_cancel(*s_);
      s_ = std::move(o.s_);
      buf_ = std::move(o.buf_);
      out_ = std::move(o.out_);
      local_err_ = std::move(o.local_err_);
    }
    return *this;
  }
  ~client_stream() {
    if (s_) detail::stream_cancel(*s_);
  }

  /// Sends one request, suspending while the handler has no credit left for us.
  /// @par Errors
  /// `errc::stream_closed` after `close_send()` or on a stream without input; the stream's own error once
  /// it has ended; `errc::disconnected`.
  /// @par Cancellation
  /// Cancelling a waiting send cancels the whole stream (`operation_aborted`).
  asio::awaitable<call_error> send(const Req& r) {
    out_.clear();
    detail::payload_view v;
    if (detail::codec<Req>::pack(r, out_)) v = std::span<const std::byte>(out_);
    return detail::stream_send(s_, v);
  }

  /// Ends the input (EOF). Idempotent.
  call_error close_send() { return detail::stream_close_send(*s_); }

  /// The next response; empty once the stream has ended — then `error()` says why (empty after a clean
  /// end). Every response the handler sent before its end is delivered first.
  /// @par Cancellation
  /// Cancelling a waiting `next()` cancels the whole stream (`operation_aborted`).
  asio::awaitable<std::optional<Resp>> next() {
    int got = detail::stream_try_next(*s_, buf_);
    while (got < 0) {
      co_await detail::stream_wait(s_, detail::wait_kind::next);
      got = detail::stream_try_next(*s_, buf_);
    }
    std::optional<Resp> r;
    if (got) r = take();
    co_return r;
  }

  /// Why the stream ended: empty while it runs and after the handler's EOF.
  call_error error() const { return local_err_ ? local_err_ : detail::stream_error(*s_); }

  /// Ends the stream now with `operation_aborted` and cancels the remote handler.
  void cancel() { detail::stream_cancel(*s_); }

private:
  std::optional<Resp> take() {
    if constexpr (std::is_same_v<Resp, payload>) {
      return std::move(buf_);
    } else {
      Resp r{};
      if (auto err = detail::codec<Resp>::unpack(detail::view_of(buf_), r)) {
        local_err_ = call_error(errc::bad_payload, *err);
        detail::stream_cancel(*s_);
        return std::nullopt;
      }
      return r;
    }
  }

  std::shared_ptr<detail::client_stream_state> s_;
  payload buf_;                 // reused across responses
  std::vector<std::byte> out_;  // reused across requests
  call_error local_err_;
};

namespace detail {

template <class P, class Req, class Resp, class F>
struct typed_stream_start {
  std::shared_ptr<F> fn;

  gen_start operator()(call_context ctx, payload initial, const std::shared_ptr<server_stream>& s) const {
    P p{};
    if constexpr (std::is_same_v<P, payload>) {
      p = std::move(initial);
    } else if (auto err = codec<P>::unpack(view_of(initial), p)) {
      throw std::runtime_error("bad stream payload: " + *err);
    }
    stream_generator<Resp> g = invoke(std::move(ctx), std::move(p), s);
    return g.release();
  }

  stream_generator<Resp> invoke(call_context ctx, P p, const std::shared_ptr<server_stream>& s) const {
    if constexpr (std::is_invocable_v<F&, call_context, P, stream_input<Req>>)
      return (*fn)(std::move(ctx), std::move(p), stream_input<Req>(s));
    else if constexpr (std::is_invocable_v<F&, P, stream_input<Req>>)
      return (*fn)(std::move(p), stream_input<Req>(s));
    else if constexpr (std::is_invocable_v<F&, call_context, P>)
      return (*fn)(std::move(ctx), std::move(p));
    else if constexpr (std::is_invocable_v<F&, P>)
      return (*fn)(std::move(p));
    else
      static_assert(always_false<F>, "a stream handler takes ([call_context,] P [, stream_input<Req>]) and "
                                     "returns stream_generator<Resp>");
  }
};

template <class Req, class Resp>
asio::awaitable<call_result<client_stream<Req, Resp>>> open_packed(std::shared_ptr<connection> c, handler_id id,
                                                                   std::optional<subroute_id> sub,
                                                                   std::vector<std::byte> buf, bool nil,
                                                                   stream_capacity cap, stream_options opt) {
  payload_view view;
  if (!nil) view = std::span<const std::byte>(buf);
  auto r = co_await open_stream(std::move(c), id, sub, view, cap, opt);
  if (!r) co_return r.error();
  co_return client_stream<Req, Resp>(std::move(*r));
}

} // namespace detail

/// A stream handler: initial payload `P`, requests `Req`, responses `Resp` (msgpack-cxx types, or
/// `cogrid::payload` for raw bytes), addressed by a handler id and optionally a subroute, with its
/// capacities (both peers must declare the same). Capacity `in == 0` makes a stream without requests.
///
/// @par Example
/// @code
/// inline const cogrid::stream<cogrid::payload, item, item> echo{cogrid::handler_id{78}, "echo"};
/// cogrid::stream_generator<item> run(cogrid::payload, cogrid::stream_input<item> in) {
///   while (auto r = co_await in.next()) co_yield *r;
/// }
/// echo.serve(manager, run);                                  // on every node
/// auto s = co_await echo.open(*conn, cogrid::payload{});     // from anywhere
/// @endcode
/// A handler is any callable taking `([call_context,] P [, stream_input<Req>])` (the input only when
/// `in > 0`) and returning `stream_generator<Resp>`. A coroutine lambda must not capture (its captures
/// would not outlive the call); use parameters or a named function object held by the manager.
///
/// @par Thread safety
/// Immutable: use from any thread. Must outlive the streams opened through it.
template <class P, class Req, class Resp>
class stream {
public:
  explicit stream(handler_id id, stream_capacity cap = {}) : id_(id), cap_(cap) {}
  stream(handler_id id, std::string_view route, stream_capacity cap = {})
      : id_(id), route_(route), sub_(make_subroute_id(id, route)), cap_(cap) {}

  handler_id id() const noexcept { return id_; }
  const std::optional<subroute_id>& subroute() const noexcept { return sub_; }
  stream_capacity capacity() const noexcept { return cap_; }

  /// Registers `fn` on `m` (see the class comment for its shape).
  /// @par Errors
  /// `errc::handler_exists`, `errc::invalid_handler`, `errc::invalid_value` (out capacity 0).
  template <class F>
  std::error_code serve(manager& m, F fn) const {
    detail::stream_entry e{cap_, detail::typed_stream_start<P, Req, Resp, F>{std::make_shared<F>(std::move(fn))}};
    return sub_ ? m.register_stream(id_, route_, std::move(e)) : m.register_stream(id_, std::move(e));
  }

  /// Opens a stream on `c` with initial payload `p`; completes when the remote acknowledged it.
  /// @par Errors
  /// `errc::unknown_handler` (with the remote's text) when the remote has no such handler,
  /// `errc::disconnected`, `errc::queue_full`, `errc::timeout`, `operation_aborted`.
  asio::awaitable<call_result<client_stream<Req, Resp>>> open(connection& c, const P& p, stream_options opt = {}) const {
    std::vector<std::byte> buf;
    const bool nil = !detail::codec<P>::pack(p, buf);
    return detail::open_packed<Req, Resp>(c.shared_from_this(), id_, sub_, std::move(buf), nil, cap_, opt);
  }

private:
  handler_id id_;
  std::string route_;
  std::optional<subroute_id> sub_;
  stream_capacity cap_;
};

/// A stream in raw bytes (nil and empty kept apart), for users with their own serialization.
using stream_raw = stream<payload, payload, payload>;

} // namespace cogrid

#endif // COGRID_STREAM_HPP
