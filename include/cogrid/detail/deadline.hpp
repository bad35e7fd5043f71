// cogrid/detail/deadline.hpp — bounded steps of connection setup and teardown.
#ifndef COGRID_DETAIL_DEADLINE_HPP
#define COGRID_DETAIL_DEADLINE_HPP

#include <cogrid/error.hpp>
#include <cogrid/transport.hpp>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <variant>

namespace cogrid::detail {

/// Runs `op` with a deadline: `errc::timeout` (and the operation cancelled) when `d` passes first. Every
/// bounded step of connection setup and teardown returns a std::error_code and goes through this one
/// function, so Asio's awaitable operators are instantiated once (each instantiation is a parallel group
/// and its coroutines: about 25 KB of code and a second of compile time).
template <class Tag = void>
asio::awaitable<std::error_code> with_deadline(asio::awaitable<std::error_code> op, std::chrono::milliseconds d) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  try {
    auto r = co_await (std::move(op) || t.async_wait(asio::use_awaitable));
    if (r.index() == 1) co_return make_error_code(errc::timeout);
    co_return std::get<0>(r);
  } catch (const std::system_error& e) {
    co_return e.code(); // a branch threw: the step was cancelled from outside (shutdown)
  } catch (const std::exception&) {
    // Both branches threw (asio::multiple_exceptions): a cancellation that reached the operation
    // between two of its awaits, while the timer was cancelled with it.
    co_return make_error_code(asio::error::operation_aborted);
  }
}

/// `t.write_all` as an error code (for with_deadline).
template <class Tag = void>
asio::awaitable<std::error_code> write_all_status(transport& t, asio::const_buffer bytes) {
  std::error_code ec;
  co_await t.write_all(bytes, ec);
  co_return ec;
}

/// Opens a transport with `dial` into `out` (for with_deadline). A dialer that returned no transport
/// leaves `out` empty and succeeds. One that threw fails at once (not at the deadline: the awaitable
/// operators wait for the timer when a branch throws) with the error it threw, `errc::disconnected` for
/// an exception that is not a std::system_error, and its text in `why`.
template <class Tag = void>
asio::awaitable<std::error_code> dial_into(const transport_dialer& dial, std::string remote, std::unique_ptr<transport>& out,
                                                  std::string& why) {
  std::error_code ec;
  try {
    result<std::unique_ptr<transport>> r = co_await dial(std::move(remote));
    if (!r) {
      why = r.error().text;
      co_return r.error().code;
    }
    out = std::move(*r);
  } catch (const std::system_error& e) {
    ec = e.code();
    why = e.what();
  } catch (const std::exception& e) {
    ec = make_error_code(errc::disconnected);
    why = e.what();
  }
  co_return ec;
}
} // namespace cogrid::detail

#endif // COGRID_DETAIL_DEADLINE_HPP
