// cogrid/result.hpp — a value or an error_code, for APIs that report failure without throwing.
#ifndef COGRID_RESULT_HPP
#define COGRID_RESULT_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>

#include <cassert>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace cogrid {

/// Holds either a `T` or a non-zero `std::error_code` (like C++23 `std::expected<T, std::error_code>`).
///
/// `value()` throws `std::system_error` when there is no value, so code that prefers exceptions can
/// write `auto m = decode(buf).value();` and code that does not can test the result first.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: const member functions only.
template <class T>
class [[nodiscard]] result {
public:
  using value_type = T;

  /// A result holding `v`.
  result(const T& v) : state_(std::in_place_index<0>, v) {}
  result(T&& v) noexcept(std::is_nothrow_move_constructible_v<T>) : state_(std::in_place_index<0>, std::move(v)) {}

  /// A result holding the error `ec`, which must not be zero.
  result(std::error_code ec) noexcept : state_(std::in_place_index<1>, ec) { assert(ec); }
  result(errc e) noexcept : result(make_error_code(e)) {}

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  /// The error; a default (zero) error_code when the result holds a value.
  std::error_code error() const noexcept { return has_value() ? std::error_code{} : std::get<1>(state_); }

  /// The value; throws `std::system_error(error())` when there is none.
  T& value() & { check(); return std::get<0>(state_); }
  const T& value() const& { check(); return std::get<0>(state_); }
  T&& value() && { check(); return std::get<0>(std::move(state_)); }

  /// The value without a check: only after `has_value()` said yes.
  T& operator*() & noexcept { return *std::get_if<0>(&state_); }
  const T& operator*() const& noexcept { return *std::get_if<0>(&state_); }
  T* operator->() noexcept { return std::get_if<0>(&state_); }
  const T* operator->() const noexcept { return std::get_if<0>(&state_); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(state_) : static_cast<T>(std::forward<U>(fallback));
  }

private:
  void check() const {
    if (!has_value()) throw std::system_error(std::get<1>(state_));
  }

  std::variant<T, std::error_code> state_;
};

} // namespace cogrid

#endif // COGRID_RESULT_HPP
