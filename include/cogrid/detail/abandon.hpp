// cogrid/detail/abandon.hpp — the objects made on one execution context, for that context's
// shutdown. A coroutine parked in one of cogrid's own objects (a connection's idle writer, a caller
// waiting for its response, a stream waiting for a message) has its handler stored there, not in the
// io_context, and that handler holds, through its coroutine frames, the very objects that store it. When
// an io_context is destroyed without manager::shutdown(), Asio destroys the handlers queued in it but
// cannot see these: this service lets them go, so the frames and the connections are freed with the
// context instead of kept alive by each other.
#ifndef COGRID_DETAIL_ABANDON_HPP
#define COGRID_DETAIL_ABANDON_HPP

#include <asio/execution_context.hpp>

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace cogrid::detail {

/// An object holding parked handlers, able to let them go.
class abandonable {
public:
  /// `ctx` is shutting down, and no thread runs it any more: destroys (never invokes) every handler the
  /// object stores that would complete in `ctx` (a handler of another context is completed with an
  /// error instead) and drops what it holds of other objects that store handlers.
  virtual void abandon(asio::execution_context& ctx) = 0;

protected:
  ~abandonable() = default;
};

/// One per execution context: the live abandonable objects made on it, abandoned at its shutdown.
class abandon_service final : public asio::execution_context::service {
public:
  inline static asio::execution_context::id id;

  explicit abandon_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

  /// Records `o` (held weakly: an object that goes away needs no removal).
  void add(std::weak_ptr<abandonable> o) {
    std::lock_guard lk(mu_);
    if (objects_.size() >= 2 * live_ + 16) { // drop the expired entries now and then: amortised O(1)
      std::erase_if(objects_, [](const std::weak_ptr<abandonable>& w) { return w.expired(); });
      live_ = objects_.size();
    }
    objects_.push_back(std::move(o));
  }

private:
  void shutdown() override {
    std::vector<std::shared_ptr<abandonable>> live;
    {
      std::lock_guard lk(mu_);
      for (auto& w : objects_)
        if (auto p = w.lock()) live.push_back(std::move(p));
      objects_.clear();
      live_ = 0;
    }
    // Outside the lock: letting handlers go may destroy other objects of ours.
    for (auto& p : live) {
      try {
        p->abandon(context());
      } catch (...) { // out of memory while collecting: what is left stays allocated, as before
      }
    }
  }

  std::mutex mu_;
  std::vector<std::weak_ptr<abandonable>> objects_;
  std::size_t live_ = 0; // entries after the last purge
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_ABANDON_HPP
