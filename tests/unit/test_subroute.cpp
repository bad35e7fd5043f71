#include <cogrid/subroute.hpp>

#include <doctest/doctest.h>

TEST_SUITE_BEGIN("subroute");

TEST_CASE("subroute id of grid-protocol.md 1.11: handler 78, \"some-subroute\"") {
  const cogrid::subroute_id id = cogrid::make_subroute_id(cogrid::handler_id{78}, "some-subroute");
  CHECK(id.to_hex() == "4e009a6621c598f8aaa3b0f270111bab3c6c463e5d2886959f7c26e0ac9c6c48");
}

TEST_CASE("byte 0 is the handler id, byte 1 is zero, the rest is SHA-256 of the route") {
  const auto a = cogrid::make_subroute_id(cogrid::handler_id{1}, "x");
  const auto b = cogrid::make_subroute_id(cogrid::handler_id{2}, "x");
  CHECK(a.bytes[0] == std::byte{1});
  CHECK(b.bytes[0] == std::byte{2});
  CHECK(a.bytes[1] == std::byte{0});
  CHECK(std::equal(a.bytes.begin() + 2, a.bytes.end(), b.bytes.begin() + 2));
  CHECK(a != b);
  // SHA-256("x") = 2d711642b726b044...: bytes 2.. are the digest's.
  CHECK(a.to_hex().substr(4, 12) == "1642b726b044");
}

TEST_CASE("nested subroutes are their parts joined with '/'") {
  CHECK(cogrid::join_route({"subroute", "1"}) == "subroute/1");
  CHECK(cogrid::join_route({"a"}) == "a");
  CHECK(cogrid::join_route({}).empty());
  const cogrid::handler_id h{78};
  CHECK(cogrid::make_subroute_id(h, cogrid::join_route({"subroute", "1"})) == cogrid::make_subroute_id(h, "subroute/1"));
  CHECK(cogrid::make_subroute_id(h, "subroute/1") != cogrid::make_subroute_id(h, "subroute"));
}

TEST_SUITE_END();
