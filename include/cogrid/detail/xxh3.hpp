// cogrid/detail/xxh3.hpp — XXH3-64 (seed 0, default secret), compiled inline so no libxxhash is linked.
#ifndef COGRID_DETAIL_XXH3_HPP
#define COGRID_DETAIL_XXH3_HPP

#include <cogrid/detail/config.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#define COGRID_DEFINED_XXH_INLINE_ALL
#endif
#include <xxhash.h>
#ifdef COGRID_DEFINED_XXH_INLINE_ALL
#undef XXH_INLINE_ALL
#undef COGRID_DEFINED_XXH_INLINE_ALL
#endif

namespace cogrid::detail {

inline std::uint64_t xxh3_64(std::span<const std::byte> data) noexcept {
  return XXH3_64bits(data.data(), data.size());
}

/// XXH3-64 of the concatenation a+b, without building the concatenated string.
inline std::uint64_t xxh3_64_concat(std::string_view a, std::string_view b) noexcept {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, a.data(), a.size());
  XXH3_64bits_update(&state, b.data(), b.size());
  return XXH3_64bits_digest(&state);
}

/// XXH3-64 of the concatenation of `parts`, as xxh3_64 of one buffer holding them gives it.
inline std::uint64_t xxh3_64_parts(std::initializer_list<std::span<const std::byte>> parts) noexcept {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (std::span<const std::byte> p : parts) XXH3_64bits_update(&state, p.data(), p.size());
  return XXH3_64bits_digest(&state);
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_XXH3_HPP
