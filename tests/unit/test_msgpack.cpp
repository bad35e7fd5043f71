// Cross-checks cogrid's own msgpack against msgpack-cxx, an independent implementation: what cogrid
// writes, msgpack-cxx reads as the protocol's types; what msgpack-cxx writes, cogrid reads.
#include <cogrid/control.hpp>
#include <cogrid/detail/serialize.hpp>
#include <cogrid/message.hpp>

#include <doctest/doctest.h>

#include <msgpack.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace cogrid;

TEST_SUITE_BEGIN("msgpack");

TEST_CASE("msgpack-cxx reads a cogrid message as an array of 7 with a bin payload") {
  const std::string payload(1000, 'p');
  message m;
  m.mux_id = 0x1234567890ull;
  m.seq = 70000;
  m.deadline_ms = 60000;
  m.handler = handler_id{200};
  m.op = op_code::mux_client_msg;
  m.flags = msg_flags::eof;
  m.payload = std::as_bytes(std::span(payload));
  std::vector<std::byte> out;
  REQUIRE(encode_append(m, out));

  const msgpack::object_handle oh = msgpack::unpack(reinterpret_cast<const char*>(out.data()), out.size());
  const msgpack::object& o = oh.get();
  REQUIRE(o.type == msgpack::type::ARRAY);
  REQUIRE(o.via.array.size == 7);
  CHECK(o.via.array.ptr[0].as<std::uint64_t>() == m.mux_id);
  CHECK(o.via.array.ptr[1].as<std::uint32_t>() == m.seq);
  CHECK(o.via.array.ptr[2].as<std::uint32_t>() == m.deadline_ms);
  CHECK(o.via.array.ptr[3].as<unsigned>() == 200);
  CHECK(o.via.array.ptr[4].as<unsigned>() == 9);
  CHECK(o.via.array.ptr[5].as<unsigned>() == 2);
  REQUIRE(o.via.array.ptr[6].type == msgpack::type::BIN);
  CHECK(std::string(o.via.array.ptr[6].via.bin.ptr, o.via.array.ptr[6].via.bin.size) == payload);
}

TEST_CASE("cogrid decodes a message msgpack-cxx packed") {
  msgpack::sbuffer sb;
  msgpack::packer<msgpack::sbuffer> pk(sb);
  pk.pack_array(7);
  pk.pack(std::uint64_t{1} << 40);
  pk.pack(std::uint32_t{3});
  pk.pack(std::uint32_t{250});
  pk.pack(std::uint8_t{78});
  pk.pack(std::uint8_t{14});
  pk.pack(std::uint8_t{2});
  pk.pack_bin(3);
  pk.pack_bin_body("abc", 3);
  const auto d = decode(std::as_bytes(std::span(sb.data(), sb.size())));
  REQUIRE(d);
  CHECK(d->mux_id == std::uint64_t{1} << 40);
  CHECK(d->seq == 3);
  CHECK(d->deadline_ms == 250);
  CHECK(d->handler == handler_id{78});
  CHECK(d->op == op_code::request);
  CHECK(d->flags == msg_flags::eof);
  REQUIRE(d->payload);
  CHECK(std::string(reinterpret_cast<const char*>(d->payload->data()), d->payload->size()) == "abc");
}

TEST_CASE("msgpack-cxx reads cogrid's control payloads as maps with MinIO's keys") {
  connect_request req;
  req.host = "http://a:9000";
  req.token = "secret";
  req.time = wire_time{1700000000, 5};
  std::vector<std::byte> out;
  encode_append(req, out);
  const msgpack::object_handle oh = msgpack::unpack(reinterpret_cast<const char*>(out.data()), out.size());
  const msgpack::object& o = oh.get();
  REQUIRE(o.type == msgpack::type::MAP);
  std::map<std::string, const msgpack::object*> kv;
  for (std::uint32_t i = 0; i < o.via.map.size; ++i)
    kv[o.via.map.ptr[i].key.as<std::string>()] = &o.via.map.ptr[i].val;
  REQUIRE(kv.size() == 4);
  CHECK(kv["ID"]->type == msgpack::type::BIN);
  CHECK(kv["ID"]->via.bin.size == 16);
  CHECK(kv["Host"]->as<std::string>() == "http://a:9000");
  CHECK(kv["Token"]->as<std::string>() == "secret");
  REQUIRE(kv["Time"]->type == msgpack::type::EXT);
  CHECK(kv["Time"]->via.ext.type() == 5);
  CHECK(kv["Time"]->via.ext.size == 12);
}

TEST_CASE("cogrid reads a pong map msgpack-cxx packed, keys reordered, timestamp as ext -1") {
  msgpack::sbuffer sb;
  msgpack::packer<msgpack::sbuffer> pk(sb);
  pk.pack_map(4);
  pk.pack(std::string("t"));
  pk.pack_ext(4, -1);
  const char sec[4] = {0x65, 0x53, (char)0xf1, 0x00}; // 1700000000
  pk.pack_ext_body(sec, 4);
  pk.pack(std::string("e"));
  pk.pack(std::string("remote terminated call"));
  pk.pack(std::string("unknown"));
  pk.pack(std::vector<int>{1, 2, 3});
  pk.pack(std::string("nf"));
  pk.pack(true);
  pong_msg p;
  const result<void> r = decode(std::as_bytes(std::span(sb.data(), sb.size())), p);
  REQUIRE_MESSAGE(r, r.error().message());
  CHECK(p.not_found);
  CHECK(p.error == "remote terminated call");
  CHECK(p.time == wire_time{1700000000, 0});
}

TEST_SUITE_END();

namespace {
struct sample_value {
  std::string name;
  std::vector<std::uint64_t> numbers;
  std::vector<std::uint8_t> blob;
  MSGPACK_DEFINE_MAP(name, numbers, blob)
};
} // namespace

TEST_CASE("typed values append to a vector exactly as msgpack-cxx's own buffer packs them") {
  for (const std::size_t blob : {std::size_t{0}, std::size_t{5}, std::size_t{1023}, std::size_t{1024}, std::size_t{300000}}) {
    CAPTURE(blob);
    sample_value v;
    v.name = std::string(blob % 97, 'n');
    for (std::uint64_t i = 0; i < 700; ++i) v.numbers.push_back(i * 0x9E3779B97F4A7C15ULL >> (i % 64));
    v.blob.assign(blob, 0xab);
    msgpack::sbuffer want;
    msgpack::pack(want, v);

    for (const std::size_t already : {std::size_t{0}, std::size_t{3}, std::size_t{5000}}) {
      CAPTURE(already);
      std::vector<std::byte> out(already, std::byte{0x11});
      if (already == 5000) out.reserve(1u << 20); // room to spare: the vector is cut back to what was written
      REQUIRE(cogrid::detail::codec<sample_value>::pack(v, out));
      REQUIRE(out.size() == already + want.size());
      CHECK(std::all_of(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(already), [](std::byte b) { return b == std::byte{0x11}; }));
      CHECK(std::memcmp(out.data() + already, want.data(), want.size()) == 0);
      sample_value back;
      REQUIRE(cogrid::detail::codec<sample_value>::unpack(std::span<const std::byte>(out).subspan(already), back));
      CHECK(back.name == v.name);
      CHECK(back.numbers == v.numbers);
      CHECK(back.blob == v.blob);
    }
  }
}
