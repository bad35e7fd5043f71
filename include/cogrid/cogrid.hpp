// cogrid/cogrid.hpp — everything cogrid offers, in one include.
//
// cogrid is a header-only C++20 coroutine framework for the calls cluster nodes make to each other,
// wire-compatible with MinIO's grid protocol (route v1).
#ifndef COGRID_COGRID_HPP
#define COGRID_COGRID_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/version.hpp>
#include <cogrid/error.hpp>
#include <cogrid/result.hpp>
#include <cogrid/subroute.hpp>
#include <cogrid/election.hpp>
#include <cogrid/message.hpp>
#include <cogrid/control.hpp>
#include <cogrid/auth.hpp>
#include <cogrid/options.hpp>
#include <cogrid/stats.hpp>
#include <cogrid/metrics.hpp>
#include <cogrid/transport.hpp>
#include <cogrid/process.hpp>
#include <cogrid/tls.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/io_pool.hpp>
#include <cogrid/call.hpp>
#include <cogrid/unary.hpp>
#include <cogrid/stream.hpp>
#include <cogrid/bulk.hpp>
#include <cogrid/raft.hpp>

#endif // COGRID_COGRID_HPP
