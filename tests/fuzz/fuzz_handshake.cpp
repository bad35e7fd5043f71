// tests/fuzz/fuzz_handshake.cpp — libFuzzer target: the input is everything a remote sends to a node that
// accepts it (the HTTP upgrade, then WebSocket frames: the connect exchange and whatever follows), fed
// through an in-memory pipe into manager::accept. The node must answer or refuse, never crash, leak or
// hang: everything ends once the input has ended (the check: the io_context runs out of work within 5 s,
// and the manager shuts down). Seeds that pass the handshake drive the connection's reader too.
#include "fuzz_check.hpp"
#include "fuzz_net.hpp"

#include <cogrid/manager.hpp>
#include <cogrid/stream.hpp>
#include <cogrid/unary.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace {

struct echo_fn {
  cogrid::payload operator()(cogrid::payload p) const { return p; }
};

cogrid::stream_generator<cogrid::payload> echo_gen(cogrid::payload, cogrid::stream_input<cogrid::payload> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

asio::awaitable<void> feed(cogrid::transport& t, std::vector<std::byte> bytes) {
  std::error_code ec;
  co_await t.write_all(asio::buffer(bytes), ec);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace std::chrono_literals;
  asio::io_context io;
  cogrid::manager_options o;
  o.local = fuzz::acceptor;
  o.hosts = {fuzz::acceptor, fuzz::dialer()};
  o.auth = cogrid::static_token_auth(fuzz::token);
  o.connection = cogrid::connection_options::for_tests();
  o.connection.max_clock_skew = std::chrono::hours(24 * 365 * 100); // seeds carry fixed times
  o.max_http_time_skew = std::chrono::hours(24 * 365 * 100);
  o.connection.max_message_bytes = 1u << 20;
  cogrid::manager m(io.get_executor(), o);
  if (!cogrid::unary_raw{cogrid::handler_id{78}}.serve(m, echo_fn{}) ||
      !cogrid::bidi_stream_raw(cogrid::handler_id{78}, "echo", cogrid::stream_capacity{1, 1}).serve(m, echo_gen))
    fuzz::fail("registering the handlers failed", "");
  auto [ours, theirs] = cogrid::make_memory_pipe(io.get_executor(), "fuzz-node", "fuzzer");
  m.accept(std::move(theirs));
  const auto* p = reinterpret_cast<const std::byte*>(data);
  asio::co_spawn(io, feed(*ours, std::vector<std::byte>(p, p + size)), asio::detached);
  while (io.poll() > 0) {
  } // the node has taken in all it could of the input (timers aside)
  ours->close(); // the end of the input: everything must wind down now
  io.restart();
  asio::co_spawn(io, m.shutdown(), asio::detached);
  io.run_for(5s);
  FUZZ_CHECK(io.stopped(), "the node did not finish with a connection whose input had ended");
  return 0;
}
