// cogrid/testing.hpp — an in-process grid for tests: N managers on loopback ports chosen by the OS,
// connected to each other, with hooks to break connections (as MinIO's debug.go offers).
#ifndef COGRID_TESTING_HPP
#define COGRID_TESTING_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/auth.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/grid_shared.hpp>

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace cogrid::testing {

/// While on, `c` reads and discards what its peer sends without handling it (pongs included), so the
/// peer's liveness checks and ours run as if the link were stalled.
inline void block_inbound(connection& c, bool on) noexcept { detail::connection_access::block_inbound(c, on); }

/// N nodes of one grid in this process. Ports are chosen by the OS (listeners bound to 127.0.0.1:0
/// before the host list is made), so tests never collide on a fixed port.
///
/// @par Thread safety
/// Construct and shut down from one thread; the managers themselves are thread-safe.
class grid {
public:
  /// How the nodes reach each other.
  enum class network { loopback, memory };

  /// Hook to adjust each node's options (index, options) before its manager is made.
  using configure_fn = std::function<void(std::size_t, manager_options&)>;

  /// Binds n listeners and makes n managers sharing a static test token, with `connection_options::for_tests()`.
  /// With `network::memory` the nodes are joined by a `memory_network` instead (no socket at all; hosts
  /// are "http://node<i>:9000"), and `set_host_up` can cut a node off.
  grid(asio::any_io_executor ex, std::size_t n, configure_fn configure = {}, network net = network::loopback)
      : grid(std::vector<asio::any_io_executor>{std::move(ex)}, n, std::move(configure), net) {}

  /// The same with each manager spread over `executors` (an `io_pool`'s, for example); the listeners
  /// are on the first.
  grid(std::vector<asio::any_io_executor> executors, std::size_t n, configure_fn configure = {},
       network net = network::loopback) {
    if (executors.empty()) throw std::invalid_argument("cogrid::testing::grid: no executor");
    const asio::any_io_executor ex = executors.front();
    std::vector<asio::ip::tcp::acceptor> acceptors;
    for (std::size_t i = 0; i < n; ++i) {
      if (net == network::memory) {
        hosts_.push_back("http://node" + std::to_string(i) + ":9000");
        continue;
      }
      asio::ip::tcp::acceptor a(ex, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
      hosts_.push_back("http://127.0.0.1:" + std::to_string(a.local_endpoint().port()));
      acceptors.push_back(std::move(a));
    }
    for (std::size_t i = 0; i < n; ++i) {
      manager_options o;
      o.local = hosts_[i];
      o.hosts = hosts_;
      o.auth = static_token_auth("cogrid-test-token");
      o.connection = connection_options::for_tests();
      if (net == network::memory) o.dialer = memory_.dialer(o.local);
      if (configure) configure(i, o);
      managers_.push_back(std::make_unique<manager>(executors, std::move(o)));
      if (net == network::memory) memory_.add(*managers_.back());
      else managers_.back()->listen(std::move(acceptors[i]));
    }
  }

  /// The number of nodes.
  std::size_t size() const noexcept { return managers_.size(); }
  /// Node i's host string.
  const std::string& host(std::size_t i) const { return hosts_.at(i); }
  /// Every node's host string, in node order.
  const std::vector<std::string>& hosts() const noexcept { return hosts_; }
  /// Node i's manager.
  manager& node(std::size_t i) { return *managers_.at(i); }
  /// Node i's connection to node j.
  std::shared_ptr<connection> link(std::size_t i, std::size_t j) { return managers_.at(i)->connection(hosts_.at(j)); }

  /// Starts every node's dial loops.
  void start() {
    for (auto& m : managers_) m->start();
  }

  /// Completes when every connection of every node is connected.
  asio::awaitable<result<void>> wait_all_connected() {
    for (auto& m : managers_)
      for (auto& c : m->connections())
        if (auto r = co_await c->wait_for_connect(); !r) co_return r;
    co_return result<void>();
  }

  /// Drops node i's session with node j from node i's end (the peer sees the connection die).
  /// Throws std::invalid_argument when there is no such link (i == j), std::out_of_range past the grid.
  void kill(std::size_t i, std::size_t j) { existing_link(i, j).kill(); }
  /// Node i stops handling what node j sends it (read and discarded, pongs included). Throws as kill().
  void block_inbound(std::size_t i, std::size_t j, bool on) { testing::block_inbound(existing_link(i, j), on); }

  /// In-memory grids: takes node i off the network (every link to it cut, dials fail) or puts it back.
  void set_host_up(std::size_t i, bool up) { memory_.set_host_up(hosts_.at(i), up); }
  /// Cuts the link between nodes i and j (memory network; see `memory_network::disconnect`).
  void disconnect(std::size_t i, std::size_t j) { memory_.disconnect(hosts_.at(i), hosts_.at(j)); }
  /// Loses what node i sends node j (memory network; see `memory_network::disconnect_one_way`).
  void disconnect_one_way(std::size_t i, std::size_t j) { memory_.disconnect_one_way(hosts_.at(i), hosts_.at(j)); }
  /// Undoes the cuts between nodes i and j (memory network; see `memory_network::reconnect`).
  void reconnect(std::size_t i, std::size_t j) { memory_.reconnect(hosts_.at(i), hosts_.at(j)); }
  /// In-memory grids: the network joining the nodes.
  memory_network& memory() noexcept { return memory_; }

  /// Shuts every node down; completes when all sessions and loops are gone.
  asio::awaitable<void> shutdown() {
    for (auto& m : managers_) co_await m->shutdown();
  }

private:
  // The connection itself stays owned by node i's manager.
  connection& existing_link(std::size_t i, std::size_t j) {
    const std::shared_ptr<connection> c = link(i, j);
    if (!c)
      throw std::invalid_argument("cogrid::testing::grid: node " + std::to_string(i) + " has no link to node " +
                                  std::to_string(j));
    return *c;
  }

  memory_network memory_; // declared first: destroyed after the managers
  std::vector<std::string> hosts_;
  std::vector<std::unique_ptr<manager>> managers_;
};

} // namespace cogrid::testing

#endif // COGRID_TESTING_HPP
