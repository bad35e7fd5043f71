// cogrid/detail/service.hpp — the connection and manager classes as a service's file needs them: to
// declare, serve and call handlers. cogrid's headers include this one, never connection.hpp or
// manager.hpp themselves, except cogrid.hpp and testing.hpp (which are meant to bring everything).
//
// Header-only builds compile every inline definition a file includes. A file that only declares, serves
// and calls handlers (it includes <cogrid/unary.hpp> or <cogrid/stream.hpp>) gets the definitions of
// what it can reach from them: registration, lookups, statistics, waiting for a link, the calls and the
// streams, destroying a manager. The definitions of a node's life (a manager's construction, start,
// listen, accept, attach and shutdown, the in-memory network, the TLS contexts, connection::kill, and the
// sessions, handshakes and request serving behind them) come with <cogrid/manager.hpp>,
// <cogrid/connection.hpp> or <cogrid/cogrid.hpp>, which a file that runs a node includes; so do the
// transports (<cogrid/transport.hpp>) and Asio's TLS context. A file that calls one of those functions
// without including one of those headers gets a compiler warning (GCC: "inline function ... used but
// never defined"; clang: -Wundefined-inline), an error with -Werror; it links only if another file of
// the program happened to emit the function.
//
// Two rules keep the split sound. A function defined here (the light side) calls nothing defined only
// with a node's life. Every virtual function of a class a service's file sees is defined on the light
// side, since a class's virtual functions are odr-used wherever the class is defined: so mux_core is not
// itself the manager's message_sink (a node-side mux_sink forwards to it), and connection::abandon and
// what it calls are light. The service-split test checks the first with -Werror.
#ifndef COGRID_DETAIL_SERVICE_HPP
#define COGRID_DETAIL_SERVICE_HPP

#define COGRID_DETAIL_SERVICE_ONLY
#include <cogrid/connection.hpp>
#include <cogrid/manager.hpp>
#undef COGRID_DETAIL_SERVICE_ONLY

#endif // COGRID_DETAIL_SERVICE_HPP
