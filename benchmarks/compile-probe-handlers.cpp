// compile-probe-handlers: the second compile-cost figure of benchmarks/README.md — a service's file, which
// declares one unary and one stream handler, serves them on a node and calls them, while the nodes are
// set up elsewhere (compile-probe.cpp does both in one file). CI builds it; time it with the command in
// benchmarks/README.md.
#include <cogrid/stream.hpp>
#include <cogrid/unary.hpp>

#include <string>
#include <utility>

namespace probe {

struct item {
  std::string Text;
  MSGPACK_DEFINE_MAP(Text)
};

const cogrid::unary<item, item> echo{cogrid::handler_id{78}};
const cogrid::bidi_stream<item, item> echo_each{cogrid::handler_id{79}, "each"};

item echo_fn(item i) { return i; }

cogrid::stream_generator<item> each_fn(cogrid::stream_input<item> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

bool serve_all(cogrid::manager& m) { return echo.serve(m, echo_fn) && echo_each.serve(m, each_fn); }

// 0 when both handlers answered over the connections given.
asio::awaitable<int> use(cogrid::connection& a, cogrid::connection& b) {
  const item hello{"hello"};
  auto r = co_await echo.call(a, hello);
  auto s = co_await echo_each.open(b);
  int status = r && r->Text == "hello" && s ? 0 : 1;
  if (s) {
    (void)co_await s->send(hello);
    auto back = co_await s->next();
    if (!back || back->Text != "hello") status = 1;
    (void)s->close_send();
  }
  co_return status;
}

} // namespace probe
