// cogrid/transport.hpp — the byte streams a grid connection runs over: TCP, TLS, any connected Asio
// stream (a Unix socket, a child process's pipes, stdin/stdout), and an in-memory pipe. The WebSocket
// upgrade, the connect handshake and authentication run the same over every one of them.
#ifndef COGRID_TRANSPORT_HPP
#define COGRID_TRANSPORT_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/abandon.hpp>
#include <cogrid/detail/handoff.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

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

  /// The executor the transport's operations complete on.
  virtual asio::any_io_executor get_executor() = 0;

  /// Moves the stream onto `ex`, the executor of another io_context (an accepted connection goes to the
  /// thread its grid connection runs on), with nothing outstanding on it. Returns the moved transport, or
  /// null when this kind cannot move (the default, and TLS streams, whose state is bound to their
  /// socket): it is then used where it is, its operations completing on the connection's executor.
  virtual std::unique_ptr<transport> rebind(const asio::any_io_executor& ex) {
    (void)ex;
    return nullptr;
  }

  /// Number of write_all calls that were handed to the operating system (a statistic for tests).
  std::uint64_t writes() const noexcept { return writes_; }

  /// What vouches for the remote beyond the host string and token of its handshake: for a stream from
  /// a process started by an ssh forced command, the name of the key that the command was set for (see
  /// `manager::attach`). The connection that runs over this transport reports it as
  /// `connection::identity()`, and handlers' authorization hooks see it. Empty: nothing.
  const std::string& identity() const noexcept { return identity_; }
  /// Sets identity(). Before the transport is handed to a manager.
  void set_identity(std::string id) { identity_ = std::move(id); }

protected:
  transport() = default;
  std::uint64_t writes_ = 0; ///< what writes() returns; an implementation adds one per write_all it hands on

private:
  std::string identity_;
};

/// Opens a byte stream to `remote` (a host string of the grid) in place of cogrid's TCP/TLS dial, for
/// `manager_options::dialer`: an in-memory network, a tunnel, a Unix socket, a child process. The grid
/// runs its WebSocket upgrade and connect handshake over what it returns (bounded by the dial timeout,
/// which cancels the awaited operation). Return an error (or throw) when the remote cannot be reached;
/// the connection retries as after a failed TCP dial.
using transport_dialer = std::function<asio::awaitable<result<std::unique_ptr<transport>>>(std::string remote)>;

/// Resolves a remote's host name (and port) to the TCP endpoints to dial, for `manager_options::resolve`:
/// a service registry, a DNS client of your own. The default is Asio's resolver (getaddrinfo). The dial
/// waits for it at most until the dial timeout, then cancels it (terminal cancellation of what it
/// awaits) without waiting for it to end; a resolution that cannot be cancelled (getaddrinfo) finishes
/// on its own, unobserved.
using host_resolver =
    std::function<asio::awaitable<result<std::vector<asio::ip::tcp::endpoint>>>(std::string host, std::uint16_t port)>;

