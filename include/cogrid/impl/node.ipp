// cogrid/impl/node.ipp — header-only builds: the definitions of a node's life, brought in by
// <cogrid/connection.hpp> and <cogrid/manager.hpp> (see detail/service.hpp).
#ifndef COGRID_IMPL_NODE_IPP
#define COGRID_IMPL_NODE_IPP

#include <cogrid/impl/session.ipp>
#include <cogrid/impl/manager_node.ipp>
#include <cogrid/impl/mux_serve.ipp>
#include <cogrid/impl/stream_serve.ipp>

#endif // COGRID_IMPL_NODE_IPP
