#include <cogrid/auth.hpp>

#include <cogrid/detail/base64.hpp>
#include <cogrid/detail/json.hpp>

#include <doctest/doctest.h>

#include <openssl/digest.h>
#include <openssl/hmac.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;
using cogrid::errc;
using sys_seconds = std::chrono::sys_seconds;

constexpr std::string_view ak = "minioadmin";
constexpr std::string_view sk = "minioadmin";
const sys_seconds exp_2100{4102444800s}; // 2100-01-01T00:00:00Z
const sys_seconds now_2025{1750000000s}; // 2025-06-15

std::string b64u(std::string_view s) { return cogrid::detail::base64url_encode(s); }

// Signs arbitrary header and claims JSON with HMAC-SHA(`bits`) straight through BoringSSL, to build
// tokens make_node_token never would.
std::string sign(std::string_view header, std::string_view claims, std::string_view secret, int bits = 512) {
  std::string t = b64u(header) + "." + b64u(claims);
  std::array<std::uint8_t, 64> mac{};
  unsigned n = 0;
  HMAC(bits == 512 ? EVP_sha512() : bits == 384 ? EVP_sha384() : EVP_sha256(), secret.data(), secret.size(),
       reinterpret_cast<const std::uint8_t*>(t.data()), t.size(), mac.data(), &n);
  return t + "." + cogrid::detail::base64url_encode(std::span<const std::uint8_t>(mac.data(), n));
}
constexpr std::string_view hs512_header = R"({"alg":"HS512","typ":"JWT"})";
std::string sign_claims(std::string_view claims, std::string_view secret = sk) {
  return sign(hs512_header, claims, secret);
}

std::error_code check(std::string_view token, sys_seconds now = now_2025) {
  return cogrid::validate_node_token(token, ak, sk, now).error().code;
}

} // namespace

TEST_SUITE_BEGIN("auth");

// ---- known answers ------------------------------------------------------------------------------------

// Computed at authoring time with the OpenSSL command line, independently of cogrid:
//   b64u() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
//   H=$(printf '%s' '{"alg":"HS512","typ":"JWT"}' | b64u)
//   C=$(printf '%s' '{"accessKey":"minioadmin","exp":4102444800,"sub":"minioadmin"}' | b64u)
//   S=$(printf '%s' "$H.$C" | openssl dgst -sha512 -hmac minioadmin -binary | b64u)
//   echo "$H.$C.$S"
constexpr std::string_view kat_minioadmin =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
    "eyJhY2Nlc3NLZXkiOiJtaW5pb2FkbWluIiwiZXhwIjo0MTAyNDQ0ODAwLCJzdWIiOiJtaW5pb2FkbWluIn0."
    "sz1teB0uxxGT_GIoAHQ_iRazI2ATyKGAi4diiR56JaYUP_vnYD10y0fAd1EawWy7fmQOVQYPIkiPNZlY4DxXuA";

// Same commands with access key  a<b>&"\  (which Go's encoding/json writes as "a\u003cb\u003e\u0026\"\\"),
// exp 1700000000 and secret 'secret key 2':
//   C=$(printf '%s' '{"accessKey":"a\u003cb\u003e\u0026\"\\","exp":1700000000,"sub":"a\u003cb\u003e\u0026\"\\"}' | b64u)
//   S=$(printf '%s' "$H.$C" | openssl dgst -sha512 -hmac 'secret key 2' -binary | b64u)
constexpr std::string_view kat_escaped =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
    "eyJhY2Nlc3NLZXkiOiJhXHUwMDNjYlx1MDAzZVx1MDAyNlwiXFwiLCJleHAiOjE3MDAwMDAwMDAsInN1YiI6ImFcdTAwM2NiXHUwMDNlXHUwMDI2XCJcXCJ9."
    "g6pCQn2elVT1E8yOUkfsDaMrp3zIJV7WGvGg5ByjrNnKdxzpz4esEQ-UdNA3A1PIP0jMf3cLQi96G0sbh476qg";

// HS256 over the same header-with-HS256 and claims, secret minioadmin:
//   H=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64u)
//   S=$(printf '%s' "$H.$C" | openssl dgst -sha256 -hmac minioadmin -binary | b64u)
constexpr std::string_view kat_hs256 =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJhY2Nlc3NLZXkiOiJtaW5pb2FkbWluIiwiZXhwIjo0MTAyNDQ0ODAwLCJzdWIiOiJtaW5pb2FkbWluIn0."
    "gWTgVo6lpkFBR4MVtaqRaFs44TO3y_ZmB7PmQyLe8zI";

