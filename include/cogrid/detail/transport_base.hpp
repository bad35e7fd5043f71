// cogrid/detail/transport_base.hpp — the `transport` interface and `transport_dialer`, without the
// transports themselves (<cogrid/transport.hpp>): what the connection and manager classes name, so that a
// service's file (detail/service.hpp) compiles no TLS, descriptor or in-memory stream.
#ifndef COGRID_DETAIL_TRANSPORT_BASE_HPP
#define COGRID_DETAIL_TRANSPORT_BASE_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/result.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

// The TLS context the grid's options and TLS transports hold; what connection.hpp and manager.hpp name of
// TLS. <asio/ssl/context.hpp> comes with a node's life (detail/service.hpp).
namespace asio::ssl {
class context;
} // namespace asio::ssl

namespace cogrid {

/// A connected, reliable, ordered byte stream that a grid connection runs over. cogrid implements it for
/// TCP, TLS, any Asio stream (`make_stream_transport`), a pair of one-way descriptors
/// (`make_fd_transport`) and in-memory pipes (`make_memory_pipe`); implement it to carry the grid over
/// anything else.
///
/// @par Thread safety
/// A transport is used by one connection: at most one `read_some` and one `write_all` are outstanding at
/// a time, each from a single coroutine; `close` may be called from any thread.
class transport {
public:
  virtual ~transport() = default;
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  /// Reads at least one byte into `buf`. On error or end of stream returns 0 and sets `ec`
  /// (`asio::error::eof` at the end of the stream). A read pending when close() is called completes
  /// with an error; so does one whose awaiting coroutine is cancelled (`operation_aborted`).
  virtual asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) = 0;

  /// Writes all of `bytes` as one logical write (counted once in writes()); returns the number of bytes
  /// written, all of them unless `ec` is set.
  virtual asio::awaitable<std::size_t> write_all(asio::const_buffer bytes, std::error_code& ec) = 0;

  /// Closes the stream. Idempotent; pending reads and writes complete with an error.
  virtual void close() noexcept = 0;

  /// The remote end for logs, e.g. "127.0.0.1:40000", "[::1]:40000" or a name given at creation.
  virtual std::string peer() const = 0;

  virtual asio::any_io_executor get_executor() = 0;

  /// Number of write_all calls that were handed to the operating system (a statistic for tests).
  std::uint64_t writes() const noexcept { return writes_; }

protected:
  transport() = default;
  std::uint64_t writes_ = 0;
};

/// Opens a byte stream to `remote` (a host string of the grid) in place of cogrid's TCP/TLS dial, for
/// `manager_options::dialer`: an in-memory network, a tunnel, a Unix socket, a child process. The grid
/// runs its WebSocket upgrade and connect handshake over what it returns (bounded by the dial timeout,
/// which cancels the awaited operation). Return an error (or throw) when the remote cannot be reached;
/// the connection retries as after a failed TCP dial.
using transport_dialer = std::function<asio::awaitable<result<std::unique_ptr<transport>>>(std::string remote)>;

} // namespace cogrid

#endif // COGRID_DETAIL_TRANSPORT_BASE_HPP
