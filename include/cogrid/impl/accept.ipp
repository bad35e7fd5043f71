// cogrid/impl/accept.ipp — the incoming side of a connection's setup, in MinIO's order: TLS, the HTTP
// upgrade with its route, token and clock checks, the WebSocket accept and the connect exchange, then the
// session handed to the connection; every step bounded by the handshake deadline, every refusal counted.
#ifndef COGRID_IMPL_ACCEPT_IPP
#define COGRID_IMPL_ACCEPT_IPP

#include <cogrid/manager.hpp>
#include <cogrid/detail/deadline.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/http.hpp>
#include <cogrid/detail/manager_state.hpp>
#include <cogrid/detail/websocket.hpp>
#include <cogrid/impl/dial.ipp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <charconv>
#include <memory>
#include <string>
#include <vector>

namespace cogrid::detail {

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
template <class Tag>
asio::awaitable<std::error_code> send_connect_response(ws_stream& ws, const connect_response& resp,
                                                              std::chrono::milliseconds timeout) {
  std::vector<std::byte> payload, wire, frame;
  encode_append(resp, payload);
  message m;
  m.op = op_code::connect_response;
  m.payload = std::span<const std::byte>(payload);
  if (auto r = encode_append(m, wire); !r) co_return r.error().code;
  ws.frame_binary(wire, frame);
  co_return co_await with_deadline<Tag>(ws.write_raw(frame), timeout);
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

template <class Tag>
asio::awaitable<void> serve_upgrade(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t,
                                           http_request req, std::vector<std::byte> leftover, std::string peer);
template <class Tag>
asio::awaitable<void> serve_request(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t, std::string peer);

// The grid handshake of one incoming connection, in MinIO's order. Runs on the socket's strand.
template <class Tag>
asio::awaitable<void> serve_incoming(std::shared_ptr<manager_state> st, asio::ip::tcp::socket sock) {
  const connection_options& opt = st->shared->opt;
  std::unique_ptr<transport> t;
  std::string peer = peer_of(sock);
  if (st->shared->local_url.tls) {
    if (!st->tls_server) {
      st->reject("no TLS server context", peer);
      st->end_incoming();
      co_return;
    }
    const std::error_code ec = co_await with_deadline<Tag>(st->tls_server->handshake(sock, std::string(), t), opt.handshake_timeout);
    if (ec) {
      st->reject("TLS handshake failed: " + ec.message(), peer);
      st->end_incoming();
      co_return;
    }
  } else {
    t = make_tcp_transport(std::move(sock));
  }

  co_await serve_request<Tag>(st, std::move(t), std::move(peer));
}

// Reads the HTTP upgrade request from `t` and goes on with the handshake. Ends the incoming count.
template <class Tag>
asio::awaitable<void> serve_request(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t, std::string peer) {
  const connection_options& opt = st->shared->opt;
  const ws_limits limits{opt.max_http_header_bytes, detail::ws_message_limit(opt.max_message_bytes)};
  http_request req;
  std::vector<std::byte> leftover;
  std::error_code ec = co_await with_deadline<Tag>(http_read_request<Tag>(*t, limits, req, leftover), opt.handshake_timeout);
  if (ec) {
    if (ec == errc::http_header_too_large) co_await http_respond<Tag>(*t, 431, "Request Header Fields Too Large");
    else if (ec == errc::not_websocket) co_await http_respond<Tag>(*t, 400, "Bad Request");
    refuse(*st, *t, "bad HTTP request: " + ec.message(), peer);
    co_return;
  }
  co_await serve_upgrade<Tag>(st, std::move(t), std::move(req), std::move(leftover), std::move(peer));
}

// The rest of the handshake once the HTTP request head is read: route, upgrade, authentication, the
// WebSocket accept and the connect exchange. Ends the incoming count.
template <class Tag>
asio::awaitable<void> serve_upgrade(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t,
                                           http_request req, std::vector<std::byte> leftover, std::string peer) {
  const connection_options& opt = st->shared->opt;
  const ws_limits limits{opt.max_http_header_bytes, detail::ws_message_limit(opt.max_message_bytes)};
  std::error_code ec;
  if (path_of(req.target) != st->shared->route) {
    co_await http_respond<Tag>(*t, 404, "Not Found");
    refuse(*st, *t, "wrong route", peer);
    co_return;
  }
  if (auto e = ws_check_upgrade(req)) {
    co_await http_respond<Tag>(*t, 426, "Upgrade Required");
    refuse(*st, *t, "not a WebSocket upgrade", peer);
    co_return;
  }
  // MinIO's authReq: a valid Bearer token and an X-Minio-Time close to ours.
  {
    const std::string_view auth = req.header("Authorization");
    std::error_code aec = make_error_code(errc::auth_failed);
    if (auth.size() > 7 && auth.substr(0, 7) == "Bearer ") aec = st->shared->auth.validate(auth.substr(7)).error().code;
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
      co_await http_respond<Tag>(*t, 403, "Forbidden");
      refuse(*st, *t, "HTTP upgrade: " + aec.message(), peer);
      co_return;
    }
  }
  // A cogrid dialer tells its limits and hears ours; a MinIO dialer does neither, and gets the same
  // bytes as from a MinIO node.
  const std::optional<grid_limits> told = parse_grid_limits(req.header(grid_limits_header));
  http_headers reply_headers;
  if (told) reply_headers.emplace_back(std::string(grid_limits_header), format_grid_limits({opt.max_message_bytes, opt.piece_bytes}));
  if ((ec = co_await ws_accept<Tag>(*t, req, std::move(reply_headers)))) {
    refuse(*st, *t, "WebSocket accept failed: " + ec.message(), peer);
    co_return;
  }
  auto ws = std::make_unique<ws_stream>(std::move(t), ws_role::server, limits, std::move(leftover));
  if (told) ws->peer_limits = *told;

  // The connect exchange.
  connect_response resp;
  resp.id = st->shared->id;
  std::shared_ptr<cogrid::connection> conn;
  std::shared_ptr<cogrid::connection> claimed; // the link of the host the dialer claims to be
  node_id remote_id;
  std::error_code why;
  std::vector<std::byte> in;
  ec = co_await with_deadline<Tag>(ws->read_message(in), opt.handshake_timeout);
  if (ec) {
    why = ec;
  } else {
    const result<message> first = decode(in);
    connect_request creq;
    if (!first) {
      why = first.error().code;
    } else if (first->op != op_code::connect || !first->payload) {
      why = make_error_code(errc::unexpected_message);
    } else if (auto decoded = decode(*first->payload, creq); !decoded) {
      why = decoded.error().code;
    } else if (auto found = st->find(creq.host); !found) {
      why = make_error_code(errc::unknown_host);
    } else {
      claimed = found;
      const std::uint64_t diff = abs_diff(wire_time::now().unix_nanos(), creq.time.unix_nanos());
      if (diff > static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(opt.max_clock_skew).count())) {
        why = make_error_code(errc::clock_skew);
      } else if (auto valid = st->shared->auth.validate(creq.token); !valid) {
        why = valid.error().code;
      } else if (found->dialer()) {
        why = make_error_code(errc::wrong_dial_direction);
      } else {
        conn = found;
        remote_id = creq.id;
      }
    }
  }
  if (!conn) {
    if (why != errc::timeout && why != errc::disconnected && why != errc::websocket_closed) {
      resp.accepted = false;
      resp.rejected_reason = why.message();
      if (claimed) connection_access::refused(*claimed, "this node refused the remote's connect: " + why.message());
      (void)co_await send_connect_response<Tag>(*ws, resp, opt.handshake_timeout);
    }
    st->reject(why.message(), peer);
    co_await ws->close(1008);
    st->end_incoming();
    co_return;
  }
  resp.accepted = true;
  if ((ec = co_await send_connect_response<Tag>(*ws, resp, opt.handshake_timeout))) {
    st->reject("connect response not sent: " + ec.message(), peer);
    ws->lower().close();
    st->end_incoming();
    co_return;
  }
  ws->rebind(connection_access::home(*conn)); // the session runs on the connection's thread
  node_impl<Tag>::adopt(*conn, std::move(ws), remote_id);
  st->end_incoming();
}

// The grid handshake of an incoming connection on a byte stream that needs no TLS layer from us.
template <class Tag>
asio::awaitable<void> serve_transport(std::shared_ptr<manager_state> st, std::unique_ptr<transport> t) {
  std::string peer = t->peer(); // before the move: argument order is unspecified
  co_await serve_request<Tag>(st, std::move(t), std::move(peer));
}

template <class Tag>
void accept_transport(const std::shared_ptr<manager_state>& st, std::unique_ptr<transport> t) {
  if (!t) return;
  if (!st->begin_incoming()) {
    t->close();
    return;
  }
  asio::co_spawn(make_strand_executor(st->ex), serve_transport<Tag>(st, std::move(t)), asio::detached);
}

template <class Tag>
asio::awaitable<void> accept_loop(std::shared_ptr<manager_state> st, std::shared_ptr<asio::ip::tcp::acceptor> acc) {
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
    asio::co_spawn(sex, serve_incoming<Tag>(st, std::move(sock)), asio::detached);
  }
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_ACCEPT_IPP