namespace detail {

// A read of a stream that may report bytes and an error together (TLS), made to say one at a time.
template <class Stream>
asio::awaitable<std::size_t> read_one_outcome(Stream& s, asio::mutable_buffer buf, std::error_code& ec) {
  ec.clear();
  const std::size_t n = co_await s.async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  if (n != 0) ec.clear(); // bytes arrived: report them now, the error (if any) again on the next read
  else if (!ec && buf.size() != 0) ec = asio::error::eof;
  co_return n;
}

// Streams whose reads are Asio's reactor operations (sockets, descriptors): such a read completes with
// bytes or with an error (EOF when the peer closed), never both, so Asio's operation is the whole read:
// no coroutine of ours, no frame. After a short read Asio tries the next receive at once (it usually
// fails with EAGAIN) before it waits in the reactor. Waiting for readiness first instead costs an
// epoll_ctl per read in place of that receive, and measured slower (32-node mesh on one thread, and one
// caller's latency).
template <class Stream>
concept reactor_stream = requires(Stream& s) { s.async_wait(Stream::wait_read, asio::use_awaitable); };

// Sockets whose native handle can move to a socket on another executor (release and assign): TCP and
// Unix sockets, not a TLS stream.
template <class Stream>
concept rebindable_socket = requires(Stream& s, std::error_code& ec) {
  s.release(ec);
  s.local_endpoint(ec).protocol();
  typename Stream::protocol_type;
};

// The read of every Asio-stream transport: at least one byte, or an error (EOF at the end).
template <class Stream>
asio::awaitable<std::size_t> read_from(Stream& s, asio::mutable_buffer buf, std::error_code& ec) {
  if constexpr (reactor_stream<Stream>) return s.async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  else return read_one_outcome(s, buf, ec);
}

inline asio::awaitable<std::size_t> refuse_write(std::error_code& ec) {
  ec = asio::error::bad_descriptor;
  co_return 0;
}

// The write of every Asio-stream transport: all of `bytes`, counted once in `writes`. Asio's operation
// itself, not a coroutine around it: a write costs one coroutine frame (Asio's), not two.
template <class Stream>
asio::awaitable<std::size_t> write_to(Stream& s, bool open, asio::const_buffer bytes, std::error_code& ec,
                                      std::uint64_t& writes) {
  ec.clear();
  if (!open) return refuse_write(ec);
  ++writes;
  return asio::async_write(s, bytes, asio::redirect_error(asio::use_awaitable, ec));
}

} // namespace detail

/// The transport over any connected Asio AsyncReadStream + AsyncWriteStream: `asio::ip::tcp::socket`,
/// `asio::ssl::stream<tcp::socket>` (handshake done), `asio::local::stream_protocol::socket`,
/// `asio::posix::stream_descriptor`, ... close() closes the lowest layer (no TLS close_notify: the
/// WebSocket close frame already ends the conversation).
template <class Stream>
class stream_transport final : public transport {
public:
  /// `peer` names the remote in logs; empty: the stream's remote endpoint, when it has one.
  explicit stream_transport(Stream s, std::string peer = {}) : stream_(std::move(s)), peer_(std::move(peer)) {
    if (peer_.empty()) peer_ = endpoint_text();
  }

  /// The wrapped stream.
  Stream& stream() noexcept { return stream_; }

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) override {
    return detail::read_from(stream_, buf, ec);
  }

  asio::awaitable<std::size_t> write_all(asio::const_buffer bytes, std::error_code& ec) override {
    return detail::write_to(stream_, lowest().is_open(), bytes, ec, writes_);
  }

  void close() noexcept override {
    std::error_code ignored;
    lowest().close(ignored);
  }

  std::string peer() const override { return peer_; }

  asio::any_io_executor get_executor() override { return stream_.get_executor(); }

  std::unique_ptr<transport> rebind(const asio::any_io_executor& ex) override {
    if constexpr (detail::rebindable_socket<Stream>) {
      if (ex == stream_.get_executor()) return nullptr;
      std::error_code ec;
      const auto protocol = stream_.local_endpoint(ec).protocol();
      if (ec) return nullptr;
      const auto handle = stream_.release(ec);
      if (ec) return nullptr;
      Stream moved(ex);
      moved.assign(protocol, handle, ec);
      if (ec) return nullptr;
      auto t = std::make_unique<stream_transport>(std::move(moved), peer_);
      t->writes_ = writes_;
      return t;
    } else {
      (void)ex;
      return nullptr;
    }
  }

private:
  auto& lowest() noexcept {
    if constexpr (requires { stream_.lowest_layer(); }) return stream_.lowest_layer();
    else return stream_;
  }

  std::string endpoint_text() {
    if constexpr (requires { lowest().remote_endpoint(std::declval<std::error_code&>()); }) {
      std::error_code ec;
      const auto ep = lowest().remote_endpoint(ec);
      if (ec) return "?";
      std::ostringstream os;
      os << ep;
      return os.str();
    } else {
      return "?";
    }
  }

  Stream stream_;
  std::string peer_;
};

