#include <cogrid/message.hpp>
#include <cogrid/detail/xxh3.hpp>

#include "bytes.hpp"

#include <doctest/doctest.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <vector>

using namespace cogrid;
using cogrid_test::bytes_of;
using cogrid_test::concat;
using cogrid_test::hex;
using cogrid_test::to_hex;

TEST_SUITE_BEGIN("message");

namespace {

std::vector<std::byte> enc(const message& m) {
  std::vector<std::byte> out;
  REQUIRE(encode_append(m, out));
  return out;
}

// Field-by-field equality as a decoder sees it (payload_is_zero and subroute bits follow the fields).
void check_same(const message& got, const message& want) {
  CHECK(got.mux_id == want.mux_id);
  CHECK(got.seq == want.seq);
  CHECK(got.deadline_ms == want.deadline_ms);
  CHECK(got.handler == want.handler);
  CHECK(got.op == want.op);
  const msg_flags derived = msg_flags::payload_is_zero | msg_flags::subroute;
  CHECK((got.flags & ~derived) == (want.flags & ~derived));
  REQUIRE(got.payload.has_value() == want.payload.has_value());
  if (want.payload) {
    CHECK(got.payload->size() == want.payload->size());
    CHECK(std::equal(got.payload->begin(), got.payload->end(), want.payload->begin(), want.payload->end()));
  }
  CHECK(got.subroute == want.subroute);
}

message worked_example() {
  message m;
  m.mux_id = 1;
  m.seq = 0;
  m.deadline_ms = 60000;
  m.handler = handler_id{78};
  m.op = op_code::request;
  m.flags = msg_flags::crc | msg_flags::eof;
  m.payload = bytes_of("hi");
  return m;
}

const auto worked_bytes = hex("97 01 00 cd ea 60 4e 0e 03 c4 02 68 69 ea be 91 c7");

} // namespace

TEST_CASE("the worked example of grid-protocol.md 1.11, byte for byte") {
  const message m = worked_example();
  CHECK(to_hex(enc(m)) == to_hex(worked_bytes));
  CHECK(encoded_size(m) == worked_bytes.size());
  CHECK(crc32_xxh3(std::span(worked_bytes).first(13)) == 0xc791beeau); // low 32 bits of 0xce9063acc791beea

  const result<message> d = decode(worked_bytes);
  REQUIRE(d);
  check_same(*d, m);
  CHECK(d->flags == (msg_flags::crc | msg_flags::eof));
  CHECK(to_string(*d) == "OpRequest mux=1 seq=0 deadline=60000ms handler=78 flags=CRC|EOF payload=2B");
}

TEST_CASE("encode into a caller buffer: exact size, and too small is an error that writes nothing past it") {
  const message m = worked_example();
  std::vector<std::byte> buf(64, std::byte{0xee});
  const result<std::size_t> n = encode(m, buf);
  REQUIRE(n);
  CHECK(*n == worked_bytes.size());
  CHECK(std::equal(worked_bytes.begin(), worked_bytes.end(), buf.begin()));
  CHECK(buf[*n] == std::byte{0xee});

  std::vector<std::byte> small(worked_bytes.size() - 1, std::byte{0xee});
  const result<std::size_t> e = encode(m, small);
  CHECK(e.error() == errc::buffer_too_small);
  CHECK(std::all_of(small.begin(), small.end(), [](std::byte b) { return b == std::byte{0xee}; }));
}

