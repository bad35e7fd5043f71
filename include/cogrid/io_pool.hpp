// cogrid/io_pool.hpp — one io_context per thread, the way to give a node several cores: a manager given
// the pool's executors spreads its connections over them, and each connection's work stays on its thread.
#ifndef COGRID_IO_POOL_HPP
#define COGRID_IO_POOL_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/detail/idle_spin.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace cogrid {

/// `threads` io_contexts, each run by a thread of its own (Asio's "io_context per CPU" design). Hand
/// `executors()` to `manager`; start work with `asio::co_spawn(pool.executor(i), ...)`.
///
/// @code
/// cogrid::io_pool pool(2);
/// cogrid::manager m(pool.executors(), options);
/// asio::co_spawn(pool.executor(0), app(m), [&](std::exception_ptr) { pool.finish(); });
/// pool.start();
/// pool.join();   // the threads return once `finish()` was called and their work is done
/// @endcode
///
/// After a connection read or wrote on one of its threads, the thread polls its context for `idle_spin`
/// (50 µs by default) before it sleeps: the next message of a call in flight usually comes sooner than a
/// sleeping thread wakes (see detail/idle_spin.hpp). It costs that much CPU time per burst of traffic,
/// nothing while the grid is idle; 0 turns it off, and so does a pool with more threads than cores
/// (a spinning thread would take a core from one with work).
///
/// @par Thread safety
/// `executor`, `executors`, `context` and `finish`/`stop` may be called from any thread; `start` and
/// `join` from one thread, not from a pool thread.
class io_pool {
public:
  /// How long a thread polls after activity unless told otherwise.
  static constexpr std::chrono::microseconds default_idle_spin{50};

  /// `threads` contexts (at least one; default: one per core), each thread polling for `idle_spin` after
  /// the grid's activity on it.
  explicit io_pool(std::size_t threads = std::max(1u, std::thread::hardware_concurrency()),
                   std::chrono::microseconds idle_spin = default_idle_spin)
      : idle_spin_(threads <= std::max(1u, std::thread::hardware_concurrency()) ? idle_spin : std::chrono::microseconds(0)) {
    if (threads == 0) threads = 1;
    for (std::size_t i = 0; i < threads; ++i) {
      auto& c = contexts_.emplace_back(std::make_unique<asio::io_context>(1)); // one thread: Asio skips cross-thread wake-ups
      guards_.emplace_back(c->get_executor());
    }
  }
  io_pool(const io_pool&) = delete;
  io_pool& operator=(const io_pool&) = delete;
  /// Stops every context and joins the threads.
  ~io_pool() {
    stop();
    join();
  }

  /// The number of threads (and io_contexts).
  std::size_t size() const noexcept { return contexts_.size(); }
  /// The io_context of thread `i` (throws `std::out_of_range` past `size()`).
  asio::io_context& context(std::size_t i) { return *contexts_.at(i); }
  /// The executor of thread `i`'s io_context.
  asio::any_io_executor executor(std::size_t i = 0) { return contexts_.at(i)->get_executor(); }
  /// Every thread's executor, in order: what a manager is given.
  std::vector<asio::any_io_executor> executors() {
    std::vector<asio::any_io_executor> out;
    for (auto& c : contexts_) out.push_back(c->get_executor());
    return out;
  }

  /// Starts the threads (once); each runs its context until `finish` or `stop`.
  void start() {
    if (!threads_.empty()) return;
    for (auto& c : contexts_) threads_.emplace_back([ctx = c.get(), spin = idle_spin_] { detail::idle_spin::run(*ctx, spin); });
  }
  /// Lets each thread return once its context has no more work.
  void finish() {
    for (auto& g : guards_) g.reset();
  }
  /// Stops every context now (handlers not run yet stay queued until the pool is destroyed).
  void stop() {
    finish();
    for (auto& c : contexts_) c->stop();
  }
  /// Waits for the threads to return.
  void join() {
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

private:
  using guard = asio::executor_work_guard<asio::io_context::executor_type>;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<guard> guards_;
  std::vector<std::thread> threads_;
  std::chrono::microseconds idle_spin_;
};

} // namespace cogrid

#endif // COGRID_IO_POOL_HPP
