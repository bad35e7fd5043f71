// cogrid/result.hpp — the one result vocabulary of cogrid: `error` (a code, and a remote's text when
// the failure happened at the remote) and `result<T>` (a value or an `error`).
#ifndef COGRID_RESULT_HPP
#define COGRID_RESULT_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>

#include <cassert>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace cogrid {

/// Why an operation failed: a code, and for failures that happened at the remote (`errc::remote_error`,
/// `errc::unknown_handler`) or that have more to say (`errc::bad_payload`: what did not decode) a text.
///
/// A default-constructed `error` is no error: `bool(e)` is false.
struct error {
  std::error_code code; ///< what failed; empty (false) for no error
  std::string text; ///< the remote's text, or a detail; empty when the code says it all

  error() = default;
  /// The error `c` without a text.
  error(std::error_code c) noexcept : code(c) {}
  /// The error `c` with the text `t`.
  error(std::error_code c, std::string t) noexcept : code(c), text(std::move(t)) {}
  /// The cogrid error `e` without a text.
  error(errc e) noexcept : code(make_error_code(e)) {}
  /// The cogrid error `e` with the text `t`.
  error(errc e, std::string t) noexcept : code(make_error_code(e)), text(std::move(t)) {}

  /// The text when there is one, else the code's message.
  std::string message() const { return text.empty() ? code.message() : text; }
  /// Whether this is an error (its code is not empty).
  explicit operator bool() const noexcept { return static_cast<bool>(code); }
  /// Same code and same text.
  friend bool operator==(const error& a, const error& b) noexcept { return a.code == b.code && a.text == b.text; }
  /// Whether the code is `b` (the text is not compared).
  friend bool operator==(const error& a, const std::error_code& b) noexcept { return a.code == b; }
  /// Whether the code is `b` (the text is not compared).
  friend bool operator==(const error& a, errc b) noexcept { return a.code == b; }
  /// Whether the code matches the condition `b` (the text is not compared).
  friend bool operator==(const error& a, const std::error_condition& b) noexcept { return a.code == b; }
  /// Whether the code matches the error condition enum value `b` (the text is not compared).
  template <class E, class = std::enable_if_t<std::is_error_condition_enum_v<E>>>
  friend bool operator==(const error& a, E b) noexcept {
    return a.code == b;
  }
};

/// The error a handler returns (or that a thrown exception becomes) to fail its call with `text`: the
/// caller gets `errc::remote_error` with that text.
inline error remote_error(std::string text) { return error(errc::remote_error, std::move(text)); }

/// `std::system_error` carrying an `error`: its code, and its text as `what()` when it has one.
class exception : public std::system_error {
public:
  /// An exception carrying `e`.
  explicit exception(const cogrid::error& e) : std::system_error(e.code, e.text), error_(e) {}
  /// The error this exception carries, text included.
  const cogrid::error& error() const noexcept { return error_; }

private:
  cogrid::error error_;
};

namespace detail {
inline const error& no_error() noexcept {
  static const error none;
  return none;
}
} // namespace detail

/// A value of type `T` or an `error` (like C++23 `std::expected<T, error>`); `result<void>` (the
/// default) holds only the error, or nothing on success. Every public operation of cogrid that can fail
/// returns one (or completes with one).
///
/// `value()` throws `cogrid::exception` (a `std::system_error`) when there is no value, so code that
/// prefers exceptions can write `auto m = decode(buf).value();` and code that does not tests the result.
///
/// @par Thread safety
/// Distinct objects: safe. Shared objects: const member functions only.
template <class T = void>
class [[nodiscard]] result {
public:
  using value_type = T; ///< the type of the value

