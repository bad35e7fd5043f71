// cogrid/detail/xxh3.hpp — XXH3-64 (seed 0, default secret), compiled inline so no libxxhash is linked.
//
// On x86-64 builds for the baseline instruction set (SSE2), long inputs (the CRC of a large payload's
// pieces) are hashed with xxHash's own AVX2 kernels when the CPU has AVX2, checked once at run time: the
// same hash, about twice as fast. This needs xxHash 0.8.1's internal entry points (Debian bookworm's
// version); with another version, a build for AVX2 already, or COGRID_NO_XXH3_AVX2 defined, every input
// takes xxHash's default code.
#ifndef COGRID_DETAIL_XXH3_HPP
#define COGRID_DETAIL_XXH3_HPP

#include <cogrid/detail/config.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>

#if !defined(COGRID_NO_XXH3_AVX2) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__AVX2__) && !defined(XXH_INLINE_ALL_31684351384) // not inlined already, without the kernels
#define COGRID_XXH3_AVX2_WANTED
#include <immintrin.h>
#ifndef XXH_DISPATCH_AVX2
#define XXH_DISPATCH_AVX2 1
#define COGRID_DEFINED_XXH_DISPATCH_AVX2
#endif
#ifndef XXH_TARGET_AVX2
#define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#define COGRID_DEFINED_XXH_TARGET_AVX2
#endif
#ifndef XXH_ACC_ALIGN
#define XXH_ACC_ALIGN 64 // the AVX2 kernels load the accumulators aligned to 32
#endif
#endif

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#define COGRID_DEFINED_XXH_INLINE_ALL
#endif
#include <xxhash.h>
#ifdef COGRID_DEFINED_XXH_INLINE_ALL
#undef XXH_INLINE_ALL
#undef COGRID_DEFINED_XXH_INLINE_ALL
#endif

#if defined(COGRID_XXH3_AVX2_WANTED) && XXH_VERSION_NUMBER == 801 && XXH_ACC_ALIGN >= 32
#define COGRID_XXH3_AVX2 1
#else
#define COGRID_XXH3_AVX2 0
#endif
#ifdef COGRID_DEFINED_XXH_DISPATCH_AVX2
#undef XXH_DISPATCH_AVX2
#undef COGRID_DEFINED_XXH_DISPATCH_AVX2
#endif
#ifdef COGRID_DEFINED_XXH_TARGET_AVX2
#undef XXH_TARGET_AVX2
#undef COGRID_DEFINED_XXH_TARGET_AVX2
#endif
#undef COGRID_XXH3_AVX2_WANTED

namespace cogrid::detail {

#if COGRID_XXH3_AVX2
/// Whether long inputs are hashed with the AVX2 kernels (the CPU has AVX2).
inline bool xxh3_avx2() noexcept {
  static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") != 0);
  return yes;
}
[[gnu::target("avx2")]] inline std::uint64_t xxh3_long_avx2(const void* data, std::size_t size) noexcept {
  return XXH3_hashLong_64b_internal(data, size, XXH3_kSecret, sizeof(XXH3_kSecret), XXH3_accumulate_512_avx2,
                                    XXH3_scrambleAcc_avx2);
}
[[gnu::target("avx2")]] inline void xxh3_update_avx2(XXH3_state_t* state, const void* data, std::size_t size) noexcept {
  (void)XXH3_update(state, static_cast<const xxh_u8*>(data), size, XXH3_accumulate_512_avx2, XXH3_scrambleAcc_avx2);
}
#else
inline bool xxh3_avx2() noexcept { return false; }
#endif

inline std::uint64_t xxh3_64(std::span<const std::byte> data) noexcept {
#if COGRID_XXH3_AVX2
  // Over XXH3_MIDSIZE_MAX bytes, XXH3_64bits (seed 0) is exactly this long-input hash.
  if (data.size() > XXH3_MIDSIZE_MAX && xxh3_avx2()) return xxh3_long_avx2(data.data(), data.size());
#endif
  return XXH3_64bits(data.data(), data.size());
}

/// XXH3-64 of the concatenation of `parts`, as xxh3_64 of one buffer holding them gives it.
inline std::uint64_t xxh3_64_parts(std::initializer_list<std::span<const std::byte>> parts) noexcept {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (std::span<const std::byte> p : parts) {
#if COGRID_XXH3_AVX2
    if (p.size() > XXH3_MIDSIZE_MAX && xxh3_avx2()) {
      xxh3_update_avx2(&state, p.data(), p.size());
      continue;
    }
#endif
    XXH3_64bits_update(&state, p.data(), p.size());
  }
  return XXH3_64bits_digest(&state);
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_XXH3_HPP
