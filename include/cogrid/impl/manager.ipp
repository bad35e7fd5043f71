// cogrid/impl/manager.ipp — definitions for cogrid/manager.hpp: a node's construction, its listeners,
// accepting and attaching byte streams, handler registration, statistics and shutdown; the in-memory
// network; the TLS contexts. The incoming handshake is in accept.ipp.
#ifndef COGRID_IMPL_MANAGER_IPP
#define COGRID_IMPL_MANAGER_IPP

#include <cogrid/manager.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/manager_state.hpp>
#include <cogrid/detail/mux.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <openssl/rand.h>

#include <set>

namespace cogrid {

namespace detail {
// A new link to `host`. The k-th remote runs on executors[(k + local_index) % n], so that in a process
// holding several nodes the two ends of a link run on different executors.
inline std::shared_ptr<cogrid::connection> make_link(manager_state& st, const std::string& host) {
  const std::size_t at = (st.placed++ + st.local_index) % st.executors.size();
  return connection_access::create(st.shared, host, st.executors[at], at);
}
} // namespace detail

COGRID_DECL manager::manager(const detail::node_ops& node, std::vector<asio::any_io_executor> executors, manager_options o)
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
  st.shared->node = &node;
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
  st.on_rejected = std::move(o.on_rejected);
  st.mux = std::make_shared<detail::mux_core>(st.executors, st.shared->metrics);
  st.shared->sink.store(st.mux.get(), std::memory_order_release);
  st.local_index = local_index;
  for (const auto& h : o.hosts) {
    if (h == o.local || st.conns.count(h)) continue;
    st.conns.emplace(h, detail::make_link(st, h));
  }
}


COGRID_DECL result<void> manager::add_host(std::string host) {
  detail::host_url u;
  if (detail::parse_host_url(host, u)) return error(errc::invalid_value, "add_host: malformed host: " + host);
  if (host == state_->shared->local) return error(errc::invalid_value, "add_host: " + host + " is this node");
  std::shared_ptr<cogrid::connection> c;
  bool start_now = false;
  {
    // Checked under the lock: shutdown() sets `stopping` before it takes the links to end them, so a
    // link added here is either among those or refused.
    std::lock_guard lk(state_->conns_mu);
    if (state_->stopping.load()) return error(errc::shutdown);
    if (state_->conns.count(host)) return error(errc::invalid_value, "add_host: " + host + " is a host of this grid already");
    c = detail::make_link(*state_, host);
    state_->conns.emplace(host, c);
    start_now = state_->started;
  }
  if (start_now) state_->shared->node->start(*c);
  return {};
}

COGRID_DECL asio::awaitable<result<void>> manager::remove_host(std::string host) {
  std::shared_ptr<cogrid::connection> c;
  {
    std::lock_guard lk(state_->conns_mu);
    auto it = state_->conns.find(host);
    if (it == state_->conns.end()) co_return error(errc::unknown_host, "remove_host: " + host + " is not a host of this grid");
    c = std::move(it->second);
    state_->conns.erase(it);
  }
  co_await state_->shared->node->shutdown(*c);
  co_return result<void>();
}

COGRID_DECL void manager::start() {
  {
    std::lock_guard lk(state_->conns_mu);
    state_->started = true;
  }
  for (const auto& c : state_->all()) state_->shared->node->start(*c);
}

COGRID_DECL void manager::listen(asio::ip::tcp::acceptor acceptor) { state_->shared->node->listen(state_, std::move(acceptor)); }

COGRID_DECL result<void> manager::listen() { return state_->shared->node->listen(state_); }

COGRID_DECL void manager::accept(asio::ip::tcp::socket socket) { state_->shared->node->accept(state_, std::move(socket)); }

COGRID_DECL void manager::accept(asio::ip::tcp::socket socket, upgrade_request request, std::vector<std::byte> leftover) {
  state_->shared->node->accept(state_, std::move(socket), std::move(request), std::move(leftover));
}

COGRID_DECL void manager::accept(std::unique_ptr<transport> t) { state_->shared->node->accept(state_, std::move(t)); }

COGRID_DECL result<void> manager::attach(std::string_view remote, std::unique_ptr<transport> t) {
  auto c = state_->find(remote);
  if (!c) {
    if (t) t->close();
    return make_error_code(errc::unknown_host);
  }
  if (!t) return make_error_code(errc::invalid_value);
  if (c->dialer()) state_->shared->node->attach(*c, std::move(t));
  else accept(std::move(t));
  return {};
}

COGRID_DECL result<void> manager::attach_process(std::string_view remote, process_spec spec) {
  auto c = state_->find(remote);
  if (!c) return make_error_code(errc::unknown_host);
  if (spec.argv.empty() || spec.argv[0].empty()) return error(errc::invalid_value, "attach_process: the command is empty");
  state_->shared->node->attach_process(*c, state_, std::make_shared<const process_spec>(std::move(spec)));
  return {};
}

COGRID_DECL asio::awaitable<void> manager::shutdown() { return state_->shared->node->shutdown(state_); }

