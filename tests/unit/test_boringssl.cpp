// The build links BoringSSL, not the system OpenSSL (a wrong library directory once made clang builds
// link OpenSSL 3 against BoringSSL's headers).
#include <cogrid/subroute.hpp>

#include <doctest/doctest.h>

#include <openssl/crypto.h>

#include <string>

TEST_CASE("the linked libcrypto is BoringSSL") {
  const std::string version = OpenSSL_version(OPENSSL_VERSION);
  CHECK_MESSAGE(version.find("BoringSSL") != std::string::npos, "linked: " << version);
}
