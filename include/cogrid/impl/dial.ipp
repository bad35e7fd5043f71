// cogrid/impl/dial.ipp — one dial of a connection, each step bounded by the dial deadline: the remote's
// URL, name resolution, TCP, TLS (or a custom dialer's stream), the WebSocket upgrade with the token, and
// the connect exchange (with the handshake deadline).
#ifndef COGRID_IMPL_DIAL_IPP
#define COGRID_IMPL_DIAL_IPP

#include <cogrid/connection.hpp>
#include <cogrid/detail/deadline.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/http.hpp>
#include <cogrid/detail/websocket.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cogrid::detail {

using steady = std::chrono::steady_clock;

/// Asio's resolver (getaddrinfo on a thread of Asio's own).
template <class = void>
asio::awaitable<result<std::vector<asio::ip::tcp::endpoint>>> system_resolve(std::string host, std::uint16_t port) {
  asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
  std::error_code ec;
  auto found = co_await resolver.async_resolve(host, std::to_string(port), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ec;
  std::vector<asio::ip::tcp::endpoint> out;
  for (const auto& e : found) out.push_back(e.endpoint());
  co_return out;
}

/// A name resolution that runs as a coroutine of its own, so that the dial waits for its result or for
/// the dial's deadline, whichever comes first, and never longer: a resolution still running then (Asio's
/// getaddrinfo cannot be interrupted) is cancelled and finishes unobserved. The dial loop, and with it
/// shutdown(), never waits for it.
struct resolution : std::enable_shared_from_this<resolution> {
  std::mutex mu;
  bool done = false;
  result<std::vector<asio::ip::tcp::endpoint>> found = make_error_code(errc::disconnected);
  waiter w;
  asio::cancellation_signal cancel; // used on the connection's strand only

  struct finished {
    std::shared_ptr<resolution> r;
    void operator()(std::exception_ptr e, result<std::vector<asio::ip::tcp::endpoint>> out) const {
      waiter w;
      {
        std::lock_guard lk(r->mu);
        r->done = true;
        if (e) r->found = error(errc::disconnected, "the resolver failed");
        else r->found = std::move(out);
        take_waiter(r->w, w);
      }
      wake(std::move(w), handoff::continuation);
    }
  };
  struct cancel_wait {
    std::shared_ptr<resolution> r;
    void operator()(asio::cancellation_type) const {
      waiter w;
      {
        std::lock_guard lk(r->mu);
        take_waiter(r->w, w);
      }
      wake(std::move(w), handoff::continuation, asio::error::operation_aborted);
    }
  };
  struct wait_init {
    std::shared_ptr<resolution> r;
    void operator()(wait_handler h) const {
      waiter now;
      {
        std::lock_guard lk(r->mu);
        if (r->done) now.h.emplace(std::move(h));
        else arm(r->w, std::move(h), cancel_wait{r});
      }
      wake(std::move(now), handoff::continuation);
    }
  };

  /// Completes when the resolution did (success), or with operation_aborted when cancelled first.
  template <class Tag>
  static asio::awaitable<std::error_code> wait(std::shared_ptr<resolution> r) {
    wait_init init{std::move(r)}; // named: GCC 12 destroys a braced temporary inside co_await twice
    try {
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(std::move(init), asio::use_awaitable);
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code();
  }
};

template <class = void>
asio::awaitable<std::error_code> tcp_connect(asio::ip::tcp::socket& s, std::vector<asio::ip::tcp::endpoint> eps) {
  std::error_code e;
  co_await asio::async_connect(s, eps, asio::redirect_error(asio::use_awaitable, e));
  co_return e;
}

/// Time left until `deadline`, at least 1 ms.
inline std::chrono::milliseconds time_left(steady::time_point deadline) {
  return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()));
}

} // namespace cogrid::detail

