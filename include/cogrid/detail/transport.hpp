// cogrid/detail/transport.hpp — the transports as the WebSocket and connection code name them.
#ifndef COGRID_DETAIL_TRANSPORT_HPP
#define COGRID_DETAIL_TRANSPORT_HPP

#include <cogrid/transport.hpp>

namespace cogrid::detail {
using cogrid::make_tcp_transport;
using cogrid::make_tls_transport;
using cogrid::stream_transport;
using cogrid::transport;
} // namespace cogrid::detail

#endif // COGRID_DETAIL_TRANSPORT_HPP
