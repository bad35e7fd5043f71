// cogrid/manager.hpp — a node's view of its grid: the local host, every remote, one connection each,
// the listener that accepts the remotes that dial us, and the checks every incoming connection passes.
#ifndef COGRID_MANAGER_HPP
#define COGRID_MANAGER_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/auth.hpp>
#include <cogrid/call.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/control.hpp>
#include <cogrid/metrics.hpp>
#include <cogrid/options.hpp>
#include <cogrid/result.hpp>
#include <cogrid/transport.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cogrid {

namespace detail {
struct manager_state;
struct manager_access;
} // namespace detail

/// MinIO's routes: the main grid and the separate lock grid.
inline constexpr std::string_view route_v1 = "/minio/grid/v1";
inline constexpr std::string_view lock_route_v1 = "/minio/grid/lock/v1";

/// Called for each incoming connection a manager refuses, with the reason (as counted in
/// `manager::rejections()`) and the peer's address ("ip:port", "?" when unknown). It runs on the
/// handshake's strand and must not block.
using rejection_hook = std::function<void(const std::string& reason, const std::string& peer)>;

/// Settings of a manager.
struct manager_options {
  /// This node's host string, e.g. "http://10.0.0.1:9000" ("https://" for TLS). Must be in `hosts`.
  std::string local;
  /// Every host of the grid, this one included. Host strings are matched byte for byte. Hosts can be
  /// added and removed later (`manager::add_host`, `manager::remove_host`).
  std::vector<std::string> hosts;
  /// The token this node presents and the check of tokens presented to it (required).
  authenticator auth;
  /// The HTTP path of the grid.
  std::string route = std::string(route_v1);
  /// Limits, timeouts and intervals of every connection.
  connection_options connection;
  /// Context for dialing https:// remotes (verify_peer recommended; see `make_client_tls_context`).
  std::shared_ptr<tls_context> tls_client;
  /// Context with this node's certificate, required to accept when `local` is https://.
  std::shared_ptr<tls_context> tls_server;
  /// X-Minio-Time of the HTTP upgrade must be within this of our clock (MinIO's DefaultSkewTime).
  std::chrono::milliseconds max_http_time_skew = std::chrono::minutes(15);
  /// Receives the grid's log lines (see `log_sink`). Unset: nothing is logged.
  log_sink log;
  /// Opens the byte streams to the remotes this node dials, instead of TCP/TLS (see `transport_dialer`;
  /// `memory_network::dialer` is one). Unset: TCP, and TLS for https:// remotes.
  transport_dialer dialer;
  /// Resolves the host names of the remotes this node dials over TCP (see `host_resolver`). Unset:
  /// Asio's resolver.
  host_resolver resolve;
  /// Called once per finished call and stream, both the ones served here and the ones made from here
  /// (see `call_trace`). Unset: nothing is traced.
  trace_hook trace;
  /// Called for each incoming connection refused (see `rejection_hook`): a one-shot client learns at
  /// once that its peer's dial was refused, which `connection::wait_for_connect` cannot tell it when
  /// the refusal came before the dialer said which host it is. Unset: refusals are only counted and logged.
  rejection_hook on_rejected;
};

/// An HTTP request head that the application's own server read from a connection, handed to
/// `manager::accept` so that the grid can share the application's port.
struct upgrade_request {
  std::string method;  ///< "GET"
  std::string target;  ///< e.g. "/minio/grid/v1"
  std::string version; ///< "HTTP/1.1"
  std::vector<std::pair<std::string, std::string>> headers; ///< in order received; names any case
};

/// Counts of incoming connections that failed our checks, by reason ("unknown incoming host", ...).
using rejection_counts = std::map<std::string, std::uint64_t>;