namespace cogrid {

template <class Tag>
asio::awaitable<result<void>> connection::dial_once(std::unique_ptr<detail::ws_stream>& ws, node_id& remote_id) {
  using asio::ip::tcp;
  const connection_options& opt = shared_->opt;
  detail::host_url url;
  if (auto ec = detail::parse_host_url(remote_, url)) {
    set_last_error("bad remote host " + remote_);
    co_return ec;
  }
  std::error_code ec;
  std::unique_ptr<transport> t = std::move(attached_); // a stream handed to attach(), used once
  const auto deadline = detail::steady::now() + opt.dial_timeout;
  try {
    if (!t && shared_->dialer) {
      std::string why;
      ec = co_await detail::with_deadline<Tag>(detail::dial_into<Tag>(shared_->dialer, remote_, t, why), opt.dial_timeout);
      if (ec) throw std::system_error(ec, why.empty() ? std::string("dialer") : "dialer: " + why); // a transport opened after the deadline is dropped
      if (!t) throw std::system_error(make_error_code(errc::disconnected), "dialer returned no transport");
    }
    if (!t) {
      auto res = std::make_shared<detail::resolution>();
      auto resolve = shared_->resolve ? shared_->resolve(url.host, url.port) : detail::system_resolve<Tag>(url.host, url.port);
      // Named, not braced temporaries: GCC 12 destroys those twice in a coroutine.
      detail::resolution::finished done{res};
      asio::co_spawn(strand_, std::move(resolve), asio::bind_cancellation_slot(res->cancel.slot(), std::move(done)));
      auto resolved = detail::resolution::wait<Tag>(res);
      ec = co_await detail::with_deadline<Tag>(std::move(resolved), detail::time_left(deadline));
      if (ec) {
        res->cancel.emit(asio::cancellation_type::terminal); // we run on the strand, as the resolution does
        throw std::system_error(ec, "resolving " + url.host);
      }
      if (!res->found) throw std::system_error(res->found.error().code, "resolving " + url.host);
      tcp::socket sock(strand_);
      ec = co_await detail::with_deadline<Tag>(detail::tcp_connect<Tag>(sock, std::move(*res->found)), detail::time_left(deadline));
      if (ec) throw std::system_error(ec);
      if (url.tls) {
        if (!shared_->tls_client) throw std::system_error(make_error_code(errc::invalid_value), "no TLS client context for https:// remote");
        ec = co_await detail::with_deadline<Tag>(shared_->tls_client->handshake(sock, url.host, t), detail::time_left(deadline));
        if (ec) throw std::system_error(ec);
      } else {
        t = make_tcp_transport(std::move(sock));
      }
    }
    std::vector<std::pair<std::string, std::string>> headers;
    const std::string token = shared_->auth.token ? shared_->auth.token() : std::string();
    headers.emplace_back("Authorization", "Bearer " + token);
    headers.emplace_back("X-Minio-Time", std::to_string(wire_time::now().unix_nanos()));
    headers.emplace_back(std::string(detail::grid_limits_header),
                         detail::format_grid_limits({opt.max_message_bytes, opt.piece_bytes}));
    std::vector<std::byte> leftover;
    detail::ws_limits limits{opt.max_http_header_bytes, detail::ws_message_limit(opt.max_message_bytes)};
    int status = 0;
    detail::http_headers response_headers;
    ec = co_await detail::with_deadline<Tag>(
        detail::ws_client_handshake<Tag>(*t, url.authority(), shared_->route, headers, limits, leftover, &status, &response_headers),
        detail::time_left(deadline));
    if (ec) {
      set_last_error("WebSocket upgrade failed: " + ec.message() + (status ? " (HTTP " + std::to_string(status) + ")" : ""));
      if (status == 403) note_refusal("the remote refused this node's upgrade (HTTP 403): its token or clock");
      t->close();
      co_return ec;
    }
    ws = std::make_unique<detail::ws_stream>(std::move(t), detail::ws_role::client, limits, std::move(leftover));
    if (auto told = detail::parse_grid_limits(detail::http_find_header(response_headers, detail::grid_limits_header)))
      ws->peer_limits = *told;

    // The connect exchange: OpConnect out, OpConnectResponse back, each with a deadline.
    connect_request req{shared_->id, local_, wire_time::now(), token};
    std::vector<std::byte> payload, wire, frame;
    encode_append(req, payload);
    message m;
    m.op = op_code::connect;
    m.payload = std::span<const std::byte>(payload);
    if (auto r = encode_append(m, wire); !r) throw std::system_error(r.error().code);
    ws->frame_binary(wire, frame);
    ec = co_await detail::with_deadline<Tag>(ws->write_raw(frame), opt.handshake_timeout);
    if (ec) throw std::system_error(ec);
    std::vector<std::byte> in;
    ec = co_await detail::with_deadline<Tag>(ws->read_message(in), opt.handshake_timeout);
    if (ec) throw std::system_error(ec);
    const result<message> reply = decode(in);
    if (!reply) throw std::system_error(reply.error().code);
    if (reply->op != op_code::connect_response || !reply->payload) throw std::system_error(make_error_code(errc::unexpected_message));
    connect_response resp;
    if (auto r = decode(*reply->payload, resp); !r) throw std::system_error(r.error().code);
    if (!resp.accepted) {
      set_last_error("connection rejected: " + resp.rejected_reason);
      log(log_level::warning, "connection rejected: " + resp.rejected_reason);
      note_refusal("the remote refused this node's connect: " + resp.rejected_reason);
      ws->lower().close();
      co_return error(errc::connection_rejected, resp.rejected_reason);
    }
    remote_id = resp.id;
    co_return result<void>();
  } catch (const std::system_error& e) {
    ec = e.code();
    set_last_error(std::string("dial failed: ") + e.what());
  } catch (const std::exception& e) {
    ec = make_error_code(errc::disconnected);
    set_last_error(std::string("dial failed: ") + e.what());
  }
  if (ws) ws->lower().close();
  else if (t) t->close();
  co_return ec;
}

} // namespace cogrid

#endif // COGRID_IMPL_DIAL_IPP
