// tests/fuzz/fuzz_message.cpp — libFuzzer target: the input is one WebSocket message. It goes through
// decode, parse and for_each_message, which must agree with each other; every message they accept must
// survive re-encoding (see fuzz_check.hpp), and its payload is tried as every control payload.
#include "fuzz_check.hpp"

#include <cogrid/message.hpp>

#include <cstddef>
#include <cstdint>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cogrid;
  const fuzz::bytes in = fuzz::as_bytes(data, size);

  const result<message> decoded = decode(in);
  std::span<const std::byte> rest;
  const result<message> parsed = parse(in, rest);

  // decode is parse plus "nothing left over".
  if (!parsed) {
    FUZZ_CHECK(!decoded && decoded.error() == parsed.error(), "decode and parse disagree on an error");
  } else {
    FUZZ_CHECK(fuzz::within(rest, in), "parse's rest lies outside the input");
    if (rest.empty()) {
      FUZZ_CHECK(decoded.has_value(), "parse left nothing but decode failed: " + decoded.error().message());
      fuzz::check_same("decode and parse gave other fields", *parsed, *decoded, false);
    } else {
      FUZZ_CHECK(!decoded && decoded.error() == errc::trailing_bytes, "decode accepted a message with a rest");
    }
    fuzz::check_message(*parsed, in);
  }
  if (decoded) fuzz::check_message(*decoded, in);

  // for_each_message agrees with parse, and for containers with merged_reader.
  std::vector<message> delivered;
  const std::error_code ec = for_each_message(in, [&](const message& m) { delivered.push_back(m); }).error().code;
  if (!parsed) {
    FUZZ_CHECK(ec == parsed.error().code && delivered.empty(), "for_each_message and parse disagree on an error");
  } else if (parsed->op != op_code::merged) {
    if (rest.empty()) {
      FUZZ_CHECK(!ec && delivered.size() == 1, "for_each_message did not deliver one message: " + ec.message());
      fuzz::check_same("for_each_message and parse gave other fields", *parsed, delivered[0], false);
    } else {
      FUZZ_CHECK(ec == errc::trailing_bytes && delivered.empty(), "for_each_message accepted trailing bytes");
    }
  } else {
    auto reader = merged_reader::open(in);
    FUZZ_CHECK(reader.has_value(), "merged_reader::open failed on a container parse accepted");
    message m;
    std::error_code rec;
    std::size_t i = 0;
    while (fuzz::next_item(*reader, m, rec)) {
      FUZZ_CHECK(i < delivered.size(), "merged_reader read more items than for_each_message delivered");
      fuzz::check_same("merged_reader and for_each_message gave other items", m, delivered[i], false);
      ++i;
    }
    FUZZ_CHECK(i == delivered.size() && rec == ec, "merged_reader and for_each_message end differently");
  }
  for (const message& m : delivered) {
    FUZZ_CHECK(m.op != op_code::merged, "for_each_message delivered a nested container");
    fuzz::check_message(m, in);
  }

  // The control decoders see arbitrary bytes here too, not only payloads of well-formed messages.
  fuzz::check_controls(in);
  return 0;
}
