// cogrid/version.hpp — the library version (checked against meson.build's project version at configure).
#ifndef COGRID_VERSION_HPP
#define COGRID_VERSION_HPP

#define COGRID_VERSION_MAJOR 0
#define COGRID_VERSION_MINOR 1
#define COGRID_VERSION_PATCH 0
/// "MAJOR.MINOR.PATCH"
#define COGRID_VERSION_STRING "0.1.0"
/// MAJOR * 10000 + MINOR * 100 + PATCH
#define COGRID_VERSION (COGRID_VERSION_MAJOR * 10000 + COGRID_VERSION_MINOR * 100 + COGRID_VERSION_PATCH)

#endif // COGRID_VERSION_HPP
