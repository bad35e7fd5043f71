// What the loopback tests (and grid-bench) share: payload helpers and MinIO's typed test messages.
#ifndef COGRID_TESTS_TEST_TYPES_HPP
#define COGRID_TESTS_TEST_TYPES_HPP

#include <cogrid/call.hpp>

#include <msgpack.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cogrid_test {

inline cogrid::payload bytes(std::string_view s) {
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size());
}
/// The payload as text; "<nil>" for a nil payload.
inline std::string text(const cogrid::payload& p) {
  return p ? std::string(reinterpret_cast<const char*>(p->data()), p->size()) : "<nil>";
}

// MinIO's typed test messages (testRequest / testResponse): maps keyed by field name.
struct test_request {
  std::int64_t Num = 0;
  std::string String;
  MSGPACK_DEFINE_MAP(Num, String)
};
struct test_response {
  std::int64_t OrgNum = 0;
  std::string OrgString;
  std::string Embedded;
  MSGPACK_DEFINE_MAP(OrgNum, OrgString, Embedded)
};

} // namespace cogrid_test

#endif // COGRID_TESTS_TEST_TYPES_HPP