TEST_CASE("make_node_token matches a token computed with openssl") {
  CHECK(cogrid::make_node_token(ak, sk, exp_2100) == kat_minioadmin);
  CHECK(cogrid::make_node_token(R"(a<b>&"\)", "secret key 2", sys_seconds{1700000000s}) == kat_escaped);
  // exp is whole seconds, rounded down as Go's Time.Unix does.
  CHECK(cogrid::make_node_token(ak, sk, exp_2100 + 999ms) == kat_minioadmin);
  CHECK(!check(kat_minioadmin));
  CHECK(cogrid::validate_node_token(kat_escaped, R"(a<b>&"\)", "secret key 2", sys_seconds{1600000000s}));
}

TEST_CASE("claims are written as golang-jwt writes MinIO's StandardClaims (omitempty)") {
  const auto claims_of = [](const std::string& token) {
    const auto a = token.find('.'), b = token.rfind('.');
    std::string out;
    REQUIRE(cogrid::detail::base64url_decode(std::string_view(token).substr(a + 1, b - a - 1), out));
    return out;
  };
  CHECK(claims_of(cogrid::make_node_token("k", "s", sys_seconds{5s})) == R"({"accessKey":"k","exp":5,"sub":"k"})");
  CHECK(claims_of(cogrid::make_node_token("", "s", sys_seconds{5s})) == R"({"exp":5})");
  CHECK(claims_of(cogrid::make_node_token("k", "s", sys_seconds{0s})) == R"({"accessKey":"k","sub":"k"})");
  CHECK(claims_of(cogrid::make_node_token("", "s", sys_seconds{0s})) == "{}");
  CHECK(claims_of(cogrid::make_node_token("k", "s", sys_seconds{-1s} + 500ms)) == R"({"accessKey":"k","exp":-1,"sub":"k"})");
}

TEST_CASE("strings are escaped as Go's encoding/json escapes them") {
  const auto go = [](std::string_view s) {
    std::string out;
    cogrid::detail::json::append_go_string(out, s);
    return out;
  };
  CHECK(go("plain") == R"("plain")");
  CHECK(go("\"\\/") == R"("\"\\/")");
  CHECK(go("\b\f\n\r\t") == R"("\b\f\n\r\t")");
  CHECK(go(std::string_view("\x00\x01\x1f\x7f", 4)) == "\"\\u0000\\u0001\\u001f\x7f\"");
  CHECK(go("<>&") == R"("\u003c\u003e\u0026")");
  CHECK(go("\xc3\xa9\xe2\x80\xa8\xe2\x80\xa9\xf0\x9f\x98\x80") == "\"\xc3\xa9\\u2028\\u2029\xf0\x9f\x98\x80\"");
  // Invalid UTF-8: one U+FFFD per bad byte (overlong, surrogate, truncated, stray continuation).
  CHECK(go("\xc0\x80") == R"("\ufffd\ufffd")");
  CHECK(go("\xed\xa0\x80") == R"("\ufffd\ufffd\ufffd")");
  CHECK(go("a\xe2\x82") == R"("a\ufffd\ufffd")");
  CHECK(go("\x80z") == R"("\ufffdz")");
}

// ---- validation ---------------------------------------------------------------------------------------

TEST_CASE("round trip make -> validate") {
  for (std::string_view key : {"k", "minioadmin", "AKIAIOSFODNN7EXAMPLE", "\xc3\xa9<&>\n"}) {
    const std::string t = cogrid::make_node_token(key, "s3cr3t", exp_2100);
    CHECK(cogrid::validate_node_token(t, key, "s3cr3t", now_2025));
    CHECK(cogrid::validate_node_token(t, key, "s3cr3T", now_2025) == errc::auth_failed);
  }
}

TEST_CASE("exp: valid strictly before it, token_expired at and after it") {
  const std::string t = cogrid::make_node_token(ak, sk, sys_seconds{1000s});
  CHECK(!check(t, sys_seconds{999s}));
  CHECK(cogrid::validate_node_token(t, ak, sk, sys_seconds{999s} + 999ms)); // now is rounded down
  CHECK(check(t, sys_seconds{1000s}) == errc::token_expired);
  CHECK(check(t, sys_seconds{5000s}) == errc::token_expired);
  CHECK(check(t, sys_seconds{5000s}) == cogrid::condition::rejected);
  CHECK(check(kat_minioadmin, exp_2100) == errc::token_expired);
  // Negative exp is a time before 1970, not "unset".
  CHECK(check(sign_claims(R"({"accessKey":"minioadmin","exp":-1})")) == errc::token_expired);
}

TEST_CASE("exp 0 or absent means no expiry (golang-jwt v4 StandardClaims)") {
  CHECK(!check(sign_claims(R"({"accessKey":"minioadmin","exp":0})"), sys_seconds{9000000000s}));
  CHECK(!check(sign_claims(R"({"accessKey":"minioadmin"})"), sys_seconds{9000000000s}));
}

TEST_CASE("nbf and iat in the future are token_expired; at or before now they pass") {
  CHECK(check(sign_claims(R"({"sub":"minioadmin","nbf":1750000001})")) == errc::token_expired);
  CHECK(!check(sign_claims(R"({"sub":"minioadmin","nbf":1750000000})")));
  CHECK(!check(sign_claims(R"({"sub":"minioadmin","nbf":1})")));
  CHECK(check(sign_claims(R"({"sub":"minioadmin","iat":1750000001})")) == errc::token_expired);
  CHECK(!check(sign_claims(R"({"sub":"minioadmin","iat":1750000000})")));
  CHECK(!check(sign_claims(R"({"sub":"minioadmin","nbf":0,"iat":0,"exp":0})")));
}

TEST_CASE("wrong secret is auth_failed, also when the token is expired too") {
  CHECK(cogrid::validate_node_token(kat_minioadmin, ak, "minioadmin2", now_2025) == errc::auth_failed);
  CHECK(cogrid::validate_node_token(kat_minioadmin, ak, "minioadmi", now_2025) == errc::auth_failed);
  CHECK(cogrid::validate_node_token(kat_minioadmin, ak, "minioadmin", exp_2100) == errc::token_expired);
  CHECK(cogrid::validate_node_token(kat_minioadmin, ak, "other", exp_2100) == errc::auth_failed);
  CHECK(cogrid::validate_node_token(kat_minioadmin, ak, "", now_2025) == errc::auth_failed);
  CHECK(cogrid::validate_node_token(cogrid::make_node_token(ak, "", exp_2100), ak, "", now_2025) == errc::auth_failed);
}

TEST_CASE("accessKey or sub must name our access key") {
  CHECK(!check(sign_claims(R"({"accessKey":"other","sub":"minioadmin"})")));
  CHECK(!check(sign_claims(R"({"accessKey":"minioadmin","sub":"other"})")));
  CHECK(!check(sign_claims(R"({"accessKey":"minioadmin"})")));
  CHECK(!check(sign_claims(R"({"sub":"minioadmin"})")));
  CHECK(!check(sign_claims(R"({"sub":"mini\u006fadmin"})"))); // compared after unescaping
  CHECK(check(sign_claims(R"({"accessKey":"other","sub":"another"})")) == errc::auth_failed);
  CHECK(check(sign_claims(R"({"accessKey":"Minioadmin"})")) == errc::auth_failed);
  CHECK(check(sign_claims(R"({"accessKey":"minioadmin "})")) == errc::auth_failed);
  CHECK(check(sign_claims(R"({"exp":4102444800})")) == errc::auth_failed);
  CHECK(check(sign_claims(R"({"accessKey":"","sub":""})")) == errc::auth_failed);
  CHECK(check(sign_claims("{}")) == errc::auth_failed);
  // An empty access key of ours matches nothing (MinIO would match an empty accessKey claim).
  CHECK(cogrid::validate_node_token(sign_claims(R"({"sub":"x"})"), "", sk, now_2025) == errc::auth_failed);
  CHECK(cogrid::validate_node_token(kat_minioadmin, "other", sk, now_2025) == errc::auth_failed);
}

TEST_CASE("only HS512: none, HS256, HS384 and odd headers are auth_failed") {
  CHECK(check(kat_hs256) == errc::auth_failed);
  const std::string claims = R"({"accessKey":"minioadmin","exp":4102444800,"sub":"minioadmin"})";
  CHECK(check(sign(R"({"alg":"HS256","typ":"JWT"})", claims, sk, 256)) == errc::auth_failed);
  CHECK(check(sign(R"({"alg":"HS384","typ":"JWT"})", claims, sk, 384)) == errc::auth_failed);
  // alg none: without a signature, with an empty one, and even with a valid HS512 MAC over it.
  const std::string none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + b64u(claims);
  CHECK(check(none) == errc::auth_failed);
  CHECK(check(none + ".") == errc::auth_failed);
  CHECK(check(sign(R"({"alg":"none","typ":"JWT"})", claims, sk)) == errc::auth_failed);
  for (std::string_view h : {R"({"typ":"JWT"})", R"({"alg":"hs512"})", R"({"alg":"HS512 "})", R"({"alg":512})",
                             R"({"alg":null})", R"({"alg":["HS512"]})", R"({"alg":"HS512","alg":"HS512"})",
                             R"({"alg":"none","alg":"HS512"})", R"(["HS512"])", R"("HS512")", "", "{", "null"}) {
    CAPTURE(h);
    CHECK(check(sign(h, claims, sk)) == errc::auth_failed);
  }
  // The header need not be exactly golang-jwt's: other members and whitespace are fine.
  CHECK(!check(sign(R"({ "typ" : "JWT", "kid":{"x":[1]}, "alg" : "HS\u0035\u0031\u0032" })", claims, sk)));
  CHECK(!check(sign(R"({"alg":"HS512"})", claims, sk)));
}

TEST_CASE("tampered claims or signature are auth_failed") {
  std::string t(kat_minioadmin);
  const auto dot1 = t.find('.'), dot2 = t.rfind('.');
  // Claims replaced by others (a later exp, another access key) under the old signature.
  const std::string forged = t.substr(0, dot1 + 1) +
                             b64u(R"({"accessKey":"minioadmin","exp":4102444801,"sub":"minioadmin"})") + t.substr(dot2);
  CHECK(check(forged) == errc::auth_failed);
  // Every single-character change anywhere, in every part, is rejected.
  constexpr std::string_view alphabet = cogrid::detail::base64url_alphabet;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '.') continue;
    std::string m = t;
    m[i] = alphabet[(alphabet.find(t[i]) + 1) % alphabet.size()];
    CAPTURE(i);
    CHECK(check(m) == errc::auth_failed);
  }
  // Header and signature swapped in from another valid token (different secret).
  const std::string other = cogrid::make_node_token(ak, "other-secret", exp_2100);
  CHECK(check(t.substr(0, dot2) + other.substr(other.rfind('.'))) == errc::auth_failed);
}

