// cogrid/impl/manager_node.ipp — definitions for cogrid/manager.hpp: a node's life (construction,
// listening, the incoming handshakes in MinIO's order, shutdown), the in-memory network and the TLS
// contexts. Part of what impl/node.ipp brings in.
#ifndef COGRID_IMPL_MANAGER_NODE_IPP
#define COGRID_IMPL_MANAGER_NODE_IPP

#include <cogrid/detail/service.hpp>
#include <cogrid/election.hpp>
#include <cogrid/impl/manager.ipp>
#include <cogrid/impl/session.ipp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/http.hpp>
#include <cogrid/detail/transport.hpp>
#include <cogrid/detail/websocket.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl.hpp>
#include <asio/strand.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <openssl/rand.h>

#include <charconv>
#include <set>

namespace cogrid {
namespace detail {

// The manager's message sink: its mux layer. A class of the node's life, not a base of mux_core: every
// file that sees a class's definition odr-uses its virtual functions, and mux_core's handlers of incoming
// messages reach all of the serving code (detail/service.hpp).
struct mux_sink final : message_sink {
  explicit mux_sink(std::shared_ptr<mux_core> m) : core(std::move(m)) {}
  void on_message(connection& c, const message& m) override { core->on_message(c, m); }
  void on_session_end(connection& c, std::uint64_t session, std::error_code why) override { core->on_session_end(c, session, why); }
  std::shared_ptr<mux_core> core;
};

inline bool manager_state::begin_incoming() {
  std::lock_guard lk(mu);
  if (stopping) return false;
  ++inflight;
  return true;
}

inline void manager_state::end_incoming() {
  std::lock_guard lk(mu);
  if (--inflight == 0 && drained) drained->try_send(std::error_code{}, 0);
}

// Sends an OpConnectResponse over `ws` within the handshake timeout.
inline asio::awaitable<std::error_code> send_connect_response(ws_stream& ws, const connect_response& resp,
                                                              std::chrono::milliseconds timeout) {
  std::vector<std::byte> payload, wire, frame;
  encode_append(resp, payload);
  message m;
  m.op = op_code::connect_response;
  m.payload = std::span<const std::byte>(payload);
  if (auto ec = encode_append(m, wire)) co_return ec;
  ws.frame_binary(wire, frame);
  co_return co_await with_deadline(ws.write_raw(frame), timeout);
}

/// "address:port" of the socket's peer, "?" when unknown (for logs and rejection counts).
inline std::string peer_of(const asio::ip::tcp::socket& sock) {
  std::error_code e;
  const auto ep = sock.remote_endpoint(e);
  return e ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

/// Moves `from`'s native socket into `to` (a socket on the handshake's own strand).
inline std::error_code rehome(asio::ip::tcp::socket& from, asio::ip::tcp::socket& to) {
  std::error_code ec;
  const auto proto = from.local_endpoint(ec).protocol();
  if (!ec) to.assign(proto, from.release(), ec);
  return ec;
}

/// Ends an incoming connection that failed a check: counts the reason, closes, releases the slot.
inline void refuse(manager_state& st, transport& t, const std::string& reason, const std::string& peer) {
  st.reject(reason, peer);
  t.close();
  st.end_incoming();
}

inline std::string_view path_of(std::string_view target) {
  const auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

inline asio::awaitable<void> serve_upgrade(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t,
                                           http_request req, std::vector<std::byte> leftover, std::string peer);
inline asio::awaitable<void> serve_request(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t, std::string peer);

// The grid handshake of one incoming connection, in MinIO's order. Runs on the socket's strand.
inline asio::awaitable<void> serve_incoming(std::shared_ptr<manager_state> st, asio::ip::tcp::socket sock) {
  const connection_options& opt = st->shared->opt;
  std::unique_ptr<transport> t;
  std::string peer = peer_of(sock);
  if (st->shared->local_url.tls) {
    if (!st->tls_server) {
      st->reject("no TLS server context", peer);
      st->end_incoming();
      co_return;
    }
    using ssl_stream = asio::ssl::stream<asio::ip::tcp::socket>;
    ssl_stream stream(std::move(sock), *st->tls_server);
    const std::error_code ec = co_await with_deadline(tls_handshake(stream, asio::ssl::stream_base::server),
                                                      opt.handshake_timeout);
    if (ec) {
      st->reject("TLS handshake failed: " + ec.message(), peer);
      st->end_incoming();
      co_return;
    }
    t = make_tls_transport(std::move(stream));
  } else {
    t = make_tcp_transport(std::move(sock));
  }

  co_await serve_request(st, std::move(t), std::move(peer));
}

// Reads the HTTP upgrade request from `t` and goes on with the handshake. Ends the incoming count.
inline asio::awaitable<void> serve_request(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t, std::string peer) {
  const connection_options& opt = st->shared->opt;
  const ws_limits limits{opt.max_http_header_bytes, opt.max_message_bytes};
  http_request req;
  std::vector<std::byte> leftover;
  std::error_code ec = co_await with_deadline(http_read_request(*t, limits, req, leftover), opt.handshake_timeout);
  if (ec) {
    if (ec == errc::http_header_too_large) co_await http_respond(*t, 431, "Request Header Fields Too Large");
    else if (ec == errc::not_websocket) co_await http_respond(*t, 400, "Bad Request");
    refuse(*st, *t, "bad HTTP request: " + ec.message(), peer);
    co_return;
  }
  co_await serve_upgrade(st, std::move(t), std::move(req), std::move(leftover), std::move(peer));
}

// The rest of the handshake once the HTTP request head is read: route, upgrade, authentication, the
// WebSocket accept and the connect exchange. Ends the incoming count.
inline asio::awaitable<void> serve_upgrade(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t,
                                           http_request req, std::vector<std::byte> leftover, std::string peer) {
  const connection_options& opt = st->shared->opt;
  const ws_limits limits{opt.max_http_header_bytes, opt.max_message_bytes};
  std::error_code ec;
  if (path_of(req.target) != st->shared->route) {
    co_await http_respond(*t, 404, "Not Found");
    refuse(*st, *t, "wrong route", peer);
    co_return;
  }
  if (auto e = ws_check_upgrade(req)) {
    co_await http_respond(*t, 426, "Upgrade Required");
    refuse(*st, *t, "not a WebSocket upgrade", peer);
    co_return;
  }
  // MinIO's authReq: a valid Bearer token and an X-Minio-Time close to ours.
  {
    const std::string_view auth = req.header("Authorization");
    std::error_code aec = make_error_code(errc::auth_failed);
    if (auth.size() > 7 && auth.substr(0, 7) == "Bearer ") aec = st->shared->auth.validate(auth.substr(7));
    if (!aec) {
      const std::string_view ts = req.header("X-Minio-Time");
      std::int64_t ns = 0;
      const auto r = std::from_chars(ts.data(), ts.data() + ts.size(), ns);
      if (r.ec != std::errc{} || r.ptr != ts.data() + ts.size()) {
        aec = make_error_code(errc::clock_skew);
      } else {
        const std::uint64_t diff = abs_diff(wire_time::now().unix_nanos(), ns);
        if (diff > static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(st->max_http_time_skew).count()))
          aec = make_error_code(errc::clock_skew);
      }
    }
    if (aec) {
      co_await http_respond(*t, 403, "Forbidden");
      refuse(*st, *t, "HTTP upgrade: " + aec.message(), peer);
      co_return;
    }
  }
  if ((ec = co_await ws_accept(*t, req))) {
    refuse(*st, *t, "WebSocket accept failed: " + ec.message(), peer);
    co_return;
  }
  auto ws = std::make_unique<ws_stream>(std::move(t), ws_role::server, limits, std::move(leftover));

  // The connect exchange.
  connect_response resp;
  resp.id = st->shared->id;
  std::shared_ptr<cogrid::connection> conn;
  node_id remote_id;
  std::error_code why;
  std::vector<std::byte> in;
  ec = co_await with_deadline(ws->read_message(in), opt.handshake_timeout);
  if (ec) {
    why = ec;
  } else {
    const result<message> first = decode(in);
    connect_request creq;
    if (!first) {
      why = first.error();
    } else if (first->op != op_code::connect || !first->payload) {
      why = make_error_code(errc::unexpected_message);
    } else if (auto e = decode(*first->payload, creq)) {
      why = e;
    } else if (auto it = st->conns.find(creq.host); it == st->conns.end()) {
      why = make_error_code(errc::unknown_host);
    } else {
      const std::uint64_t diff = abs_diff(wire_time::now().unix_nanos(), creq.time.unix_nanos());
      if (diff > static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(opt.max_clock_skew).count())) {
        why = make_error_code(errc::clock_skew);
      } else if (auto aec = st->shared->auth.validate(creq.token)) {
        why = aec;
      } else if (it->second->dialer()) {
        why = make_error_code(errc::wrong_dial_direction);
      } else {
        conn = it->second;
        remote_id = creq.id;
      }
    }
  }
  if (!conn) {
    if (why != errc::timeout && why != errc::disconnected && why != errc::websocket_closed) {
      resp.accepted = false;
      resp.rejected_reason = why.message();
      (void)co_await send_connect_response(*ws, resp, opt.handshake_timeout);
    }
    st->reject(why.message(), peer);
    co_await ws->close(1008);
    st->end_incoming();
    co_return;
  }
  resp.accepted = true;
  if ((ec = co_await send_connect_response(*ws, resp, opt.handshake_timeout))) {
    st->reject("connect response not sent: " + ec.message(), peer);
    ws->lower().close();
    st->end_incoming();
    co_return;
  }
  conn->adopt(std::move(ws), remote_id);
  st->end_incoming();
}

// The grid handshake of an incoming connection on a byte stream that needs no TLS layer from us.
inline asio::awaitable<void> serve_transport(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t) {
  std::string peer = t->peer(); // before the move: argument order is unspecified
  co_await serve_request(st, std::move(t), std::move(peer));
}

inline void accept_transport(const std::shared_ptr<manager_state>& st, std::unique_ptr<transport> t) {
  if (!t) return;
  if (!st->begin_incoming()) {
    t->close();
    return;
  }
  asio::co_spawn(make_strand_executor(st->ex), serve_transport(st, std::move(t)), asio::detached);
}

inline asio::awaitable<void> accept_loop(std::shared_ptr<manager_state> st, std::shared_ptr<asio::ip::tcp::acceptor> acc) {
  for (;;) {
    asio::ip::tcp::socket sock(detail::make_strand_executor(st->ex));
    std::error_code ec;
    co_await acc->async_accept(sock, asio::redirect_error(asio::use_awaitable, ec));
    if (st->stopping || ec == asio::error::operation_aborted || !acc->is_open()) break;
    if (ec) {
      st->log(log_level::warning, "accept failed: " + ec.message());
      asio::steady_timer pause(acc->get_executor(), std::chrono::milliseconds(10)); // e.g. out of descriptors
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (!st->begin_incoming()) break;
    auto sex = sock.get_executor();
    asio::co_spawn(sex, serve_incoming(st, std::move(sock)), asio::detached);
  }
}

} // namespace detail

COGRID_DECL manager::manager(asio::any_io_executor ex, manager_options o) : state_(std::make_shared<detail::manager_state>()) {
  auto invalid = [](const std::string& what) { throw std::system_error(make_error_code(errc::invalid_value), what); };
  if (!o.auth.token || !o.auth.validate) invalid("manager_options.auth needs a token and a validate function");
  std::size_t seen_local = 0;
  for (const auto& h : o.hosts) {
    detail::host_url u;
    if (detail::parse_host_url(h, u)) invalid("malformed host: " + h);
    if (h == o.local) ++seen_local;
  }
  if (seen_local != 1) invalid("local host must appear exactly once in hosts: " + o.local);
  auto& st = *state_;
  st.ex = ex;
  st.shared = std::make_shared<detail::grid_shared>();
  st.shared->local = o.local;
  (void)detail::parse_host_url(o.local, st.shared->local_url);
  RAND_bytes(reinterpret_cast<std::uint8_t*>(st.shared->id.bytes.data()), st.shared->id.bytes.size());
  st.shared->id.bytes[6] = (st.shared->id.bytes[6] & std::byte{0x0f}) | std::byte{0x40}; // UUID version 4
  st.shared->id.bytes[8] = (st.shared->id.bytes[8] & std::byte{0x3f}) | std::byte{0x80}; // RFC 4122 variant
  st.shared->auth = std::move(o.auth);
  st.shared->route = std::move(o.route);
  st.shared->opt = o.connection;
  st.shared->tls_client = std::move(o.tls_client);
  st.shared->log = std::move(o.log);
  st.shared->dialer = std::move(o.dialer);
  st.shared->trace = std::move(o.trace);
  st.tls_server = std::move(o.tls_server);
  st.max_http_time_skew = o.max_http_time_skew;
  st.mux = std::make_shared<detail::mux_core>(ex, st.shared->metrics);
  st.sink = std::make_shared<detail::mux_sink>(st.mux);
  st.shared->sink.store(st.sink.get(), std::memory_order_release);
  for (const auto& h : o.hosts) {
    if (h == o.local || st.conns.count(h)) continue;
    auto c = std::make_shared<cogrid::connection>(st.shared, h, ex);
    c->enroll();
    st.conns.emplace(h, std::move(c));
  }
}

COGRID_DECL void manager::start() {
  for (const auto& [h, c] : state_->conns) c->start();
}

COGRID_DECL void manager::listen(asio::ip::tcp::acceptor acceptor) {
  auto strand = detail::make_strand_executor(state_->ex);
  auto acc = std::make_shared<asio::ip::tcp::acceptor>(strand);
  const auto protocol = acceptor.local_endpoint().protocol(); // before release(): argument order is unspecified
  acc->assign(protocol, acceptor.release());
  {
    std::lock_guard lk(state_->mu);
    if (state_->stopping) return;
    state_->acceptors.push_back(acc);
  }
  asio::co_spawn(strand, detail::accept_loop(state_, acc), asio::detached);
}

COGRID_DECL std::error_code manager::listen() {
  const auto& u = state_->shared->local_url;
  std::error_code ec;
  asio::ip::tcp::resolver resolver(state_->ex);
  auto results = resolver.resolve(u.host, std::to_string(u.port), ec);
  if (ec) return ec;
  for (const auto& r : results) {
    asio::ip::tcp::acceptor acc(state_->ex);
    acc.open(r.endpoint().protocol(), ec);
    if (ec) continue;
    acc.set_option(asio::socket_base::reuse_address(true), ec);
    acc.bind(r.endpoint(), ec);
    if (ec) continue;
    acc.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) continue;
    listen(std::move(acc));
    return {};
  }
  return ec ? ec : make_error_code(errc::invalid_value);
}

COGRID_DECL void manager::accept(asio::ip::tcp::socket socket) {
  if (!state_->begin_incoming()) return;
  // Move the socket onto a strand of its own for the handshake.
  auto strand = detail::make_strand_executor(state_->ex);
  asio::ip::tcp::socket s(strand);
  if (detail::rehome(socket, s)) {
    state_->end_incoming();
    return;
  }
  asio::co_spawn(strand, detail::serve_incoming(state_, std::move(s)), asio::detached);
}

COGRID_DECL void manager::accept(asio::ip::tcp::socket socket, upgrade_request request, std::vector<std::byte> leftover) {
  if (!state_->begin_incoming()) return;
  auto strand = detail::make_strand_executor(state_->ex);
  asio::ip::tcp::socket s(strand);
  std::string peer = detail::peer_of(socket);
  if (detail::rehome(socket, s)) {
    state_->end_incoming();
    return;
  }
  detail::http_request req;
  req.method = std::move(request.method);
  req.target = std::move(request.target);
  req.version = std::move(request.version);
  req.headers = std::move(request.headers);
  asio::co_spawn(strand, detail::serve_upgrade(state_, detail::make_tcp_transport(std::move(s)), std::move(req),
                                               std::move(leftover), std::move(peer)), asio::detached);
}

COGRID_DECL void manager::accept(std::unique_ptr<transport> t) { detail::accept_transport(state_, std::move(t)); }

COGRID_DECL std::error_code manager::attach(std::string_view remote, std::unique_ptr<transport> t) {
  auto it = state_->conns.find(remote);
  if (it == state_->conns.end()) {
    if (t) t->close();
    return make_error_code(errc::unknown_host);
  }
  if (!t) return make_error_code(errc::invalid_value);
  if (it->second->dialer()) it->second->attach(std::move(t));
  else accept(std::move(t));
  return {};
}

COGRID_DECL asio::awaitable<void> manager::shutdown() {
  auto st = state_;
  std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> accs;
  std::shared_ptr<detail::wait_channel> drained;
  {
    std::lock_guard lk(st->mu);
    st->stopping = true;
    accs.swap(st->acceptors);
    if (st->inflight > 0) {
      drained = std::make_shared<detail::wait_channel>(co_await asio::this_coro::executor, 1);
      st->drained = drained;
    }
  }
  for (auto& a : accs) asio::post(a->get_executor(), [a] { std::error_code ec; a->close(ec); });
  for (auto& [h, c] : st->conns) co_await c->shutdown();
  if (drained) {
    std::error_code ec;
    co_await drained->async_receive(asio::redirect_error(asio::use_awaitable, ec));
  }
}

struct memory_network::state {
  mutable std::mutex mu;
  std::map<std::string, std::weak_ptr<detail::manager_state>, std::less<>> nodes;
  std::set<std::string, std::less<>> down;
  struct link {
    std::string a, b;
    std::weak_ptr<detail::memory_link> pipe;
  };
  std::vector<link> links;
  std::uint64_t dials = 0;

