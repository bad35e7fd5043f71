// cogrid/detail/transport.hpp — a connected byte stream (TCP, TLS, in-memory, ...), type-erased so that
// the WebSocket and connection code is compiled once for all of them.
#ifndef COGRID_DETAIL_TRANSPORT_HPP
#define COGRID_DETAIL_TRANSPORT_HPP

#include <cogrid/detail/config.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>

namespace cogrid::detail {

/// A connected byte stream. All calls are made on the connection's strand; at most one read and one
/// write may be outstanding at a time (one reader and one writer coroutine).
class transport {
public:
  virtual ~transport() = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  /// Reads at least one byte into `buf`. On error or end of stream returns 0 and sets `ec`
  /// (`asio::error::eof` at the end of the stream). A read pending when close() is called completes
  /// with an error.
  virtual asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) = 0;

  /// Writes all of `bytes` as one logical write (counted once in writes()). Sets `ec` on failure.
  virtual asio::awaitable<void> write_all(asio::const_buffer bytes, std::error_code& ec) = 0;

  /// Closes the stream. Idempotent; pending reads and writes complete with an error.
  virtual void close() noexcept = 0;

  /// The remote end for logs, e.g. "127.0.0.1:40000" or "[::1]:40000".
  virtual std::string peer() const = 0;

  virtual asio::any_io_executor get_executor() = 0;

  /// Number of write_all calls that were handed to the operating system (a statistic for tests).
  std::uint64_t writes() const noexcept { return writes_; }

protected:
  transport() = default;
  std::uint64_t writes_ = 0;
};

/// The transport over any Asio AsyncReadStream + AsyncWriteStream whose lowest_layer() is a socket
/// (asio::ip::tcp::socket, asio::ssl::stream<asio::ip::tcp::socket>). close() closes the lowest layer
/// (no TLS close_notify: the WebSocket close frame already ends the conversation).
template <class Stream>
class stream_transport final : public transport {
public:
  explicit stream_transport(Stream s) : stream_(std::move(s)) { peer_ = endpoint_text(); }

  Stream& stream() noexcept { return stream_; }

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) override {
    ec.clear();
    const std::size_t n = co_await stream_.async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
    if (n != 0) ec.clear(); // bytes arrived: report them now, the error (if any) again on the next read
    else if (!ec && buf.size() != 0) ec = asio::error::eof;
    co_return n;
  }

  asio::awaitable<void> write_all(asio::const_buffer bytes, std::error_code& ec) override {
    ec.clear();
    if (!stream_.lowest_layer().is_open()) {
      ec = asio::error::bad_descriptor;
      co_return;
    }
    ++writes_;
    co_await asio::async_write(stream_, bytes, asio::redirect_error(asio::use_awaitable, ec));
  }

  void close() noexcept override {
    std::error_code ignored;
    stream_.lowest_layer().close(ignored);
  }

  std::string peer() const override { return peer_; }

  asio::any_io_executor get_executor() override { return stream_.get_executor(); }

private:
  std::string endpoint_text() {
    std::error_code ec;
    const auto ep = stream_.lowest_layer().remote_endpoint(ec);
    if (ec) return "?";
    std::ostringstream os;
    os << ep;
    return os.str();
  }

  Stream stream_;
  std::string peer_;
};

/// A transport over a connected TCP socket; sets TCP_NODELAY (frames are batched by the writer).
inline std::unique_ptr<transport> make_tcp_transport(asio::ip::tcp::socket s) {
  std::error_code ignored;
  s.set_option(asio::ip::tcp::no_delay(true), ignored);
  return std::make_unique<stream_transport<asio::ip::tcp::socket>>(std::move(s));
}

/// A transport over a TLS stream whose handshake is done; sets TCP_NODELAY on the socket below.
inline std::unique_ptr<transport> make_tls_transport(asio::ssl::stream<asio::ip::tcp::socket> s) {
  std::error_code ignored;
  s.lowest_layer().set_option(asio::ip::tcp::no_delay(true), ignored);
  return std::make_unique<stream_transport<asio::ssl::stream<asio::ip::tcp::socket>>>(std::move(s));
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_TRANSPORT_HPP
