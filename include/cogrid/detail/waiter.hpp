// cogrid/detail/waiter.hpp — a coroutine suspended in one of cogrid's own asynchronous operations, and
// the three steps every such operation takes: arm (store the handler and hook its cancellation slot),
// take (move it out under the owner's lock) and wake (resume it on its own executor, outside the lock).
#ifndef COGRID_DETAIL_WAITER_HPP
#define COGRID_DETAIL_WAITER_HPP

#include <cogrid/detail/pool.hpp>
#include <cogrid/detail/strand.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/execution/allocator.hpp>
#include <asio/execution/blocking.hpp>
#include <asio/execution/execute.hpp>
#include <asio/execution/relationship.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/require.hpp>
#include <asio/use_awaitable.hpp>

#include <memory>
#include <optional>
#include <type_traits>
#include <system_error>
#include <utility>

namespace cogrid::detail {

using wait_handler = asio::async_result<asio::use_awaitable_t<>, void(std::error_code)>::handler_type;

/// A coroutine waiting in an Asio operation of ours: its handler, and the cancellation slot we assigned.
template <class Handler>
struct basic_waiter {
  std::optional<Handler> h;
  asio::cancellation_slot slot;
};
using waiter = basic_waiter<wait_handler>;

// Under the owner's lock: stores the awaiting coroutine's handler and routes its cancellation to `on_cancel`.
template <class Handler, class F>
void arm(basic_waiter<Handler>& w, Handler h, F on_cancel) {
  auto slot = asio::get_associated_cancellation_slot(h);
  w.h.emplace(std::move(h));
  if (slot.is_connected()) {
    w.slot = slot;
    slot.assign(std::move(on_cancel));
  }
}

// Under the owner's lock: moves a stored waiter (if any, and if `to` is empty) into `to`, to be woken
// by `wake` after the lock is released.
template <class Handler>
void take_waiter(basic_waiter<Handler>& from, basic_waiter<Handler>& to) {
  if (from.h && !to.h) {
    to.h.emplace(std::move(*from.h)); // not move-assignable: move-construct out
    from.h.reset();
    to.slot = std::exchange(from.slot, asio::cancellation_slot());
  }
}

template <class Executor, class F>
void execute_continuation(const Executor& ex, F&& f) {
  asio::execution::execute(
      asio::prefer(asio::require(ex, asio::execution::blocking.never), asio::execution::relationship.continuation),
      std::forward<F>(f));
}

/// Queues `f` on `ex` (never run inline) as a continuation of the handler running now: called from a
/// thread that runs `ex`'s io_context, it goes to that thread's own queue (no lock, no other thread woken)
/// and runs once the current handler returns; from elsewhere it is an ordinary post. For our internal
/// hand-offs (a response resuming its caller, a request starting its handler), where waking another
/// thread for every message costs more than the work.
///
/// When `ex` is an io_context's own executor (that of a coroutine spawned on an io_context) or a strand of
/// one (cogrid's strands), the operation wrapping `f` comes from the per-thread block cache and is queued
/// on the concrete executor: no heap block, where the type-erased executor allocates two (its function
/// wrapper and the operation, from Asio's per-thread cache of two blocks, which a batch of messages
/// empties).
template <class Executor, class F>
void post_continuation(const Executor& ex, F&& f) {
  if constexpr (std::is_same_v<Executor, asio::any_io_executor>) {
    using plain = asio::io_context::basic_executor_type<std::allocator<void>, 0>;
    if (const auto* e = exact_target<plain>(ex)) {
      execute_continuation(asio::require(*e, asio::execution::allocator(pool_allocator<void>())), std::forward<F>(f));
      return;
    }
    if (const auto* e = exact_target<asio::strand<plain>>(ex)) {
      execute_continuation(asio::require(*e, asio::execution::allocator(pool_allocator<void>())), std::forward<F>(f));
      return;
    }
  }
  execute_continuation(ex, std::forward<F>(f));
}

struct wake_fn {
  wait_handler h;
  asio::cancellation_slot slot;
  std::error_code ec;
  void operator()() {
    if (slot.is_connected()) slot.clear();
    std::move(h)(ec);
  }
};

// Resumes the waiting coroutine on its own executor, with `ec` (success by default; operation_aborted
// from a cancellation handler).
inline void wake(waiter&& w, std::error_code ec = {}) {
  if (!w.h) return;
  auto ex = asio::get_associated_executor(*w.h);
  post_continuation(ex, wake_fn{std::move(*w.h), w.slot, ec});
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_WAITER_HPP