TEST_CASE("round trip of every op with every flag combination and payload shape") {
  const std::vector<std::byte> big(70000, std::byte{0x5a});   // bin32
  const std::vector<std::byte> mid(300, std::byte{0xa5});     // bin16
  const std::string_view small = "payload";                   // bin8
  const std::vector<std::optional<std::span<const std::byte>>> payloads = {
      std::nullopt, std::span<const std::byte>(), bytes_of(small), std::span(mid), std::span(big)};
  const subroute_id sub = make_subroute_id(handler_id{9}, "a/b");
  const msg_flags free_flags[] = {msg_flags::crc, msg_flags::eof, msg_flags::stateless, msg_flags::payload_is_err};
  int cases = 0;
  for (int op = 1; op <= 17; ++op) {
    for (unsigned combo = 0; combo < 16; ++combo) {
      msg_flags f = msg_flags::none;
      for (unsigned bit = 0; bit < 4; ++bit)
        if (combo & (1u << bit)) f |= free_flags[bit];
      for (const auto& p : payloads) {
        for (bool with_sub : {false, true}) {
          message m;
          m.mux_id = 0x0123456789abcdefull >> (combo * 4);
          m.seq = 0xfffffff0u + combo;
          m.deadline_ms = combo * 1000;
          m.handler = handler_id{static_cast<std::uint8_t>(op * 15)};
          m.op = static_cast<op_code>(op);
          m.flags = f;
          m.payload = p;
          if (with_sub) m.subroute = sub;
          const auto bytes = enc(m);
          CHECK(bytes.size() == encoded_size(m));
          std::span<const std::byte> rest;
          const result<message> d = parse(bytes, rest);
          REQUIRE_MESSAGE(d, to_string(m) << ": " << d.error().message());
          CHECK(rest.empty());
          check_same(*d, m);
          CHECK(has(d->flags, msg_flags::payload_is_zero) == (p && p->empty()));
          CHECK(has(d->flags, msg_flags::subroute) == with_sub);
          ++cases;
        }
      }
    }
  }
  CHECK(cases == 17 * 16 * 5 * 2);
}

TEST_CASE("integers take msgp's smallest unsigned form at every boundary") {
  struct row { std::uint64_t v; const char* head; };
  const row rows[] = {{0, "00"}, {127, "7f"}, {128, "cc 80"}, {255, "cc ff"}, {256, "cd 01 00"},
                      {65535, "cd ff ff"}, {65536, "ce 00 01 00 00"}, {0xffffffffull, "ce ff ff ff ff"},
                      {0x100000000ull, "cf 00 00 00 01 00 00 00 00"}, {~0ull, "cf ff ff ff ff ff ff ff ff"}};
  for (const row& r : rows) {
    message m;
    m.mux_id = r.v;
    m.op = op_code::response;
    const auto bytes = enc(m);
    const std::string want = "97 " + to_hex(hex(r.head)) + " 00 00 00 0f 00 c4 00";
    CHECK(to_hex(bytes) == want);
    const result<message> d = decode(bytes);
    REQUIRE(d);
    CHECK(d->mux_id == r.v);
  }
}

TEST_CASE("nil and empty payloads: both c4 00 on the wire, told apart by payload_is_zero") {
  message m;
  m.op = op_code::response;
  m.payload = std::nullopt;
  const auto nil_bytes = enc(m);
  m.payload = std::span<const std::byte>();
  const auto empty_bytes = enc(m);
  CHECK(to_hex(nil_bytes) == "97 00 00 00 00 0f 00 c4 00");
  CHECK(to_hex(empty_bytes) == "97 00 00 00 00 0f 10 c4 00");
  CHECK_FALSE(decode(nil_bytes)->payload.has_value());
  REQUIRE(decode(empty_bytes)->payload.has_value());
  CHECK(decode(empty_bytes)->payload->empty());

  // The caller's payload_is_zero and subroute bits are derived from the fields, never trusted.
  message lie;
  lie.op = op_code::response;
  lie.flags = msg_flags::payload_is_zero | msg_flags::subroute;
  CHECK(to_hex(enc(lie)) == "97 00 00 00 00 0f 00 c4 00");
}