TEST_CASE("truncated or extended tokens are auth_failed at every length") {
  const std::string t(kat_minioadmin);
  for (std::size_t n = 0; n < t.size(); ++n) {
    CAPTURE(n);
    CHECK(check(std::string_view(t).substr(0, n)) == errc::auth_failed);
    CHECK(check(t.substr(n + 1)) == errc::auth_failed);
    CHECK(check(t.substr(0, n) + t.substr(n + 1)) == errc::auth_failed); // one character dropped
  }
  for (std::string_view tail : std::initializer_list<std::string_view>{"A", "=", "==", ".", "\n", " ", std::string_view("\0", 1)}) {
    CHECK(check(t + std::string(tail)) == errc::auth_failed);
    CHECK(check(std::string(tail) + t) == errc::auth_failed);
  }
  CHECK(check("Bearer " + t) == errc::auth_failed);
}

TEST_CASE("non-canonical base64url (padding, trailing bits, other alphabets) is auth_failed") {
  const std::string claims = R"({"accessKey":"minioadmin"})"; // 26 bytes: base64url ends in a partial group
  const std::string good = sign_claims(claims);
  REQUIRE(!check(good));
  const auto dot2 = good.rfind('.');
  std::string padded = good.substr(0, dot2) + "==" + good.substr(dot2);
  CHECK(check(padded) == errc::auth_failed);
  // The signature's last character carries 4 unused bits: setting one is rejected (Go's non-strict
  // decoder would take it; strictness costs nothing since MinIO writes canonical tokens).
  std::string sig_bits = good;
  const char last = sig_bits.back();
  const auto idx = cogrid::detail::base64url_alphabet.find(last);
  REQUIRE(idx % 16 == 0);
  sig_bits.back() = cogrid::detail::base64url_alphabet[idx + 1];
  CHECK(check(sig_bits) == errc::auth_failed);
  // The standard alphabet's + and / instead of - and _.
  std::string std_alpha = good;
  bool changed = false;
  for (char& c : std_alpha) {
    if (c == '-') c = '+', changed = true;
    if (c == '_') c = '/', changed = true;
  }
  if (changed) CHECK(check(std_alpha) == errc::auth_failed);
}

