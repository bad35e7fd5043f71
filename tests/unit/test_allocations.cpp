// The codec's hot path allocates nothing: encoding into a reused buffer, decoding, reading and building
// merged containers. Counted with a replaced global operator new (a count, not a timing).
#include <cogrid/message.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

namespace {
std::atomic<long> allocations{0};
}

void* operator new(std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace cogrid;

TEST_SUITE_BEGIN("allocations");

TEST_CASE("steady-state encode, decode, merge and merged read allocate nothing") {
  const std::vector<std::byte> payload(512, std::byte{7});
  const subroute_id sub = make_subroute_id(handler_id{78}, "some-subroute");
  std::vector<std::byte> wire, container;
  wire.reserve(4096);
  container.reserve(64 * 1024);
  std::byte fixed[1024];

  auto round = [&](std::uint64_t i) {
    message m;
    m.mux_id = i;
    m.seq = static_cast<std::uint32_t>(i);
    m.op = op_code::request;
    m.flags = msg_flags::crc | msg_flags::eof;
    m.payload = std::span(payload);
    m.subroute = sub;
    wire.clear();
    REQUIRE(encode_append(m, wire));
    REQUIRE(encode(m, fixed));
    const auto d = decode(wire);
    REQUIRE(d);
    merge_builder mb(container);
    for (int k = 0; k < 50; ++k) REQUIRE(mb.add(m));
    REQUIRE(mb.add(std::span<const std::byte>(wire)));
    std::size_t n = 0;
    REQUIRE(for_each_message(mb.finish(), [&](const message& x) { n += x.payload->size(); }));
    REQUIRE(n == 51 * payload.size());
  };

  round(1); // warm-up: the vectors reach their steady capacity
  const long before = allocations.load();
  for (std::uint64_t i = 0; i < 1000; ++i) round(i);
  CHECK(allocations.load() - before == 0);
}

TEST_SUITE_END();
