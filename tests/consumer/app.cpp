// A program that uses cogrid as a consumer would: through dependency('cogrid') or pkg-config.
#include <cogrid/cogrid.hpp>

#include <cstdio>
#include <string_view>

int main() {
  const std::string_view text = "hi";
  cogrid::message m;
  m.mux_id = 1;
  m.deadline_ms = 60000;
  m.handler = cogrid::handler_id{78};
  m.op = cogrid::op_code::request;
  m.flags = cogrid::msg_flags::crc | cogrid::msg_flags::eof;
  m.payload = std::as_bytes(std::span(text));
  std::vector<std::byte> out;
  if (!cogrid::encode_append(m, out)) return 1;
  const auto back = cogrid::decode(out);
  if (!back || back->mux_id != 1) return 1;
  std::printf("cogrid %s consumer: %s\n", COGRID_VERSION_STRING, cogrid::to_string(*back).c_str());
  return 0;
}