TEST_CASE("garbage is auth_failed") {
  for (std::string_view g : {"", ".", "..", "...", "a.b.c", "a.b", "a", "....", "eyJ.eyJ.eyJ", " . . ",
                             "\xff\xfe.\x00.\x80", "null", "{}", "{}.{}.{}", "e30.e30.", "e30.e30.e30",
                             "e30..", "..e30"}) {
    CAPTURE(g);
    CHECK(check(g) == errc::auth_failed);
  }
  std::mt19937 rng(12345);
  const std::string t(kat_minioadmin);
  for (int i = 0; i < 5000; ++i) { // random byte mutations, insertions and deletions: never a crash
    std::string m = t;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t pos = rng() % (m.size() + 1);
      switch (rng() % 3) {
        case 0: if (pos < m.size()) m[pos] = static_cast<char>(rng()); break;
        case 1: m.insert(pos, 1, static_cast<char>(rng())); break;
        default: if (pos < m.size()) m.erase(pos, 1); break;
      }
    }
    if (m != t) CHECK(check(m) == errc::auth_failed);
  }
}

TEST_CASE("huge tokens are auth_failed; 64 KiB is the limit") {
  CHECK(check(std::string(1024 * 1024, 'A')) == errc::auth_failed);
  CHECK(check(std::string(1024 * 1024, '.')) == errc::auth_failed);
  const std::string t(kat_minioadmin);
  CHECK(check(t.substr(0, t.rfind('.')) + "." + std::string(1024 * 1024, 'A')) == errc::auth_failed);
  // A correctly signed token with a large ignored claim: accepted up to 64 KiB, rejected above.
  const auto token_with_pad = [](std::size_t pad) {
    return sign_claims(R"({"accessKey":"minioadmin","pad":")" + std::string(pad, 'x') + "\"}");
  };
  std::size_t lo = 40000, hi = 50000; // the largest pad whose token fits: lo fits, hi does not
  REQUIRE(token_with_pad(lo).size() <= cogrid::max_node_token_size);
  REQUIRE(token_with_pad(hi).size() > cogrid::max_node_token_size);
  while (hi - lo > 1) {
    const std::size_t mid = lo + (hi - lo) / 2;
    (token_with_pad(mid).size() <= cogrid::max_node_token_size ? lo : hi) = mid;
  }
  const std::size_t pad = lo;
  const std::string at_limit = token_with_pad(pad), over = token_with_pad(pad + 1);
  CHECK(at_limit.size() <= cogrid::max_node_token_size);
  CHECK(over.size() > cogrid::max_node_token_size);
  CHECK(!check(at_limit));
  CHECK(check(over) == errc::auth_failed);
  CHECK(check(token_with_pad(1024 * 1024)) == errc::auth_failed);
}

