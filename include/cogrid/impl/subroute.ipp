// cogrid/impl/subroute.ipp — definitions for cogrid/subroute.hpp.
#ifndef COGRID_IMPL_SUBROUTE_IPP
#define COGRID_IMPL_SUBROUTE_IPP

#include <cogrid/subroute.hpp>
#include <cogrid/detail/hex.hpp>

#include <openssl/sha.h>

namespace cogrid {

COGRID_DECL std::string subroute_id::to_hex() const { return detail::to_hex(bytes); }

COGRID_DECL subroute_id make_subroute_id(handler_id h, std::string_view route) noexcept {
  subroute_id id;
  static_assert(sizeof(id.bytes) == SHA256_DIGEST_LENGTH);
  SHA256(reinterpret_cast<const std::uint8_t*>(route.data()), route.size(),
         reinterpret_cast<std::uint8_t*>(id.bytes.data()));
  id.bytes[0] = static_cast<std::byte>(h);
  id.bytes[1] = std::byte{0};
  return id;
}

COGRID_DECL std::string join_route(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

} // namespace cogrid

#endif // COGRID_IMPL_SUBROUTE_IPP
