// A two-node grid, header-only (no COGRID_SEPARATE_COMPILATION), that calls a unary and a stream handler
// across its link. tests/meson.build builds it twice: on the default reactor (`two-nodes`: the test suites
// build against a separately compiled cogrid, this program runs the header-only build), and on Asio's
// io_uring backend where Asio is recent enough and liburing is there (`io-uring-grid`).
#include <cogrid/cogrid.hpp>
#include <cogrid/testing.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <system_error>

namespace {

struct item {
  std::string Text;
  MSGPACK_DEFINE_MAP(Text)
};

const cogrid::unary<item, item> echo{cogrid::handler_id{78}};
const cogrid::bidi_stream<item, item> each{cogrid::handler_id{79}, "each"};

item echo_fn(item i) { return i; }

cogrid::stream_generator<item> each_fn(cogrid::stream_input<item> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

// Empty when both handlers answered; else what went wrong.
asio::awaitable<std::string> use(std::shared_ptr<cogrid::connection> c) {
  if (auto up = co_await c->wait_for_connect(); !up) co_return "not connected: " + up.error().message();
  const item hello{"hello"};
  auto r = co_await echo.call(*c, hello);
  if (!r) co_return "unary call failed: " + r.error().message();
  if (r->Text != "hello") co_return "unary call answered " + r->Text;
  auto s = co_await each.open(*c);
  if (!s) co_return "stream open failed: " + s.error().message();
  if (auto sent = co_await s->send(hello); !sent) co_return "stream send failed: " + sent.error().message();
  auto back = co_await s->next();
  if (!back) co_return "stream next failed: " + back.error().message();
  if (back->Text != "hello") co_return "stream answered " + back->Text;
  (void)s->close_send();
  auto end = co_await s->next();
  if (end || end.error() != cogrid::errc::end_of_stream) co_return "stream did not end cleanly";
  co_return std::string();
}

asio::awaitable<void> run(cogrid::testing::grid& g, std::string& outcome) {
  try {
    outcome = co_await use(g.link(0, 1));
  } catch (const std::exception& e) {
    outcome = std::string("threw: ") + e.what();
  }
  co_await g.shutdown();
}

} // namespace

int main() {
#if defined(ASIO_HAS_IO_URING_AS_DEFAULT)
  // A kernel or sandbox without io_uring is a skip (77), not a failure.
  try {
    asio::io_context probe;
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "two-nodes: io_uring unavailable here (%s): skipped\n", e.what());
    return 77;
  }
#endif
  asio::io_context io;
  cogrid::testing::grid g(io.get_executor(), 2);
  for (std::size_t i = 0; i < g.size(); ++i)
    if (!echo.serve(g.node(i), echo_fn) || !each.serve(g.node(i), each_fn)) {
      std::fprintf(stderr, "two-nodes: serve failed\n");
      return 1;
    }
  g.start();
  std::string outcome = "did not finish";
  asio::co_spawn(io, run(g, outcome), asio::detached);
  io.run();
  if (!outcome.empty()) {
    std::fprintf(stderr, "two-nodes: %s\n", outcome.c_str());
    return 1;
  }
  return 0;
}