TEST_CASE("the subroute trailer comes before the CRC, and the CRC covers it") {
  message m = worked_example();
  m.subroute = make_subroute_id(handler_id{78}, "some-subroute");
  const auto bytes = enc(m);
  REQUIRE(bytes.size() == 13 + 32 + 4);
  CHECK(to_hex(std::span(bytes).subspan(13, 32)) == to_hex(hex(m.subroute->to_hex())));
  const std::uint32_t crc = crc32_xxh3(std::span(bytes).first(45));
  CHECK(bytes[45] == std::byte(crc & 0xff));
  CHECK(bytes[48] == std::byte(crc >> 24));
  CHECK(bytes[7] == std::byte{0x0e}); // op
  CHECK(bytes[8] == std::byte{0x23}); // flags CRC|EOF|SUB
  const auto d = decode(bytes);
  REQUIRE(d);
  CHECK(d->subroute == m.subroute);
}

TEST_CASE("the CRC's hash: xxHash's result at every length, whole and in parts, whichever kernels run") {
  // Long inputs may take xxHash's AVX2 kernels (detail/xxh3.hpp); they must hash as its default code does.
#if COGRID_XXH3_AVX2
  CHECK(detail::xxh3_avx2() == (__builtin_cpu_supports("avx2") != 0));
#endif
  std::vector<std::byte> data((1u << 20) + 77);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>((i * 2654435761u) >> 13);
  std::vector<std::size_t> sizes;
  for (std::size_t n = 0; n <= 2100; ++n) sizes.push_back(n);
  for (const std::size_t n : {4095u, 4096u, 4097u, 65536u, 262147u, 1u << 20}) sizes.push_back(n);
  sizes.push_back(data.size());
  for (const std::size_t n : sizes) {
    CAPTURE(n);
    const std::span<const std::byte> in(data.data(), n);
    const std::uint64_t want = XXH3_64bits(in.data(), in.size());
    REQUIRE(detail::xxh3_64(in) == want);
    if (n % 97 == 0 || n > 2100) {
      for (const std::size_t cut : {std::size_t{0}, n / 3, n / 2 + 1, n}) {
        const std::size_t a = std::min(cut, n), b = std::min(a + (n - a) / 2, n);
        CHECK(detail::xxh3_64_parts({in.first(a), in.subspan(a, b - a), in.subspan(b)}) == want);
      }
    }
  }
}

TEST_CASE("a message encoded around its payload is, with the payload between, the bytes encode_append writes") {
  // The writer sends a large payload's pieces from where they are: head, payload, tail (subroute, CRC).
  // Sizes across the bin8/bin16/bin32 headers and past XXH3's long-input threshold and its stripes.
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{255}, std::size_t{256}, std::size_t{65535},
                                 std::size_t{65536}, std::size_t{262144}, std::size_t{262147}}) {
    for (const bool sub : {false, true}) {
      for (const bool crc : {false, true}) {
        CAPTURE(size);
        CAPTURE(sub);
        CAPTURE(crc);
        std::vector<std::byte> payload(size);
        for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<std::byte>(i * 7 + (i >> 9));
        message m = worked_example();
        m.mux_id = 0x1234567890ull;
        m.deadline_ms = 0xffffffffu;
        m.flags = (crc ? msg_flags::crc : msg_flags{}) | msg_flags::more;
        m.payload = std::span<const std::byte>(payload);
        if (sub) m.subroute = make_subroute_id(handler_id{78}, "some-subroute");
        const detail::split_message split = detail::encode_split(m);
        CHECK(split.tail_size == (sub ? 32u : 0u) + (crc ? 4u : 0u));
        const auto joined = concat(concat(std::vector<std::byte>(split.head.data(), split.head.data() + split.head_size), payload),
                                   std::span<const std::byte>(split.tail.data(), split.tail_size));
        CHECK(to_hex(joined) == to_hex(enc(m)));
      }
    }
  }
}