TEST_CASE("malformed or mistyped claims are auth_failed even when correctly signed") {
  for (std::string_view c : {
           R"({"accessKey":"minioadmin","exp":"4102444800"})", // exp must be a number
           R"({"accessKey":"minioadmin","exp":4102444800.0})", // ... an integer (MinIO's jsonparser.ParseInt)
           R"({"accessKey":"minioadmin","exp":4.1e9})",
           R"({"accessKey":"minioadmin","exp":9223372036854775808})", // int64 overflow
           R"({"accessKey":"minioadmin","exp":null})",
           R"({"accessKey":"minioadmin","exp":true})",
           R"({"accessKey":"minioadmin","nbf":"0"})",
           R"({"accessKey":"minioadmin","iat":[0]})",
           R"({"accessKey":1})",
           R"({"accessKey":null,"sub":"minioadmin"})",
           R"({"sub":["minioadmin"]})",
           R"({"sub":"minioadmin","aud":["x"]})", // MinIO's StandardClaims takes a string aud only
           R"({"sub":"minioadmin","iss":1})",
           R"({"accessKey":"x","accessKey":"minioadmin"})", // duplicates of known claims
           R"({"sub":"minioadmin","exp":4102444800,"exp":1})",
           R"([{"accessKey":"minioadmin"}])",
           R"("minioadmin")",
           R"({"accessKey":"minioadmin"} )"
           "x",
           R"({"accessKey":"minioadmin"}{})",
           R"({"accessKey":"minioadmin",})",
           R"({"accessKey":"minioadmin")",
           R"({'accessKey':'minioadmin'})",
           R"({"accessKey":"minio\admin"})",
           R"({"accessKey":"minioadmin","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})",
           "{\"accessKey\":\"minio\xff\"}",
           "",
       }) {
    CAPTURE(c);
    CHECK(check(sign_claims(c)) == errc::auth_failed);
  }
  // Other members of any type are ignored; whitespace is fine; exp may be negative-zero.
  CHECK(!check(sign_claims(
      R"( { "jti" : 5, "x":{"a":[1,2,{"b":null}]}, "y":[], "z":true, "aud":"a", "iss":"i", "accessKey" : "minioadmin", "exp":-0 } )")));
}

