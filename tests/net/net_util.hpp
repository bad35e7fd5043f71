// Helpers for the loopback tests: run a test coroutine on an io_context with a watchdog.
#ifndef COGRID_TESTS_NET_UTIL_HPP
#define COGRID_TESTS_NET_UTIL_HPP

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace cogrid_test {

/// Runs `body(executor)` to completion on a fresh io_context with `threads` threads; fails the test if it
/// throws or has not finished (including its shutdown) within `limit`.
template <class Body>
void run_async(Body body, std::chrono::seconds limit = std::chrono::seconds(30), int threads = 1) {
  asio::io_context io;
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, body(io.get_executor()), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { io.run_for(limit); });
  io.run_for(limit);
  for (auto& t : pool) t.join();
  REQUIRE_MESSAGE(done, "test coroutine did not finish within " << limit.count() << " s");
  if (error) std::rethrow_exception(error);
}

/// Sleeps in a coroutine.
inline asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

/// Keeps this thread busy (as user code that computes may) until `pred` holds or `limit` passes; returns
/// pred's final value. Not a coroutine: it runs inside a handler on purpose, holding its thread.
template <class Pred>
bool busy_until(Pred&& pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!pred() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  return pred();
}

/// Polls `pred` every millisecond until true or `limit` passes; returns pred's final value. For waiting on
/// a condition set by another coroutine in tests only (the library itself never polls). Takes an lvalue so
/// that no lambda temporary is passed into a coroutine (GCC 12 miscompiles that: see toolchain.md).
template <class Pred>
asio::awaitable<bool> eventually(Pred& pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) co_return false;
    co_await sleep_for(std::chrono::milliseconds(1));
  }
  co_return true;
}

} // namespace cogrid_test

#endif // COGRID_TESTS_NET_UTIL_HPP