TEST_CASE("the decoder accepts every non-negative integer form msgp accepts") {
  // mux as int8 5, seq as uint16 0, deadline as int64 60000, handler as uint32, op as int16, flags as uint64.
  const auto bytes = hex("97 d0 05 cd 00 00 d3 00 00 00 00 00 00 ea 60 ce 00 00 00 4e d1 00 0f cf 00 00 00 00 00 00 00 02 c4 01 41");
  const auto d = decode(bytes);
  REQUIRE(d);
  CHECK(d->mux_id == 5);
  CHECK(d->deadline_ms == 60000);
  CHECK(d->handler == handler_id{78});
  CHECK(d->op == op_code::response);
  CHECK(d->flags == msg_flags::eof);
  // An array16 header holding 7 is an array of 7 as well.
  CHECK(decode(hex("dc 00 07 00 00 00 00 0f 00 c4 00")));
}

TEST_CASE("reject paths of the decoder: each class of bad buffer and the error it yields") {
  SUBCASE("empty buffer") { CHECK(decode({}).error() == errc::truncated); }
  SUBCASE("every strict prefix of a valid message is rejected") {
    // Trailers are read from the end of the buffer (there is no length field for them), so a prefix that
    // still holds 4 bytes past the 7-tuple is caught by the CRC, a shorter one as truncated.
    message m = worked_example();
    m.subroute = make_subroute_id(handler_id{78}, "x");
    const auto bytes = enc(m);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      const errc want = n < 13 + 4 ? errc::truncated : errc::crc_mismatch;
      CHECK_MESSAGE(decode(std::span(bytes).first(n)).error() == want, "prefix " << n);
    }
    // Without a CRC, a subroute trailer cut short is truncated.
    m.flags = msg_flags::eof;
    const auto no_crc = enc(m);
    for (std::size_t n = 0; n < no_crc.size(); ++n)
      CHECK_MESSAGE(decode(std::span(no_crc).first(n)).error() == errc::truncated, "prefix " << n);
  }
  SUBCASE("not an array") {
    CHECK(decode(hex("87 00 00 00 00 0e 00 c4 00")).error() == errc::malformed); // a map
    CHECK(decode(hex("c4 01 00")).error() == errc::malformed);                   // bin
    CHECK(decode(hex("47 45 54 20 2f")).error() == errc::malformed);             // "GET /"
  }
  SUBCASE("an array of another length") {
    CHECK(decode(hex("96 00 00 00 00 0e 00")).error() == errc::malformed);
    CHECK(decode(hex("98 00 00 00 00 0e 00 c4 00 00")).error() == errc::malformed);
    CHECK(decode(hex("dd 00 00 00 07")).error() == errc::truncated); // array32 header of 7, no elements
  }
  SUBCASE("fields of the wrong type") {
    CHECK(decode(hex("97 a1 78 00 00 00 0e 00 c4 00")).error() == errc::type_mismatch); // str mux
    CHECK(decode(hex("97 00 c3 00 00 0e 00 c4 00")).error() == errc::type_mismatch);    // bool seq
    CHECK(decode(hex("97 00 00 ca 3f 80 00 00 00 0e 00 c4 00")).error() == errc::type_mismatch); // float
    CHECK(decode(hex("97 00 00 00 00 0e 00 a2 68 69")).error() == errc::type_mismatch); // str payload
    CHECK(decode(hex("97 00 00 00 00 0e 00 c0")).error() == errc::type_mismatch);       // nil payload
    CHECK(decode(hex("97 00 00 00 00 0e 00 c1")).error() == errc::type_mismatch);       // never-used byte
  }
  SUBCASE("integers out of range for their field") {
    CHECK(decode(hex("97 ff 00 00 00 0e 00 c4 00")).error() == errc::integer_overflow);       // -1 fixint
    CHECK(decode(hex("97 d0 ff 00 00 00 0e 00 c4 00")).error() == errc::integer_overflow);    // int8 -1
    CHECK(decode(hex("97 00 cf 00 00 00 01 00 00 00 00 00 00 0e 00 c4 00")).error() == errc::integer_overflow); // seq 2^32
    CHECK(decode(hex("97 00 00 00 cd 01 00 0e 00 c4 00")).error() == errc::integer_overflow); // handler 256
    CHECK(decode(hex("97 00 00 00 00 cd 01 0e 00 c4 00")).error() == errc::integer_overflow); // op 270
  }
  SUBCASE("payload length fields pointing past the end") {
    CHECK(decode(hex("97 00 00 00 00 0e 00 c4 05 01 02")).error() == errc::truncated);
    CHECK(decode(hex("97 00 00 00 00 0e 00 c5 ff ff 01")).error() == errc::truncated);
    CHECK(decode(hex("97 00 00 00 00 0e 00 c6 ff ff ff ff 01 02 03")).error() == errc::truncated); // 4 GiB claim
  }
  SUBCASE("CRC mismatch: any flipped bit is caught") {
    for (std::size_t i = 0; i < worked_bytes.size(); ++i) {
      auto bad = worked_bytes;
      bad[i] ^= std::byte{0x01};
      const auto r = decode(bad);
      // Flipping a bit of a header byte can also make the message malformed in another way first.
      CHECK_MESSAGE(!r, "flip at " << i);
      if (i >= 11) CHECK(r.error() == errc::crc_mismatch); // payload and trailer bytes
    }
  }
  SUBCASE("a flagged trailer that is not there") {
    CHECK(decode(hex("97 00 00 00 00 0e 20 c4 00 01 02 03")).error() == errc::truncated); // subroute: 3 of 32
    CHECK(decode(hex("97 00 00 00 00 0e 01 c4 00 01 02")).error() == errc::truncated);    // crc: 2 of 4
  }
  SUBCASE("unknown op codes") {
    CHECK(decode(hex("97 00 00 00 00 00 00 c4 00")).error() == errc::unknown_op);
    CHECK(decode(hex("97 00 00 00 00 12 00 c4 00")).error() == errc::unknown_op);
    CHECK(decode(hex("97 00 00 00 00 cc ff 00 c4 00")).error() == errc::unknown_op);
  }
  SUBCASE("trailing bytes after one message") {
    CHECK(decode(concat(worked_bytes, hex("00"))).error() == errc::crc_mismatch); // the CRC is taken from the end
    CHECK(decode(hex("97 00 00 00 00 0e 00 c4 00 00")).error() == errc::trailing_bytes);
  }
  SUBCASE("unknown flag bits are carried, not rejected (a newer peer may set them)") {
    const auto d = decode(hex("97 00 00 00 00 0e cc 80 c4 00"));
    REQUIRE(d);
    CHECK(static_cast<unsigned>(d->flags) == 0x80);
    CHECK(to_string(d->flags) == "0x80");
  }
}

