// With service_main.cpp: a service's file in a header-only build. It includes only the handler headers,
// so it compiles the calls, streams and registration but none of a node's life (sessions, handshakes,
// request serving: detail/service.hpp); the program's other file, which runs the nodes, brings those.
#include <cogrid/stream.hpp>
#include <cogrid/unary.hpp>

#if defined(COGRID_IMPL_NODE_IPP) || defined(COGRID_IMPL_SESSION_IPP) || defined(COGRID_IMPL_MANAGER_NODE_IPP) || \
    defined(COGRID_IMPL_MUX_SERVE_IPP) || defined(COGRID_IMPL_STREAM_SERVE_IPP) || defined(COGRID_DETAIL_WEBSOCKET_HPP) || \
    defined(COGRID_DETAIL_HTTP_HPP) || defined(COGRID_DETAIL_TRANSPORT_HPP) || defined(COGRID_TRANSPORT_HPP) ||         \
    defined(ASIO_SSL_CONTEXT_HPP)
#error "the handler headers brought in the definitions of a node's life"
#endif

#include <string>
#include <utility>

namespace service {

struct greeting {
  std::string Name;
  int Count = 0;
  MSGPACK_DEFINE_MAP(Name, Count)
};

const cogrid::unary<greeting, greeting> greet{cogrid::handler_id{91}};
const cogrid::stream<greeting, greeting, greeting> count_up{cogrid::handler_id{92}, "count-up"};

greeting greet_fn(greeting g) {
  g.Name = "hello " + g.Name;
  ++g.Count;
  return g;
}

// Echoes each input with the opening request's count added, then one more message with the total.
cogrid::stream_generator<greeting> count_fn(greeting first, cogrid::stream_input<greeting> in) {
  int total = 0;
  while (auto r = co_await in.next()) {
    total += r->Count;
    r->Count += first.Count;
    co_yield std::move(*r);
  }
  greeting sum{first.Name, total}; // named: GCC 12 destroys a braced temporary in a co_yield twice
  co_yield std::move(sum);
}

std::error_code serve(cogrid::manager& m) {
  if (auto ec = greet.serve(m, greet_fn)) return ec;
  return count_up.serve(m, count_fn);
}

// An empty string when both handlers answered over `c` as they should, else what went wrong.
asio::awaitable<std::string> use(std::shared_ptr<cogrid::connection> c) {
  if (auto ec = co_await c->wait_for_connect()) co_return "not connected: " + ec.message();
  const greeting ada{"ada", 41};
  auto r = co_await greet.call(*c, ada);
  if (!r) co_return "greet failed: " + r.error().message();
  if (r->Name != "hello ada" || r->Count != 42) co_return "greet answered " + r->Name + " " + std::to_string(r->Count);

  const greeting opening{"sum", 100};
  auto s = co_await count_up.open(*c, opening);
  if (!s) co_return "open failed: " + s.error().message();
  for (int i = 1; i <= 3; ++i) {
    const greeting g{"n", i};
    if (auto e = co_await s->send(g)) co_return "send failed: " + e.message();
    auto back = co_await s->next();
    if (!back || back->Count != 100 + i) co_return "echo " + std::to_string(i) + " wrong";
  }
  s->close_send();
  auto total = co_await s->next();
  if (!total || total->Name != "sum" || total->Count != 6) co_return "total wrong";
  if (co_await s->next()) co_return "a message after the total";
  if (s->error()) co_return "stream ended with " + s->error().message();
  if (c->stats().calls_made < 2) co_return "connection counted " + std::to_string(c->stats().calls_made) + " calls";
  co_return std::string();
}

} // namespace service
