#include <cogrid/result.hpp>

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <system_error>

TEST_SUITE_BEGIN("result");

TEST_CASE("a value result") {
  cogrid::result<std::string> r = std::string("hello");
  REQUIRE(r.has_value());
  CHECK(static_cast<bool>(r));
  CHECK(!r.error());
  CHECK(r.value() == "hello");
  CHECK(*r == "hello");
  CHECK(r->size() == 5);
  CHECK(r.value_or("other") == "hello");
  std::string moved = std::move(r).value();
  CHECK(moved == "hello");
}

TEST_CASE("an error result throws system_error with its code from value()") {
  cogrid::result<int> r = cogrid::errc::crc_mismatch;
  CHECK_FALSE(r.has_value());
  CHECK_FALSE(static_cast<bool>(r));
  CHECK(r.error() == cogrid::errc::crc_mismatch);
  CHECK(r.value_or(7) == 7);
  try {
    (void)r.value();
    FAIL("value() of an error result must throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == cogrid::errc::crc_mismatch);
  }
}

TEST_CASE("results hold move-only values") {
  cogrid::result<std::unique_ptr<int>> r = std::make_unique<int>(42);
  REQUIRE(r);
  std::unique_ptr<int> p = std::move(r).value();
  CHECK(*p == 42);
  cogrid::result<std::unique_ptr<int>> e = std::make_error_code(std::errc::io_error);
  CHECK(e.error() == std::errc::io_error);
}

TEST_SUITE_END();
