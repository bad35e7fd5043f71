// cogrid/impl/election.ipp — definitions for cogrid/election.hpp.
#ifndef COGRID_IMPL_ELECTION_IPP
#define COGRID_IMPL_ELECTION_IPP

#include <cogrid/election.hpp>
#include <cogrid/detail/xxh3.hpp>

namespace cogrid {

COGRID_DECL bool should_connect(std::string_view local, std::string_view remote) noexcept {
  const std::uint64_t h0 = detail::xxh3_64_concat(local, remote);
  const std::uint64_t h1 = detail::xxh3_64_concat(remote, local);
  if (h0 == h1) return local < remote;
  return h0 < h1;
}

} // namespace cogrid

#endif // COGRID_IMPL_ELECTION_IPP