TEST_CASE("payload too large for bin32 is an encoding error, checked before any byte is read") {
  // Reserve 4 GiB + 1 of address space without touching it: a valid range the encoder must not read.
  const std::size_t n = (std::size_t{1} << 32);
  void* p = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  REQUIRE(p != MAP_FAILED);
  message m;
  m.op = op_code::response;
  m.payload = std::span(static_cast<const std::byte*>(p), n);
  std::vector<std::byte> out;
  CHECK(encode_append(m, out) == errc::payload_too_large);
  CHECK(out.empty());
  std::byte small[16];
  CHECK(encode(m, small).error() == errc::payload_too_large);
  std::vector<std::byte> container;
  merge_builder mb(container);
  CHECK(mb.add(m) == errc::payload_too_large);
  CHECK(mb.add(*m.payload) == errc::payload_too_large);
  CHECK(mb.count() == 0);
  ::munmap(p, n);
}

TEST_CASE("op and flag names") {
  CHECK(std::string(to_string(op_code::connect)) == "OpConnect");
  CHECK(std::string(to_string(op_code::merged)) == "OpMerged");
  CHECK(std::string(to_string(static_cast<op_code>(0))) == "OpUnknown");
  CHECK(std::string(to_string(static_cast<op_code>(18))) == "OpUnknown");
  CHECK(to_string(msg_flags::none) == "none");
  CHECK(to_string(msg_flags::crc | msg_flags::payload_is_err | msg_flags::subroute) == "CRC|ERR|SUB");
  for (int i = 1; i <= 17; ++i) CHECK(is_known(static_cast<op_code>(i)));
  CHECK_FALSE(is_known(static_cast<op_code>(0)));
  CHECK_FALSE(is_known(static_cast<op_code>(18)));
}

