// dlock.hpp — a distributed lock in the manner of MinIO's dsync, over cogrid (used by examples/lock.cpp
// and examples/cluster-demo.cpp). Every node runs a lock server; a client holds a lock when a quorum of
// N/2+1 servers granted it, refreshes it over the grid while it holds it, and releases it on unlock. A
// server drops a lock not refreshed within `validity` (its holder's node is gone), so it is granted again.
// The io_context runs on one thread (the lock server itself is guarded by a mutex).
#pragma once
#include <cogrid/cogrid.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <string>

namespace dlock {
using clock = std::chrono::steady_clock;

struct args {
  std::string Resource, UID;
  MSGPACK_DEFINE_MAP(Resource, UID)
};
inline const cogrid::unary<args, bool> lock_h{cogrid::handler_id{120}}, refresh_h{cogrid::handler_id{121}},
    unlock_h{cogrid::handler_id{122}};

class server {
public:
  explicit server(std::chrono::milliseconds validity) : validity_(validity) {}
  bool lock(const args& a) { return update(a, true); }
  bool refresh(const args& a) { return update(a, false); }
  bool unlock(const args& a) {
    std::lock_guard lk(mu_);
    if (auto it = held_.find(a.Resource); it != held_.end() && it->second.uid == a.UID) held_.erase(it);
    return true;
  }
  /// Registers the three handlers on `m`.
  [[nodiscard]] cogrid::result<void> serve(cogrid::manager& m) {
    if (auto r = lock_h.serve(m, [this](args a) { return lock(a); }); !r) return r;
    if (auto r = refresh_h.serve(m, [this](args a) { return refresh(a); }); !r) return r;
    return unlock_h.serve(m, [this](args a) { return unlock(a); });
  }

private:
  struct entry {
    std::string uid;
    clock::time_point seen;
  };
  bool update(const args& a, bool grant_new) {
    std::lock_guard lk(mu_);
    const auto now = clock::now();
    auto it = held_.find(a.Resource);
    const bool free = it == held_.end() || now - it->second.seen > validity_;
    if (it != held_.end() && it->second.uid == a.UID) it->second.seen = now;
    else if (free && grant_new) held_[a.Resource] = {a.UID, now};
    else return false;
    return true;
  }
  std::chrono::milliseconds validity_;
  std::mutex mu_;
  std::map<std::string, entry> held_;
};

// Asks this node's server and every peer to `h` the lock; returns how many agreed.
inline asio::awaitable<std::size_t> ask_all(server& local, std::vector<std::shared_ptr<cogrid::connection>> peers,
                                            const cogrid::unary<args, bool>& h, args a) {
  std::size_t yes = &h == &lock_h ? local.lock(a) : &h == &refresh_h ? local.refresh(a) : local.unlock(a);
  cogrid::call_options opt{std::chrono::milliseconds(250)};
  for (auto& c : peers) {
    auto r = co_await h.call(*c, a, opt);
    yes += r && *r;
  }
  co_return yes;
}

// One client's hold on one resource: acquire, keep refreshed in the background, release.
class mutex {
public:
  mutex(server& local, std::vector<std::shared_ptr<cogrid::connection>> peers, std::string resource)
      : local_(local), peers_(std::move(peers)), a_{std::move(resource), {}} {}
  std::size_t quorum() const { return (peers_.size() + 1) / 2 + 1; }

  /// Tries until `patience` passes; true when held.
  asio::awaitable<bool> lock(std::chrono::milliseconds patience) {
    std::minstd_rand rng(std::random_device{}());
    const auto until = clock::now() + patience;
    a_.UID = std::to_string(rng()) + "-" + std::to_string(rng());
    asio::steady_timer pause(co_await asio::this_coro::executor);
    while (clock::now() < until) {
      if (co_await ask_all(local_, peers_, lock_h, a_) >= quorum()) {
        held_ = std::make_shared<bool>(true);
        asio::co_spawn(pause.get_executor(), keep(local_, peers_, a_, held_, quorum()), asio::detached);
        co_return true;
      }
      co_await ask_all(local_, peers_, unlock_h, a_); // give back partial grants, back off, retry
      pause.expires_after(std::chrono::milliseconds(5 + rng() % 20));
      co_await pause.async_wait(asio::use_awaitable);
    }
    co_return false;
  }
  /// False once a refresh found no quorum (the lock was lost).
  bool held() const { return held_ && *held_; }
  asio::awaitable<void> unlock() {
    if (held_) *held_ = false;
    co_await ask_all(local_, peers_, unlock_h, a_);
  }

private:
  static asio::awaitable<void> keep(server& local, std::vector<std::shared_ptr<cogrid::connection>> peers, args a,
                                    std::shared_ptr<bool> held, std::size_t quorum) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (*held) {
      t.expires_after(std::chrono::milliseconds(100));
      co_await t.async_wait(asio::use_awaitable);
      if (*held && co_await ask_all(local, peers, refresh_h, a) < quorum) *held = false;
    }
  }
  server& local_;
  std::vector<std::shared_ptr<cogrid::connection>> peers_;
  args a_;
  std::shared_ptr<bool> held_;
};

} // namespace dlock
