// cogrid/detail/service.hpp — the connection and manager classes as a service's file needs them: to
// declare, serve and call handlers. cogrid's own headers include this one, never connection.hpp or
// manager.hpp themselves.
//
// Header-only builds compile every inline definition a file includes. A file that only declares, serves
// and calls handlers (it includes <cogrid/unary.hpp> or <cogrid/stream.hpp>) gets the definitions of
// what it can reach from them: registration, lookups, statistics, waiting for a link, the calls and the
// streams. The definitions of a node's life (a manager's construction, start, listen, accept, attach and
// shutdown, the in-memory network, the TLS contexts, connection::kill, and the sessions, handshakes and
// request serving behind them) come with <cogrid/manager.hpp>, <cogrid/connection.hpp> or
// <cogrid/cogrid.hpp>, which a file that runs a node includes. A file that calls one of those functions
// without including one of those headers is told so by the compiler ("inline function ... used but never
// defined").
#ifndef COGRID_DETAIL_SERVICE_HPP
#define COGRID_DETAIL_SERVICE_HPP

#define COGRID_DETAIL_SERVICE_ONLY
#include <cogrid/connection.hpp>
#include <cogrid/manager.hpp>
#undef COGRID_DETAIL_SERVICE_ONLY

#endif // COGRID_DETAIL_SERVICE_HPP
