// cogrid/src.hpp — include in exactly one translation unit, with COGRID_SEPARATE_COMPILATION defined in
// every translation unit, to compile cogrid's non-template code once instead of inline everywhere.
#ifndef COGRID_SRC_HPP
#define COGRID_SRC_HPP

#include <cogrid/detail/config.hpp>

#if defined(COGRID_HEADER_ONLY)
#error "Define COGRID_SEPARATE_COMPILATION in every translation unit to compile cogrid/src.hpp"
#endif

#include <cogrid/cogrid.hpp>

#include <cogrid/impl/error.ipp>
#include <cogrid/impl/subroute.ipp>
#include <cogrid/impl/election.ipp>
#include <cogrid/impl/message.ipp>
#include <cogrid/impl/control.ipp>
#include <cogrid/impl/auth.ipp>
#include <cogrid/impl/tls.ipp>
#include <cogrid/impl/process.ipp>
#include <cogrid/impl/metrics.ipp>
#include <cogrid/impl/connection.ipp>
#include <cogrid/impl/manager.ipp>
#include <cogrid/impl/call.ipp>
#include <cogrid/impl/stream.ipp>
#include <cogrid/impl/node.ipp>
#include <cogrid/impl/raft.ipp>

// A node's life, compiled here once (the headers declare it extern).
template struct cogrid::detail::node_impl<void>;

#endif // COGRID_SRC_HPP