TEST_CASE("validate_node_token never throws and is noexcept") {
  const std::string_view none;
  const std::chrono::system_clock::time_point epoch;
  static_assert(noexcept(cogrid::validate_node_token(none, none, none, epoch)));
  CHECK(cogrid::validate_node_token({}, {}, {}, {}) == errc::auth_failed);
}

// ---- authenticators -----------------------------------------------------------------------------------

TEST_CASE("node_token_auth: a cached 100-year token that its validate accepts") {
  const auto before = std::chrono::system_clock::now();
  const cogrid::authenticator auth = cogrid::node_token_auth(std::string(ak), std::string(sk));
  const std::string t = auth.token();
  CHECK(t == auth.token()); // created once
  CHECK(auth.validate(t));
  CHECK(cogrid::validate_node_token(t, ak, sk, before + std::chrono::hours(24 * 365 * 99)));
  CHECK(cogrid::validate_node_token(t, ak, sk, before + std::chrono::hours(24 * 365 * 101)) == errc::token_expired);
  CHECK(auth.validate(kat_minioadmin)); // a MinIO peer's token, made elsewhere
  CHECK(auth.validate(kat_hs256) == errc::auth_failed);
  CHECK(auth.validate("") == errc::auth_failed);
  CHECK(auth.validate(t + "x") == errc::auth_failed);
  const cogrid::authenticator copy = auth;
  CHECK(copy.token() == t);
  CHECK(copy.validate(t));
  const cogrid::authenticator other = cogrid::node_token_auth(std::string(ak), "different");
  CHECK(other.validate(t) == errc::auth_failed);
  CHECK(auth.validate(other.token()) == errc::auth_failed);
}

TEST_CASE("static_token_auth: the token is the secret, compared whole") {
  const cogrid::authenticator auth = cogrid::static_token_auth("cluster-secret");
  CHECK(auth.token() == "cluster-secret");
  CHECK(auth.validate("cluster-secret"));
  CHECK(auth.validate(auth.token()));
  for (std::string_view bad : std::initializer_list<std::string_view>{"", "cluster-secre", "cluster-secret ", "Cluster-secret", "cluster-secret\n",
                               std::string_view("cluster-secret\0", 15), "x"}) {
    CAPTURE(bad);
    CHECK(auth.validate(bad) == errc::auth_failed);
  }
  CHECK(auth.validate(std::string(1024 * 1024, 'c')) == errc::auth_failed);
  const cogrid::authenticator copy = auth;
  CHECK(copy.validate("cluster-secret"));
  // Two authenticators with the same secret agree although their digest keys differ.
  CHECK(cogrid::static_token_auth("cluster-secret").validate(auth.token()));
  // An empty secret accepts nothing.
  const cogrid::authenticator empty = cogrid::static_token_auth("");
  CHECK(empty.validate("") == errc::auth_failed);
  CHECK(empty.validate("x") == errc::auth_failed);
  // Binary secrets work.
  const std::string bin("\0\xff\x01", 3);
  CHECK(cogrid::static_token_auth(bin).validate(bin));
  CHECK(cogrid::static_token_auth(bin).validate(std::string_view(bin).substr(0, 1)) == errc::auth_failed);
}

TEST_CASE("error texts never contain the token or the secret") {
  const std::string secret = "s3cr3t-TOKEN-value";
  const std::string node = cogrid::make_node_token("the-access-key", secret, sys_seconds{10s});
  std::vector<std::error_code> codes = {
      cogrid::static_token_auth(secret).validate("s3cr3t-TOKEN-valuX").error().code,
      cogrid::static_token_auth(secret).validate("").error().code,
      cogrid::validate_node_token(node, "the-access-key", secret, sys_seconds{20s}).error().code,
      cogrid::validate_node_token(node, "the-access-key", "wrong", now_2025).error().code,
      cogrid::validate_node_token(node, "another", secret, sys_seconds{5s}).error().code,
      cogrid::validate_node_token("garbage-token-text", "the-access-key", secret, now_2025).error().code,
  };
  CHECK(codes[2] == errc::token_expired);
  for (const std::error_code& ec : codes) {
    REQUIRE(ec);
    const std::string text = ec.message() + " " + ec.category().name();
    CAPTURE(text);
    CHECK(text.find("s3cr3t") == std::string::npos);
    CHECK(text.find(node.substr(0, 20)) == std::string::npos);
    CHECK(text.find(node.substr(node.rfind('.') + 1, 12)) == std::string::npos);
    CHECK(text.find("garbage") == std::string::npos);
    CHECK(text.find("access-key") == std::string::npos);
  }
}

