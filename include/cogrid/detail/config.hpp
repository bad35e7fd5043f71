// cogrid/detail/config.hpp — compiler requirements and the header-only / separate-compilation switch.
#ifndef COGRID_DETAIL_CONFIG_HPP
#define COGRID_DETAIL_CONFIG_HPP

#if __cplusplus < 202002L
#error "cogrid needs C++20 (-std=c++20)"
#endif

// Asio 1.22 detects coroutine support for clang only with libc++. With libstdc++ the support is there
// all the same; say so before Asio's config is read. Include cogrid's headers before Asio's, or pass
// -DASIO_HAS_CO_AWAIT=1 (the Meson dependency and the pkg-config file do).
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#endif

// Non-template functions are defined in cogrid/impl/*.ipp. By default those files are included by the
// public headers and the functions are inline (header-only). Define COGRID_SEPARATE_COMPILATION in every
// translation unit and include <cogrid/src.hpp> in exactly one of them to compile them once instead.
#if defined(COGRID_SEPARATE_COMPILATION)
#define COGRID_DECL
#else
#define COGRID_HEADER_ONLY 1
#define COGRID_DECL inline
#endif

#endif // COGRID_DETAIL_CONFIG_HPP
