// cogrid/impl/auth.ipp — definitions for cogrid/auth.hpp.
#ifndef COGRID_IMPL_AUTH_IPP
#define COGRID_IMPL_AUTH_IPP

#include <cogrid/auth.hpp>
#include <cogrid/detail/base64.hpp>
#include <cogrid/detail/json.hpp>

#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <utility>

namespace cogrid {
namespace detail {

inline constexpr std::size_t hs512_size = 64;
// golang-jwt v4 NewWithClaims puts {"typ":"JWT","alg":"HS512"} in a map, which encoding/json writes with
// sorted keys.
inline constexpr std::string_view node_token_header = R"({"alg":"HS512","typ":"JWT"})";
// MinIO's defaultInterNodeJWTExpiry (cmd/jwt.go): 100 * 365 * 24 hours.
inline constexpr std::chrono::hours node_token_lifetime{100 * 365 * 24};

inline std::array<std::uint8_t, hs512_size> hmac_sha512(std::string_view key, std::string_view data) noexcept {
  std::array<std::uint8_t, hs512_size> out{};
  unsigned len = 0;
  static constexpr std::uint8_t no_key = 0; // HMAC() wants a non-null key pointer even for an empty key
  HMAC(EVP_sha512(), key.empty() ? &no_key : reinterpret_cast<const std::uint8_t*>(key.data()), key.size(),
       reinterpret_cast<const std::uint8_t*>(data.data()), data.size(), out.data(), &len);
  return out;
}

inline std::int64_t unix_seconds(std::chrono::system_clock::time_point t) noexcept {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

inline std::error_code auth_error(errc e) noexcept { return make_error_code(e); }

// The claims of MinIO's internal/jwt StandardClaims that its parser reads (UnmarshalJSON).
struct node_claims {
  std::string access_key, subject;
  std::int64_t exp = 0, nbf = 0, iat = 0;
};

inline bool read_node_claims(std::string_view json_text, node_claims& out) {
  unsigned seen = 0; // one bit per known member: duplicates are rejected
  const auto once = [&seen](unsigned bit) {
    if (seen & bit) return false;
    seen |= bit;
    return true;
  };
  const auto integer = [](const json::value& v, std::int64_t& to) {
    if (v.kind != json::kind::number) return false;
    const auto i = json::to_int64(v.text);
    if (!i) return false;
    to = *i;
    return true;
  };
  const auto str = [](const json::value& v, std::string* to) {
    if (v.kind != json::kind::string) return false;
    if (to) to->assign(v.text);
    return true;
  };
  return json::read_object(json_text, [&](std::string_view key, const json::value& v) {
    if (key == "accessKey") return once(1) && str(v, &out.access_key);
    if (key == "sub") return once(2) && str(v, &out.subject);
    if (key == "aud") return once(4) && str(v, nullptr);
    if (key == "iss") return once(8) && str(v, nullptr);
    if (key == "exp") return once(16) && integer(v, out.exp);
    if (key == "nbf") return once(32) && integer(v, out.nbf);
    if (key == "iat") return once(64) && integer(v, out.iat);
    return true; // other members are ignored, whatever their type
  });
}

inline bool header_is_hs512(std::string_view json_text) {
  bool alg_ok = false;
  unsigned algs = 0;
  const bool ok = json::read_object(json_text, [&](std::string_view key, const json::value& v) {
    if (key != "alg") return true;
    ++algs;
    alg_ok = v.kind == json::kind::string && v.text == "HS512";
    return algs == 1;
  });
  return ok && alg_ok;
}

inline std::error_code validate_node_token_impl(std::string_view token, std::string_view access_key,
                                                std::string_view secret_key,
                                                std::chrono::system_clock::time_point now) {
  const std::error_code failed = auth_error(errc::auth_failed);
  if (access_key.empty() || secret_key.empty()) return failed;
  if (token.empty() || token.size() > max_node_token_size) return failed;

  const std::size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return failed;
  const std::size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) return failed;
  const std::string_view header_b64 = token.substr(0, dot1);
  const std::string_view claims_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  const std::string_view sig_b64 = token.substr(dot2 + 1);

  std::string buf;
  if (!base64url_decode(header_b64, buf) || !header_is_hs512(buf)) return failed;

  // The signature (its length is public: it is the token's), compared in constant time.
  if (!base64url_decode(sig_b64, buf) || buf.size() != hs512_size) return failed;
  const auto mac = hmac_sha512(secret_key, token.substr(0, dot2));
  if (CRYPTO_memcmp(mac.data(), buf.data(), hs512_size) != 0) return failed;

  node_claims claims;
  if (!base64url_decode(claims_b64, buf) || !read_node_claims(buf, claims)) return failed;
  if (claims.access_key.empty() && claims.subject.empty()) return failed; // "accessKey/sub missing"

  // golang-jwt v4 StandardClaims.Valid: a zero value means "not set"; `now` is in whole seconds.
  const std::int64_t t = unix_seconds(now);
  if (claims.exp != 0 && !(t < claims.exp)) return auth_error(errc::token_expired);
  if (claims.iat != 0 && t < claims.iat) return auth_error(errc::token_expired);
  if (claims.nbf != 0 && t < claims.nbf) return auth_error(errc::token_expired);

  if (claims.access_key != access_key && claims.subject != access_key) return failed;
  return {};
}

} // namespace detail

COGRID_DECL std::string make_node_token(std::string_view access_key, std::string_view secret_key,
                                        std::chrono::system_clock::time_point expires) {
  // golang-jwt v4 marshals MinIO's StandardClaims struct: AccessKey `accessKey,omitempty`, then the embedded
  // jwt.StandardClaims in field order (aud, exp, jti, iat, iss, nbf, sub), all omitempty.
  const std::int64_t exp = detail::unix_seconds(expires);
  std::string claims = "{";
  if (!access_key.empty()) {
    claims += "\"accessKey\":";
    detail::json::append_go_string(claims, access_key);
  }
  if (exp != 0) {
    if (claims.size() > 1) claims += ',';
    claims += "\"exp\":";
    claims += std::to_string(exp);
  }
  if (!access_key.empty()) {
    claims += ",\"sub\":";
    detail::json::append_go_string(claims, access_key);
  }
  claims += '}';

  std::string token = detail::base64url_encode(detail::node_token_header);
  token += '.';
  token += detail::base64url_encode(claims);
  const auto mac = detail::hmac_sha512(secret_key, token);
  token += '.';
  token += detail::base64url_encode(std::span<const std::uint8_t>(mac));
  return token;
}

COGRID_DECL result<void> validate_node_token(std::string_view token, std::string_view access_key,
                                                std::string_view secret_key,
                                                std::chrono::system_clock::time_point now) noexcept {
  try {
    return detail::validate_node_token_impl(token, access_key, secret_key, now);
  } catch (...) { // only std::bad_alloc can get here
    return make_error_code(errc::auth_failed);
  }
}

COGRID_DECL authenticator static_token_auth(std::string secret) {
  struct state {
    std::string secret;
    std::array<std::uint8_t, 32> key{};    // random, per authenticator: digests reveal nothing
    std::array<std::uint8_t, 32> digest{}; // HMAC-SHA256(key, secret)
  };
  auto s = std::make_shared<state>();
  s->secret = std::move(secret);
  RAND_bytes(s->key.data(), s->key.size());
  unsigned len = 0;
  static constexpr std::uint8_t empty = 0;
  HMAC(EVP_sha256(), s->key.data(), s->key.size(),
       s->secret.empty() ? &empty : reinterpret_cast<const std::uint8_t*>(s->secret.data()), s->secret.size(),
       s->digest.data(), &len);
  std::shared_ptr<const state> cs = std::move(s);

  authenticator a;
  a.token = [cs] { return cs->secret; };
  a.validate = [cs](std::string_view token) -> result<void> {
    if (token.empty() || cs->secret.empty()) return make_error_code(errc::auth_failed);
    std::array<std::uint8_t, 32> d{};
    unsigned n = 0;
    HMAC(EVP_sha256(), cs->key.data(), cs->key.size(), reinterpret_cast<const std::uint8_t*>(token.data()),
         token.size(), d.data(), &n);
    if (CRYPTO_memcmp(d.data(), cs->digest.data(), d.size()) != 0) return make_error_code(errc::auth_failed);
    return {};
  };
  return a;
}

COGRID_DECL authenticator node_token_auth(std::string access_key, std::string secret_key) {
  struct state {
    std::string access_key, secret_key, token;
  };
  auto s = std::make_shared<state>();
  s->token = make_node_token(access_key, secret_key, std::chrono::system_clock::now() + detail::node_token_lifetime);
  s->access_key = std::move(access_key);
  s->secret_key = std::move(secret_key);
  std::shared_ptr<const state> cs = std::move(s);

  authenticator a;
  a.token = [cs] { return cs->token; };
  a.validate = [cs](std::string_view token) {
    return validate_node_token(token, cs->access_key, cs->secret_key, std::chrono::system_clock::now());
  };
  return a;
}

} // namespace cogrid

#endif // COGRID_IMPL_AUTH_IPP