// ---- detail: base64 ------------------------------------------------------------------------------------

TEST_CASE("base64 and base64url encode the RFC 4648 test vectors") {
  using cogrid::detail::base64_encode;
  using cogrid::detail::base64url_encode;
  const std::array<std::array<std::string_view, 3>, 7> v{{{"", "", ""},
                                                           {"f", "Zg==", "Zg"},
                                                           {"fo", "Zm8=", "Zm8"},
                                                           {"foo", "Zm9v", "Zm9v"},
                                                           {"foob", "Zm9vYg==", "Zm9vYg"},
                                                           {"fooba", "Zm9vYmE=", "Zm9vYmE"},
                                                           {"foobar", "Zm9vYmFy", "Zm9vYmFy"}}};
  for (const auto& [in, std_out, url_out] : v) {
    CHECK(base64_encode(in) == std_out);
    CHECK(base64url_encode(in) == url_out);
    std::string back;
    CHECK(cogrid::detail::base64url_decode(url_out, back));
    CHECK(back == in);
  }
  CHECK(base64_encode("\xfb\xff\xbf") == "+/+/");
  CHECK(base64url_encode("\xfb\xff\xbf") == "-_-_");
}

TEST_CASE("base64url round-trips every byte value and length") {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (std::size_t n = 0; n <= all.size(); n += 1 + n / 16) {
    const std::string_view in = std::string_view(all).substr(all.size() - n);
    const std::string enc = cogrid::detail::base64url_encode(in);
    CHECK(enc.find_first_of("=+/") == std::string::npos);
    CHECK(cogrid::detail::base64url_decoded_size(enc.size()) == n);
    std::string dec;
    CHECK(cogrid::detail::base64url_decode(enc, dec));
    CHECK(dec == in);
  }
}

TEST_CASE("base64url decoding is strict") {
  std::string out;
  for (std::string_view bad : std::initializer_list<std::string_view>{"Z", "Zg=", "Zg==", "Zm9v=", "Zm+v", "Zm/v", "Zm9v\n", " Zm9v", "Zm 9v", "Zm9vY",
                               "Zh", "Zm9", "Zm-", "Zm9vYh", std::string_view("Zm\0v", 4), "Zm\xc3\xa9", "Zm9v.",
                               "===="}) {
    CAPTURE(bad);
    CHECK(!cogrid::detail::base64url_decode(bad, out));
  }
  CHECK(cogrid::detail::base64url_decode("", out));
  CHECK(out.empty());
  CHECK(cogrid::detail::base64url_decode("Zm8", out));
  CHECK(out == "fo");
}

// ---- detail: JSON reader -------------------------------------------------------------------------------

namespace {
struct member_copy {
  std::string key;
  cogrid::detail::json::kind kind;
  std::string text;
  bool boolean;
};
bool read(std::string_view text, std::vector<member_copy>* out = nullptr, cogrid::detail::json::limits lim = {}) {
  std::vector<member_copy> tmp;
  const bool ok = cogrid::detail::json::read_object(
      text,
      [&](std::string_view k, const cogrid::detail::json::value& v) {
        tmp.push_back({std::string(k), v.kind, std::string(v.text), v.boolean});
        return true;
      },
      lim);
  if (out) *out = std::move(tmp);
  return ok;
}
} // namespace

