// cogrid/impl/node.ipp — a node's life (detail/node.hpp): the class template node_impl, which a
// manager's constructor instantiates: a connection's dial loop, the sessions it runs (session.ipp) and
// its dials (dial.ipp), and a manager's listeners and incoming handshakes (accept.ipp).
#ifndef COGRID_IMPL_NODE_IPP
#define COGRID_IMPL_NODE_IPP

#include <cogrid/manager.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/manager_state.hpp>
#include <cogrid/detail/node.hpp>
#include <cogrid/impl/accept.ipp>
#include <cogrid/impl/dial.ipp>
#include <cogrid/impl/session.ipp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace cogrid::detail {

// A random pause in [lo, hi). `rng` belongs to the connection and is used on its strand only (no
// thread_local: clang 16 may cache a thread_local's address across a co_await, see README).
inline std::chrono::milliseconds jitter(std::minstd_rand& rng, std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
  if (hi <= lo) return lo;
  return lo + std::chrono::milliseconds(rng() % static_cast<std::uint64_t>((hi - lo).count()));
}

} // namespace cogrid::detail

namespace cogrid {

template <class Tag>
void connection::adopt(std::unique_ptr<detail::ws_stream> ws, node_id remote_id) {
  // Runs on the strand; the WebSocket arrives from the acceptor's coroutine.
  auto self = shared_from_this();
  auto holder = std::make_shared<std::unique_ptr<detail::ws_stream>>(std::move(ws));
  asio::post(strand_, [self, holder, remote_id] {
    if (self->stopping_) {
      (*holder)->lower().close();
      return;
    }
    if (self->current_) self->current_->fail(make_error_code(errc::disconnected)); // replaced
    const std::uint64_t id = self->session_id_.load() + 1;
    auto s = std::make_shared<detail::session>(*self, id, std::move(*holder), remote_id);
    asio::co_spawn(self->strand_, run_session<Tag>(self, s), asio::detached);
  });
}

template <class Tag>
asio::awaitable<void> connection::dial_loop(std::shared_ptr<connection> self) {
  // Whatever ends the loop, shutdown() waits for loop_done_: an exception that escaped a step is logged,
  // and the loop's end is marked all the same.
  try {
    while (!self->stopping_) {
      if (self->process_) {
        co_await process_round<Tag>(self);
        continue;
      }
      if (self->attached_only_ && !self->attached_) {
        // This connection runs over streams handed to attach(): nothing to dial until the next one.
        self->set_state(connection_state::error);
        self->retry_timer_.expires_at(detail::steady::time_point::max());
        std::error_code wait_ec;
        co_await self->retry_timer_.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
        continue;
      }
      self->set_state(connection_state::connecting);
      const auto started = detail::steady::now();
      const result<void> dialed = co_await dial_and_serve<Tag>(self);
      if (self->stopping_) break; // (shutdown cancelled the dial: no co_await from here on)
      if (dialed) continue;       // redial at once after a session ends, as MinIO does
      {
        std::lock_guard lk(self->st_mu_);
        ++self->st_.dial_failures;
      }
      self->set_state(connection_state::error);
      co_await retry_pause(self, started);
    }
  } catch (const std::exception& e) {
    self->dialing_ = false;
    self->log(log_level::error, std::string("dial loop ended by an exception: ") + e.what());
  }
  self->dial_loop_running_ = false;
  self->loop_done_.cancel();
}

template <class Tag>
asio::awaitable<void> connection::process_round(std::shared_ptr<connection> self) {
  // One process: started, its handshake run (as the dialer or the acceptor, as the election says), its
  // session served, its end awaited and reported; then the pause of a failed dial, counted from the start.
  const auto started = detail::steady::now();
  const std::shared_ptr<const process_spec> spec = self->process_;
  std::uint64_t connects_before;
  {
    std::lock_guard lk(self->st_mu_);
    connects_before = self->st_.connects;
  }
  self->set_state(connection_state::connecting);
  const std::string token = !spec->token_env.empty() && self->shared_->auth.token ? self->shared_->auth.token() : std::string();
  result<std::unique_ptr<process_transport>> spawned = spawn_process(self->strand_, *spec, token);
  std::string outcome;
  if (!spawned) {
    outcome = spawned.error().message();
  } else {
    const std::shared_ptr<detail::child_process> child = (*spawned)->child();
    if (self->dialer_) {
      self->attached_ = std::move(*spawned);
      (void)co_await dial_and_serve<Tag>(self); // a failed handshake is told by the process's end below
    } else if (const auto home = self->process_home_.lock()) {
      self->shared_->node->accept(home, std::move(*spawned)); // the remote dials us over its pipes
    } else {
      (*spawned)->close();
    }
    if (self->stopping_) {
      child->terminate();
      co_return;
    }
    const result<process_exit> ended = co_await child->wait(); // a session over it ends with it
    if (self->stopping_ || !ended) {
      child->terminate();
      co_return;
    }
    outcome = "process " + std::to_string(ended->pid) + " (" + spec->argv[0] + ") " + ended->describe();
  }
  bool linked;
  {
    std::lock_guard lk(self->st_mu_);
    linked = self->st_.connects > connects_before;
    if (!linked) ++self->st_.dial_failures;
  }
  self->log(linked ? log_level::info : log_level::warning, outcome);
  self->set_last_error(outcome);
  if (!linked) self->note_refusal(outcome);
  self->set_state(connection_state::error);
  co_await retry_pause(self, started);
}

template <class Tag>
asio::awaitable<result<void>> connection::dial_and_serve(std::shared_ptr<connection> self) {
  // One handshake over a new transport and, when it succeeds, the session it opens, to its end. After
  // shutdown cancelled the dial, nothing more is awaited.
  std::unique_ptr<detail::ws_stream> ws;
  node_id rid;
  self->dialing_ = true;
  const result<void> dialed = co_await self->template dial_once<Tag>(ws, rid);
  self->dialing_ = false;
  if (self->stopping_ || !dialed) co_return dialed;
  const std::uint64_t id = self->session_id_.load() + 1;
  auto s = std::make_shared<detail::session>(*self, id, std::move(ws), rid);
  co_await run_session<Tag>(self, s);
  co_return dialed;
}

inline asio::awaitable<void> connection::retry_pause(std::shared_ptr<connection> self, std::chrono::steady_clock::time_point started) {
  // A random 1-2 s (by default), counted from the start of the failed attempt; shutdown cancels it.
  const auto wait = detail::jitter(self->rng_, self->shared_->opt.reconnect_min, self->shared_->opt.reconnect_max);
  self->retry_timer_.expires_at(started + wait);
  std::error_code wait_ec;
  co_await self->retry_timer_.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
}

template <class Tag>
asio::awaitable<void> connection::run_session(std::shared_ptr<connection> self, std::shared_ptr<detail::session> s) {
  if (self->stopping_) {
    s->ws->lower().close();
    co_return;
  }
  self->current_ = s;
  self->session_id_.store(s->id, std::memory_order_release);
  {
    std::lock_guard lk(self->st_mu_);
    const bool had = self->st_.connects > 0;
    ++self->st_.connects;
    if (had) ++self->st_.reconnects;
    if (had && !(self->remote_id_ == s->remote_id)) ++self->st_.remote_restarts;
    self->remote_id_ = s->remote_id;
    self->identity_ = s->ws->lower().identity();
    self->st_.last_connect = std::chrono::system_clock::now();
    self->st_.last_pong = self->st_.last_connect;
  }
  {
    // What this session may send: a cogrid peer said what it takes; a MinIO peer said nothing, and is
    // held to this node's own limit and sent no pieces.
    const connection_options& opt = self->shared_->opt;
    const detail::grid_limits& told = s->ws->peer_limits;
    detail::send_limits limits;
    limits.max_payload = told.max_message != 0 ? told.max_message : opt.max_message_bytes;
    limits.piece = told.piece != 0 && opt.piece_bytes != 0 ? std::min(told.piece, opt.piece_bytes) : 0;
    limits.window = opt.piece_window_bytes;
    limits.large_crc = opt.large_payload_crc;
    self->out_.open(s->id, limits, told.max_message != 0 ? "of the remote" : "of this node (the remote did not say its own)");
    if (opt.piece_bytes != 0) s->ws->keep_bytes = std::max(s->ws->keep_bytes, opt.piece_bytes + (64u << 10));
  }
  s->ws->on_control_output = [c = self.get()] { c->out_.wake_writer(detail::handoff::continuation); };
  self->log(log_level::info, "connected (session " + std::to_string(s->id) + ", remote " + s->remote_id.to_string() + ")");
  self->set_state(connection_state::connected);

  std::weak_ptr<detail::session_join> join;
  {
    auto j = std::make_shared<detail::session_join>();
    join = j;
    asio::co_spawn(self->strand_, detail::session::read_loop<Tag>(s), detail::session_loop_done{s, j});
    asio::co_spawn(self->strand_, detail::session::write_loop<Tag>(s), detail::session_loop_done{s, j});
    asio::co_spawn(self->strand_, detail::session::health_loop<Tag>(s), detail::session_loop_done{s, std::move(j)});
  }
  detail::session_loops_wait wait_loops{std::move(join)};
  co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(std::move(wait_loops),
                                                                                     asio::use_awaitable);
  self->template end_session<Tag>(*s);
}

template <class Tag>
void connection::end_session(detail::session& s) {
  const std::size_t dropped = out_.close(s.id);
  s.ws->on_control_output = nullptr;
  {
    std::lock_guard lk(st_mu_);
    st_.dropped_on_disconnect += dropped;
    st_.last_error = "session ended: " + s.why_text;
  }
  log(log_level::info, "session " + std::to_string(s.id) + " ended: " + s.why_text);
  if (current_.get() == &s) {
    current_.reset();
    session_done_.cancel();
    set_state(stopping_ ? connection_state::shutdown : connection_state::error);
  }
  if (message_sink* sink = shared_->sink.load(std::memory_order_acquire)) sink->on_session_end(*this, s.id, s.why);
}

template <class Tag>
asio::awaitable<void> connection::shutdown_on_strand(std::shared_ptr<connection> c) {
  c->stopping_ = true;
  {
    std::lock_guard lk(c->mux_->mu); // the calls' deadline timer: nothing to wait for any more
    c->mux_->deadline_timer.cancel();
    c->mux_->timer_at = detail::steady::time_point::max();
  }
  c->retry_timer_.cancel();
  if (c->dialing_) c->dial_cancel_.emit(asio::cancellation_type::terminal); // a dial in progress ends now
  if (c->current_) c->current_->fail(make_error_code(errc::shutdown));
  if (c->dial_loop_running_) {
    std::error_code ec;
    co_await c->loop_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  // A session still winding down (acceptor side) ends on its own once failed; end_session signals.
  while (c->current_) {
    std::error_code ec;
    c->session_done_.expires_at(detail::steady::time_point::max());
    co_await c->session_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  c->set_state(connection_state::shutdown);
}

} // namespace cogrid

namespace cogrid::detail {

template <class Tag>
struct node_impl final : node_ops {
  void start(connection& c) const override {
    asio::post(c.strand_, [self = c.shared_from_this()] {
      if (self->started_ || self->stopping_) return;
      self->started_ = true;
      if (self->dialer_) {
        self->dial_loop_running_ = true;
        asio::co_spawn(self->strand_, connection::dial_loop<Tag>(self), asio::bind_cancellation_slot(self->dial_cancel_.slot(), asio::detached));
      }
    });
  }

  void kill(connection& c) const override {
    asio::post(c.strand_, [self = c.shared_from_this()] {
      if (self->current_) self->current_->fail(make_error_code(errc::disconnected));
    });
  }

  void attach(connection& c, std::unique_ptr<transport> t) const override {
    auto holder = std::make_shared<std::unique_ptr<transport>>(std::move(t));
    asio::post(c.strand_, [self = c.shared_from_this(), holder] {
      if (self->stopping_) {
        (*holder)->close();
        return;
      }
      if (self->attached_) self->attached_->close(); // an earlier stream that was never used
      self->attached_ = std::move(*holder);
      self->attached_only_ = true;
      if (self->dial_loop_running_) {
        self->retry_timer_.cancel(); // waiting between attempts or for a stream: go now
        return;
      }
      self->started_ = true;
      self->dial_loop_running_ = true;
      asio::co_spawn(self->strand_, connection::dial_loop<Tag>(self), asio::bind_cancellation_slot(self->dial_cancel_.slot(), asio::detached));
    });
  }

  void attach_process(connection& c, const std::shared_ptr<manager_state>& st, std::shared_ptr<const process_spec> spec) const override {
    asio::post(c.strand_, [self = c.shared_from_this(), home = std::weak_ptr<manager_state>(st), spec = std::move(spec)] {
      if (self->stopping_) return;
      self->process_ = spec;
      self->process_home_ = home;
      if (self->dial_loop_running_) {
        self->retry_timer_.cancel(); // waiting between attempts: go now
        return;
      }
      self->started_ = true;
      self->dial_loop_running_ = true;
      asio::co_spawn(self->strand_, connection::dial_loop<Tag>(self), asio::bind_cancellation_slot(self->dial_cancel_.slot(), asio::detached));
    });
  }

  asio::awaitable<void> shutdown(connection& c) const override {
    // Onto the strand for the state changes.
    return asio::co_spawn(c.strand_, connection::shutdown_on_strand<Tag>(c.shared_from_this()), asio::use_awaitable);
  }

  void listen(const std::shared_ptr<manager_state>& st, asio::ip::tcp::acceptor acceptor) const override {
    auto strand = make_strand_executor(st->ex);
    auto acc = std::make_shared<asio::ip::tcp::acceptor>(strand);
    const auto protocol = acceptor.local_endpoint().protocol(); // before release(): argument order is unspecified
    acc->assign(protocol, acceptor.release());
    {
      std::lock_guard lk(st->mu);
      if (st->stopping) return;
      st->acceptors.push_back(acc);
    }
    asio::co_spawn(strand, accept_loop<Tag>(st, acc), asio::detached);
  }

  result<void> listen(const std::shared_ptr<manager_state>& st) const override {
    const auto& u = st->shared->local_url;
    std::error_code ec;
    asio::ip::tcp::resolver resolver(st->ex);
    auto results = resolver.resolve(u.host, std::to_string(u.port), ec);
    if (ec) return ec;
    for (const auto& r : results) {
      asio::ip::tcp::acceptor acc(st->ex);
      acc.open(r.endpoint().protocol(), ec);
      if (ec) continue;
      acc.set_option(asio::socket_base::reuse_address(true), ec);
      acc.bind(r.endpoint(), ec);
      if (ec) continue;
      acc.listen(asio::socket_base::max_listen_connections, ec);
      if (ec) continue;
      listen(st, std::move(acc));
      return {};
    }
    return ec ? ec : make_error_code(errc::invalid_value);
  }

  void accept(const std::shared_ptr<manager_state>& st, asio::ip::tcp::socket socket) const override {
    if (!st->begin_incoming()) return;
    // Move the socket onto a strand of its own for the handshake.
    auto strand = make_strand_executor(st->ex);
    asio::ip::tcp::socket s(strand);
    if (rehome(socket, s)) {
      st->end_incoming();
      return;
    }
    asio::co_spawn(strand, serve_incoming<Tag>(st, std::move(s)), asio::detached);
  }

    void accept(const std::shared_ptr<manager_state>& st, asio::ip::tcp::socket socket, upgrade_request request,
              std::vector<std::byte> leftover) const override {
    if (!st->begin_incoming()) return;
    auto strand = make_strand_executor(st->ex);
    asio::ip::tcp::socket s(strand);
    std::string peer = peer_of(socket);
    if (rehome(socket, s)) {
      st->end_incoming();
      return;
    }
    http_request req;
    req.method = std::move(request.method);
    req.target = std::move(request.target);
    req.version = std::move(request.version);
    req.headers = std::move(request.headers);
    asio::co_spawn(strand, serve_upgrade<Tag>(st, make_tcp_transport(std::move(s)), std::move(req),
                                                 std::move(leftover), std::move(peer)), asio::detached);
  }

  void accept(const std::shared_ptr<manager_state>& st, std::unique_ptr<transport> t) const override { accept_transport<Tag>(st, std::move(t)); }

  asio::awaitable<void> shutdown(std::shared_ptr<manager_state> st) const override {
    std::vector<std::shared_ptr<asio::ip::tcp::acceptor>> accs;
    std::shared_ptr<wait_channel> drained;
    {
      std::lock_guard lk(st->mu);
      st->stopping = true;
      accs.swap(st->acceptors);
      if (st->inflight > 0) {
        drained = std::make_shared<wait_channel>(co_await asio::this_coro::executor, 1);
        st->drained = drained;
      }
    }
    for (auto& a : accs) asio::post(a->get_executor(), [a] { std::error_code ec; a->close(ec); });
    for (auto& c : st->all()) co_await shutdown(*c);
    if (drained) {
      std::error_code ec;
      co_await drained->async_receive(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  /// The acceptor side hands a handshaken WebSocket to its connection.
  static void adopt(connection& c, std::unique_ptr<ws_stream> ws, node_id remote_id) { c.template adopt<Tag>(std::move(ws), remote_id); }
};

template <class Tag>
const node_ops& node_of() {
  static const node_impl<Tag> instance;
  return instance;
}

} // namespace cogrid::detail

#endif // COGRID_IMPL_NODE_IPP
