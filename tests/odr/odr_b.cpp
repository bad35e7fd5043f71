#include <cogrid/cogrid.hpp>

#include <string>

std::string describe_b() { return cogrid::to_string(cogrid::op_code::request); }
std::error_code code_b() { return cogrid::errc::truncated; }
