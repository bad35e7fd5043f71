// cogrid/call.hpp — the vocabulary of calls: payloads, errors carrying a remote's text, the context a
// handler sees, and the raw (bytes in, bytes out) handler type the typed layer is built on.
#ifndef COGRID_CALL_HPP
#define COGRID_CALL_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>
#include <cogrid/result.hpp>
#include <cogrid/subroute.hpp>

#include <asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace cogrid {

/// Owned payload bytes. `std::nullopt` is a nil payload, an empty vector an empty one: both cross the
/// wire and arrive as they were sent.
using payload = std::optional<std::vector<std::byte>>;

/// Why a call failed: a code, and for remote failures the remote's own text.
///
/// `code` is `errc::remote_error` when the remote handler failed (`text` is its message),
/// `errc::unknown_handler` when the remote has no such handler (`text` is the remote's reason),
/// `errc::bad_payload` when a payload does not decode as the declared type, `errc::disconnected`,
/// `errc::timeout` (the deadline passed), `asio::error::operation_aborted` (the caller cancelled), or
/// `errc::queue_full`.
struct call_error {
  std::error_code code;
  std::string text; ///< the remote's text for remote failures; empty otherwise

  call_error() = default;
  call_error(std::error_code c, std::string t = {}) : code(c), text(std::move(t)) {}
  call_error(errc e, std::string t = {}) : code(make_error_code(e)), text(std::move(t)) {}

  /// The remote's text when there is one, else the code's message.
  std::string message() const { return text.empty() ? code.message() : text; }
  explicit operator bool() const noexcept { return static_cast<bool>(code); }
  friend bool operator==(const call_error& a, std::error_code b) noexcept { return a.code == b; }
  friend bool operator==(const call_error& a, errc b) noexcept { return a.code == b; }
};

/// `std::system_error` with the remote's text as `what()`.
class call_exception : public std::system_error {
public:
  explicit call_exception(const call_error& e) : std::system_error(e.code, e.text), error_(e) {}
  const call_error& error() const noexcept { return error_; }

private:
  call_error error_;
};

[[noreturn]] inline void throw_as_exception(const call_error& e) { throw call_exception(e); }

/// What a call completes with: the response, or why not. `value()` throws `call_exception`.
template <class T>
using call_result = result<T, call_error>;

/// An error a handler returns (instead of throwing) to fail its call with `text`; the caller gets
/// `errc::remote_error` with that text.
struct handler_error {
  std::string text;
};

/// What a handler may return to fail without throwing: a value or a `handler_error`.
template <class T>
using handler_result = result<T, handler_error>;

[[noreturn]] inline void throw_as_exception(const handler_error& e) { throw std::runtime_error(e.text); }

class connection;

/// What a handler knows about the call it serves.
struct call_context {
  /// The connection the call came in on (its `remote()` is the caller's host).
  connection* conn = nullptr;
  handler_id handler{};
  std::optional<subroute_id> subroute;
  /// When the caller stops waiting (steady clock); `time_point::max()` when the caller set no deadline.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// A handler of single requests in bytes: the layer typed handlers are built on, and the form for users
/// with their own serialization. Runs as its own coroutine on the io_context (never on the connection's
/// reader); cancelled (Asio terminal cancellation) when the caller cancels or its deadline passes.
/// Throwing, or returning a `handler_error`, fails the call with that text.
using raw_unary_handler = std::function<asio::awaitable<handler_result<payload>>(call_context, payload)>;

/// The same for a handler that is a plain function (no awaitable): it is posted to the io_context and
/// called there, with no coroutine, strand or timer of its own. It cannot be cancelled; when the caller's
/// deadline has passed by the time it returns, its response is dropped (counted in `late_responses`).
using sync_unary_handler = std::function<handler_result<payload>(const call_context&, payload)>;

/// Per-call settings.
struct call_options {
  /// The call's deadline, sent to the remote as DeadlineMS (MinIO's default for single requests: 60 s).
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

} // namespace cogrid

#endif // COGRID_CALL_HPP
