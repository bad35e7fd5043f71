// The per-connection call table (id_map), the per-thread memory caches (block_cache, buffer_cache) and
// the hand-offs that use them (hand_off).
#include <cogrid/detail/handoff.hpp>
#include <cogrid/detail/id_map.hpp>
#include <cogrid/detail/pool.hpp>

#include <asio/io_context.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <vector>

using cogrid::detail::block_cache;
using cogrid::detail::exact_target;
using cogrid::detail::hand_off;
using cogrid::detail::handoff;
using cogrid::detail::buffer_cache;
using cogrid::detail::id_map;
using cogrid::detail::pool_allocator;

TEST_SUITE("pool") {
  TEST_CASE("id_map: put, find, take, replace") {
    id_map<std::shared_ptr<int>> m;
    CHECK(m.find(1) == nullptr);
    CHECK(m.take(1) == nullptr);
    m.put(1, std::make_shared<int>(10));
    m.put(2, std::make_shared<int>(20));
    REQUIRE(m.find(1));
    CHECK(**m.find(1) == 10);
    CHECK(m.size() == 2);
    m.put(1, std::make_shared<int>(11)); // replaces
    CHECK(m.size() == 2);
    CHECK(**m.find(1) == 11);
    auto v = m.take(1);
    REQUIRE(v);
    CHECK(*v == 11);
    CHECK(m.find(1) == nullptr);
    CHECK(m.size() == 1);
    m.put(0, std::make_shared<int>(0)); // id 0 is an ordinary key (a hostile peer may send it)
    CHECK(**m.find(0) == 0);
    CHECK(m.size() == 2);
  }

  TEST_CASE("id_map: agrees with std::map under random operations (collisions, backward shifts, growth, shrink)") {
    id_map<std::uint64_t> m;
    std::map<std::uint64_t, std::uint64_t> ref;
    std::mt19937_64 rng(42);
    for (int round = 0; round < 200'000; ++round) {
      // Keys from a small range collide often; sequential-looking ones are what mux ids look like.
      const std::uint64_t key = (rng() % 2) ? rng() % 512 : 1'000'000 + rng() % 4096;
      switch (rng() % 3) {
      case 0:
      case 1: {
        const std::uint64_t val = rng() | 1;
        m.put(key, val);
        ref[key] = val;
        break;
      }
      default: {
        const std::uint64_t got = m.take(key);
        auto it = ref.find(key);
        CHECK(got == (it == ref.end() ? 0 : it->second));
        if (it != ref.end()) ref.erase(it);
      }
      }
      if (round % 10'000 == 0) {
        REQUIRE(m.size() == ref.size());
        for (auto& [k, v] : ref) {
          const std::uint64_t* f = m.find(k);
          REQUIRE(f);
          CHECK(*f == v);
        }
      }
    }
    // Drain: every remaining key comes out once, and the table then finds nothing.
    std::size_t seen = 0;
    m.for_each([&](std::uint64_t k, std::uint64_t v) {
      ++seen;
      CHECK(ref.at(k) == v);
    });
    CHECK(seen == ref.size());
    for (auto& [k, v] : ref) CHECK(m.take(k) == v);
    CHECK(m.empty());
    for (auto& [k, v] : ref) CHECK(m.find(k) == nullptr);
  }

  TEST_CASE("block_cache: a freed block is handed out again; a block freed on another thread is kept there") {
    using cache = block_cache<64>;
    void* a = cache::take();
    cache::give(a);
    void* b = cache::take();
    CHECK(a == b); // the same memory, not the heap's
    cache::give(b);

    void* c = cache::take();
    std::thread t([c] {
      cache::give(c);            // joins this thread's cache
      CHECK(cache::take() == c); // and is reused here
      cache::give(c);
    });
    t.join(); // the thread's cache is freed when it exits (ASan would report a leak)
  }

  TEST_CASE("pool_allocator: allocate_shared objects reuse their blocks") {
    struct call_state {
      std::uint64_t a = 1, b = 2;
      std::vector<int> v;
    };
    const void* first = nullptr;
    {
      auto p = std::allocate_shared<call_state>(pool_allocator<call_state>());
      first = p.get();
      CHECK(p->b == 2);
    }
    auto q = std::allocate_shared<call_state>(pool_allocator<call_state>());
    CHECK(q.get() == first);
  }

  TEST_CASE("buffer_cache: buffers come back with their capacity; huge ones are not kept") {
    std::vector<std::byte> v = buffer_cache::take();
    v.resize(1000);
    const std::byte* mem = v.data();
    buffer_cache::give(std::move(v));
    std::vector<std::byte> w = buffer_cache::take();
    CHECK(w.empty());
    CHECK(w.capacity() >= 1000);
    CHECK(w.data() == mem);

    const std::byte src[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
    buffer_cache::give(std::move(w));
    std::vector<std::byte> copy = buffer_cache::copy(src, 3);
    CHECK(copy.size() == 3);
    CHECK(copy[2] == std::byte{3});
    CHECK(copy.data() == mem);

    std::vector<std::byte> big(buffer_cache::max_capacity + 1);
    buffer_cache::give(std::move(big));
    std::vector<std::byte> next = buffer_cache::take();
    CHECK(next.capacity() <= buffer_cache::max_capacity); // the large one was freed, not cached
    std::optional<std::vector<std::byte>> none;
    buffer_cache::give(std::move(none)); // nil payloads are ignored
  }

  TEST_CASE("exact_target: recognises only the executor type held (Asio 1.22's target<T>() does not check)") {
    asio::io_context io;
    using plain = asio::io_context::executor_type;
    const asio::any_io_executor on_io = io.get_executor();
    const asio::any_io_executor on_strand = asio::make_strand(io.get_executor());
    CHECK(exact_target<plain>(on_io) != nullptr);
    CHECK(exact_target<asio::strand<plain>>(on_io) == nullptr);
    CHECK(exact_target<plain>(on_strand) == nullptr);
    CHECK(exact_target<asio::strand<plain>>(on_strand) != nullptr);
    CHECK(exact_target<plain>(asio::any_io_executor()) == nullptr);
    asio::thread_pool pool(1);
    CHECK(exact_target<plain>(asio::any_io_executor(pool.get_executor())) == nullptr);
    pool.join();
  }

  TEST_CASE("hand_off: runs later, on the executor given (a strand's function inside its strand)") {
    asio::io_context io;
    auto strand = asio::make_strand(io.get_executor());
    const asio::any_io_executor on_strand = strand;
    const asio::any_io_executor on_io = io.get_executor();
    asio::thread_pool other(1); // neither an io_context nor a strand of one: Asio's own path
    const asio::any_io_executor on_other = other.get_executor();
    int in_strand = 0, on_io_ran = 0, order = 0, other_ran = 0;
    bool inline_run = false;
    asio::post(io, [&] {
      hand_off(on_strand, [&] { in_strand += strand.running_in_this_thread() ? 1 : 100; order = order * 10 + 2; }, handoff::continuation);
      hand_off(on_io, [&] { ++on_io_ran; order = order * 10 + 3; }, handoff::continuation);
      hand_off(on_other, [&] { ++other_ran; }, handoff::continuation);
      inline_run = in_strand != 0 || on_io_ran != 0; // never run inside the call
      order = 1;
    });
    io.run();
    other.join();
    CHECK(!inline_run);
    CHECK(in_strand == 1);
    CHECK(on_io_ran == 1);
    CHECK(other_ran == 1);
    CHECK(order == 123);
  }

  // The connection-hostage bug: a continuation onto a strand went to the posting thread's private queue,
  // and user code that went on running after a hand-off (a stream's next() returning a credit, a
  // cancel()) held every handler of that strand (a connection's reader, writer and timers) until it
  // returned. A hand-off made inside a user's operation is a fresh post, which another thread takes at once.
  TEST_CASE("hand_off: a fresh hand-off is run by another thread while the poster keeps busy") {
    asio::io_context io(2);
    auto work = asio::make_work_guard(io);
    const asio::any_io_executor on_strand = asio::make_strand(io.get_executor());
    std::atomic<bool> ran{false};
    bool ran_during = false;
    asio::post(io, [&] {
      hand_off(on_strand, [&] { ran = true; }, handoff::fresh);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!ran.load() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
      ran_during = ran.load();
      work.reset();
    });
    std::thread t([&] { io.run(); });
    io.run();
    t.join();
    CHECK(ran_during);
  }

  TEST_CASE("hand_off: a continuation waits for the running handler") {
    asio::io_context io(2);
    auto work = asio::make_work_guard(io);
    const asio::any_io_executor on_strand = asio::make_strand(io.get_executor());
    std::atomic<bool> ran{false};
    bool ran_during = true;
    asio::post(io, [&] {
      hand_off(on_strand, [&] { ran = true; work.reset(); }, handoff::continuation);
      // A continuation sits in this thread's private queue until this handler returns: the other thread,
      // idle in run(), cannot take it meanwhile.
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
      while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
      ran_during = ran.load();
    });
    std::thread t([&] { io.run(); });
    io.run();
    t.join();
    CHECK_FALSE(ran_during);
    CHECK(ran.load());
  }
}