TEST_SUITE_END();

// ---------------------------------------------------------------------------------------------------------
TEST_SUITE_BEGIN("merged");

namespace {

message small_msg(std::uint64_t mux, std::string_view payload, bool crc) {
  message m;
  m.mux_id = mux;
  m.seq = static_cast<std::uint32_t>(mux * 2);
  m.op = op_code::mux_server_msg;
  m.flags = crc ? msg_flags::crc : msg_flags::none;
  m.payload = bytes_of(payload);
  return m;
}

// merged_reader::next as a loop condition: true with an item; false at the end (`ec` clear) or on an
// error (`ec` set).
bool next_item(merged_reader& r, message& m, std::error_code& ec) {
  const result<bool> got = r.next(m);
  ec = got.error().code;
  return got && *got;
}

std::vector<message> read_all(std::span<const std::byte> container, std::error_code& ec) {
  std::vector<message> out;
  ec = for_each_message(container, [&](const message& m) { out.push_back(m); }).error().code;
  return out;
}

} // namespace

TEST_CASE("container shape of grid-protocol.md 1.5: 97 00 <N> 00 00 11 00 c4 00, then N bin items") {
  std::vector<std::byte> buf;
  merge_builder mb(buf);
  const message a = small_msg(1, "a", true), b = small_msg(2, "bb", false);
  REQUIRE(mb.add(a));
  const auto b_bytes = enc(b);
  REQUIRE(mb.add(b_bytes));
  CHECK(mb.count() == 2);
  const std::size_t predicted = mb.size();
  const auto c = mb.finish();
  CHECK(c.size() == predicted);
  const auto a_bytes = enc(a);
  std::vector<std::byte> want = hex("97 00 02 00 00 11 00 c4 00");
  want.push_back(std::byte{0xc4});
  want.push_back(static_cast<std::byte>(a_bytes.size()));
  want = concat(want, a_bytes);
  want.push_back(std::byte{0xc4});
  want.push_back(static_cast<std::byte>(b_bytes.size()));
  want = concat(want, b_bytes);
  CHECK(to_hex(c) == to_hex(want));

  std::error_code ec;
  const auto got = read_all(c, ec);
  CHECK(!ec);
  REQUIRE(got.size() == 2);
  check_same(got[0], a);
  check_same(got[1], b);
}

TEST_CASE("containers of 0, 1, 50, 51 and 300 items round trip, items keep their own trailers") {
  for (std::uint32_t n : {0u, 1u, 50u, 51u, 300u}) {
    std::vector<std::byte> buf;
    merge_builder mb(buf);
    std::vector<std::string> payloads;
    for (std::uint32_t i = 0; i < n; ++i) payloads.push_back(std::string(i % 7, static_cast<char>('a' + i % 26)));
    for (std::uint32_t i = 0; i < n; ++i) {
      message m = small_msg(i + 1, payloads[i], i % 2 == 0);
      if (i % 3 == 0) m.subroute = make_subroute_id(handler_id{78}, "some-subroute");
      REQUIRE(mb.add(m));
    }
    const auto c = mb.finish();
    auto r = merged_reader::open(c);
    REQUIRE(r);
    CHECK(r->remaining() == n);
    message m;
    std::error_code ec;
    std::uint32_t i = 0;
    while (next_item(*r, m, ec)) {
      message want = small_msg(i + 1, payloads[i], i % 2 == 0);
      if (i % 3 == 0) want.subroute = make_subroute_id(handler_id{78}, "some-subroute");
      check_same(m, want);
      ++i;
    }
    CHECK(!ec);
    CHECK(i == n);
  }
}

