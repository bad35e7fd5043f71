// cogrid/detail/idle_spin.hpp — an io_pool thread polls its context for a short while after the grid
// did work on it, instead of going to sleep in the kernel at once.
//
// A call's next message usually comes within tens of microseconds (the answer to a request just written,
// the next request of a caller just answered), and waking a sleeping thread costs about as much again
// (more in a virtual machine). So after a session's read or write on an io_pool thread, the thread keeps a
// handler posted to its own context that posts itself again until `window` has passed with no further
// activity: meanwhile Asio's scheduler polls the sockets without blocking between runs of that handler.
// Everything stays inside `io_context::run()`, so Asio's per-thread memory caches are kept. Go's
// scheduler spins the same way before it parks a thread. Threads that io_pool did not start never spin.
//
// The state is per thread and reached through non-inlined functions (see detail/pool.hpp for why).
#ifndef COGRID_DETAIL_IDLE_SPIN_HPP
#define COGRID_DETAIL_IDLE_SPIN_HPP

#include <cogrid/detail/config.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <chrono>
#include <cstdint>

namespace cogrid::detail {

class idle_spin {
public:
  using clock = std::chrono::steady_clock;

  /// Runs `ctx` on this thread, polling for `window` after each activity (0: never).
  static void run(asio::io_context& ctx, std::chrono::nanoseconds window) {
    state& s = local();
    s.ctx = window.count() > 0 ? &ctx : nullptr;
    s.window = window;
    ctx.run();
    s.ctx = nullptr;
  }

  /// A session read or wrote on this thread: keep polling for a while (no-op off io_pool threads).
  [[gnu::noinline]] static void activity() noexcept {
    state& s = local();
    ++s.count;
    if (s.ctx == nullptr || s.spinning) return;
    s.spinning = true;
    s.seen = s.count - 1; // the first tick sees the activity and starts the window
    try {
      asio::post(*s.ctx, tick{});
    } catch (...) { // out of memory: sleep instead
      s.spinning = false;
    }
  }

private:
  struct state {
    asio::io_context* ctx = nullptr;
    std::chrono::nanoseconds window{};
    bool spinning = false;
    std::uint64_t count = 0, seen = 0; // activities, and the count the last tick saw
    clock::time_point quiet_since{};
  };
  struct tick {
    void operator()() const {
      state& s = local();
      if (s.ctx == nullptr) {
        s.spinning = false;
        return;
      }
      const auto now = clock::now();
      if (s.count != s.seen) {
        s.seen = s.count;
        s.quiet_since = now;
      } else if (now - s.quiet_since >= s.window) {
        s.spinning = false; // quiet for the whole window: let the thread sleep
        return;
      }
      try {
        asio::post(*s.ctx, tick{});
      } catch (...) { // out of memory: sleep instead
        s.spinning = false;
      }
    }
  };
  [[gnu::noinline]] static state& local() noexcept {
    thread_local state s;
    return s;
  }
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_IDLE_SPIN_HPP
