// cogrid/impl/election.ipp — definitions for cogrid/election.hpp.
#ifndef COGRID_IMPL_ELECTION_IPP
#define COGRID_IMPL_ELECTION_IPP

#include <cogrid/election.hpp>
#include <cogrid/detail/xxh3.hpp>

namespace cogrid {

COGRID_DECL bool should_connect(std::string_view local, std::string_view remote) noexcept {
  const auto l = std::as_bytes(std::span(local.data(), local.size()));
  const auto r = std::as_bytes(std::span(remote.data(), remote.size()));
  const std::uint64_t h0 = detail::xxh3_64_parts({l, r});
  const std::uint64_t h1 = detail::xxh3_64_parts({r, l});
  if (h0 == h1) return local < remote;
  return h0 < h1;
}

} // namespace cogrid

#endif // COGRID_IMPL_ELECTION_IPP
