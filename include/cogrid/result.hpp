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

/// Throws the exception that stands for error `ec`: `std::system_error`. Other error types used with
/// `result` provide their own `throw_as_exception` (found by argument-dependent lookup).
[[noreturn]] inline void throw_as_exception(const std::error_code& ec) { throw std::system_error(ec); }

/// Holds either a `T` or an error `E` (like C++23 `std::expected<T, E>`); `E` is `std::error_code`
/// unless said otherwise (calls use `call_error`, which also carries a remote's error text).
///
/// `value()` throws (`std::system_error` for error codes) when there is no value, so code that prefers
/// exceptions can write `auto m = decode(buf).value();` and code that does not can test the result first.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: const member functions only.
template <class T, class E = std::error_code>
class [[nodiscard]] result {
public:
  using value_type = T;
  using error_type = E;

  /// A result holding `v`.
  result(const T& v) : state_(std::in_place_index<0>, v) {}
  result(T&& v) noexcept(std::is_nothrow_move_constructible_v<T>) : state_(std::in_place_index<0>, std::move(v)) {}

  /// A result holding the error `e` (for error codes: non-zero).
  result(E e) noexcept(std::is_nothrow_move_constructible_v<E>) : state_(std::in_place_index<1>, std::move(e)) {
    if constexpr (std::is_same_v<E, std::error_code>) assert(std::get<1>(state_));
  }
  /// From an error code, when `E` can be made from one.
  template <class C, class = std::enable_if_t<std::is_error_code_enum_v<C> && !std::is_same_v<E, C>>>
  result(C e) noexcept : result(E(make_error_code(e))) {}

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  /// The error; a default-constructed `E` (a zero error_code) when the result holds a value.
  E error() const { return has_value() ? E{} : std::get<1>(state_); }

  /// The value; throws `throw_as_exception(error())` (`std::system_error` for codes) when there is none.
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
    if (!has_value()) throw_as_exception(std::get<1>(state_));
  }

  std::variant<T, E> state_;
};

} // namespace cogrid

#endif // COGRID_RESULT_HPP
