// tests/fuzz/fuzz_net.hpp — what the network fuzzers (handshake, WebSocket) and their seed generator
// share: the grid the accepting node belongs to, and the HTTP upgrade a dialing node sends.
#ifndef COGRID_TESTS_FUZZ_NET_HPP
#define COGRID_TESTS_FUZZ_NET_HPP

#include <cogrid/election.hpp>

#include <string>
#include <vector>

namespace fuzz {

inline const std::string token = "fuzz-token";
inline const std::string acceptor = "http://a:1";

/// A host that dials `acceptor` by the election (so that its OpConnect is accepted).
inline const std::string& dialer() {
  static const std::string h = [] {
    for (int i = 1;; ++i) {
      std::string c = "http://b" + std::to_string(i) + ":1";
      if (cogrid::should_connect(c, acceptor)) return c;
    }
  }();
  return h;
}

inline std::string upgrade_request(const std::string& bearer, const std::string& time = "1744934400000000000") {
  return "GET /minio/grid/v1 HTTP/1.1\r\nHost: a:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
         "Authorization: Bearer " + bearer + "\r\nX-Minio-Time: " + time + "\r\n\r\n";
}

} // namespace fuzz

#endif // COGRID_TESTS_FUZZ_NET_HPP