/// Owns one `connection` per remote host and accepts the remotes that dial this node.
///
/// Lifecycle: construct, `listen` (or hand sockets to `accept`), `start`; finally `co_await shutdown()`
/// before destroying it (or before the io_context stops), which ends every session and dial loop.
///
/// @par Threads
/// Given one executor, every connection runs on a strand of it: an io_context run by several threads
/// works, but its threads trade each connection's work back and forth. Given several executors (one
/// io_context per thread, as `io_pool` makes), the connections are spread over them and each
/// connection's sessions, and the handlers serving its requests, stay on its thread: more threads carry
/// more connections, each as fast as on one thread. Callers get their results on their own executor.
///
/// @par Thread safety
/// All member functions may be called from any thread.
class manager {
public:
  /// A manager whose connections all run on strands of `ex`.
  /// @throws cogrid::exception (`errc::invalid_value`) when `local` is not in `hosts` exactly once, a
  /// host string is malformed, or `auth` lacks a token or validate function.
  // (The constructors are templates so that only a file that constructs a manager compiles a node's
  // life: see detail/node.hpp.)
  template <class Node = void>
  manager(asio::any_io_executor ex, manager_options options)
      : manager(detail::node_of<Node>(), std::vector<asio::any_io_executor>{std::move(ex)}, std::move(options)) {}
  /// A manager whose connections are spread over `executors` (at least one): the connection to the k-th
  /// remote (in the order of `hosts`, the local host left out) runs on `executors[(k + i) % n]`, where i
  /// is the local host's position in `hosts`, so that in a process holding several nodes the two ends
  /// of a link run on different executors. Each executor should be run by one thread (`io_pool`).
  /// @throws cogrid::exception as above, and for an empty `executors`.
  template <class Node = void>
  manager(std::vector<asio::any_io_executor> executors, manager_options options)
      : manager(detail::node_of<Node>(), std::move(executors), std::move(options)) {}
  COGRID_DECL ~manager();
  manager(const manager&) = delete;
  manager& operator=(const manager&) = delete;

  /// This start's node id (new every time a manager is created).
  COGRID_DECL const node_id& id() const noexcept;
  /// This node's host string (`manager_options::local`).
  COGRID_DECL const std::string& local() const noexcept;
  /// The connection to `host`, or null when `host` is not a remote of this grid.
  COGRID_DECL std::shared_ptr<cogrid::connection> connection(std::string_view host) const;
  /// The connections to every remote of the grid.
  COGRID_DECL std::vector<std::shared_ptr<cogrid::connection>> connections() const;

  /// Adds `host` to the grid at run time (raft's configuration changes): a link to it is made, and
  /// started when `start()` was called. Other links are not disturbed. The host must run a node whose
  /// hosts include this one (or add it too) for the link to come up.
  /// @par Errors
  /// `errc::invalid_value` for a malformed host, this node's own host or a host of the grid already;
  /// `errc::shutdown` after `shutdown()` began.
  COGRID_DECL result<void> add_host(std::string host);
  /// Removes `host` from the grid at run time: its link is shut down, its calls and streams in flight
  /// fail (`errc::disconnected`), and calls made afterwards through a `connection` still held fail with
  /// `errc::shutdown`; `connection(host)` returns null, and dials from that host are refused as from an
  /// unknown host. Other links are not disturbed. Completes when the link has ended.
  /// @par Errors
  /// `errc::unknown_host` when `host` is not a host of this grid.
  COGRID_DECL asio::awaitable<result<void>> remove_host(std::string host);

  /// Starts the dial loops of the connections this node dials. Idempotent.
  COGRID_DECL void start();
  /// Accepts incoming grid connections on `acceptor` (bound and listening) until shutdown.
  COGRID_DECL void listen(asio::ip::tcp::acceptor acceptor);
  /// Binds and listens on the local host's address and port.
  [[nodiscard]] COGRID_DECL result<void> listen();
  /// Takes an accepted TCP connection (for example from the application's own listener): reads its
  /// HTTP upgrade (TLS first when local is https://) and runs the grid handshake on it.
  COGRID_DECL void accept(asio::ip::tcp::socket socket);
  /// Takes a plain-TCP connection whose HTTP request head the application already read (`request`),
  /// with any bytes it read past the head (`leftover`): the grid checks route, upgrade and token, answers
  /// the upgrade, and runs the handshake. For TLS, hand the socket over before the TLS handshake instead.
  COGRID_DECL void accept(asio::ip::tcp::socket socket, upgrade_request request, std::vector<std::byte> leftover = {});

  /// Takes a connected byte stream on which a remote dials this node (for example the other end of an
  /// in-memory pipe, or this process's stdin/stdout): reads the HTTP upgrade and runs the grid handshake
  /// with the same checks as over TCP. No TLS is added: `t` is used as it is.
  COGRID_DECL void accept(std::unique_ptr<transport> t);

