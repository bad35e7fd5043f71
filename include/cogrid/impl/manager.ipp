// cogrid/impl/manager.ipp — definitions for cogrid/manager.hpp: a node's construction, its listeners,
// accepting and attaching byte streams, handler registration, statistics and shutdown; the in-memory
// network; the TLS contexts. The incoming handshake is in accept.ipp.
#ifndef COGRID_IMPL_MANAGER_IPP
#define COGRID_IMPL_MANAGER_IPP

#include <cogrid/manager.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/manager_state.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/impl/accept.ipp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <openssl/rand.h>

#include <set>

namespace cogrid {

COGRID_DECL manager::manager(asio::any_io_executor ex, manager_options o)
    : manager(std::vector<asio::any_io_executor>{std::move(ex)}, std::move(o)) {}

COGRID_DECL manager::manager(std::vector<asio::any_io_executor> executors, manager_options o)
    : state_(std::make_shared<detail::manager_state>()) {
  auto invalid = [](const std::string& what) { throw exception(error(errc::invalid_value, what)); };
  if (executors.empty()) invalid("a manager needs at least one executor");
  if (!o.auth.token || !o.auth.validate) invalid("manager_options.auth needs a token and a validate function");
  std::size_t seen_local = 0, local_index = 0;
  for (std::size_t i = 0; i < o.hosts.size(); ++i) {
    detail::host_url u;
    if (detail::parse_host_url(o.hosts[i], u)) invalid("malformed host: " + o.hosts[i]);
    if (o.hosts[i] == o.local) {
      ++seen_local;
      local_index = i;
    }
  }
  if (seen_local != 1) invalid("local host must appear exactly once in hosts: " + o.local);
  auto& st = *state_;
  st.ex = executors.front();
  st.executors = std::move(executors);
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
  st.shared->resolve = std::move(o.resolve);
  st.shared->trace = std::move(o.trace);
  st.tls_server = std::move(o.tls_server);
  st.max_http_time_skew = o.max_http_time_skew;
  st.mux = std::make_shared<detail::mux_core>(st.executors, st.shared->metrics);
  st.shared->sink.store(st.mux.get(), std::memory_order_release);
  const std::size_t n = st.executors.size();
  std::size_t k = 0; // the remote's position among the remotes
  for (const auto& h : o.hosts) {
    if (h == o.local || st.conns.count(h)) continue;
    const std::size_t at = (k++ + local_index) % n;
    std::shared_ptr<cogrid::connection> c(new cogrid::connection(st.shared, h, st.executors[at], at));
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

COGRID_DECL result<void> manager::listen() {
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
  asio::co_spawn(strand, detail::serve_upgrade(state_, make_tcp_transport(std::move(s)), std::move(req),
                                               std::move(leftover), std::move(peer)), asio::detached);
}

COGRID_DECL void manager::accept(std::unique_ptr<transport> t) { detail::accept_transport(state_, std::move(t)); }

COGRID_DECL result<void> manager::attach(std::string_view remote, std::unique_ptr<transport> t) {
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


COGRID_DECL manager::~manager() = default;

COGRID_DECL const node_id& manager::id() const noexcept { return state_->shared->id; }
COGRID_DECL const std::string& manager::local() const noexcept { return state_->shared->local; }

COGRID_DECL std::shared_ptr<cogrid::connection> manager::connection(std::string_view host) const {
  auto it = state_->conns.find(host);
  return it == state_->conns.end() ? nullptr : it->second;
}

COGRID_DECL std::vector<std::shared_ptr<cogrid::connection>> manager::connections() const {
  std::vector<std::shared_ptr<cogrid::connection>> out;
  for (const auto& [h, c] : state_->conns) out.push_back(c);
  return out;
}

COGRID_DECL rejection_counts manager::rejections() const {
  std::lock_guard lk(state_->mu);
  return state_->rejected;
}

namespace detail {
inline result<void> add_unary(manager_state& st, handler_id h, std::string_view route, raw_unary_handler fn, sync_unary_handler sync) {
  handler_entry e;
  e.kind = handler_kind::unary;
  e.fn = std::move(fn);
  e.sync = std::move(sync);
  std::optional<subroute_id> sub;
  if (!route.empty()) sub = make_subroute_id(h, route);
  return st.mux->handlers().add(h, sub, route, std::move(e), st.mux->metrics());
}
} // namespace detail

COGRID_DECL result<void> manager::register_unary(handler_id h, raw_unary_handler fn) {
  return detail::add_unary(*state_, h, {}, std::move(fn), {});
}

COGRID_DECL result<void> manager::register_unary(handler_id h, std::string_view route, raw_unary_handler fn) {
  return detail::add_unary(*state_, h, route, std::move(fn), {});
}

COGRID_DECL result<void> manager::register_unary(handler_id h, sync_unary_handler fn) {
  return detail::add_unary(*state_, h, {}, {}, std::move(fn));
}

COGRID_DECL result<void> manager::register_unary(handler_id h, std::string_view route, sync_unary_handler fn) {
  return detail::add_unary(*state_, h, route, {}, std::move(fn));
}

COGRID_DECL std::vector<handler_stats> manager::handler_statistics() const { return state_->shared->metrics.snapshot(); }

COGRID_DECL std::vector<connection_stats> manager::connection_statistics() const {
  std::vector<connection_stats> out;
  out.reserve(state_->conns.size());
  for (const auto& [h, c] : state_->conns) out.push_back(c->stats());
  return out;
}

COGRID_DECL std::string manager::prometheus() const {
  return render_prometheus(state_->shared->local, connection_statistics(), handler_statistics());
}

COGRID_DECL void manager::set_sink(message_sink* sink) noexcept { state_->shared->sink.store(sink, std::memory_order_release); }
} // namespace cogrid

#endif // COGRID_IMPL_MANAGER_IPP
