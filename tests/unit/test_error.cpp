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
    cogrid::errc::disconnected,     cogrid::errc::timeout,          cogrid::errc::not_websocket,
    cogrid::errc::http_header_too_large, cogrid::errc::websocket_protocol, cogrid::errc::message_too_large,
    cogrid::errc::auth_failed,      cogrid::errc::token_expired,    cogrid::errc::clock_skew,
    cogrid::errc::unknown_host,     cogrid::errc::wrong_dial_direction, cogrid::errc::connection_rejected,
    cogrid::errc::queue_full,       cogrid::errc::shutdown,         cogrid::errc::websocket_closed,
    cogrid::errc::unexpected_message,
    cogrid::errc::remote_error,     cogrid::errc::unknown_handler,  cogrid::errc::handler_exists,
    cogrid::errc::bad_payload,      cogrid::errc::invalid_handler,  cogrid::errc::stream_closed,
    cogrid::errc::out_of_sequence,  cogrid::errc::credit_violation,
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
  for (int i = 0; i <= 15; ++i) CHECK(static_cast<int>(all_errcs[12 + i]) == 100 + i);
  for (int i = 0; i <= 7; ++i) CHECK(static_cast<int>(all_errcs[28 + i]) == 200 + i);
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

TEST_CASE("codes match their conditions") {
  using cogrid::condition;
  using cogrid::errc;
  for (cogrid::errc e : all_errcs) {
    const std::error_code ec = e;
    const int v = static_cast<int>(e);
    const bool wire = v <= 10, encoder = v == 11 || v == 12, conn = v >= 100 && v < 200;
    const bool remote = v == 200 || v == 201 || v == 203;
    CHECK((ec == condition::encoding_failed) == encoder);
    CHECK((ec == condition::connection_failed) == conn);
    CHECK((ec == condition::call_failed) == remote);
    if (wire) CHECK(ec == condition::protocol_violation);
    if (v == 206 || v == 207) CHECK(ec == condition::protocol_violation); // a peer broke a stream's rules
    if (v == 205) CHECK_FALSE(ec == condition::protocol_violation);       // our own misuse
    if (encoder) CHECK_FALSE(ec == condition::protocol_violation);
  }
  // Handshake refusals are "rejected"; transport trouble is not.
  for (errc e : {errc::auth_failed, errc::token_expired, errc::clock_skew, errc::unknown_host,
                 errc::wrong_dial_direction, errc::connection_rejected})
    CHECK(std::error_code(e) == condition::rejected);
  for (errc e : {errc::disconnected, errc::timeout, errc::queue_full, errc::websocket_protocol})
    CHECK_FALSE(std::error_code(e) == condition::rejected);
  // A bad frame is both a protocol violation and a failed connection.
  CHECK(std::error_code(errc::websocket_protocol) == condition::protocol_violation);
  CHECK(std::error_code(errc::websocket_protocol) == condition::connection_failed);
  CHECK_FALSE(std::error_code(errc::disconnected) == condition::protocol_violation);
  // A foreign error never matches a cogrid condition.
  CHECK_FALSE(std::make_error_code(std::errc::io_error) == condition::protocol_violation);
  CHECK(std::string(cogrid::condition_category().name()) == "cogrid.condition");
  CHECK(cogrid::make_error_condition(condition::protocol_violation).message() == "grid protocol violation");
}

TEST_CASE("a cogrid code is not equal to a same-numbered code of another category") {
  const std::error_code ours = cogrid::errc::truncated;
  CHECK(ours != std::error_code(1, std::generic_category()));
  CHECK(ours == cogrid::errc::truncated);
  CHECK(ours != cogrid::errc::malformed);
}

TEST_SUITE_END();
