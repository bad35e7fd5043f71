// Compiled by io_uring_guard.py with Asio's io_uring backend selected: cogrid must refuse it, with its own
// message, on an Asio older than 1.28.1, and not from then on (detail/config.hpp). The refusal is in the
// configuration header every cogrid header includes first, so the smallest header shows it.
#include <cogrid/error.hpp>

int main() { return cogrid::make_error_code(cogrid::errc::timeout) ? 0 : 1; }