  /// A result holding a value-initialized `T` (as `std::expected` does).
  result() = default;
  /// A result holding `v`.
  result(const T& v) : state_(std::in_place_index<0>, v) {}
  /// A result holding `v`, moved in.
  result(T&& v) noexcept(std::is_nothrow_move_constructible_v<T>) : state_(std::in_place_index<0>, std::move(v)) {}
  /// A result holding the error `e` (which must be an error).
  result(cogrid::error e) noexcept : state_(std::in_place_index<1>, std::move(e)) { assert(std::get<1>(state_)); }
  /// A result holding the error `ec` (which must be an error).
  result(std::error_code ec) noexcept : result(cogrid::error(ec)) {}
  /// A result holding the error code enum value `e` (e.g. an `errc`; it must be an error).
  template <class C, class = std::enable_if_t<std::is_error_code_enum_v<C>>>
  result(C e) noexcept : result(cogrid::error(make_error_code(e))) {}

  /// Whether this holds a value (no error).
  bool has_value() const noexcept { return state_.index() == 0; }
  /// `has_value()`.
  explicit operator bool() const noexcept { return has_value(); }

  /// The error; no error (`bool(error())` false) when the result holds a value.
  const cogrid::error& error() const noexcept { return has_value() ? detail::no_error() : *std::get_if<1>(&state_); }

  /// The value; throws `cogrid::exception` with the error when there is none.
  T& value() & { check(); return std::get<0>(state_); }
  /// The value; throws `cogrid::exception` with the error when there is none.
  const T& value() const& { check(); return std::get<0>(state_); }
  /// The value, to move from; throws `cogrid::exception` with the error when there is none.
  T&& value() && { check(); return std::get<0>(std::move(state_)); }

  /// The value without a check: only after `has_value()` said yes.
  T& operator*() & noexcept { return *std::get_if<0>(&state_); }
  /// The value without a check: only after `has_value()` said yes.
  const T& operator*() const& noexcept { return *std::get_if<0>(&state_); }
  /// The value, to move from, without a check: only after `has_value()` said yes.
  T&& operator*() && noexcept { return std::move(*std::get_if<0>(&state_)); }
  /// Access to the value's members without a check: only after `has_value()` said yes.
  T* operator->() noexcept { return std::get_if<0>(&state_); }
  /// Access to the value's members without a check: only after `has_value()` said yes.
  const T* operator->() const noexcept { return std::get_if<0>(&state_); }

  /// A copy of the value, or `fallback` converted to `T` when this holds an error.
  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(state_) : static_cast<T>(std::forward<U>(fallback));
  }

  /// Whether this holds an error matching `e` (`r == errc::timeout`).
  template <class E>
    requires std::is_error_code_enum_v<E> || std::is_error_condition_enum_v<E> || std::is_same_v<E, std::error_code>
  friend bool operator==(const result& r, const E& e) noexcept {
    return !r.has_value() && r.error().code == e;
  }

private:
  void check() const {
    if (!has_value()) throw exception(*std::get_if<1>(&state_));
  }

  std::variant<T, cogrid::error> state_;
};

/// Success, or an error.
template <>
class [[nodiscard]] result<void> {
public:
  using value_type = void; ///< no value

  /// Success.
  result() noexcept = default;
  /// The error `e`; an empty `e` is success.
  result(cogrid::error e) noexcept : error_(std::move(e)) {}
  /// The error `ec`; an empty `ec` is success.
  result(std::error_code ec) noexcept : error_(ec) {}
  /// The error code enum value `e` (e.g. an `errc`).
  template <class C, class = std::enable_if_t<std::is_error_code_enum_v<C>>>
  result(C e) noexcept : error_(make_error_code(e)) {}

  /// Whether this is success.
  bool has_value() const noexcept { return !error_; }
  /// `has_value()`.
  explicit operator bool() const noexcept { return has_value(); }
  /// The error; no error (`bool(error())` false) on success.
  const cogrid::error& error() const noexcept { return error_; }
  /// Throws `cogrid::exception` when this is an error.
  void value() const {
    if (error_) throw exception(error_);
  }

  /// Whether this holds an error matching `e` (`r == errc::timeout`).
  template <class E>
    requires std::is_error_code_enum_v<E> || std::is_error_condition_enum_v<E> || std::is_same_v<E, std::error_code>
  friend bool operator==(const result& r, const E& e) noexcept {
    return !r.has_value() && r.error().code == e;
  }

private:
  cogrid::error error_;
};

} // namespace cogrid

#endif // COGRID_RESULT_HPP