  // Finds the target of a dial from `local` to `remote` and records the pipe; null when unreachable.
  std::shared_ptr<detail::manager_state> prepare(const std::string& local, const std::string& remote,
                                                 const std::shared_ptr<detail::memory_link>& pipe) {
    std::lock_guard lk(mu);
    std::shared_ptr<detail::manager_state> target;
    if (auto it = nodes.find(remote); it != nodes.end()) target = it->second.lock();
    if (!target || down.count(remote) || down.count(local)) return nullptr;
    std::erase_if(links, [](const link& l) { return l.pipe.expired(); });
    links.push_back({local, remote, pipe});
    ++dials;
    return target;
  }
};

// The dialer of one node: a named function object, not a capturing lambda (GCC 12 and coroutines).
struct memory_network::dial_fn {
  std::shared_ptr<memory_network::state> st;
  std::string local;

  static asio::awaitable<result<std::unique_ptr<transport>>> dial(std::shared_ptr<state> st, std::string local, std::string remote) {
    const auto ex = co_await asio::this_coro::executor;
    auto pipe = std::make_shared<detail::memory_link>();
    std::shared_ptr<detail::manager_state> target = st->prepare(local, remote, pipe);
    if (!target) co_return make_error_code(errc::disconnected);
    auto ends = detail::make_memory_pipe(pipe, ex, "memory:" + remote, "memory:" + local);
    detail::accept_transport(target, std::move(ends.second));
    co_return std::move(ends.first);
  }

