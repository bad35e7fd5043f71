// cogrid/detail/handoff.hpp — how work moves between cogrid's executors: a coroutine suspended in one of
// cogrid's own operations (a caller waiting for its response, an idle writer, a stream waiting for a
// message) and the steps that resume it, the strands cogrid runs on, and the one rule for handing work
// to another executor.
//
// The rule, as Asio's own operations follow it: work handed on by one of cogrid's own handlers (the
// reader dispatching a batch of messages, a served handler's completion, a timer) continues that handler,
// and goes with `asio::defer` (the continuation relationship): on a thread that runs the target's
// io_context it waits in that thread's own queue until the current handler returns, so no other thread
// is woken for it. Work handed on from inside an operation a user started (a call, a send, a cancel),
// where the user's code runs on afterwards, goes with `asio::post`.
#ifndef COGRID_DETAIL_HANDOFF_HPP
#define COGRID_DETAIL_HANDOFF_HPP

#include <cogrid/detail/pool.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/defer.hpp>
#include <asio/execution/context.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/query.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>

#include <memory>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>
#if !defined(ASIO_NO_TYPEID)
#include <typeinfo>
#endif

namespace cogrid::detail {

// -- executors ----------------------------------------------------------------------------------------

/// An io_context's own executor, as `io_context::get_executor()` gives it (no properties required).
using io_executor = asio::io_context::basic_executor_type<std::allocator<void>, 0>;

/// The executor inside `ex` when it is exactly a `T`, else null. Asio 1.22's `any_executor::target<T>()`
/// casts without checking the type (later Asio checks it), so the type is compared here first. Without
/// RTTI (ASIO_NO_TYPEID) nothing is recognised and callers take their generic path.
template <class T>
const T* exact_target(const asio::any_io_executor& ex) noexcept {
#if !defined(ASIO_NO_TYPEID)
  if (ex && ex.target_type() == typeid(T)) return ex.template target<T>();
#else
  (void)ex;
#endif
  return nullptr;
}

/// A new strand on `ex`'s execution context, as an `any_io_executor`. On an io_context this is a strand
/// of the io_context's own executor: small enough for `any_io_executor` to hold without a heap block
/// (a `strand<any_io_executor>` is not, and every operation started on it would copy it to the heap).
inline asio::any_io_executor make_strand_executor(const asio::any_io_executor& ex) {
  using tracked = asio::io_context::basic_executor_type<std::allocator<void>, 4>; // outstanding_work.tracked
  if (const auto* e = exact_target<io_executor>(ex)) return asio::make_strand(asio::query(*e, asio::execution::context).get_executor());
  if (const auto* e = exact_target<tracked>(ex)) return asio::make_strand(asio::query(*e, asio::execution::context).get_executor());
  return asio::make_strand(ex);
}

/// The io_context's own executor under `ex` (a strand's inner executor; `ex` itself otherwise).
inline asio::any_io_executor inner_executor(const asio::any_io_executor& ex) {
  if (const auto* s = exact_target<asio::strand<io_executor>>(ex)) return s->get_inner_executor();
  return ex;
}

// -- hand-offs ----------------------------------------------------------------------------------------

/// How a hand-off relates to the code that makes it (see the rule at the top of this file).
enum class handoff {
  continuation, ///< made by one of cogrid's own handlers: asio::defer
  fresh,        ///< made inside an operation a user started: asio::post
};

/// One unit of work handed to an executor: any callable, moved into a block of the per-thread cache and
/// run (or destroyed) once. Every hand-off queues a `task`, so Asio's queueing is compiled once per kind
/// of executor, not once per callable.
class task {
public:
  template <class F, class D = std::decay_t<F>, class = std::enable_if_t<!std::is_same_v<D, task>>>
  explicit task(F&& f) : p_(make<D>(std::forward<F>(f))) {}
  task(task&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  task& operator=(task&&) = delete;
  ~task() {
    if (p_) p_->destroy(p_);
  }
  /// Runs the callable; its block is given back first (as Asio does with a handler's memory).
  void operator()() {
    if (auto* p = std::exchange(p_, nullptr)) p->run(p);
  }

private:
  struct base {
    void (*run)(base*);
    void (*destroy)(base*);
  };
  template <class D>
  struct holder : base {
    D f;
    template <class F>
    explicit holder(F&& x) : base{&run_fn, &destroy_fn}, f(std::forward<F>(x)) {}
    static void free(holder* h) noexcept {
      h->~holder();
      pool_allocator<holder>().deallocate(h, 1);
    }
    static void run_fn(base* b) {
      auto* h = static_cast<holder*>(b);
      D f = std::move(h->f);
      free(h);
      f();
    }
    static void destroy_fn(base* b) { free(static_cast<holder*>(b)); }
  };
  template <class D, class F>
  static base* make(F&& f) {
    holder<D>* h = pool_allocator<holder<D>>().allocate(1);
    try {
      return ::new (static_cast<void*>(h)) holder<D>(std::forward<F>(f));
    } catch (...) {
      pool_allocator<holder<D>>().deallocate(h, 1);
      throw;
    }
  }
  base* p_;
};

/// A task with cogrid's per-thread block cache as its associated allocator, so that the operation Asio
/// allocates to queue it comes from the cache too.
struct pooled_task {
  task t;
  using allocator_type = pool_allocator<void>;
  allocator_type get_allocator() const noexcept { return {}; }
  void operator()() { t(); }
};

template <class Executor>
void submit(const Executor& ex, task t, handoff how) {
  if (how == handoff::continuation) asio::defer(ex, pooled_task{std::move(t)});
  else asio::post(ex, pooled_task{std::move(t)});
}

/// Queues `t` on `ex` (never runs it inline), as `how` says. When `ex` is an io_context's own executor or
/// a strand of one (cogrid's strands), it is queued on the concrete executor, whose operation comes from
/// the block cache: the type-erased executor would allocate a function wrapper and an operation for it.
inline void hand_off_task(const asio::any_io_executor& ex, task t, handoff how) {
  if (const auto* e = exact_target<io_executor>(ex)) return submit(*e, std::move(t), how);
  if (const auto* e = exact_target<asio::strand<io_executor>>(ex)) return submit(*e, std::move(t), how);
  submit(ex, std::move(t), how);
}

/// Queues `f` on `ex` as `how` says (see hand_off_task).
template <class F>
void hand_off(const asio::any_io_executor& ex, F&& f, handoff how) {
  hand_off_task(ex, task(std::forward<F>(f)), how);
}

// -- coroutines parked in cogrid's operations ---------------------------------------------------------

using wait_handler = asio::async_result<asio::use_awaitable_t<>, void(std::error_code)>::handler_type;

/// A coroutine waiting in an Asio operation of ours: its handler, and the cancellation slot we assigned.
template <class Handler>
struct basic_waiter {
  std::optional<Handler> h;
  asio::cancellation_slot slot;
};
using waiter = basic_waiter<wait_handler>;

/// Under the owner's lock: stores the awaiting coroutine's handler and routes its cancellation to `on_cancel`.
template <class Handler, class F>
void arm(basic_waiter<Handler>& w, Handler h, F on_cancel) {
  auto slot = asio::get_associated_cancellation_slot(h);
  w.h.emplace(std::move(h));
  if (slot.is_connected()) {
    w.slot = slot;
    slot.assign(std::move(on_cancel));
  }
}

/// Under the owner's lock: moves a stored waiter (if any, and if `to` is empty) into `to`, to be woken
/// by `wake` after the lock is released.
template <class Handler>
void take_waiter(basic_waiter<Handler>& from, basic_waiter<Handler>& to) {
  if (from.h && !to.h) {
    to.h.emplace(std::move(*from.h)); // not move-assignable: move-construct out
    from.h.reset();
    to.slot = std::exchange(from.slot, asio::cancellation_slot());
  }
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

/// Resumes the waiting coroutine on its own executor with `ec` (success by default; operation_aborted
/// from a cancellation handler).
inline void wake(waiter&& w, handoff how, std::error_code ec = {}) {
  if (!w.h) return;
  auto ex = asio::get_associated_executor(*w.h);
  hand_off(ex, wake_fn{std::move(*w.h), w.slot, ec}, how);
}

struct yield_init {
  asio::any_io_executor ex;
  void operator()(wait_handler h) const { hand_off(ex, wake_fn{std::move(h), {}, {}}, handoff::continuation); }
};

/// Lets the handlers queued on `ex` run, then resumes the awaiting coroutine (our own loops only: a
/// continuation, its operation from the block cache).
inline auto yield_turn(asio::any_io_executor ex) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(yield_init{std::move(ex)}, asio::use_awaitable);
}

/// The execution context a stored handler completes in.
template <class Handler>
asio::execution_context* context_of(const Handler& h) noexcept {
  return &asio::query(asio::get_associated_executor(h), asio::execution::context);
}

/// Lets a taken waiter go without resuming it, when its execution context is shutting down (see
/// abandon.hpp): its cancellation hook is removed and its handler destroyed, which hands the coroutine's
/// frames to the context for destruction.
template <class Handler>
void drop(basic_waiter<Handler>&& w) {
  if (w.slot.is_connected()) w.slot.clear();
  w.h.reset();
}

/// `ctx` is being destroyed (abandon.hpp) and `w` was taken from one of our objects: a waiter that would
/// resume in `ctx` goes with it (dropped); one of another context, still running, is handed to `tell`,
/// which wakes it to find its operation ended.
template <class Handler, class Tell>
void let_go(basic_waiter<Handler>&& w, asio::execution_context& ctx, Tell&& tell) {
  if (!w.h) return;
  if (context_of(*w.h) == &ctx) drop(std::move(w));
  else std::forward<Tell>(tell)(std::move(w));
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_HANDOFF_HPP
