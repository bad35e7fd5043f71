// A connection's outgoing queue (detail/outbox.hpp): large payloads leave in pieces from their own buffer,
// small pieces are encoded into the queue, and the buffer of a payload sent is kept for the next payload
// that arrives in pieces, until the link idles.
#include <cogrid/detail/outbox.hpp>
#include <cogrid/message.hpp>

#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

using cogrid::message;
using cogrid::msg_flags;
using cogrid::op_code;
using cogrid::detail::outbox;
using cogrid::detail::send_limits;

namespace {

message request(std::uint64_t mux, const std::vector<std::byte>& payload) {
  message m;
  m.mux_id = mux;
  m.op = op_code::request;
  m.flags = msg_flags::crc;
  m.payload = std::span<const std::byte>(payload);
  return m;
}

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 13 + (i >> 11));
  return v;
}

} // namespace

TEST_SUITE("outbox") {
  TEST_CASE("a large payload moved in leaves piece by piece from its own buffer, which becomes the spare") {
    constexpr std::size_t piece = 256u << 10, size = 8u << 20;
    outbox out(100);
    out.open(1, send_limits{64u << 20, piece, 0}, "of this node");
    std::vector<std::byte> body = pattern(size);
    const std::vector<std::byte> want = body;
    const std::byte* const at = body.data();
    REQUIRE(out.push(request(5, body), false, cogrid::detail::handoff::continuation, &body));
    CHECK(body.empty()); // moved, not copied

    std::vector<std::byte> buf;
    std::vector<std::size_t> ends;
    outbox::piece p;
    std::size_t sent = 0;
    while (sent < size) {
      buf.clear();
      ends.clear();
      out.take(buf, ends, false, p);
      REQUIRE(p);
      CHECK(ends.empty()); // the piece is not copied into the queue
      CHECK(p.size == piece);
      CHECK(p.data == at + sent); // written from where the payload is
      REQUIRE(p.head.payload);
      CHECK(p.head.payload->data() == p.data);
      CHECK(p.head.mux_id == 5);
      CHECK(cogrid::has(p.head.flags, msg_flags::more) == (sent + piece < size));
      CHECK(std::equal(p.data, p.data + p.size, want.begin() + static_cast<std::ptrdiff_t>(sent)));
      CHECK(out.take_spare().capacity() == 0); // nothing kept while the payload is still being sent
      sent += p.size;
      out.written(p);
      CHECK(!p);
    }
    buf.clear();
    ends.clear();
    out.take(buf, ends, false, p);
    CHECK(!p);
    CHECK(ends.empty());

    std::vector<std::byte> spare = out.take_spare();
    CHECK(spare.data() == at); // the sent payload's memory, for the next payload that arrives in pieces
    CHECK(spare.capacity() >= size);
    CHECK(spare.empty());
    CHECK(out.take_spare().capacity() == 0); // taken once
  }

  TEST_CASE("the spare goes when the link idles (shrink) and when the session closes") {
    constexpr std::size_t piece = 256u << 10, size = 5u << 20;
    for (const bool by_close : {false, true}) {
      CAPTURE(by_close);
      outbox out(100);
      out.open(1, send_limits{64u << 20, piece, 0}, "of this node");
      std::vector<std::byte> body = pattern(size);
      REQUIRE(out.push(request(7, body), false, cogrid::detail::handoff::continuation, &body));
      std::vector<std::byte> buf;
      std::vector<std::size_t> ends;
      outbox::piece p;
      for (std::size_t sent = 0; sent < size; sent += piece) {
        out.take(buf, ends, false, p);
        REQUIRE(p);
        out.written(p);
      }
      if (by_close) CHECK(out.close(1) == 0);
      else out.shrink(256u << 10);
      CHECK(out.take_spare().capacity() == 0);
    }
  }

  TEST_CASE("large data to a cogrid node goes without the CRC trailer unless large_crc says so") {
    std::vector<std::byte> buf;
    std::vector<std::size_t> ends;
    outbox::piece p;
    // The one message queued in `out`, decoded: its flags and payload.
    auto take_one = [&](outbox& out) {
      buf.clear();
      ends.clear();
      out.take(buf, ends, false, p);
      REQUIRE(!p);
      REQUIRE(ends.size() == 1);
      auto m = cogrid::decode(std::span<const std::byte>(buf.data(), ends[0]));
      REQUIRE(m);
      return *m;
    };
    for (const bool large_crc : {false, true}) {
      CAPTURE(large_crc);
      // Pieces encoded into the queue (16 KiB, under the in-place size) of a 72 KiB payload.
      outbox out(100);
      out.open(1, send_limits{64u << 20, 16u << 10, 0, large_crc}, "of this node");
      std::vector<std::byte> body = pattern(72u << 10);
      const std::vector<std::byte> want = body;
      REQUIRE(out.push(request(3, body), false, cogrid::detail::handoff::continuation, &body));
      std::vector<std::byte> got;
      for (int i = 0; i < 5; ++i) { // 4 x 16 KiB + 8 KiB
        const message m = take_one(out);
        CHECK(cogrid::has(m.flags, msg_flags::crc) == large_crc);
        CHECK(cogrid::has(m.flags, msg_flags::more) == (i < 4));
        got.insert(got.end(), m.payload->begin(), m.payload->end());
      }
      CHECK(got == want);

      // Pieces written in place (256 KiB): the frame's trailer follows the same flags.
      outbox big(100);
      big.open(1, send_limits{64u << 20, 256u << 10, 0, large_crc}, "of this node");
      std::vector<std::byte> large = pattern(1u << 20);
      REQUIRE(big.push(request(4, large), false, cogrid::detail::handoff::continuation, &large));
      for (int i = 0; i < 4; ++i) {
        buf.clear();
        ends.clear();
        big.take(buf, ends, false, p);
        REQUIRE(p);
        CHECK(cogrid::has(p.head.flags, msg_flags::crc) == large_crc);
        CHECK(cogrid::detail::encode_split(p.head).tail_size == (large_crc ? 4u : 0u)); // the frame's CRC trailer
        big.written(p);
      }

      // Whole messages under the piece size: from 64 KiB on they are large data, below they keep the CRC.
      const std::vector<std::byte> chunk = pattern(64u << 10), small = pattern((64u << 10) - 1);
      REQUIRE(big.push(request(8, chunk), false, cogrid::detail::handoff::continuation));
      const message c = take_one(big);
      CHECK(cogrid::has(c.flags, msg_flags::crc) == large_crc);
      CHECK(std::equal(c.payload->begin(), c.payload->end(), chunk.begin(), chunk.end()));
      REQUIRE(big.push(request(9, small), false, cogrid::detail::handoff::continuation));
      CHECK(cogrid::has(take_one(big).flags, msg_flags::crc));

      // A whole message of 64 KiB queued in the large lane behind a payload of its call in pieces (to
      // keep the call's order) follows the same rule when it leaves from there.
      std::vector<std::byte> first = pattern(300u << 10);
      REQUIRE(big.push(request(10, first), false, cogrid::detail::handoff::continuation, &first));
      REQUIRE(big.push(request(10, chunk), false, cogrid::detail::handoff::continuation));
      for (int i = 0; i < 2; ++i) { // its pieces: 256 KiB in place, then 44 KiB encoded
        buf.clear();
        ends.clear();
        big.take(buf, ends, false, p);
        if (p) big.written(p);
      }
      buf.clear();
      ends.clear();
      big.take(buf, ends, false, p); // 64 KiB: written in place too
      REQUIRE(p);
      CHECK(!cogrid::has(p.head.flags, msg_flags::more));
      CHECK(p.size == chunk.size());
      CHECK(cogrid::has(p.head.flags, msg_flags::crc) == large_crc);
      CHECK(cogrid::detail::encode_split(p.head).tail_size == (large_crc ? 4u : 0u));
      big.written(p);

      // A payload under 64 KiB cut into 16 KiB pieces is not large data: its pieces keep the CRC.
      std::vector<std::byte> modest = pattern(40u << 10);
      REQUIRE(out.push(request(11, modest), false, cogrid::detail::handoff::continuation, &modest));
      for (int i = 0; i < 3; ++i) CHECK(cogrid::has(take_one(out).flags, msg_flags::crc));
    }
    // A peer that takes no pieces (a MinIO node): large payloads go whole, with the link's CRC.
    outbox whole(100);
    whole.open(1, send_limits{64u << 20, 0, 0, false}, "of this node");
    std::vector<std::byte> body = pattern(1u << 20);
    REQUIRE(whole.push(request(6, body), false, cogrid::detail::handoff::continuation, &body));
    const message m = take_one(whole);
    CHECK(cogrid::has(m.flags, msg_flags::crc));
    CHECK(!cogrid::has(m.flags, msg_flags::more));
    CHECK(m.payload->size() == (1u << 20));
  }

  TEST_CASE("a payload given up half way is not kept; small pieces are encoded into the queue") {
    outbox out(100);
    out.open(1, send_limits{64u << 20, 16u << 10, 0}, "of this node"); // pieces under the in-place size
    std::vector<std::byte> body = pattern(6u << 20);
    const message m = request(9, body);
    REQUIRE(out.push(m, false, cogrid::detail::handoff::continuation, &body));
    std::vector<std::byte> buf;
    std::vector<std::size_t> ends;
    outbox::piece p;
    out.take(buf, ends, false, p);
    CHECK(!p);
    REQUIRE(ends.size() == 1); // one piece of 16 KiB, encoded
    const auto first = cogrid::decode(std::span<const std::byte>(buf.data(), ends[0]));
    REQUIRE(first);
    CHECK(first->payload->size() == (16u << 10));
    CHECK(cogrid::has(first->flags, msg_flags::more));
    out.cancel_flow(9, op_code::request);
    buf.clear();
    ends.clear();
    out.take(buf, ends, false, p);
    CHECK(!p);
    CHECK(ends.empty());
    CHECK(out.take_spare().capacity() == 0);
  }
}