/// A transport over any connected Asio stream (see `stream_transport`); `peer` names the remote in logs.
template <class Stream>
std::unique_ptr<transport> make_stream_transport(Stream s, std::string peer = {}) {
  return std::make_unique<stream_transport<Stream>>(std::move(s), std::move(peer));
}

/// A transport over a connected TCP socket; sets TCP_NODELAY (frames are batched by the writer).
template <class Executor>
std::unique_ptr<transport> make_tcp_transport(asio::basic_stream_socket<asio::ip::tcp, Executor> s) {
  std::error_code ignored;
  s.set_option(asio::ip::tcp::no_delay(true), ignored);
  return make_stream_transport(std::move(s));
}

/// What turns a connected TCP socket into an encrypted transport: for dialing https:// remotes (a client
/// context, `manager_options::tls_client`) or accepting on an https:// address (a server context,
/// `manager_options::tls_server`). `make_client_tls_context` and `make_server_tls_context`
/// (cogrid/tls.hpp) make them from Asio's TLS; another TLS library plugs in by implementing this.
class tls_context {
public:
  virtual ~tls_context() = default;

  /// The handshake over `socket`; `host` is the name the server must prove (empty when accepting). On
  /// success `out` holds a transport over the encrypted stream, which owns the socket. Cancellation
  /// (a deadline) ends it with `operation_aborted`.
  virtual asio::awaitable<std::error_code> handshake(asio::ip::tcp::socket& socket, const std::string& host,
                                                     std::unique_ptr<transport>& out) = 0;

protected:
  tls_context() = default;
  /// Copyable by derived classes only.
  tls_context(const tls_context&) = default;
  /// Copy-assignable by derived classes only.
  tls_context& operator=(const tls_context&) = default;
};

/// A transport that reads from one descriptor and writes to another: a child process's stdout and
/// stdin, or this process's own stdin and stdout (`grid-node --stdio`, in the manner of `ssh host cmd`).
/// Both descriptors must be on the same executor; close() closes both.
class fd_transport final : public transport {
public:
  /// Reads from `in` and writes to `out`; `peer` names the remote in logs.
  fd_transport(asio::posix::stream_descriptor in, asio::posix::stream_descriptor out, std::string peer)
      : in_(std::move(in)), out_(std::move(out)), peer_(std::move(peer)) {}

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) override {
    return detail::read_from(in_, buf, ec);
  }

  asio::awaitable<std::size_t> write_all(asio::const_buffer bytes, std::error_code& ec) override {
    return detail::write_to(out_, out_.is_open(), bytes, ec, writes_);
  }

  void close() noexcept override {
    std::error_code ignored;
    in_.close(ignored);
    out_.close(ignored);
  }

  std::string peer() const override { return peer_; }
  asio::any_io_executor get_executor() override { return in_.get_executor(); }

private:
  asio::posix::stream_descriptor in_, out_;
  std::string peer_;
};

/// See `fd_transport`.
inline std::unique_ptr<transport> make_fd_transport(asio::posix::stream_descriptor in,
                                                    asio::posix::stream_descriptor out, std::string peer) {
  return std::make_unique<fd_transport>(std::move(in), std::move(out), std::move(peer));
}

