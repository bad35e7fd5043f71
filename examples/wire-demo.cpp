// wire-demo: encodes a few grid messages, prints their bytes field by field, decodes them back, and shows
// the error a corrupted message yields. Run: build/examples/wire-demo
#include <cogrid/cogrid.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace {

using bytes = std::vector<std::byte>;

std::string hex(std::span<const std::byte> b, std::size_t max = 16) {
  std::string s;
  for (std::size_t i = 0; i < b.size() && i < max; ++i) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x ", static_cast<unsigned>(b[i]));
    s += buf;
  }
  if (b.size() > max) s += "... ";
  return s;
}

void row(std::span<const std::byte> b, const std::string& what) { std::printf("    %-40s %s\n", hex(b, 12).c_str(), what.c_str()); }

// Bytes one msgpack uint or bin header takes, from its first byte (enough for messages cogrid wrote).
std::size_t field_size(std::span<const std::byte> b) {
  const auto t = static_cast<unsigned>(b[0]);
  if (t < 0x80) return 1;
  if (t == 0xcc) return 2;
  if (t == 0xcd) return 3;
  if (t == 0xce) return 5;
  return 9;
}

// Prints one encoded grid message as annotated fields.
void annotate(std::span<const std::byte> wire, const cogrid::message& m) {
  static const char* names[] = {"MuxID", "Seq", "DeadlineMS", "Handler", "Op", "Flags"};
  const std::uint64_t values[] = {m.mux_id, m.seq, m.deadline_ms, static_cast<std::uint8_t>(m.handler),
                                  static_cast<std::uint8_t>(m.op), static_cast<std::uint8_t>(m.flags)};
  row(wire.first(1), "msgpack array of 7");
  std::size_t at = 1;
  for (int i = 0; i < 6; ++i) {
    const std::size_t n = field_size(wire.subspan(at));
    std::string what = std::string(names[i]) + " " + std::to_string(values[i]);
    if (i == 4) what += std::string(" (") + cogrid::to_string(m.op) + ")";
    if (i == 5) what += " (" + cogrid::to_string(m.flags) + ")";
    row(wire.subspan(at, n), what);
    at += n;
  }
  const std::size_t len = m.payload ? m.payload->size() : 0;
  const std::size_t hdr = len <= 0xff ? 2 : len <= 0xffff ? 3 : 5;
  row(wire.subspan(at, hdr + len), m.payload ? "Payload bin(" + std::to_string(len) + ")" : "Payload nil");
  at += hdr + len;
  if (m.subroute) {
    row(wire.subspan(at, 32), "subroute id (SHA-256 of the route, [0]=handler)");
    at += 32;
  }
  if (has(m.flags, cogrid::msg_flags::crc)) row(wire.subspan(at, 4), "CRC: low 32 bits of XXH3-64, little-endian");
}

bytes encode(const cogrid::message& m) {
  bytes out;
  if (auto r = cogrid::encode_append(m, out); !r) std::printf("encode failed: %s\n", r.error().message().c_str());
  return out;
}

void show(const char* title, const cogrid::message& m) {
  const bytes wire = encode(m);
  std::printf("\n== %s: %zu bytes\n", title, wire.size());
  const auto back = cogrid::decode(wire);
  if (!back) {
    std::printf("    decode failed: %s\n", back.error().message().c_str());
    return;
  }
  annotate(wire, *back);
  std::printf("    decoded: %s\n", cogrid::to_string(*back).c_str());
}

} // namespace

int main() {
  using namespace cogrid;
  std::printf("cogrid %s wire demo: MinIO grid protocol messages, encoded and decoded\n", COGRID_VERSION_STRING);

  const std::string hi = "hi";
  message req;
  req.mux_id = 1;
  req.deadline_ms = 60000;
  req.handler = handler_id{78};
  req.op = op_code::request;
  req.flags = msg_flags::crc | msg_flags::eof;
  req.payload = std::as_bytes(std::span(hi));
  show("single request to handler 78, payload \"hi\"", req);

  message sub = req;
  sub.mux_id = 2;
  sub.subroute = make_subroute_id(handler_id{78}, "some-subroute");
  show("the same request on subroute \"some-subroute\"", sub);

  const bytes ping_payload = [] {
    bytes b;
    encode_append(ping_msg{wire_time::now()}, b);
    return b;
  }();
  message ping;
  ping.deadline_ms = 10000;
  ping.op = op_code::ping;
  ping.payload = std::span<const std::byte>(ping_payload);
  show("connection ping (payload {\"t\": now})", ping);

  connect_request creq;
  creq.host = "http://127.0.0.1:9000";
  creq.time = wire_time::now();
  creq.token = "example-token";
  creq.id.bytes[0] = std::byte{0x42};
  bytes creq_payload;
  encode_append(creq, creq_payload);
  message connect;
  connect.op = op_code::connect;
  connect.payload = std::span<const std::byte>(creq_payload);
  show("OpConnect from the dialing node", connect);
  connect_request creq_back;
  if (auto r = decode(creq_payload, creq_back); !r) return std::printf("connect payload: %s\n", r.error().message().c_str()), 1;
  std::printf("    payload: ID=%s Host=%s Token=%s\n", creq_back.id.to_string().c_str(), creq_back.host.c_str(),
              creq_back.token.c_str());

  // Several queued messages travel in one WebSocket message: an OpMerged container.
  bytes container;
  merge_builder mb(container);
  for (std::uint64_t mux = 10; mux < 13; ++mux) {
    message m = req;
    m.mux_id = mux;
    m.op = op_code::response;
    if (auto added = mb.add(m); !added) return std::printf("merge: %s\n", added.error().message().c_str()), 1;
  }
  const auto merged = mb.finish();
  std::printf("\n== OpMerged container of %u responses: %zu bytes\n    %s\n", mb.count(), merged.size(), hex(merged, 24).c_str());
  const result<void> read = for_each_message(merged, [](const message& m) {
    std::printf("    item: %s\n", to_string(m).c_str());
  });
  if (!read) return std::printf("merged: %s\n", read.error().message().c_str()), 1;

  // Bad input yields an error code, never a crash.
  bytes corrupt = encode(req);
  corrupt[11] ^= std::byte{0x20};
  const auto bad = decode(corrupt);
  std::printf("\n== the request with one payload bit flipped\n    %s\n    decode: %s (%s)\n", hex(corrupt).c_str(),
              bad.error().message().c_str(), bad.error() == condition::protocol_violation ? "protocol violation" : "?");

  std::printf("\nelection: of http://127.0.0.1:9000 and http://127.0.0.1:9001, %s dials\n",
              should_connect("http://127.0.0.1:9000", "http://127.0.0.1:9001") ? ":9000" : ":9001");
  return 0;
}
