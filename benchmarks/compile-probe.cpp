// compile-probe: the compile-cost figure of benchmarks/README.md — a translation unit that declares,
// serves and calls one unary handler and one stream handler, as a user's file would. Built by CI (it
// must compile and run); time it with the command in benchmarks/README.md.
#include <cogrid/cogrid.hpp>
#include <cogrid/testing.hpp>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include <cstdio>

namespace {

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

asio::awaitable<int> run(cogrid::testing::grid& g) {
  g.start();
  if (!co_await g.wait_all_connected()) co_return 1;
  const item hello{"hello"};
  auto r = co_await echo.call(*g.link(0, 1), hello);
  auto s = co_await echo_each.open(*g.link(1, 0));
  int status = r && r->Text == "hello" && s ? 0 : 1;
  if (s) {
    (void)co_await s->send(hello);
    auto back = co_await s->next();
    if (!back || back->Text != "hello") status = 1;
    (void)s->close_send();
  }
  co_await g.shutdown();
  co_return status;
}

} // namespace

int main() {
  asio::io_context io;
  cogrid::testing::grid g(io.get_executor(), 2);
  for (std::size_t i = 0; i < 2; ++i) {
    if (!echo.serve(g.node(i), echo_fn) || !echo_each.serve(g.node(i), each_fn)) return 2;
  }
  int status = 2;
  asio::co_spawn(io, run(g), [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  io.run();
  std::printf("compile-probe: %s\n", status == 0 ? "ok" : "failed");
  return status;
}
