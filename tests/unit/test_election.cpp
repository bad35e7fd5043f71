#include <cogrid/election.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

TEST_SUITE_BEGIN("election");

TEST_CASE("grid-protocol.md 2.4: of :9000 and :9001, :9001 dials") {
  CHECK(cogrid::should_connect("http://127.0.0.1:9001", "http://127.0.0.1:9000"));
  CHECK_FALSE(cogrid::should_connect("http://127.0.0.1:9000", "http://127.0.0.1:9001"));
}

TEST_CASE("exactly one side of every pair dials, and every host dials a fair share (MinIO TestShouldConnect)") {
  std::vector<std::string> hosts;
  for (int i = 0; i < 35; ++i) hosts.push_back("http://server-" + std::to_string(i) + ".example:9000");
  for (const auto& a : hosts) {
    int dials = 0;
    for (const auto& b : hosts) {
      if (a == b) continue;
      const bool ab = cogrid::should_connect(a, b);
      CHECK(ab != cogrid::should_connect(b, a));
      dials += ab ? 1 : 0;
    }
    CHECK_MESSAGE(dials >= 10, a << " dials only " << dials);
  }
}

TEST_CASE("host strings are compared byte for byte") {
  // Same host, other spelling: a different pair with its own (still antisymmetric) election.
  const std::string a = "http://127.0.0.1:9000", b = "http://localhost:9001", b2 = "https://localhost:9001";
  CHECK(cogrid::should_connect(a, b) != cogrid::should_connect(b, a));
  CHECK(cogrid::should_connect(a, b2) != cogrid::should_connect(b2, a));
}

TEST_SUITE_END();
