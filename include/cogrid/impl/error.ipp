// cogrid/impl/error.ipp — definitions for cogrid/error.hpp.
#ifndef COGRID_IMPL_ERROR_IPP
#define COGRID_IMPL_ERROR_IPP

#include <cogrid/error.hpp>

#include <string>

namespace cogrid {
namespace detail {

class error_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "cogrid"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
    case errc::truncated: return "grid message truncated";
    case errc::malformed: return "not a grid message (expected a msgpack array of 7 elements)";
    case errc::type_mismatch: return "grid message field has the wrong msgpack type";
    case errc::integer_overflow: return "grid message integer out of range for its field";
    case errc::crc_mismatch: return "grid message CRC mismatch";
    case errc::unknown_op: return "unknown grid op code";
    case errc::trailing_bytes: return "trailing bytes after grid message";
    case errc::nested_merged: return "merged grid message inside a merged message";
    case errc::bad_field_length: return "grid message field has the wrong length";
    case errc::invalid_value: return "grid message field value out of range";
    case errc::buffer_too_small: return "output buffer too small for grid message";
    case errc::payload_too_large: return "payload too large for a grid message";
    }
    return "unknown cogrid error " + std::to_string(ev);
  }

  std::error_condition default_error_condition(int ev) const noexcept override {
    if (ev >= 1 && ev <= 10) return make_error_condition(condition::protocol_violation);
    if (ev == 11 || ev == 12) return make_error_condition(condition::encoding_failed);
    return {ev, *this};
  }
};

class condition_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override { return "cogrid.condition"; }

  std::string message(int ev) const override {
    switch (static_cast<condition>(ev)) {
    case condition::protocol_violation: return "grid protocol violation";
    case condition::encoding_failed: return "grid message encoding failed";
    }
    return "unknown cogrid condition " + std::to_string(ev);
  }
};

} // namespace detail

COGRID_DECL const std::error_category& error_category() noexcept {
  static const detail::error_category_impl instance;
  return instance;
}

COGRID_DECL const std::error_category& condition_category() noexcept {
  static const detail::condition_category_impl instance;
  return instance;
}

} // namespace cogrid

#endif // COGRID_IMPL_ERROR_IPP
