// With service_handlers.cpp: the file that runs the nodes (it includes everything) calls into a service's
// file that includes only the handler headers; the program links and both handlers work across it.
// A handler header comes first here: the node's definitions must still come with the headers after it.
#include <cogrid/unary.hpp>
#include <cogrid/cogrid.hpp>
#include <cogrid/testing.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <system_error>

namespace service {
std::error_code serve(cogrid::manager& m);
asio::awaitable<std::string> use(std::shared_ptr<cogrid::connection> c);
} // namespace service

namespace {

asio::awaitable<void> run(cogrid::testing::grid& g, std::string& outcome) {
  try {
    outcome = co_await service::use(g.link(0, 1));
  } catch (const std::exception& e) {
    outcome = std::string("threw: ") + e.what();
  }
  co_await g.shutdown();
}

} // namespace

int main() {
#if defined(ASIO_HAS_IO_URING_AS_DEFAULT)
  // Built a second time on Asio's io_uring backend (tests/meson.build): a kernel or sandbox without
  // io_uring is a skip (77), not a failure.
  try {
    asio::io_context probe;
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "service-split: io_uring unavailable here (%s): skipped\n", e.what());
    return 77;
  }
#endif
  asio::io_context io;
  cogrid::testing::grid g(io.get_executor(), 2);
  if (auto ec = service::serve(g.node(1))) {
    std::fprintf(stderr, "service-split: serve failed: %s\n", ec.message().c_str());
    return 1;
  }
  g.start();
  std::string outcome = "did not finish";
  asio::co_spawn(io, run(g, outcome), asio::detached);
  io.run();
  if (!outcome.empty()) {
    std::fprintf(stderr, "service-split: %s\n", outcome.c_str());
    return 1;
  }
  return 0;
}