namespace detail {

/// One direction of an in-memory pipe: bytes written and not yet read, and who waits for what.
struct memory_channel {
  std::vector<std::byte> buf;
  std::size_t off = 0;        // bytes of `buf` already read
  bool closed = false;        // no more bytes will come (the writer's end closed)
  bool reader_gone = false;   // the reading end closed: writes fail
  bool dropped = false;       // a link cut one way (memory_network): writes succeed, nothing arrives
  waiter reader, writer;
  std::size_t pending() const noexcept { return buf.size() - off; }
};

struct memory_link;
inline void sever(memory_link& link) noexcept;

/// Both directions of an in-memory pipe, under one lock (the two ends may run on different threads).
/// Its readers and writers wait here, not in the io_context: when the context shuts down with them
/// waiting, the pipe is severed, which queues them (to be destroyed with the context's queue).
struct memory_link final : abandonable {
  static constexpr std::size_t high_water = 256u << 10; // a writer waits while this much is unread
  std::mutex mu;
  memory_channel dir[2];
  void abandon(asio::execution_context&) override { sever(*this); }
};

struct memory_wait_cancel {
  std::shared_ptr<memory_link> link;
  waiter memory_channel::*which;
  int dir;
  void operator()(asio::cancellation_type) const {
    waiter w;
    {
      std::lock_guard lk(link->mu);
      take_waiter(link->dir[dir].*which, w);
    }
    wake(std::move(w), handoff::fresh, asio::error::operation_aborted); // the slot is cleared there, not in its own handler
  }
};

/// Cuts both directions of a pipe at once, as a network failure would: readers get EOF after nothing
/// more, writers an error.
inline void sever(memory_link& link) noexcept {
  waiter w[4];
  {
    std::lock_guard lk(link.mu);
    for (int d = 0; d < 2; ++d) {
      link.dir[d].closed = link.dir[d].reader_gone = true;
      link.dir[d].buf.clear();
      link.dir[d].off = 0;
      take_waiter(link.dir[d].reader, w[2 * d]);
      take_waiter(link.dir[d].writer, w[2 * d + 1]);
    }
  }
  for (auto& x : w) wake(std::move(x), handoff::fresh);
}

/// One end of an in-memory pipe: reads `dir[side]`, writes `dir[1 - side]`.
class memory_transport final : public transport {
public:
  memory_transport(std::shared_ptr<memory_link> link, int side, asio::any_io_executor ex, std::string peer)
      : link_(std::move(link)), side_(side), ex_(std::move(ex)), peer_(std::move(peer)) {}
  ~memory_transport() override { close(); }

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) override {
    ec.clear();
    if (buf.size() == 0) co_return 0;
    memory_channel& ch = link_->dir[side_];
    for (;;) {
      {
        std::lock_guard lk(link_->mu);
        if (closed_self_) {
          ec = asio::error::bad_descriptor;
          co_return 0;
        }
        if (ch.pending() > 0) {
          const std::size_t n = std::min(buf.size(), ch.pending());
          std::memcpy(buf.data(), ch.buf.data() + ch.off, n);
          ch.off += n;
          if (ch.off == ch.buf.size()) ch.buf.clear(), ch.off = 0;
          waiter w;
          if (ch.pending() < memory_link::high_water) take_waiter(ch.writer, w);
          wake(std::move(w), handoff::fresh);
          co_return n;
        }
        if (ch.closed) {
          ec = asio::error::eof;
          co_return 0;
        }
      }
      if ((ec = co_await wait(true))) co_return 0;
    }
  }

  asio::awaitable<std::size_t> write_all(asio::const_buffer bytes, std::error_code& ec) override {
    ec.clear();
    memory_channel& ch = link_->dir[1 - side_];
    for (;;) {
      {
        std::lock_guard lk(link_->mu);
        if (closed_self_ || ch.closed) {
          ec = asio::error::bad_descriptor;
          co_return 0;
        }
        if (ch.reader_gone) {
          ec = asio::error::broken_pipe;
          co_return 0;
        }
        if (ch.dropped) {
          ++writes_;
          co_return bytes.size();
        }
        if (ch.pending() < memory_link::high_water) {
          const auto* p = static_cast<const std::byte*>(bytes.data());
          ch.buf.insert(ch.buf.end(), p, p + bytes.size());
          ++writes_;
          waiter w;
          take_waiter(ch.reader, w);
          wake(std::move(w), handoff::fresh);
          co_return bytes.size();
        }
      }
      if ((ec = co_await wait(false))) co_return 0;
    }
  }

