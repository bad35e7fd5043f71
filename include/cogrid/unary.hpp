// cogrid/unary.hpp — typed single-request handlers: declare once, serve on every node, call from anywhere.
#ifndef COGRID_UNARY_HPP
#define COGRID_UNARY_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/serialize.hpp>

#include <asio/awaitable.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace cogrid {

namespace detail {

template <class T>
struct awaitable_value {
  static constexpr bool is_awaitable = false;
};
template <class T, class E>
struct awaitable_value<asio::awaitable<T, E>> {
  static constexpr bool is_awaitable = true;
};

template <class T>
struct is_result : std::false_type {};
template <class T>
struct is_result<result<T>> : std::true_type {};

// A handler's return value (`Resp`, or `result<Resp>`) as the payload to send back.
template <class Resp>
result<payload> to_reply(Resp&& v) {
  using V = std::decay_t<Resp>;
  if constexpr (std::is_same_v<V, result<payload>>) {
    return std::forward<Resp>(v);
  } else if constexpr (std::is_same_v<V, payload>) {
    return std::forward<Resp>(v);
  } else if constexpr (is_result<V>::value) {
    if (!v) return v.error();
    return to_reply(*std::forward<Resp>(v));
  } else {
    std::vector<std::byte> out = buffer_cache::take();
    codec<V>::pack(v, out);
    return payload(std::move(out));
  }
}

// The result type of handler `F` called with `Req` (and a `call_context` first, when it takes one).
template <class Req, class F>
struct handler_traits {
  static constexpr bool takes_context = std::is_invocable_v<F&, const call_context&, Req>;
  static_assert(takes_context || std::is_invocable_v<F&, Req>, "a unary handler takes (Req) or (const call_context&, Req)");
  using result_type = typename std::conditional_t<takes_context, std::invoke_result<F&, const call_context&, Req>,
                                                  std::invoke_result<F&, Req>>::type;
  static constexpr bool is_async = awaitable_value<result_type>::is_awaitable;
};

template <class Req>
result<void> unpack_request(payload& in, Req& req) {
  if constexpr (std::is_same_v<Req, payload>) {
    req = std::move(in); // raw bytes: handed over, not copied
    return {};
  } else {
    auto r = codec<Req>::unpack(view_of(in), req);
    buffer_cache::give(std::move(in));
    return r;
  }
}

/// Adapts a user handler `F` (taking `Req`, optionally after a `call_context`; returning `Resp` or
/// `result<Resp>`) that returns an awaitable of either to a raw handler. A named type rather than
/// a capturing coroutine lambda: the user's function lives in `fn`, the coroutine takes copies.
template <class Req, class Resp, class F>
struct typed_unary {
  std::shared_ptr<F> fn;

  asio::awaitable<result<payload>> operator()(call_context ctx, payload in) const {
    return run(fn, std::move(ctx), std::move(in));
  }

  static asio::awaitable<result<payload>> run(std::shared_ptr<F> fn, call_context ctx, payload in) {
    Req req{};
    if (auto r = unpack_request(in, req); !r) co_return remote_error("bad request payload: " + r.error().text);
    if constexpr (handler_traits<Req, F>::takes_context) co_return to_reply(co_await (*fn)(ctx, std::move(req)));
    else co_return to_reply(co_await (*fn)(std::move(req)));
  }
};

/// The same for a handler that returns its response (or `result`) directly: a plain function.
template <class Req, class Resp, class F>
struct typed_sync_unary {
  std::shared_ptr<F> fn;

  result<payload> operator()(const call_context& ctx, payload in) const {
    Req req{};
    if (auto r = unpack_request(in, req); !r) return remote_error("bad request payload: " + r.error().text);
    if constexpr (handler_traits<Req, F>::takes_context) return to_reply((*fn)(ctx, std::move(req)));
    else return to_reply((*fn)(std::move(req)));
  }
};

template <class Resp>
asio::awaitable<result<Resp>> call_packed(std::shared_ptr<connection> c, handler_id id, std::optional<subroute_id> sub,
                                          std::vector<std::byte> req, bool nil, call_options opt) {
  result<payload> r = co_await call_raw(std::move(c), id, sub, std::move(req), nil, opt);
  if (!r) co_return r.error();
  Resp out{};
  auto decoded = codec<Resp>::unpack(view_of(*r), out);
  buffer_cache::give(std::move(*r));
  if (!decoded) co_return decoded.error();
  co_return out;
}

} // namespace detail

