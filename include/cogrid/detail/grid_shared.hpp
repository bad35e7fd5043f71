// cogrid/detail/grid_shared.hpp — what a manager shares with its connections.
#ifndef COGRID_DETAIL_GRID_SHARED_HPP
#define COGRID_DETAIL_GRID_SHARED_HPP

#include <cogrid/auth.hpp>
#include <cogrid/control.hpp>
#include <cogrid/metrics.hpp>
#include <cogrid/options.hpp>
#include <cogrid/detail/transport_base.hpp>
#include <cogrid/detail/url.hpp>

#include <atomic>
#include <memory>
#include <string>

namespace cogrid {
class message_sink;
namespace detail {

struct grid_shared {
  std::string local;
  host_url local_url;
  node_id id;
  authenticator auth;
  std::string route;
  connection_options opt;
  std::shared_ptr<asio::ssl::context> tls_client; // for https:// remotes
  log_sink log;
  transport_dialer dialer; // empty: TCP (and TLS for https://)
  trace_hook trace;        // empty: no per-call trace
  metrics_registry metrics;
  std::atomic<message_sink*> sink{nullptr};
};

} // namespace detail
} // namespace cogrid

#endif // COGRID_DETAIL_GRID_SHARED_HPP