  void close() noexcept override {
    waiter w[4];
    {
      std::lock_guard lk(link_->mu);
      if (closed_self_) return;
      closed_self_ = true;
      memory_channel& in = link_->dir[side_];
      memory_channel& out = link_->dir[1 - side_];
      in.reader_gone = true;
      in.buf.clear();
      in.off = 0;
      out.closed = true;
      take_waiter(in.reader, w[0]);
      take_waiter(in.writer, w[1]);
      take_waiter(out.reader, w[2]);
      take_waiter(out.writer, w[3]);
    }
    for (auto& x : w) wake(std::move(x), handoff::fresh);
  }

  std::string peer() const override { return peer_; }
  asio::any_io_executor get_executor() override { return ex_; }

  /// Under the lock: whether a reader (`reading`) or writer of this end may go on without waiting.
  bool may_proceed(bool reading) const noexcept {
    if (closed_self_) return true;
    const memory_channel& ch = link_->dir[reading ? side_ : 1 - side_];
    return reading ? ch.pending() > 0 || ch.closed : ch.pending() < memory_link::high_water || ch.closed || ch.reader_gone;
  }

private:
  struct wait_init {
    memory_transport* self;
    bool reading;
    void operator()(wait_handler h) const {
      std::unique_lock lk(self->link_->mu);
      if (self->may_proceed(reading)) { // changed between the caller's look and now
        lk.unlock();
        waiter now;
        now.h.emplace(std::move(h));
        wake(std::move(now), handoff::fresh);
        return;
      }
      const int dir = reading ? self->side_ : 1 - self->side_;
      waiter memory_channel::*which = reading ? &memory_channel::reader : &memory_channel::writer;
      arm(self->link_->dir[dir].*which, std::move(h), memory_wait_cancel{self->link_, which, dir});
    }
  };

  // Waits for the other end (or close); operation_aborted when the awaiting coroutine is cancelled.
  asio::awaitable<std::error_code> wait(bool reading) {
    try {
      co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::error_code)>(wait_init{this, reading},
                                                                                          asio::use_awaitable);
    } catch (const std::system_error& e) {
      co_return e.code();
    }
    co_return std::error_code{};
  }

  std::shared_ptr<memory_link> link_;
  int side_;
  asio::any_io_executor ex_;
  std::string peer_;
  bool closed_self_ = false; // guarded by link_->mu
};

inline std::pair<std::unique_ptr<transport>, std::unique_ptr<transport>>
make_memory_pipe(const std::shared_ptr<memory_link>& link, const asio::any_io_executor& ex, std::string peer_a, std::string peer_b) {
  asio::use_service<abandon_service>(asio::query(ex, asio::execution::context)).add(link);
  return {std::make_unique<memory_transport>(link, 0, ex, std::move(peer_a)),
          std::make_unique<memory_transport>(link, 1, ex, std::move(peer_b))};
}

} // namespace detail

/// Two transports joined in memory: what one writes the other reads, in order, with no socket. A writer
/// waits while 256 KiB it wrote are unread (as a socket's buffer would make it). Closing one end gives
/// the other end EOF after the bytes already written. `peer_a` is the name end `a` reports for its
/// remote (that is, for `b`), and the other way round.
inline std::pair<std::unique_ptr<transport>, std::unique_ptr<transport>>
make_memory_pipe(const asio::any_io_executor& ex, std::string peer_a = "memory", std::string peer_b = "memory") {
  return detail::make_memory_pipe(std::make_shared<detail::memory_link>(), ex, std::move(peer_a), std::move(peer_b));
}

} // namespace cogrid

#endif // COGRID_TRANSPORT_HPP
