// cogrid/auth.hpp — how a dialing node proves who it is, and how an accepting node checks it.
#ifndef COGRID_AUTH_HPP
#define COGRID_AUTH_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/error.hpp>
#include <cogrid/result.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

namespace cogrid {

/// Pluggable authentication of grid connections: what a dialing node presents, and how an accepting node
/// checks it.
///
/// The dialer sends `token()` twice, as `Authorization: Bearer <token>` on the WebSocket upgrade and as
/// `connect_request::token`; the acceptor passes each to `validate()`.
///
/// @par Errors
/// `validate` returns success when the token is accepted, otherwise an error (the
/// authenticators below use `errc::auth_failed` and `errc::token_expired`). Error codes never carry the
/// token or the secret; callers must not log tokens either.
///
/// @par Thread safety
/// Both functions are called on the connection's strand and must not block. The authenticators made by
/// `static_token_auth` and `node_token_auth` hold immutable shared state: copies of them, and each of
/// their functions, may be called concurrently from any thread.
struct authenticator {
  /// Returns the token to present on the next dial.
  std::function<std::string()> token;
  /// Checks a token a peer presented: success when accepted.
  std::function<result<void>(std::string_view token)> validate;
};

/// The largest token `validate_node_token` considers (64 KiB). MinIO's parser copies a token into a
/// 64 KiB buffer and verifies only that prefix (internal/jwt/parser.go `base64BufferSize`).
inline constexpr std::size_t max_node_token_size = 64 * 1024;

/// An authenticator for nodes that all share one secret string: the token is the secret itself.
///
/// `validate` compares in constant time: it compares HMAC-SHA256 digests (under a random key made once
/// per authenticator) of the presented token and of the secret with `CRYPTO_memcmp`, so neither the
/// content nor the length of the secret shows in the timing.
///
/// @par Errors
/// `validate` returns `errc::auth_failed` for an empty token or one that differs from the secret.
/// An empty `secret` accepts nothing.
///
/// @par Thread safety
/// See `authenticator`: the result may be copied and used from any thread.
///
/// @par Example
/// @code
/// cogrid::authenticator auth = cogrid::static_token_auth("cluster-secret");
/// assert(!auth.validate(auth.token()));
/// @endcode
COGRID_DECL authenticator static_token_auth(std::string secret);

/// MinIO's node authentication: a JWT signed HS512 with the root secret key.
///
/// `token()` returns a token made once, when this function is called, by `make_node_token(access_key,
/// secret_key, now + 100 years)` — the token MinIO caches in `globalNodeAuthToken` (cmd/jwt.go
/// `authenticateNode`). `validate(t)` is `validate_node_token(t, access_key, secret_key,
/// std::chrono::system_clock::now())`, which accepts what MinIO's `validateStorageRequestToken`
/// (cmd/storage-rest-server.go) accepts, with the stricter points listed there.
///
/// @par Errors
/// As `validate_node_token`: `errc::auth_failed` or `errc::token_expired`.
///
/// @par Thread safety
/// See `authenticator`: the result may be copied and used from any thread.
///
/// @par Example
/// @code
/// auto auth = cogrid::node_token_auth("minioadmin", "minioadmin"); // MinIO's root credentials
/// @endcode
COGRID_DECL authenticator node_token_auth(std::string access_key, std::string secret_key);

/// Makes MinIO's node token for `access_key`, signed with `secret_key`, expiring at `expires` (rounded
/// down to whole seconds): `base64url(header) "." base64url(claims) "." base64url(HMAC-SHA512(secret_key,
/// first two parts))`, unpadded, with header `{"alg":"HS512","typ":"JWT"}` and claims
/// `{"accessKey":AK,"exp":SECONDS,"sub":AK}` — byte for byte what Go's golang-jwt v4 writes for MinIO's
/// `StandardClaims` (fields in struct order, `omitempty`: an empty access key or an expiry of exactly 0
/// leaves the field out; strings escaped as Go's `encoding/json` does).
///
/// @par Errors
/// None (throws `std::bad_alloc` if memory runs out).
///
/// @par Thread safety
/// Safe to call concurrently.
COGRID_DECL std::string make_node_token(std::string_view access_key, std::string_view secret_key,
                                        std::chrono::system_clock::time_point expires);

/// Checks a node token as MinIO does (internal/jwt/parser.go `ParseWithStandardClaims`, golang-jwt v4
/// `StandardClaims.Valid`, cmd/storage-rest-server.go `validateStorageRequestToken`), at time `now`:
///
/// - at most `max_node_token_size` bytes; exactly two '.'; each part strict unpadded base64url;
/// - the header a JSON object whose one "alg" member is the string "HS512" (MinIO also takes HS256 and
///   HS384 with the same key, but only ever issues HS512; cogrid accepts HS512 only);
/// - the signature HMAC-SHA512(`secret_key`, header "." claims), compared in constant time;
/// - the claims a JSON object where "accessKey", "sub", "aud" and "iss", if present, are strings and
///   "exp", "nbf" and "iat", if present, are integers (no fraction or exponent, as MinIO's parser
///   requires); no duplicates of these members; other members are ignored;
/// - with `now` rounded down to whole seconds: "exp" (unless 0) after `now`; "nbf" and "iat" (unless 0)
///   not after `now`;
/// - "accessKey" or "sub" equal to `access_key`.
///
/// The signature is checked before the claims are read, so a token that is both wrongly signed and
/// expired is `errc::auth_failed`.
///
/// @par Errors
/// `errc::token_expired` for a correctly signed token whose exp, nbf or iat excludes `now`;
/// `errc::auth_failed` for everything else wrong, including malformed input of any kind, an empty
/// `access_key` or an empty `secret_key`. Never throws (if memory runs out the token is rejected).
///
/// @par Thread safety
/// Safe to call concurrently.
COGRID_DECL result<void> validate_node_token(std::string_view token, std::string_view access_key,
                                                std::string_view secret_key,
                                                std::chrono::system_clock::time_point now) noexcept;

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/auth.ipp>
#endif

#endif // COGRID_AUTH_HPP
