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
#include <asio/execution/context.hpp>
#include <asio/execution/relationship.hpp>
#include <asio/version.hpp>
#if ASIO_VERSION < 102600
#include <asio/execution/execute.hpp>
#endif
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/query.hpp>
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

// How many handoff_scopes are open on this thread. Reached through a non-inlined function: clang 16 may
// keep a thread_local's address across a co_await (see pool.hpp).
[[gnu::noinline]] inline int& handoff_depth() noexcept {
  thread_local int depth = 0;
  return depth;
}

/// Open while one of cogrid's own short handlers runs on this thread and will return to the scheduler
/// without running user code: the reader dispatching a batch of messages (the connection's strand runs
/// only our code), a plain-function handler's response when it runs alone (see runs_alone), the
/// initiation of an operation whose caller was resumed by one of our hand-offs (see resumed_by_us).
/// Hand-offs made under it are queued as continuations (see post_continuation). Never held across a
/// co_await.
class handoff_scope {
public:
  explicit handoff_scope(bool open = true) noexcept : open_(open) {
    if (open_) ++handoff_depth();
  }
  ~handoff_scope() {
    if (open_) --handoff_depth();
  }
  handoff_scope(const handoff_scope&) = delete;
  handoff_scope& operator=(const handoff_scope&) = delete;

private:
  bool open_;
};

// The coroutine thread (Asio's awaitable thread, named by its entry frame) that one of our hand-offs is
// resuming on this thread now, or null. Not inlined, for the reason given at handoff_depth.
[[gnu::noinline]] inline const void*& resuming_entry() noexcept {
  thread_local const void* entry = nullptr;
  return entry;
}

/// Marks, for as long as it lives, the coroutine thread of `h` as being resumed by us: while our handler
/// runs it, a cogrid operation that thread suspends in is initiated from inside our handler, which
/// returns as soon as the thread suspends.
class resuming {
public:
  template <class Handler>
  explicit resuming(Handler& h) noexcept : prev_(std::exchange(resuming_entry(), h.entry_point())) {}
  ~resuming() { resuming_entry() = prev_; }
  resuming(const resuming&) = delete;
  resuming& operator=(const resuming&) = delete;

private:
  const void* prev_;
};

/// Whether handlers run on `ex` one per scheduler turn: an io_context's own executor. A strand's invoker
/// runs every ready handler of the strand before it returns, so a continuation queued by one of them
/// waits for all the others (user code on a user's strand or on a served handler's).
inline bool runs_alone(const asio::any_io_executor& ex) noexcept {
  return exact_target<io_executor>(ex) != nullptr;
}

/// Whether the coroutine whose handler an initiation got is suspending back into one of our hand-offs,
/// which returns to the scheduler right after it (so that what the initiation queues as a continuation
/// runs next). False when it was started or resumed by anything else (co_spawn runs a new coroutine
/// inline, inside the user's code, up to its first suspension, and that code goes on running afterwards)
/// or runs on a strand (see runs_alone).
template <class Handler>
bool resumed_by_us(Handler& h) noexcept {
  const void* e = h.entry_point();
  return e != nullptr && e == resuming_entry() && runs_alone(asio::get_associated_executor(h));
}

/// The execution context a stored handler completes in.
template <class Handler>
asio::execution_context* context_of(const Handler& h) noexcept {
  return &asio::query(asio::get_associated_executor(h), asio::execution::context);
}

/// Submits `f` to `ex`. Before Asio 1.26 that is the execution::execute customisation point (an
/// io_context's executor keeps its execute() member private there); from 1.26 the member is public and
/// the customisation point is deprecated (left out under ASIO_NO_DEPRECATED, which cogrid sets), and
/// 1.29 removed it.
template <class Executor, class F>
void execute_on(const Executor& ex, F&& f) {
#if ASIO_VERSION < 102600
  asio::execution::execute(ex, std::forward<F>(f));
#else
  ex.execute(std::forward<F>(f));
#endif
}

template <class Executor, class F>
void execute_continuation(const Executor& ex, F&& f) {
  auto never = asio::require(ex, asio::execution::blocking.never);
  if (handoff_depth() > 0) {
    execute_on(asio::prefer(never, asio::execution::relationship.continuation), std::forward<F>(f));
  } else {
    execute_on(never, std::forward<F>(f));
  }
}

/// Queues `f` on `ex` (never run inline). Under a handoff_scope, as a continuation of the handler running
/// now: called from a thread that runs `ex`'s io_context, it goes to that thread's own queue (no lock, no
/// other thread woken) and runs once the current handler returns; for our internal hand-offs (a response
/// resuming its caller, a request starting its handler), where waking another thread for every message
/// costs more than the work. Elsewhere (user code that goes on running after the call: a stream's next()
/// that found a response waiting, a cancel()) it is an ordinary post: a continuation would wait for the
/// user's code to return, and one onto a strand (a connection's) would hold every handler of that strand
/// until then.
///
/// When `ex` is an io_context's own executor (that of a coroutine spawned on an io_context) or a strand of
/// one (cogrid's strands), the operation wrapping `f` comes from the per-thread block cache and is queued
/// on the concrete executor: no heap block, where the type-erased executor allocates two (its function
/// wrapper and the operation, from Asio's per-thread cache of two blocks, which a batch of messages
/// empties).
template <class Executor, class F>
void post_continuation(const Executor& ex, F&& f) {
  if constexpr (std::is_same_v<Executor, asio::any_io_executor>) {
    const auto pooled = asio::execution::allocator(pool_allocator<void>());
    if (const auto* e = exact_target<io_executor>(ex)) return execute_continuation(asio::require(*e, pooled), std::forward<F>(f));
    if (const auto* e = exact_target<asio::strand<io_executor>>(ex))
      return execute_continuation(asio::require(*e, pooled), std::forward<F>(f));
  }
  execute_continuation(ex, std::forward<F>(f));
}

struct wake_fn {
  wait_handler h;
  asio::cancellation_slot slot;
  std::error_code ec;
  void operator()() {
    if (slot.is_connected()) slot.clear();
    resuming by_us(h);
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

// Lets a taken waiter go without resuming it, when its execution context is shutting down (see
// registry.hpp): its cancellation hook is removed and its handler destroyed, which hands the coroutine's
// frames to the context for destruction.
template <class Handler>
void drop(basic_waiter<Handler>&& w) {
  if (w.slot.is_connected()) w.slot.clear();
  w.h.reset();
}

// `ctx` is being destroyed (registry.hpp) and `w` was taken from one of our objects: a waiter that would
// resume in `ctx` goes with it (dropped); one of another context, still running, is handed to `tell`,
// which wakes it to find its operation ended.
template <class Handler, class Tell>
void let_go(basic_waiter<Handler>&& w, asio::execution_context& ctx, Tell&& tell) {
  if (!w.h) return;
  if (context_of(*w.h) == &ctx) drop(std::move(w));
  else std::forward<Tell>(tell)(std::move(w));
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_WAITER_HPP
