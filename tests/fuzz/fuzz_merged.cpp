// tests/fuzz/fuzz_merged.cpp — libFuzzer target: the input is an OpMerged container. The items
// merged_reader reads are rebuilt with merge_builder (from messages and from encoded bytes), and the
// rebuilt containers must read back as the same items.
#include "fuzz_check.hpp"

#include <cogrid/message.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace {

using namespace cogrid;

// Reads every item of `container`, which must be a container cogrid built, and compares with `want`.
void check_rebuilt(const char* how, std::span<const std::byte> container, const std::vector<message>& want) {
  auto reader = merged_reader::open(container);
  if (!reader) {
    fuzz::dump("container", container);
    fuzz::fail("rebuilt container does not open", std::string(how) + ": " + reader.error().message());
  }
  FUZZ_CHECK(reader->remaining() == want.size(), how);
  message m;
  std::error_code ec;
  std::size_t i = 0;
  while (fuzz::next_item(*reader, m, ec)) {
    FUZZ_CHECK(i < want.size(), how);
    fuzz::check_same("rebuilt container holds another item", want[i], m, true);
    FUZZ_CHECK(fuzz::within(m.payload.value_or(std::span<const std::byte>{}), container), how);
    ++i;
  }
  if (ec || i != want.size()) {
    fuzz::dump("container", container);
    fuzz::fail("rebuilt container does not read back", std::string(how) + ": read " + std::to_string(i) + " of " +
                                                           std::to_string(want.size()) + ": " + ec.message());
  }
  FUZZ_CHECK(reader->remaining() == 0, how);

  std::size_t calls = 0;
  const std::error_code fec = for_each_message(container, [&](const message& x) {
    FUZZ_CHECK(calls < want.size(), how);
    fuzz::check_same("for_each_message on a rebuilt container", want[calls], x, true);
    ++calls;
  }).error().code;
  FUZZ_CHECK(!fec && calls == want.size(), std::string(how) + ": for_each_message: " + fec.message());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::bytes in = fuzz::as_bytes(data, size);

  // for_each_message never fails without a reason and delivers only inner, non-container messages.
  std::vector<message> delivered;
  const std::error_code fec = for_each_message(in, [&](const message& m) { delivered.push_back(m); }).error().code;

  auto reader = merged_reader::open(in);
  if (!reader) return 0;
  const std::uint32_t announced = reader->remaining();

  std::vector<message> items;
  message m;
  std::error_code ec;
  while (fuzz::next_item(*reader, m, ec)) {
    FUZZ_CHECK(m.op != op_code::merged, "merged_reader returned a nested container");
    FUZZ_CHECK(reader->remaining() == announced - items.size() - 1, "remaining() did not count down");
    fuzz::check_message(m, in);
    items.push_back(m);
  }
  if (!ec) FUZZ_CHECK(reader->remaining() == 0, "the reader ended cleanly with items left");
  // After the end or an error the reader stays where it is.
  message after;
  std::error_code ec2;
  FUZZ_CHECK(!fuzz::next_item(*reader, after, ec2), "the reader went on after its end");
  FUZZ_CHECK(static_cast<bool>(ec2) == static_cast<bool>(ec), "the reader changed its mind about an error");

  // for_each_message saw the same items and the same outcome.
  FUZZ_CHECK(fec == ec && delivered.size() == items.size(), "for_each_message and merged_reader disagree");
  for (std::size_t i = 0; i < items.size(); ++i)
    fuzz::check_same("for_each_message and merged_reader gave other items", items[i], delivered[i], false);

  // Rebuild: from messages, from encoded bytes, and alternating; all three give the same container.
  std::vector<std::byte> from_msgs, from_bytes, mixed, enc;
  merge_builder a(from_msgs), b(from_bytes), c(mixed);
  for (std::size_t i = 0; i < items.size(); ++i) {
    enc.clear();
    if (const auto e = encode_append(items[i], enc); !e) fuzz::fail("encode_append failed", e.error().message());
    FUZZ_CHECK(a.add(items[i]), "merge_builder::add(message) failed");
    FUZZ_CHECK(b.add(std::span<const std::byte>(enc)), "merge_builder::add(span) failed");
    FUZZ_CHECK(i % 2 == 0 ? c.add(items[i]) : c.add(std::span<const std::byte>(enc)), "merge_builder::add failed");
  }
  FUZZ_CHECK(a.count() == items.size() && b.count() == items.size() && c.count() == items.size(),
             "merge_builder::count is off");
  const std::size_t size_a = a.size(), size_b = b.size(), size_c = c.size();
  const std::span<const std::byte> ca = a.finish(), cb = b.finish(), cc = c.finish();
  FUZZ_CHECK(ca.size() == size_a && cb.size() == size_b && cc.size() == size_c, "merge_builder::size is off");
  if (!fuzz::same_bytes(ca, cb) || !fuzz::same_bytes(ca, cc)) {
    fuzz::dump("add(message)", ca);
    fuzz::dump("add(span)", cb);
    fuzz::dump("alternating", cc);
    fuzz::fail("merge_builder built different containers from the same items");
  }
  check_rebuilt("add(message)", ca, items);
  check_rebuilt("add(span)", cb, items);
  check_rebuilt("alternating", cc, items);
  return 0;
}
