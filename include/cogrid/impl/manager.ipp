// cogrid/impl/manager.ipp — definitions for cogrid/manager.hpp: what a service's file reaches (handler
// registration, lookups, statistics). Construction, listening, the incoming handshakes and shutdown are
// in manager_node.ipp.
#ifndef COGRID_IMPL_MANAGER_IPP
#define COGRID_IMPL_MANAGER_IPP

#include <cogrid/detail/service.hpp>
#include <cogrid/detail/grid_shared.hpp>
#include <cogrid/detail/mux.hpp>
#include <cogrid/detail/wait_channel.hpp>

namespace cogrid {
namespace detail {

struct manager_state : std::enable_shared_from_this<manager_state> {
  asio::any_io_executor ex;
  std::shared_ptr<grid_shared> shared;
  std::shared_ptr<asio::ssl::context> tls_server;
  std::chrono::milliseconds max_http_time_skew{};
  std::map<std::string, std::shared_ptr<cogrid::connection>, std::less<>> conns;
  std::shared_ptr<mux_core> mux;
  std::shared_ptr<message_sink> sink; // hands the connections' messages to `mux`

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
  }

  inline bool begin_incoming(); // counts an incoming handshake; false once stopping (impl/manager_node.ipp)
  inline void end_incoming();   // ends one; the last one after shutdown() began signals `drained`
};

} // namespace detail

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

COGRID_DECL std::error_code manager::register_unary(handler_id h, raw_unary_handler fn) {
  return state_->mux->register_unary(h, std::nullopt, {}, std::move(fn));
}

COGRID_DECL std::error_code manager::register_unary(handler_id h, std::string_view route, raw_unary_handler fn) {
  return state_->mux->register_unary(h, make_subroute_id(h, route), route, std::move(fn));
}

COGRID_DECL std::error_code manager::register_unary(handler_id h, sync_unary_handler fn) {
  return state_->mux->register_unary(h, std::nullopt, {}, std::move(fn));
}

COGRID_DECL std::error_code manager::register_unary(handler_id h, std::string_view route, sync_unary_handler fn) {
  return state_->mux->register_unary(h, make_subroute_id(h, route), route, std::move(fn));
}

COGRID_DECL std::error_code manager::register_stream(handler_id h, detail::stream_entry e) {
  return state_->mux->register_stream(h, std::nullopt, {}, std::move(e));
}

COGRID_DECL std::error_code manager::register_stream(handler_id h, std::string_view route, detail::stream_entry e) {
  return state_->mux->register_stream(h, make_subroute_id(h, route), route, std::move(e));
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
