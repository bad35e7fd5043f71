// cogrid/tls.hpp — TLS for cogrid's links, from Asio's TLS (BoringSSL or OpenSSL): the contexts that
// `manager_options::tls_client` and `tls_server` take, and a transport over a TLS stream for custom
// dialers. Only the files that make a context include Asio's TLS headers.
#ifndef COGRID_TLS_HPP
#define COGRID_TLS_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/transport.hpp>

#include <asio/ssl/context.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/ssl/stream.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace cogrid {

/// A transport over a TLS stream whose handshake is done; sets TCP_NODELAY on the socket below.
template <class Executor>
std::unique_ptr<transport> make_tls_transport(asio::ssl::stream<asio::basic_stream_socket<asio::ip::tcp, Executor>> s) {
  std::error_code ignored;
  s.lowest_layer().set_option(asio::ip::tcp::no_delay(true), ignored);
  return make_stream_transport(std::move(s));
}

/// A `tls_context` over an `asio::ssl::context`: its handshake takes the client's or the server's side
/// as the context was made for. A client verifies the server's name (SNI and host name verification)
/// when the context's verify mode asks for verification.
class ssl_context final : public tls_context {
public:
  /// Which end of a handshake the context serves.
  enum class side {
    client, ///< dials: verifies the server
    server  ///< accepts: presents the certificate
  };

  /// Takes `native` for handshakes on side `s` (see `make_client_tls_context`, `make_server_tls_context`).
  ssl_context(asio::ssl::context native, side s) : native_(std::move(native)), side_(s) {}

  /// The Asio context, to set ciphers, verification or certificates before the first handshake.
  asio::ssl::context& native() noexcept { return native_; }
  /// The side the context was made for.
  side role() const noexcept { return side_; }

  COGRID_DECL asio::awaitable<std::error_code> handshake(asio::ip::tcp::socket& socket, const std::string& host,
                                                         std::unique_ptr<transport>& out) override;

private:
  asio::ssl::context native_;
  side side_;
};

/// A client TLS context that verifies servers against the system's trust store and `extra_ca_pem` (a PEM
/// certificate or bundle; may be empty).
COGRID_DECL std::shared_ptr<ssl_context> make_client_tls_context(std::string_view extra_ca_pem = {});
/// A server TLS context using `cert_pem` (certificate chain) and `key_pem` (private key).
/// @throws std::system_error when the PEM data is invalid.
COGRID_DECL std::shared_ptr<ssl_context> make_server_tls_context(std::string_view cert_pem, std::string_view key_pem);

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/tls.ipp>
#endif

#endif // COGRID_TLS_HPP