  asio::awaitable<result<std::unique_ptr<transport>>> operator()(std::string remote) const {
    return dial(st, local, std::move(remote));
  }
};

COGRID_DECL memory_network::memory_network() : st_(std::make_shared<state>()) {}

COGRID_DECL transport_dialer memory_network::dialer(std::string local) const { return dial_fn{st_, std::move(local)}; }

COGRID_DECL void memory_network::add(manager& m) {
  std::lock_guard lk(st_->mu);
  st_->nodes[m.local()] = m.state_;
}

COGRID_DECL void memory_network::remove(manager& m) {
  std::lock_guard lk(st_->mu);
  st_->nodes.erase(m.local());
}

COGRID_DECL void memory_network::set_host_up(std::string_view host, bool up) {
  std::vector<std::shared_ptr<detail::memory_link>> cut;
  {
    std::lock_guard lk(st_->mu);
    if (up) {
      if (auto it = st_->down.find(host); it != st_->down.end()) st_->down.erase(it);
      return;
    }
    st_->down.emplace(host);
    for (auto& l : st_->links)
      if (l.a == host || l.b == host)
        if (auto p = l.pipe.lock()) cut.push_back(std::move(p));
  }
  for (auto& p : cut) detail::sever(*p);
}

COGRID_DECL std::uint64_t memory_network::dials() const {
  std::lock_guard lk(st_->mu);
  return st_->dials;
}

COGRID_DECL std::shared_ptr<asio::ssl::context> make_client_tls_context(std::string_view extra_ca_pem) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_default_verify_paths();
  if (!extra_ca_pem.empty()) ctx->add_certificate_authority(asio::buffer(extra_ca_pem.data(), extra_ca_pem.size()));
  ctx->set_verify_mode(asio::ssl::verify_peer);
  return ctx;
}

COGRID_DECL std::shared_ptr<asio::ssl::context> make_server_tls_context(std::string_view cert_pem, std::string_view key_pem) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->use_certificate_chain(asio::buffer(cert_pem.data(), cert_pem.size()));
  ctx->use_private_key(asio::buffer(key_pem.data(), key_pem.size()), asio::ssl::context::pem);
  return ctx;
}

} // namespace cogrid

#endif // COGRID_IMPL_MANAGER_NODE_IPP