TEST_CASE("json: a flat object with every kind of value") {
  using cogrid::detail::json::kind;
  std::vector<member_copy> m;
  REQUIRE(read(" {\"s\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\tz\", \"n\":-12.5e+3, \"t\":true,\"f\":false,\"z\":null,"
               "\"o\":{\"a\":[1,{}]},\"a\":[ ],\"u\":\"\\u00e9\\u20AC\\ud83d\\ude00\",\"\":0,\"s\":\"dup\"}\n",
               &m));
  REQUIRE(m.size() == 10);
  CHECK((m[0].key == "s" && m[0].kind == kind::string && m[0].text == "a\"\\/\b\f\n\r\tz"));
  CHECK((m[1].kind == kind::number && m[1].text == "-12.5e+3"));
  CHECK((m[2].kind == kind::boolean && m[2].boolean && m[2].text == "true"));
  CHECK((m[3].kind == kind::boolean && !m[3].boolean));
  CHECK(m[4].kind == kind::null);
  CHECK((m[5].kind == kind::object && m[5].text == R"({"a":[1,{}]})"));
  CHECK((m[6].kind == kind::array && m[6].text == "[ ]"));
  CHECK(m[7].text == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  CHECK((m[8].key.empty() && m[8].text == "0"));
  CHECK((m[9].key == "s" && m[9].text == "dup")); // duplicates are reported, in order
  CHECK(read("{}"));
  CHECK(read(" \t\r\n{ \t\r\n} \t\r\n"));
  CHECK(read("{\"\xc3\xa9\xf0\x9f\x98\x80\":\"\xe2\x82\xac\"}"));
}

TEST_CASE("json: rejects malformed input") {
  for (std::string_view bad : std::initializer_list<std::string_view>{
           "", " ", "[]", "\"x\"", "1", "null", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{a:1}", "{'a':1}",
           "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}", "{\"a\":1}}", "{\"a\":1}{}", "{\"a\":1} x", "{\"a\":01}",
           "{\"a\":-}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":+1}", "{\"a\":0x10}",
           "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":tru}", "{\"a\":nul}", "{\"a\":True}", "{\"a\":\"x}",
           "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\u12g4\"}", "{\"a\":\"\\ud800\"}",
           "{\"a\":\"\\ud800x\"}", "{\"a\":\"\\ud800\\u0041\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\",
           "{\"a\":\"\t\"}", "{\"a\":\"\n\"}", "{\"a\":\"\x01\"}", "{\"a\":\"\xc0\x80\"}",
           "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf5\x80\x80\x80\"}", "{\"a\":\"\xe2\x82\"}", "{\"a\":\"\x80\"}",
           "{\"\xff\":1}", "\xef\xbb\xbf{}", "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":{\"b\"}}",
           "{\"a\":{\"b\":1,}}", "{\"a\":{1:2}}", "{\"a\":[}", "{\"a\":{]}", "{\"a\":[1}", "{\"a\":{\"b\":1]}",
           "{\"a\":[[[]]}", "{\"a\":1 /*c*/}", std::string_view("{\"a\":1}\0", 8), std::string_view("{\"a\":\"\0\"}", 8),
       }) {
    CAPTURE(bad);
    CHECK(!read(bad));
  }
}

TEST_CASE("json: limits on size, members and depth") {
  cogrid::detail::json::limits lim;
  lim.max_size = 16;
  CHECK(read("{\"a\":\"123456\"}", nullptr, lim)); // 14 bytes
  CHECK(!read("{\"a\":\"123456789\"}", nullptr, lim));
  lim = {};
  lim.max_members = 2;
  CHECK(read("{\"a\":1,\"b\":2}", nullptr, lim));
  CHECK(!read("{\"a\":1,\"b\":2,\"c\":3}", nullptr, lim));
  lim = {};
  lim.max_depth = 3;
  CHECK(read("{\"a\":[[[]]]}", nullptr, lim));
  CHECK(read("{\"a\":[{\"b\":[1]}]}", nullptr, lim));
  CHECK(!read("{\"a\":[[[[]]]]}", nullptr, lim));
  // Default depth: deep nesting is rejected, not recursed into.
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  cogrid::detail::json::limits big;
  big.max_size = 1 << 20;
  CHECK(!read(deep, nullptr, big));
  const std::string deep_open = "{\"a\":" + std::string(60000, '[');
  CHECK(!read(deep_open));
  // A callback returning false stops and fails the read.
  int calls = 0;
  CHECK(!cogrid::detail::json::read_object("{\"a\":1,\"b\":2}", [&](std::string_view, const cogrid::detail::json::value&) {
    ++calls;
    return false;
  }));
  CHECK(calls == 1);
}

TEST_CASE("json: to_int64 takes plain integers in range only") {
  using cogrid::detail::json::to_int64;
  CHECK(to_int64("0") == 0);
  CHECK(to_int64("-0") == 0);
  CHECK(to_int64("4102444800") == 4102444800);
  CHECK(to_int64("9223372036854775807") == INT64_MAX);
  CHECK(to_int64("-9223372036854775808") == INT64_MIN);
  for (std::string_view bad : std::initializer_list<std::string_view>{"", "-", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
                               "99999999999999999999", "1.0", "1e3", "1E3", "+1", " 1", "0x1", "1-"}) {
    CAPTURE(bad);
    CHECK(!to_int64(bad));
  }
}

TEST_SUITE_END();
