// cogrid/detail/manager_state.hpp — a manager's state, shared with its listeners and incoming handshakes.
#ifndef COGRID_DETAIL_MANAGER_STATE_HPP
#define COGRID_DETAIL_MANAGER_STATE_HPP

#include <cogrid/manager.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/wait_channel.hpp>

#include <asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cogrid::detail {

struct manager_state : std::enable_shared_from_this<manager_state> {
  asio::any_io_executor ex;                     // the first executor: listeners, handshakes, the call layer's timers
  std::vector<asio::any_io_executor> executors; // where connections run (one or more)
  std::shared_ptr<grid_shared> shared;
  std::shared_ptr<tls_context> tls_server;
  std::chrono::milliseconds max_http_time_skew{};
  rejection_hook on_rejected; // set once, before anything is accepted
  std::shared_ptr<mux_core> mux; // the manager's message sink: unary calls and streams

  // The links, one per remote host: fixed at construction, changed by add_host and remove_host.
  mutable std::mutex conns_mu; // guards the members below
  std::map<std::string, std::shared_ptr<cogrid::connection>, std::less<>> conns;
  bool started = false;        // start() was called: links added later start at once
  std::size_t local_index = 0; // the local host's position in manager_options::hosts
  std::size_t placed = 0;      // remotes given an executor so far

  /// The link to `host`, or null.
  std::shared_ptr<cogrid::connection> find(std::string_view host) const {
    std::lock_guard lk(conns_mu);
    auto it = conns.find(host);
    return it == conns.end() ? nullptr : it->second;
  }
  /// Every link, at this moment.
  std::vector<std::shared_ptr<cogrid::connection>> all() const {
    std::lock_guard lk(conns_mu);
    std::vector<std::shared_ptr<cogrid::connection>> out;
    out.reserve(conns.size());
    for (const auto& [h, c] : conns) out.push_back(c);
    return out;
  }

  mutable std::mutex mu; // guards the members below
  std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> acceptors;
  rejection_counts rejected;
  std::size_t inflight = 0;
  std::shared_ptr<wait_channel> drained;
  std::atomic<bool> stopping{false};

  void log(log_level level, const std::string& text) const {
    if (shared->log) shared->log(level, "grid " + shared->local + ": " + text);
  }

  void reject(const std::string& reason, const std::string& peer) {
    {
      std::lock_guard lk(mu);
      ++rejected[reason];
    }
    log(log_level::warning, "rejected incoming connection from " + peer + ": " + reason);
    if (on_rejected) on_rejected(reason, peer);
  }

  /// Counts an incoming handshake; false once stopping.
  inline bool begin_incoming();
  /// Ends one; the last one after shutdown() began signals `drained`.
  inline void end_incoming();
};

/// The typed handler layers' way into a manager.
struct manager_access {
  static manager_state& state(manager& m) noexcept { return *m.state_; }
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_MANAGER_STATE_HPP