  /// Runs the connection to `remote` over `t`, a byte stream already connected to that remote node
  /// (a child process's pipes, stdin/stdout, a tunnel), whichever side the election makes the dialer:
  /// if this node dials `remote`, the handshake is sent over `t` (and the connection never dials TCP;
  /// after `t` ends it waits for the next stream attached); otherwise `t` is accepted as by `accept`.
  /// The other node does the same with its end. Needs no `start()` for this connection.
  /// @par Errors
  /// `errc::unknown_host` when `remote` is not a remote of this grid (`t` is closed).
  COGRID_DECL result<void> attach(std::string_view remote, std::unique_ptr<transport> t);

  /// Runs the connection to `remote` over processes started from `spec`, in zrepl's manner: for example
  /// `ssh -i key grid@host` whose key the remote's `authorized_keys` forces to run `grid-node --stdio
  /// <this node's host> ...`. Each attempt starts the process (`spawn_process`) and runs the handshake
  /// over its stdin and stdout, as the dialer or the acceptor as the election says (the remote attaches
  /// its end with `attach`); when the process ends, the link's session ends with it, the process is
  /// reaped, its end is logged and kept as the connection's last error ("exited with status 255:
  /// Permission denied (publickey)."), and it is started again after the pause of a failed dial
  /// (`reconnect_min`..`reconnect_max`, counted from the start of the attempt). When the connection
  /// dialed TCP before, the process takes over from its next attempt. Needs no `start()`.
  /// @par Errors
  /// `errc::unknown_host` when `remote` is not a remote of this grid; `errc::invalid_value` for an empty
  /// `spec.argv`.
  COGRID_DECL result<void> attach_process(std::string_view remote, process_spec spec);

  /// Counters and latency histograms of every handler this node serves and every handler it called,
  /// one entry per handler id, subroute, kind and side.
  COGRID_DECL std::vector<handler_stats> handler_statistics() const;
  /// Statistics of every connection (`connection::stats()` of each).
  COGRID_DECL std::vector<connection_stats> connection_statistics() const;
  /// All of the above as Prometheus text exposition (`render_prometheus`, labelled with the local host).
  COGRID_DECL std::string prometheus() const;

  /// Incoming connections rejected so far, by reason.
  COGRID_DECL rejection_counts rejections() const;

  /// Registers `fn` as the handler of single requests to `h` (and, when given, to subroute `route`
  /// under `h`). Register before `start`, and the same handlers on every node. The typed way is
  /// `cogrid::unary<Req, Resp>::serve`; streams register through `cogrid::server_stream` and
  /// `cogrid::bidi_stream`.
  /// @par Errors
  /// `errc::handler_exists` when the id (or subroute) has a handler; `errc::invalid_handler` for id 0.
  COGRID_DECL result<void> register_unary(handler_id h, raw_unary_handler fn);
  /// The same on subroute `route` under `h`.
  COGRID_DECL result<void> register_unary(handler_id h, std::string_view route, raw_unary_handler fn);
  /// The same for a plain-function handler (see `sync_unary_handler`).
  COGRID_DECL result<void> register_unary(handler_id h, sync_unary_handler fn);
  /// The same on subroute `route` under `h`.
  COGRID_DECL result<void> register_unary(handler_id h, std::string_view route, sync_unary_handler fn);

  /// Whether a handler, unary or stream, is registered under `h` itself (subroutes under `h` aside).
  [[nodiscard]] COGRID_DECL bool serves(handler_id h) const noexcept;

  /// Sets `fn` as the authorization hook of the handlers (unary and stream) registered under `h`: every
  /// call is put to it before the handler runs, and a refused caller gets `errc::not_authorized` with
  /// the hook's text (see `authorize_hook`, `caller_info`). Register the handlers first.
  /// @par Errors
  /// `errc::unknown_handler` when no handler is registered under `h`.
  COGRID_DECL result<void> authorize(handler_id h, authorize_hook fn);
  /// The same for the handlers on subroute `route` under `h`.
  COGRID_DECL result<void> authorize(handler_id h, std::string_view route, authorize_hook fn);

