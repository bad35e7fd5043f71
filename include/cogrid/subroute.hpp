// cogrid/subroute.hpp — handler ids and the 32-byte subroute ids that address sub-handlers.
#ifndef COGRID_SUBROUTE_HPP
#define COGRID_SUBROUTE_HPP

#include <cogrid/detail/config.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace cogrid {

/// Identifies a handler on the wire (one byte). MinIO's handler ids are append-only: 1-77 are its
/// storage, lock and peer handlers, 78 and 79 its test handlers. Write `cogrid::handler_id{78}`.
enum class handler_id : std::uint8_t {};

/// The id of a subroute of a handler: SHA-256 of the route text with byte 0 replaced by the handler id
/// and byte 1 by zero. It travels as a 32-byte trailer after the message.
struct subroute_id {
  std::array<std::byte, 32> bytes{}; ///< the id as it travels

  /// Equal when all 32 bytes are.
  friend bool operator==(const subroute_id&, const subroute_id&) = default;

  /// Lower-case hex of the 32 bytes.
  COGRID_DECL std::string to_hex() const;
};

/// The subroute id of `route` under handler `h` (e.g. `make_subroute_id(handler_id{78}, "some-subroute")`).
/// Nested subroutes are their parts joined with '/': see `join_route`.
COGRID_DECL subroute_id make_subroute_id(handler_id h, std::string_view route) noexcept;

/// Joins subroute parts with '/', as MinIO's chained `Subroute` does: {"a", "b"} -> "a/b".
COGRID_DECL std::string join_route(std::initializer_list<std::string_view> parts);

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/subroute.ipp>
#endif

#endif // COGRID_SUBROUTE_HPP
