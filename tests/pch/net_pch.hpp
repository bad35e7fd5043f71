// Precompiled for the loopback tests: doctest, Asio with TLS, and all of cogrid's connection layer.
#include <doctest/doctest.h>
#include <asio.hpp>
#include <asio/ssl.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <cogrid/cogrid.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/testing.hpp>
#include <cogrid/unary.hpp>
#include <cogrid/stream.hpp>