  /// Replaces the receiver of all non-connection-level messages (by default the manager's own call
  /// layer). For tests and for users who bring their own mux layer; set before `start`.
  COGRID_DECL void set_sink(message_sink* sink) noexcept;

  /// Stops listening, ends all sessions and dial loops, and completes when they are gone.
  COGRID_DECL asio::awaitable<void> shutdown();

private:
  friend class memory_network;
  friend struct detail::manager_access;
  COGRID_DECL manager(const detail::node_ops& node, std::vector<asio::any_io_executor> executors, manager_options options);
  std::shared_ptr<detail::manager_state> state_;
};

/// Managers of one process connected to each other without sockets, over in-memory pipes: the same
/// protocol, handshake, authentication, liveness checks and reconnects as over TCP (hashicorp/raft's
/// InmemTransport plays this part for Raft). For unit tests of handlers and for single-process
/// simulations of a cluster, including partitions.
///
/// @code
/// cogrid::memory_network net;
/// o.dialer = net.dialer(o.local);       // for every node, before constructing its manager
/// cogrid::manager m(io.get_executor(), o);
/// net.add(m);                            // then m.start() as usual; no listen()
/// @endcode
///
/// @par Thread safety
/// All member functions may be called from any thread. The network may be destroyed before or after
/// its managers; a manager destroyed without `remove` is simply unreachable.
class memory_network {
public:
  COGRID_DECL memory_network();
  /// The dialer for the node whose host string is `local` (for `manager_options::dialer`).
  COGRID_DECL transport_dialer dialer(std::string local) const;
  /// Makes `m` reachable under its local host string.
  COGRID_DECL void add(manager& m);
  /// Makes `m` unreachable (its open links stay until they fail or are cut).
  COGRID_DECL void remove(manager& m);
  /// Takes `host` off the network (`up` false) or puts it back: while it is off, every pipe to or from
  /// it is cut at once (both ends see the link fail) and dials to or from it fail with
  /// `errc::disconnected`, as a host whose cable was pulled.
  COGRID_DECL void set_host_up(std::string_view host, bool up);
  /// Cuts the link between hosts `a` and `b`, both ways, as a network partition between just those
  /// two would: their pipes fail at once (both ends see the link fail) and dials between them fail with
  /// `errc::disconnected` until `reconnect(a, b)`. Their links to other hosts are untouched.
  COGRID_DECL void disconnect(std::string_view a, std::string_view b);
  /// Cuts one direction: whatever `from` writes to `to` is lost (its writes succeed; nothing arrives),
  /// while what `to` writes still reaches `from`, as on a link that fails one way. Each end notices as it
  /// would over TCP: `to` hears no pings, `from` no pongs, calls time out; redials between them time out
  /// in their handshake until `reconnect(from, to)`.
  COGRID_DECL void disconnect_one_way(std::string_view from, std::string_view to);
  /// Cuts every pair of hosts (as `disconnect`) until `reconnect_all()`.
  COGRID_DECL void disconnect_all();
  /// Undoes `disconnect` and `disconnect_one_way` between `a` and `b`, both directions. Pipes that were
  /// losing bytes are cut (a stream that lost bytes cannot go on); links are dialed again as usual.
  COGRID_DECL void reconnect(std::string_view a, std::string_view b);
  /// Undoes every cut made by the functions above (not `set_host_up`).
  COGRID_DECL void reconnect_all();
  /// Pipes made so far (each successful dial makes one).
  COGRID_DECL std::uint64_t dials() const;

private:
  struct state;
  struct dial_fn;
  std::shared_ptr<state> st_;
};

} // namespace cogrid

// In header-only builds, every definition of cogrid's non-template code: whichever of cogrid's headers
// a file includes, what it uses is defined.
#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/connection.ipp>
#include <cogrid/impl/manager.ipp>
#include <cogrid/impl/call.ipp>
#include <cogrid/impl/stream.ipp>
#endif
// A node's life: templates, compiled where a manager is constructed (separately compiled builds compile
// node_impl<void> once, in src.hpp).
#include <cogrid/impl/node.ipp>
#if !defined(COGRID_HEADER_ONLY)
extern template struct cogrid::detail::node_impl<void>;
#endif

#endif // COGRID_MANAGER_HPP