TEST_CASE("one builder vector is reused across containers") {
  std::vector<std::byte> buf;
  for (int round = 0; round < 3; ++round) {
    merge_builder mb(buf);
    REQUIRE(mb.add(small_msg(7, "x", true)));
    std::error_code ec;
    CHECK(read_all(mb.finish(), ec).size() == 1);
    CHECK(!ec);
  }
}

TEST_CASE("reject paths of the merged reader") {
  const auto item = enc(small_msg(1, "abc", true));
  auto with_items = [&](std::string_view head, int copies) {
    std::vector<std::byte> c = hex(head);
    for (int i = 0; i < copies; ++i) {
      c.push_back(std::byte{0xc4});
      c.push_back(static_cast<std::byte>(item.size()));
      c = concat(c, item);
    }
    return c;
  };
  std::error_code ec;

  SUBCASE("claims more items than it holds") {
    const auto got = read_all(with_items("97 00 03 00 00 11 00 c4 00", 2), ec);
    CHECK(ec == errc::truncated);
    CHECK(got.size() == 2); // the items before the error were delivered
  }
  SUBCASE("claims fewer items than it holds") {
    read_all(with_items("97 00 01 00 00 11 00 c4 00", 2), ec);
    CHECK(ec == errc::trailing_bytes);
  }
  SUBCASE("claims 2^32-1 items and holds one") {
    read_all(with_items("97 00 ce ff ff ff ff 00 00 11 00 c4 00", 1), ec);
    CHECK(ec == errc::truncated);
  }
  SUBCASE("an item that is not bin") {
    auto c = hex("97 00 01 00 00 11 00 c4 00 a3 61 62 63");
    read_all(c, ec);
    CHECK(ec == errc::type_mismatch);
  }
  SUBCASE("an item holding a merged container") {
    const auto inner = hex("97 00 00 00 00 11 00 c4 00");
    auto c = hex("97 00 01 00 00 11 00 c4 00 c4");
    c.push_back(static_cast<std::byte>(inner.size()));
    c = concat(c, inner);
    read_all(c, ec);
    CHECK(ec == errc::nested_merged);
  }
  SUBCASE("an item with bytes after its message") {
    auto c = hex("97 00 01 00 00 11 00 c4 00 c4");
    const auto plain = concat(hex("97 00 00 00 00 0f 00 c4 00"), hex("ff"));
    c.push_back(static_cast<std::byte>(plain.size()));
    c = concat(c, plain);
    read_all(c, ec);
    CHECK(ec == errc::trailing_bytes);
  }
  SUBCASE("an item with a bad CRC") {
    auto c = with_items("97 00 01 00 00 11 00 c4 00", 1);
    c.back() ^= std::byte{0xff};
    read_all(c, ec);
    CHECK(ec == errc::crc_mismatch);
  }
  SUBCASE("an item length pointing past the end") {
    read_all(hex("97 00 01 00 00 11 00 c4 00 c6 ff ff ff ff 97"), ec);
    CHECK(ec == errc::truncated);
  }
  SUBCASE("open() of a message that is not a container; a failed reader stays failed") {
    CHECK(merged_reader::open(item).error() == errc::type_mismatch);
    auto c = with_items("97 00 02 00 00 11 00 c4 00", 1);
    auto r = merged_reader::open(c);
    REQUIRE(r);
    message m;
    CHECK(next_item(*r, m, ec));
    CHECK_FALSE(next_item(*r, m, ec));
    CHECK(ec == errc::truncated);
    CHECK_FALSE(next_item(*r, m, ec));
    CHECK(ec);
  }
  SUBCASE("for_each_message on a single message with trailing bytes") {
    read_all(hex("97 00 00 00 00 0f 00 c4 00 00"), ec);
    CHECK(ec == errc::trailing_bytes);
  }
}

TEST_SUITE_END();
