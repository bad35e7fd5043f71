// Precompiled for the unit tests: doctest and all of cogrid.
#include <doctest/doctest.h>
#include <cogrid/cogrid.hpp>
#include <msgpack.hpp>
