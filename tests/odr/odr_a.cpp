// With odr_b.cpp: every inline definition of header-only cogrid may appear in several TUs of a program,
// and the error category is one object program-wide, so codes made in either TU compare equal.
#include <cogrid/cogrid.hpp>

#include <cstdio>
#include <string>
#include <system_error>

std::string describe_b();
std::error_code code_b();

int main() {
  const std::string a = cogrid::to_string(cogrid::op_code::request);
  const std::string b = describe_b();
  if (a != b) {
    std::fprintf(stderr, "odr: %s != %s\n", a.c_str(), b.c_str());
    return 1;
  }
  if (code_b() != cogrid::make_error_code(cogrid::errc::truncated)) {
    std::fprintf(stderr, "odr: error categories differ between TUs\n");
    return 1;
  }
  return 0;
}
