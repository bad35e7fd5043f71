// cogrid/impl/tls.ipp — definitions for cogrid/tls.hpp.
#ifndef COGRID_IMPL_TLS_IPP
#define COGRID_IMPL_TLS_IPP

#include <cogrid/tls.hpp>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include <openssl/ssl.h>

namespace cogrid {

COGRID_DECL asio::awaitable<std::error_code> ssl_context::handshake(asio::ip::tcp::socket& socket, const std::string& host,
                                                                    std::unique_ptr<transport>& out) {
  asio::ssl::stream<asio::ip::tcp::socket> stream(std::move(socket), native_);
  if (side_ == side::client && !host.empty()) {
    SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
    stream.set_verify_callback(asio::ssl::host_name_verification(host));
  }
  std::error_code ec;
  co_await stream.async_handshake(side_ == side::client ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
                                  asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) out = make_tls_transport(std::move(stream));
  co_return ec;
}

COGRID_DECL std::shared_ptr<ssl_context> make_client_tls_context(std::string_view extra_ca_pem) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_default_verify_paths();
  if (!extra_ca_pem.empty()) ctx.add_certificate_authority(asio::buffer(extra_ca_pem.data(), extra_ca_pem.size()));
  ctx.set_verify_mode(asio::ssl::verify_peer);
  return std::make_shared<ssl_context>(std::move(ctx), ssl_context::side::client);
}

COGRID_DECL std::shared_ptr<ssl_context> make_server_tls_context(std::string_view cert_pem, std::string_view key_pem) {
  asio::ssl::context ctx(asio::ssl::context::tls_server);
  ctx.use_certificate_chain(asio::buffer(cert_pem.data(), cert_pem.size()));
  ctx.use_private_key(asio::buffer(key_pem.data(), key_pem.size()), asio::ssl::context::pem);
  return std::make_shared<ssl_context>(std::move(ctx), ssl_context::side::server);
}

} // namespace cogrid

#endif // COGRID_IMPL_TLS_IPP
