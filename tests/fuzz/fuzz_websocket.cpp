// tests/fuzz/fuzz_websocket.cpp — libFuzzer target: the WebSocket receive path. The first input byte picks
// the role (even: a server reading a client's masked frames; odd: a client reading a server's frames);
// the rest arrives over an in-memory pipe and is read message by message as a connection's reader does
// (ws_stream::read_message, then for_each_message over each message), until the first error. Every
// message must respect the size limit, every error must be a cogrid or transport error, and reading
// must end once the input has.
#include "fuzz_check.hpp"

#include <cogrid/detail/websocket.hpp>
#include <cogrid/message.hpp>
#include <cogrid/transport.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace {

constexpr std::size_t limit = 64 * 1024;

asio::awaitable<void> read_all(std::unique_ptr<cogrid::transport> t, cogrid::detail::ws_role role, bool* done) {
  cogrid::detail::ws_stream ws(std::move(t), role, cogrid::detail::ws_limits{16 * 1024, limit});
  std::vector<std::byte> msg;
  for (;;) {
    const std::error_code ec = co_await ws.read_message(msg);
    if (ec) {
      FUZZ_CHECK(ec.category() == cogrid::error_category() || ec.category() == asio::error::get_misc_category() ||
                     ec.category() == asio::error::get_system_category(),
                 "unexpected error category: " + ec.message());
      break;
    }
    FUZZ_CHECK(msg.size() <= limit, "a message over the limit was delivered");
    std::size_t items = 0;
    (void)cogrid::for_each_message(msg, [&](const cogrid::message&) { ++items; });
  }
  *done = true;
}

asio::awaitable<void> feed(cogrid::transport& t, std::vector<std::byte> bytes) {
  std::error_code ec;
  co_await t.write_all(asio::buffer(bytes), ec);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto role = (data[0] & 1) ? cogrid::detail::ws_role::client : cogrid::detail::ws_role::server;
  asio::io_context io;
  auto [reader_end, writer_end] = cogrid::make_memory_pipe(io.get_executor());
  bool done = false;
  asio::co_spawn(io, read_all(std::move(reader_end), role, &done), asio::detached);
  const auto* p = reinterpret_cast<const std::byte*>(data + 1);
  asio::co_spawn(io, feed(*writer_end, std::vector<std::byte>(p, p + size - 1)), asio::detached);
  while (io.poll() > 0) {
  } // everything readable has been read
  writer_end->close(); // then the end of the stream
  io.restart();
  io.run_for(std::chrono::seconds(5));
  FUZZ_CHECK(done && io.stopped(), "reading did not end after the input ended");
  return 0;
}
