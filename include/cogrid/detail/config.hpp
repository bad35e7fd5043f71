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

#include <asio/version.hpp>

// Asio's io_uring backend (ASIO_HAS_IO_URING with ASIO_DISABLE_EPOLL) left stale entries in its
// completion handling before 1.28.1 (upstream: "Fix clean up of internal I/O object structures when using
// io_uring", 1.28.0; "Ensure io_uring run() function timeouts are cleaned up correctly", 1.28.1, asio
// issue #1284). With Debian's 1.22 a 32-node grid-bench run on it crashed in a timer's completion
// (benchmarks/README.md), so cogrid refuses that combination rather than fail at run time.
#if (defined(ASIO_HAS_IO_URING_AS_DEFAULT) || (defined(ASIO_HAS_IO_URING) && defined(ASIO_DISABLE_EPOLL))) && \
    ASIO_VERSION < 102801
#error "cogrid: Asio's io_uring backend needs Asio 1.28.1 or later; build without ASIO_DISABLE_EPOLL (epoll) with this Asio"
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