/// A single-request handler with request type `Req` and response type `Resp`, addressed by a handler id
/// and optionally a subroute. `Req` and `Resp` are msgpack-cxx types (structs declared with
/// `MSGPACK_DEFINE_MAP(field...)` travel as maps keyed by field name, like MinIO's msgp structs, so a C++
/// struct and a Go struct with the same field names interoperate), or `cogrid::payload` for raw bytes.
///
/// @par Example
/// @code
/// struct echo_req { std::string Text; MSGPACK_DEFINE_MAP(Text) };  // (no ";" after the macro: -Wpedantic)
/// inline const cogrid::unary<echo_req, echo_req> echo{cogrid::handler_id{78}};
/// auto served = echo.serve(manager, [](echo_req r) { return r; });     // on every node
/// echo_req req{"hi"};
/// cogrid::result<echo_req> r = co_await echo.call(*conn, req);         // from anywhere
/// @endcode
/// With GCC 12, pass a named request, not a braced temporary (`echo.call(*conn, {"hi"})`): GCC 12
/// destroys such a temporary twice when it stands inside a `co_await` expression (a compiler bug).
///
/// @par Thread safety
/// A `unary` is immutable: use it from any thread. It must outlive the calls made through it.
template <class Req, class Resp>
class unary {
public:
  /// The handler `id` (no subroute).
  explicit unary(handler_id id) : id_(id) {}
  /// A handler on subroute `route` (nested routes: "a/b", see `join_route`).
  unary(handler_id id, std::string_view route) : id_(id), route_(route), sub_(make_subroute_id(id, route)) {}

  /// The handler id.
  handler_id id() const noexcept { return id_; }
  /// The subroute, when one was given.
  const std::optional<subroute_id>& subroute() const noexcept { return sub_; }

  /// Registers `fn` on `m`. `fn` takes `Req` (or `const call_context&, Req`) and returns `Resp`,
  /// `result<Resp>`, or an `asio::awaitable` of either. Throwing, or returning an error
  /// (`cogrid::remote_error("text")`), fails the call: the caller gets `errc::remote_error` with that text. An awaitable handler runs as its own coroutine on the io_context; the
  /// caller's cancellation or deadline cancels it (terminal cancellation of its awaited operations). A
  /// handler returning its result directly is a plain function posted to the io_context (cheaper: no
  /// coroutine, strand or timer); it cannot be cancelled, and a response ready after the caller's
  /// deadline is dropped.
  /// @par Errors
  /// `errc::handler_exists`, `errc::invalid_handler`.
  template <class F>
  [[nodiscard]] result<void> serve(manager& m, F fn) const {
    if constexpr (detail::handler_traits<Req, F>::is_async) {
      raw_unary_handler raw = detail::typed_unary<Req, Resp, F>{std::make_shared<F>(std::move(fn))};
      return sub_ ? m.register_unary(id_, route_, std::move(raw)) : m.register_unary(id_, std::move(raw));
    } else {
      sync_unary_handler raw = detail::typed_sync_unary<Req, Resp, F>{std::make_shared<F>(std::move(fn))};
      return sub_ ? m.register_unary(id_, route_, std::move(raw)) : m.register_unary(id_, std::move(raw));
    }
  }

  /// Calls the handler over `c` and completes with its response or an error: `errc::remote_error` with
  /// the remote's text when the handler failed, `errc::unknown_handler` when the remote has none,
  /// `errc::bad_payload` when the response does not decode as `Resp`, `errc::timeout` when the deadline
  /// passed, `errc::disconnected`, `errc::queue_full`, `errc::shutdown`. The request is encoded before
  /// this returns.
  /// @par Cancellation
  /// Through the awaiting coroutine's cancellation slot (e.g. `call(...) || timer`): completes with
  /// `asio::error::operation_aborted` and the remote handler is cancelled too. Other calls and the
  /// connection are not affected.
  asio::awaitable<result<Resp>> call(connection& c, const Req& req, call_options opt = {}) const {
    std::vector<std::byte> buf = detail::buffer_cache::take();
    const bool nil = !detail::codec<Req>::pack(req, buf);
    if constexpr (std::is_same_v<Resp, payload>) return detail::call_raw(c.shared_from_this(), id_, sub_, std::move(buf), nil, opt);
    else return detail::call_packed<Resp>(c.shared_from_this(), id_, sub_, std::move(buf), nil, opt);
  }

  /// A raw call whose request is moved in, not copied: for large payloads (`co_await
  /// echo.call(conn, std::move(body))`). The same results as the call above.
  asio::awaitable<result<Resp>> call(connection& c, Req&& req, call_options opt = {}) const
    requires std::is_same_v<Req, payload>
  {
    const bool nil = !req;
    std::vector<std::byte> buf = nil ? std::vector<std::byte>() : std::move(*req);
    if constexpr (std::is_same_v<Resp, payload>) return detail::call_raw(c.shared_from_this(), id_, sub_, std::move(buf), nil, opt);
    else return detail::call_packed<Resp>(c.shared_from_this(), id_, sub_, std::move(buf), nil, opt);
  }

  /// The call bound to one connection: `co_await echo.on(conn).call(req)`.
  struct bound {
    const unary* u; ///< the handler declaration
    connection* c;  ///< the connection calls go to
    /// `u->call(*c, req, opt)`.
    asio::awaitable<result<Resp>> call(const Req& req, call_options opt = {}) const { return u->call(*c, req, opt); }
  };
  /// Binds calls to `c` (which must outlive the binding).
  bound on(connection& c) const { return bound{this, &c}; }

private:
  handler_id id_;
  std::string route_;
  std::optional<subroute_id> sub_;
};

/// A single-request handler in raw bytes (nil and empty kept apart), for users with their own serialization.
using unary_raw = unary<payload, payload>;

} // namespace cogrid

#endif // COGRID_UNARY_HPP
