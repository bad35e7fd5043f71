// cogrid/election.hpp — which side of a pair of nodes dials the other.
#ifndef COGRID_ELECTION_HPP
#define COGRID_ELECTION_HPP

#include <cogrid/detail/config.hpp>

#include <string_view>

namespace cogrid {

/// True when the node with host string `local` is the one that dials `remote` (MinIO's
/// `shouldConnect`): h0 = XXH3-64(local + remote), h1 = XXH3-64(remote + local); the local side dials
/// iff h0 < h1, and iff local < remote (bytewise) when the hashes are equal. For two distinct hosts
/// exactly one of `should_connect(a, b)` and `should_connect(b, a)` is true. Host strings are compared
/// byte for byte, scheme and port included (`http://127.0.0.1:9000`).
COGRID_DECL bool should_connect(std::string_view local, std::string_view remote) noexcept;

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/election.ipp>
#endif

#endif // COGRID_ELECTION_HPP
