// Test that header file is self-contained.
#include <cogrid/error.hpp>

#include <doctest/doctest.h>

#include <set>
#include <string>

TEST_SUITE_BEGIN("error");

namespace {
constexpr cogrid::errc all_errcs[] = {
    cogrid::errc::truncated,        cogrid::errc::malformed,        cogrid::errc::type_mismatch,
    cogrid::errc::integer_overflow, cogrid::errc::crc_mismatch,     cogrid::errc::unknown_op,
    cogrid::errc::trailing_bytes,   cogrid::errc::nested_merged,    cogrid::errc::bad_field_length,
    cogrid::errc::invalid_value,    cogrid::errc::buffer_too_small, cogrid::errc::payload_too_large,
};
} // namespace

TEST_CASE("numeric values are stable") {
  // These numbers are logged and compared across versions; changing one is a breaking change.
  CHECK(static_cast<int>(cogrid::errc::truncated) == 1);
  CHECK(static_cast<int>(cogrid::errc::malformed) == 2);
  CHECK(static_cast<int>(cogrid::errc::type_mismatch) == 3);
  CHECK(static_cast<int>(cogrid::errc::integer_overflow) == 4);
  CHECK(static_cast<int>(cogrid::errc::crc_mismatch) == 5);
  CHECK(static_cast<int>(cogrid::errc::unknown_op) == 6);
  CHECK(static_cast<int>(cogrid::errc::trailing_bytes) == 7);
  CHECK(static_cast<int>(cogrid::errc::nested_merged) == 8);
  CHECK(static_cast<int>(cogrid::errc::bad_field_length) == 9);
  CHECK(static_cast<int>(cogrid::errc::invalid_value) == 10);
  CHECK(static_cast<int>(cogrid::errc::buffer_too_small) == 11);
  CHECK(static_cast<int>(cogrid::errc::payload_too_large) == 12);
}

TEST_CASE("every code has its own message in the cogrid category") {
  std::set<std::string> seen;
  for (cogrid::errc e : all_errcs) {
    const std::error_code ec = e; // implicit: errc is an error code enum
    CHECK(ec.category() == cogrid::error_category());
    CHECK(std::string(ec.category().name()) == "cogrid");
    CHECK_FALSE(ec.message().empty());
    CHECK(ec.message().rfind("unknown cogrid error", 0) == std::string::npos);
    seen.insert(ec.message());
  }
  CHECK(seen.size() == std::size(all_errcs));
  CHECK(std::error_code(999, cogrid::error_category()).message() == "unknown cogrid error 999");
}

TEST_CASE("wire format errors match protocol_violation, encoder errors match encoding_failed") {
  for (cogrid::errc e : all_errcs) {
    const std::error_code ec = e;
    const bool encoder = e == cogrid::errc::buffer_too_small || e == cogrid::errc::payload_too_large;
    CHECK((ec == cogrid::condition::protocol_violation) == !encoder);
    CHECK((ec == cogrid::condition::encoding_failed) == encoder);
  }
  // A foreign error never matches a cogrid condition.
  CHECK_FALSE(std::make_error_code(std::errc::io_error) == cogrid::condition::protocol_violation);
  CHECK(std::string(cogrid::condition_category().name()) == "cogrid.condition");
  CHECK(cogrid::make_error_condition(cogrid::condition::protocol_violation).message() == "grid protocol violation");
}

TEST_CASE("a cogrid code is not equal to a same-numbered code of another category") {
  const std::error_code ours = cogrid::errc::truncated;
  CHECK(ours != std::error_code(1, std::generic_category()));
  CHECK(ours == cogrid::errc::truncated);
  CHECK(ours != cogrid::errc::malformed);
}

TEST_SUITE_END();
