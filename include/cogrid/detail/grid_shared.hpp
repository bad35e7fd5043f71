// cogrid/detail/grid_shared.hpp — what a manager shares with its connections, and how cogrid's own code
// reaches the parts of a connection that are not public.
#ifndef COGRID_DETAIL_GRID_SHARED_HPP
#define COGRID_DETAIL_GRID_SHARED_HPP

#include <cogrid/auth.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/control.hpp>
#include <cogrid/metrics.hpp>
#include <cogrid/options.hpp>
#include <cogrid/detail/node.hpp>
#include <cogrid/transport.hpp>
#include <cogrid/detail/url.hpp>

#include <atomic>
#include <memory>
#include <string>

namespace cogrid::detail {

struct grid_shared {
  std::string local;
  host_url local_url;
  node_id id;
  authenticator auth;
  std::string route;
  connection_options opt;
  std::shared_ptr<tls_context> tls_client; // for https:// remotes
  log_sink log;
  transport_dialer dialer; // empty: TCP (and TLS for https://)
  host_resolver resolve;   // empty: Asio's resolver
  trace_hook trace;        // empty: no per-call trace
  metrics_registry metrics;
  std::atomic<message_sink*> sink{nullptr};
  const node_ops* node = nullptr; // the node's life (detail/node.hpp), set by the manager's constructor
};

/// The call and stream layers' way into a connection.
struct connection_access {
  /// A new connection to `remote`, running on `ex` (the manager's `index`-th executor), enrolled for
  /// its io_context's shutdown.
  static std::shared_ptr<connection> create(std::shared_ptr<grid_shared> shared, std::string remote, asio::any_io_executor ex,
                                            std::size_t index) {
    std::shared_ptr<connection> c(new connection(std::move(shared), std::move(remote), std::move(ex), index));
    c->enroll();
    return c;
  }
  static conn_mux& mux(connection& c) noexcept { return *c.mux_; }
  static grid_shared& shared(connection& c) noexcept { return *c.shared_; }
  static const connection_options& options(connection& c) noexcept { return c.shared_->opt; }
  /// Queues `m` (see detail::outbox::push); `control` for replies that a full queue must not refuse.
  static result<void> send(connection& c, const message& m, bool control, handoff how, std::vector<std::byte>* movable = nullptr) {
    return c.enqueue(m, control, how, movable);
  }
  /// Whether shutdown() has begun: calls are refused with `errc::shutdown` from then on.
  static bool stopping(const connection& c) noexcept { return c.stopping_.load(std::memory_order_acquire); }
  /// The executor the connection was given (a strand's inner executor): its served handlers run there.
  static const asio::any_io_executor& home(const connection& c) noexcept { return c.inner_; }
  /// Which of the manager's executors that is.
  static std::size_t home_index(const connection& c) noexcept { return c.executor_index_; }
  static void block_inbound(connection& c, bool on) noexcept { c.block_inbound_.store(on, std::memory_order_relaxed); }
  static void log(const connection& c, log_level level, const std::string& text) { c.log(level, text); }
  /// A handshake of `c`'s link was refused (see connection::wait_for_connect).
  static void refused(connection& c, std::string why) { c.note_refusal(std::move(why)); }
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_GRID_SHARED_HPP
