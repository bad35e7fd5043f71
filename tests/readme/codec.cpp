// Wraps README's codec fragment: statements with the text, the received WebSocket payload and the log
// function it names.
// @includes
#include <span>
#include <string>
#include <vector>

void codec(const std::string& text, std::span<const std::byte> ws_payload) {
  auto log = [](const std::string&) {};
  // @snippet
}