struct memory_network::state {
  mutable std::mutex mu;
  std::map<std::string, std::weak_ptr<detail::manager_state>, std::less<>> nodes;
  std::set<std::string, std::less<>> down;
  std::set<std::pair<std::string, std::string>> cut;     // {a, b}, a < b: no link between them
  std::set<std::pair<std::string, std::string>> one_way; // {from, to}: from's bytes to `to` are lost
  bool all_cut = false;
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
    if (!target || down.count(remote) || down.count(local) || all_cut || cut.count(pair(local, remote))) return nullptr;
    // End 0 (the dialer's) reads dir[0] and writes dir[1].
    pipe->dir[1].dropped = one_way.count({local, remote}) != 0;
    pipe->dir[0].dropped = one_way.count({remote, local}) != 0;
    std::erase_if(links, [](const link& l) { return l.pipe.expired(); });
    links.push_back({local, remote, pipe});
    ++dials;
    return target;
  }

  static std::pair<std::string, std::string> pair(std::string_view a, std::string_view b) {
    return a < b ? std::pair{std::string(a), std::string(b)} : std::pair{std::string(b), std::string(a)};
  }

  // Under mu: the live pipes between a and b (every pipe when `any`); only those losing bytes one way
  // when `lossy`.
  std::vector<std::shared_ptr<detail::memory_link>> pipes(std::string_view a, std::string_view b, bool any, bool lossy) {
    std::vector<std::shared_ptr<detail::memory_link>> out;
    for (auto& l : links)
      if (any || (l.a == a && l.b == b) || (l.a == b && l.b == a))
        if (auto p = l.pipe.lock()) {
          if (lossy) {
            std::lock_guard plk(p->mu);
            if (!p->dir[0].dropped && !p->dir[1].dropped) continue;
          }
          out.push_back(std::move(p));
        }
    return out;
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
    target->shared->node->accept(target, std::move(ends.second));
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

COGRID_DECL void memory_network::disconnect(std::string_view a, std::string_view b) {
  std::vector<std::shared_ptr<detail::memory_link>> cut;
  {
    std::lock_guard lk(st_->mu);
    st_->cut.insert(state::pair(a, b));
    cut = st_->pipes(a, b, false, false);
  }
  for (auto& p : cut) detail::sever(*p);
}

COGRID_DECL void memory_network::disconnect_one_way(std::string_view from, std::string_view to) {
  std::lock_guard lk(st_->mu);
  st_->one_way.emplace(std::string(from), std::string(to));
  for (auto& l : st_->links)
    if (auto p = l.pipe.lock()) {
      std::lock_guard plk(p->mu);
      if (l.a == from && l.b == to) p->dir[1].dropped = true;
      else if (l.a == to && l.b == from) p->dir[0].dropped = true;
    }
}

COGRID_DECL void memory_network::disconnect_all() {
  std::vector<std::shared_ptr<detail::memory_link>> cut;
  {
    std::lock_guard lk(st_->mu);
    st_->all_cut = true;
    cut = st_->pipes({}, {}, true, false);
  }
  for (auto& p : cut) detail::sever(*p);
}

COGRID_DECL void memory_network::reconnect(std::string_view a, std::string_view b) {
  std::vector<std::shared_ptr<detail::memory_link>> lossy;
  {
    std::lock_guard lk(st_->mu);
    st_->cut.erase(state::pair(a, b));
    st_->one_way.erase({std::string(a), std::string(b)});
    st_->one_way.erase({std::string(b), std::string(a)});
    lossy = st_->pipes(a, b, false, true);
  }
  for (auto& p : lossy) detail::sever(*p);
}

COGRID_DECL void memory_network::reconnect_all() {
  std::vector<std::shared_ptr<detail::memory_link>> lossy;
  {
    std::lock_guard lk(st_->mu);
    st_->all_cut = false;
    st_->cut.clear();
    st_->one_way.clear();
    lossy = st_->pipes({}, {}, true, true);
  }
  for (auto& p : lossy) detail::sever(*p);
}

COGRID_DECL std::uint64_t memory_network::dials() const {
  std::lock_guard lk(st_->mu);
  return st_->dials;
}

COGRID_DECL manager::~manager() = default;

COGRID_DECL const node_id& manager::id() const noexcept { return state_->shared->id; }
COGRID_DECL const std::string& manager::local() const noexcept { return state_->shared->local; }

COGRID_DECL std::shared_ptr<cogrid::connection> manager::connection(std::string_view host) const {
  return state_->find(host);
}

COGRID_DECL std::vector<std::shared_ptr<cogrid::connection>> manager::connections() const { return state_->all(); }

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

COGRID_DECL bool manager::serves(handler_id h) const noexcept { return state_->mux->handlers().contains(h); }

COGRID_DECL result<void> manager::authorize(handler_id h, authorize_hook fn) {
  return state_->mux->handlers().authorize(h, std::nullopt, std::move(fn));
}

COGRID_DECL result<void> manager::authorize(handler_id h, std::string_view route, authorize_hook fn) {
  return state_->mux->handlers().authorize(h, make_subroute_id(h, route), std::move(fn));
}

COGRID_DECL std::vector<handler_stats> manager::handler_statistics() const { return state_->shared->metrics.snapshot(); }

COGRID_DECL std::vector<connection_stats> manager::connection_statistics() const {
  std::vector<connection_stats> out;
  for (const auto& c : state_->all()) out.push_back(c->stats());
  return out;
}

COGRID_DECL std::string manager::prometheus() const {
  return render_prometheus(state_->shared->local, connection_statistics(), handler_statistics());
}

COGRID_DECL void manager::set_sink(message_sink* sink) noexcept { state_->shared->sink.store(sink, std::memory_order_release); }
} // namespace cogrid

#endif // COGRID_IMPL_MANAGER_IPP
