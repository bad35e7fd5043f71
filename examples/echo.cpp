// echo: the smallest cogrid program. Two nodes in one process on loopback (ports chosen by the OS):
// both serve the echo handler; node A calls node B once and prints the answer.
#include <cogrid/cogrid.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include <cstdio>

struct echo_msg {
  std::string Text;
  MSGPACK_DEFINE_MAP(Text)
};
// The same handler declaration on every node: id 1, request and response types.
inline const cogrid::unary<echo_msg, echo_msg> echo{cogrid::handler_id{1}};

asio::awaitable<int> call_b(cogrid::manager& a, cogrid::manager& b) {
  int status = 1;
  auto conn = a.connection(b.local());
  if (auto up = co_await conn->wait_for_connect(); !up) {
    std::printf("not connected: %s\n", up.error().message().c_str());
  } else {
    echo_msg req{"hello, grid"};
    cogrid::result<echo_msg> r = co_await echo.call(*conn, req);
    if (r) std::printf("%s answered: %s\n", b.local().c_str(), r->Text.c_str()), status = 0;
    else std::printf("call failed: %s\n", r.error().message().c_str());
  }
  co_await a.shutdown();
  co_await b.shutdown();
  co_return status;
}

int main() {
  asio::io_context io;
  // Listeners first, on ports the OS picks; the host list is made from them.
  asio::ip::tcp::acceptor la(io, {asio::ip::make_address("127.0.0.1"), 0}), lb(io, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string host_a = "http://127.0.0.1:" + std::to_string(la.local_endpoint().port());
  const std::string host_b = "http://127.0.0.1:" + std::to_string(lb.local_endpoint().port());
  cogrid::manager_options o;
  o.hosts = {host_a, host_b};
  o.auth = cogrid::static_token_auth("a shared secret");
  o.local = host_a;
  cogrid::manager a(io.get_executor(), o);
  o.local = host_b;
  cogrid::manager b(io.get_executor(), o);
  for (cogrid::manager* m : {&a, &b}) {
    if (!echo.serve(*m, [](echo_msg req) { return req; })) return 1; // the handler: returns its request
    m->start(); // dials the peers the election makes it dial
  }
  a.listen(std::move(la));
  b.listen(std::move(lb));
  int status = 1;
  asio::co_spawn(io, call_b(a, b), [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  io.run();
  return status;
}
