// cogrid/bulk.hpp — data larger than memory, sent in chunks over a stream whose credits bound how many
// chunks are in flight, so that each side holds about one window of data at a time. Two shapes:
//
//   bulk_upload<Meta, Resp>   the caller sends a header (Meta) and bytes from a source; the handler
//                             reads them and answers once (raft's InstallSnapshot, zrepl recv)
//   bulk_download<Req>        the caller sends a request; the handler yields bytes that the caller reads
//                             or writes to a sink (zrepl send)
//
// plus byte sources and sinks: `stream_source`/`stream_sink` over Asio streams (pipes, sockets,
// descriptors) and `file_source`/`file_sink` over files, whose blocking calls run on an executor the
// user gives (a thread pool).
#ifndef COGRID_BULK_HPP
#define COGRID_BULK_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/options.hpp>
#include <cogrid/result.hpp>
#include <cogrid/stream.hpp>
#include <cogrid/detail/serialize.hpp>
#include <cogrid/detail/stream_core.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace cogrid {

/// How a bulk transfer cuts its data and how much of it may be in flight. Both ends of a transfer
/// declare the same options (one `bulk_upload`/`bulk_download` definition shared by the nodes, as for
/// other handlers): the window becomes the stream's capacity, which the stream layer checks at open
/// (`errc::capacity_mismatch`), and the receiver refuses a chunk larger than its own `chunk_bytes`.
///
/// Memory: each side holds at most `window_chunks()` chunks of the transfer in its stream buffers or
/// its outgoing queue, plus the one chunk it is reading or writing — about `window_bytes + chunk_bytes`,
/// whatever the size of the data.
struct bulk_options {
  /// The largest chunk: the connection's default piece size, so that a chunk always travels as one
  /// grid message (never cut into pieces).
  static constexpr std::size_t max_chunk_bytes = connection_options{}.piece_bytes;
  /// The most chunks a window may hold (the stream's capacity).
  static constexpr std::size_t max_window_chunks = std::size_t{1} << 16;

  /// What a chunk's grid message adds to its bytes in a queue (msgpack header, CRC, subroute): counted
  /// in the window, so that a window of chunks fits `window_bytes` in the sender's queue.
  static constexpr std::size_t chunk_overhead = 64;

  std::size_t chunk_bytes = 256u << 10; ///< bytes per chunk (the last chunk may be shorter)
  std::size_t window_bytes = 4u << 20;  ///< bytes in flight, receiver's buffers included

  /// Chunks in flight: `window_bytes / (chunk_bytes + chunk_overhead)`, at least 1 (and at most
  /// `max_window_chunks`): 15 with the defaults.
  std::uint32_t window_chunks() const noexcept {
    const std::size_t n = chunk_bytes == 0 ? 1 : window_bytes / (chunk_bytes + chunk_overhead);
    return static_cast<std::uint32_t>(std::clamp<std::size_t>(n, 1, max_window_chunks));
  }

  /// @par Errors
  /// `errc::invalid_value`, with what is wrong: a chunk of 0 bytes or over `max_chunk_bytes`, a window of
  /// 0 bytes, a window of more than `max_window_chunks` chunks.
  result<void> validate() const {
    if (chunk_bytes == 0) return error(errc::invalid_value, "bulk_options: chunk_bytes must be at least 1");
    if (chunk_bytes > max_chunk_bytes)
      return error(errc::invalid_value, "bulk_options: chunk_bytes of " + std::to_string(chunk_bytes) +
                                            " is over the largest chunk of " + std::to_string(max_chunk_bytes) +
                                            " bytes (a chunk travels as one message)");
    if (window_bytes == 0) return error(errc::invalid_value, "bulk_options: window_bytes must be at least 1");
    if (window_bytes / chunk_bytes > max_window_chunks)
      return error(errc::invalid_value, "bulk_options: a window of " + std::to_string(window_bytes / chunk_bytes) +
                                            " chunks is over the most of " + std::to_string(max_window_chunks));
    return {};
  }
};

/// A source of bytes: `read_some` fills a prefix of its buffer and gives how many bytes it put there,
/// 0 at the end of the data (and only then, for a non-empty buffer), or an error.
template <class S>
concept byte_source = requires(S& s, std::span<std::byte> b) {
  { s.read_some(b) } -> std::same_as<asio::awaitable<result<std::size_t>>>;
};

/// A sink of bytes: `write` takes all of its buffer (or fails).
template <class S>
concept byte_sink = requires(S& s, std::span<const std::byte> b) {
  { s.write(b) } -> std::same_as<asio::awaitable<result<void>>>;
};

/// Reads from `src` until `out` is full or the source ends; gives the bytes read (fewer than
/// `out.size()` only at the end of the data).
/// @par Errors
/// The source's.
template <byte_source Source>
asio::awaitable<result<std::size_t>> read_chunk(Source& src, std::span<std::byte> out) {
  std::size_t got = 0;
  while (got < out.size()) {
    const std::span<std::byte> rest = out.subspan(got);
    auto r = co_await src.read_some(rest);
    if (!r) co_return r.error();
    if (*r == 0) break;
    got += *r;
  }
  co_return got;
}

// -- sources and sinks ----------------------------------------------------------------------------------

/// A byte source over an Asio AsyncReadStream (a pipe's `stream_descriptor`, a socket, ...): end of file
/// is the end of the data. Holds a reference: the stream must outlive it.
/// @par Errors
/// The stream's (`std::error_code` from Asio).
/// @par Thread safety
/// One read at a time, on the stream's executor.
template <class S>
class stream_source {
public:
  /// Reads from `s`, which must outlive the source.
  explicit stream_source(S& s) noexcept : s_(&s) {}

  /// Reads up to `out.size()` bytes; 0 at the end of the stream (or for an empty `out`).
  asio::awaitable<result<std::size_t>> read_some(std::span<std::byte> out) {
    if (out.empty()) co_return std::size_t{0};
    std::error_code ec;
    const std::size_t n =
        co_await s_->async_read_some(asio::buffer(out.data(), out.size()), asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::eof) co_return std::size_t{0};
    if (ec) co_return error(ec, "read failed: " + ec.message());
    co_return n;
  }

private:
  S* s_;
};

/// A byte sink over an Asio AsyncWriteStream. Holds a reference: the stream must outlive it.
/// @par Errors
/// The stream's.
/// @par Thread safety
/// One write at a time, on the stream's executor.
template <class S>
class stream_sink {
public:
  /// Writes to `s`, which must outlive the sink.
  explicit stream_sink(S& s) noexcept : s_(&s) {}

  /// Writes all of `data`.
  asio::awaitable<result<void>> write(std::span<const std::byte> data) {
    std::error_code ec;
    const std::size_t n =
        co_await asio::async_write(*s_, asio::buffer(data.data(), data.size()), asio::redirect_error(asio::use_awaitable, ec));
    bytes_ += n;
    if (ec) co_return error(ec, "write failed: " + ec.message());
    co_return result<void>();
  }

  /// Bytes written so far.
  std::uint64_t bytes_written() const noexcept { return bytes_; }

private:
  S* s_;
  std::uint64_t bytes_ = 0;
};

namespace detail {

/// What a blocking file call did: `err` is errno (0: none), `n` the bytes moved.
struct blocking_outcome {
  int err = 0;
  std::size_t n = 0;
  bool unpositioned = false; ///< the descriptor cannot seek (a pipe): plain read/write were used
};

static_assert(sizeof(off_t) == 8, "cogrid's file sources and sinks need a 64-bit off_t (_FILE_OFFSET_BITS=64)");

/// One blocking file call, run on the user's executor for blocking work.
struct file_call {
  enum kind_t { read, write, sync, close } kind = read;
  int fd = -1;
  std::byte* data = nullptr; // read: into; write: from
  std::size_t size = 0;
  std::uint64_t offset = 0;
  bool positioned = true;

  blocking_outcome operator()() const {
    blocking_outcome r;
    r.unpositioned = !positioned;
    if (kind == close) {
      if (::close(fd) != 0 && errno != EINTR) r.err = errno; // EINTR: the descriptor is closed all the same
      return r;
    }
    if (kind == sync) {
      while (::fdatasync(fd) != 0) {
        if (errno == EINTR) continue;
        r.err = errno;
        break;
      }
      return r;
    }
    while (kind == read ? r.n == 0 : r.n < size) {
      ssize_t n = 0;
      if (!r.unpositioned) {
        const auto at = static_cast<off_t>(offset + r.n);
        n = kind == read ? ::pread(fd, data, size, at) : ::pwrite(fd, data + r.n, size - r.n, at);
        if (n < 0 && errno == ESPIPE) {
          r.unpositioned = true;
          continue;
        }
      } else {
        n = kind == read ? ::read(fd, data, size) : ::write(fd, data + r.n, size - r.n);
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        r.err = errno;
        break;
      }
      if (n == 0) {
        if (kind == write) r.err = EIO; // a write that takes nothing would loop forever
        break;                          // a read: end of file
      }
      r.n += static_cast<std::size_t>(n);
    }
    return r;
  }
};

template <class Handler>
struct blocking_done {
  Handler handler;
  blocking_outcome outcome;
  void operator()() { std::move(handler)(outcome); }
};

// Runs on the blocking executor, then completes the awaiting coroutine on its own executor.
template <class Handler, class Fn>
struct blocking_job {
  Handler handler;
  asio::any_io_executor home; // the coroutine's executor, with its work counted while the call runs
  Fn fn;
  void operator()() {
    const blocking_outcome r = fn();
    asio::any_io_executor to = std::move(home);
    asio::post(to, blocking_done<Handler>{std::move(handler), r});
  }
};

struct blocking_init {
  template <class Handler, class Fn>
  void operator()(Handler&& h, const asio::any_io_executor& pool, Fn fn) const {
    using H = std::decay_t<Handler>;
    asio::any_io_executor home = asio::prefer(asio::get_associated_executor(h), asio::execution::outstanding_work.tracked);
    asio::post(pool, blocking_job<H, Fn>{std::forward<Handler>(h), std::move(home), std::move(fn)});
  }
};

/// Runs `fn` (a blocking call) on `pool` and resumes the awaiting coroutine on its own executor with
/// the outcome. The coroutine itself never runs on `pool`. Not cancellable: a call under way finishes.
template <class Fn>
asio::awaitable<blocking_outcome> run_blocking(const asio::any_io_executor& pool, Fn fn) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(blocking_outcome)>(blocking_init{}, asio::use_awaitable,
                                                                                       pool, std::move(fn));
}

inline error errno_error(int err, const std::string& what) {
  const std::error_code ec(err, std::system_category());
  return error(ec, what + ": " + ec.message());
}

/// A file descriptor, closed at the end when owned.
class file_handle {
public:
  file_handle() = default;
  file_handle(int fd, bool owned, std::string name) noexcept : fd_(fd), owned_(owned), name_(std::move(name)) {}
  file_handle(file_handle&& o) noexcept
      : fd_(std::exchange(o.fd_, -1)), owned_(std::exchange(o.owned_, false)), name_(std::move(o.name_)) {}
  file_handle& operator=(file_handle&& o) noexcept {
    if (this != &o) {
      (void)close();
      fd_ = std::exchange(o.fd_, -1);
      owned_ = std::exchange(o.owned_, false);
      name_ = std::move(o.name_);
    }
    return *this;
  }
  ~file_handle() { (void)close(); }

  int fd() const noexcept { return fd_; }
  bool owned() const noexcept { return owned_; }
  const std::string& name() const noexcept { return name_; }
  /// Gives up the descriptor (the caller closes it).
  int release() noexcept {
    owned_ = false;
    return std::exchange(fd_, -1);
  }
  result<void> close() {
    const int fd = std::exchange(fd_, -1);
    if (fd < 0 || !std::exchange(owned_, false)) return {};
    if (::close(fd) != 0 && errno != EINTR) return errno_error(errno, "close of " + name_);
    return {};
  }

private:
  int fd_ = -1;
  bool owned_ = false;
  std::string name_;
};

/// `open(path, flags)`, run on the blocking executor (creating or truncating a large file can wait on
/// the disk): the descriptor in `n`, or errno in `err`.
struct open_call {
  const std::string* path;
  int flags;
  blocking_outcome operator()() const {
    blocking_outcome r;
    int fd = -1;
    do {
      fd = ::open(path->c_str(), flags | O_CLOEXEC, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) r.err = errno;
    else r.n = static_cast<std::size_t>(fd);
    return r;
  }
};

inline asio::awaitable<result<file_handle>> open_file(asio::any_io_executor blocking, std::string path, int flags) {
  const blocking_outcome done = co_await run_blocking(blocking, open_call{&path, flags});
  if (done.err) co_return errno_error(done.err, "cannot open " + path);
  co_return file_handle(static_cast<int>(done.n), true, path);
}

/// Closes an owned descriptor on the blocking executor (a close can wait for the file's data to be
/// written back, e.g. on NFS), or here when it cannot be handed there.
inline void close_on(const asio::any_io_executor& blocking, file_handle& f) noexcept {
  if (f.fd() < 0 || !f.owned()) return;
  try {
    const int fd = f.release();
    try {
      asio::post(blocking, [fd] { ::close(fd); });
    } catch (...) {
      ::close(fd);
    }
  } catch (...) {
  }
}

/// What `file_source` and `file_sink` share: a descriptor (owned or borrowed), the executor its blocking
/// calls run on, and the offset of the next read or write (`pread`/`pwrite`, or plain `read`/`write` once
/// the descriptor turned out not to seek). An owned descriptor is closed on the executor at the end.
class blocking_file {
public:
  /// Borrows `fd` (the caller closes it), starting at `offset`.
  blocking_file(asio::any_io_executor blocking, int fd, std::uint64_t offset)
      : exec_(std::move(blocking)), file_(fd, false, "fd " + std::to_string(fd)), offset_(offset) {}
  blocking_file(asio::any_io_executor blocking, file_handle f) : exec_(std::move(blocking)), file_(std::move(f)) {}
  blocking_file(blocking_file&&) noexcept = default;
  blocking_file& operator=(blocking_file&&) = delete;
  ~blocking_file() { close_on(exec_, file_); }

  /// Opens `path` with `flags` on `blocking` (owned).
  static asio::awaitable<result<blocking_file>> open(asio::any_io_executor blocking, std::string path, int flags) {
    auto f = co_await open_file(blocking, std::move(path), flags);
    if (!f) co_return f.error();
    co_return blocking_file(std::move(blocking), std::move(*f));
  }

  /// Reads into or writes from `data` (`size` bytes) at the offset, which advances by what was moved.
  asio::awaitable<blocking_outcome> transfer(file_call::kind_t kind, std::byte* data, std::size_t size) {
    file_call call;
    call.kind = kind;
    call.fd = file_.fd();
    call.data = data;
    call.size = size;
    call.offset = offset_;
    call.positioned = positioned_;
    const blocking_outcome done = co_await run_blocking(exec_, call);
    positioned_ = !done.unpositioned;
    offset_ += done.n;
    co_return done;
  }

  /// `fdatasync` on the executor.
  asio::awaitable<blocking_outcome> sync() {
    file_call call;
    call.kind = file_call::sync;
    call.fd = file_.fd();
    const blocking_outcome done = co_await run_blocking(exec_, call); // named: GCC 12 and co_await results
    co_return done;
  }

  /// Closes an owned descriptor now, on the executor (nothing for a borrowed one).
  asio::awaitable<blocking_outcome> close() {
    blocking_outcome done;
    if (file_.fd() < 0 || !file_.owned()) co_return done;
    file_call call;
    call.kind = file_call::close;
    call.fd = file_.release();
    done = co_await run_blocking(exec_, call);
    co_return done;
  }

  std::uint64_t offset() const noexcept { return offset_; }
  int fd() const noexcept { return file_.fd(); }
  const std::string& name() const noexcept { return file_.name(); }

private:
  asio::any_io_executor exec_;
  file_handle file_;
  std::uint64_t offset_ = 0;
  bool positioned_ = true;
};

} // namespace detail

/// A byte source reading a file with `pread` from a starting offset (plain `read` where the descriptor
/// cannot seek). The reads run on `blocking`, an executor for blocking work (e.g. an
/// `asio::thread_pool`'s), so that disk waits do not hold up the caller's executor; the reading
/// coroutine stays on its own executor.
/// @par Errors
/// The call's errno as a `std::system_category()` code, with text naming the file and the reason.
/// @par Thread safety
/// One read at a time. Must outlive its reads.
class file_source {
public:
  /// Reads `fd` (not owned: the caller closes it) from `offset`.
  file_source(asio::any_io_executor blocking, int fd, std::uint64_t offset = 0) : f_(std::move(blocking), fd, offset) {}

  /// Moves the file (and its ownership) to a new source.
  file_source(file_source&&) noexcept = default;
  file_source& operator=(file_source&&) = delete;
  /// An owned file is closed on the blocking executor.
  ~file_source() = default;

  /// Opens `path` for reading (owned: closed with the source), on `blocking`.
  /// @par Errors
  /// `open`'s errno (e.g. `std::errc::no_such_file_or_directory`) with "cannot open <path>: <reason>".
  static asio::awaitable<result<file_source>> open(asio::any_io_executor blocking, std::string path) {
    auto f = co_await detail::blocking_file::open(std::move(blocking), std::move(path), O_RDONLY);
    if (!f) co_return f.error();
    co_return file_source(std::move(*f));
  }

  /// Reads up to `out.size()` bytes at the current offset, which it advances; 0 at the end of the file.
  asio::awaitable<result<std::size_t>> read_some(std::span<std::byte> out) {
    if (out.empty()) co_return std::size_t{0};
    const detail::blocking_outcome done = co_await f_.transfer(detail::file_call::read, out.data(), out.size());
    if (done.err) co_return detail::errno_error(done.err, "read of " + f_.name());
    co_return done.n;
  }

  /// The offset of the next read.
  std::uint64_t offset() const noexcept { return f_.offset(); }
  /// The descriptor (-1 once closed).
  int native_handle() const noexcept { return f_.fd(); }

private:
  explicit file_source(detail::blocking_file f) : f_(std::move(f)) {}

  detail::blocking_file f_;
};

/// A byte sink writing a file with `pwrite` from a starting offset (plain `write` where the
/// descriptor cannot seek), on `blocking` as `file_source` reads. `sync()` makes what was written
/// durable (`fdatasync`); nothing else does.
/// @par Errors
/// The call's errno with text naming the file and the reason.
/// @par Thread safety
/// One operation at a time. Must outlive its operations.
class file_sink {
public:
  /// Writes `fd` (not owned) from `offset`.
  file_sink(asio::any_io_executor blocking, int fd, std::uint64_t offset = 0) : f_(std::move(blocking), fd, offset) {}

  /// Moves the file (and its ownership) to a new sink.
  file_sink(file_sink&&) noexcept = default;
  file_sink& operator=(file_sink&&) = delete;
  /// An owned file not closed yet is closed on the blocking executor.
  ~file_sink() = default;

  /// Creates `path` (mode 0644 before the umask), or truncates it when it exists (on `blocking`: freeing
  /// a large file's blocks takes time); owned.
  /// @par Errors
  /// `open`'s errno with "cannot open <path>: <reason>".
  static asio::awaitable<result<file_sink>> create(asio::any_io_executor blocking, std::string path) {
    auto f = co_await detail::blocking_file::open(std::move(blocking), std::move(path), O_WRONLY | O_CREAT | O_TRUNC);
    if (!f) co_return f.error();
    co_return file_sink(std::move(*f));
  }

  /// Writes all of `data` at the current offset.
  asio::awaitable<result<void>> write(std::span<const std::byte> data) {
    if (data.empty()) co_return result<void>();
    const detail::blocking_outcome done =
        co_await f_.transfer(detail::file_call::write, const_cast<std::byte*>(data.data()), data.size()); // only read from
    written_ += done.n;
    if (done.err) co_return detail::errno_error(done.err, "write of " + f_.name());
    co_return result<void>();
  }

  /// Waits until what was written is on stable storage (`fdatasync`).
  asio::awaitable<result<void>> sync() {
    const detail::blocking_outcome done = co_await f_.sync();
    if (done.err) co_return detail::errno_error(done.err, "fdatasync of " + f_.name());
    co_return result<void>();
  }

  /// Closes an owned file now, on the blocking executor (a no-op for a borrowed descriptor), reporting
  /// `close`'s error.
  asio::awaitable<result<void>> close() {
    const detail::blocking_outcome done = co_await f_.close();
    if (done.err) co_return detail::errno_error(done.err, "close of " + f_.name());
    co_return result<void>();
  }

  /// Bytes written so far.
  std::uint64_t bytes_written() const noexcept { return written_; }
  /// Where the next write goes in the file.
  std::uint64_t offset() const noexcept { return f_.offset(); }
  /// The descriptor (-1 once closed).
  int native_handle() const noexcept { return f_.fd(); }

private:
  explicit file_sink(detail::blocking_file f) : f_(std::move(f)) {}

  detail::blocking_file f_;
  std::uint64_t written_ = 0;
};

// -- upload ---------------------------------------------------------------------------------------------

class bulk_input;

namespace detail {

template <class Meta, class Resp, class F>
struct bulk_upload_fn;

/// The buffer holding a `bulk_input`'s current chunk, for a handler that takes the chunk's bytes over
/// instead of copying them (raft's snapshot hands them to another executor). What is put back in its
/// place is reused for a later chunk.
struct bulk_input_access {
  static inline payload& buffer(bulk_input& in) noexcept;
};

/// `co_await in.next()` in a bulk handler: the next chunk, or why there is none.
struct bulk_input_awaiter : gen_awaiter_tag {
  explicit bulk_input_awaiter(bulk_input* in) noexcept : in_(in) {}
  bool await_ready() const noexcept { return false; }
  inline bool await_suspend(std::coroutine_handle<> h);
  inline result<std::span<const std::byte>> await_resume();

private:
  bulk_input* in_;
};

} // namespace detail

/// The bytes a `bulk_upload` handler receives: `while (auto c = co_await in.next())`, each chunk a span
/// valid until the next call of `next()` (its buffer is reused: no allocation per chunk). Each chunk
/// taken returns one credit to the sender. After the loop, `complete()` tells whether the data ended
/// cleanly (the sender sent all of it) or the transfer was cut off.
///
/// `next()` gives a chunk, or `errc::end_of_stream` after the last one, `operation_aborted` when the
/// sender cancelled (its source failed, it gave up) or the connection went, and also when a chunk over
/// the declared `chunk_bytes` arrived (a sender breaking the byte budget: the stream ends as the chunk
/// arrives, before the handler could take it; the sender gets `errc::remote_error` with a text naming
/// both sizes; the connection stays).
/// @par Thread safety
/// Inside the handler's generator only.
class bulk_input {
public:
  /// Move-only: the input belongs to one handler.
  bulk_input(bulk_input&&) noexcept = default;
  /// Move-only.
  bulk_input& operator=(bulk_input&&) noexcept = default;

  /// Awaitable (inside the generator only) yielding `result<std::span<const std::byte>>`.
  detail::bulk_input_awaiter next() noexcept { return detail::bulk_input_awaiter(this); }

  /// Bytes received so far (of chunks `next()` gave).
  std::uint64_t bytes_received() const noexcept { return bytes_; }
  /// Chunks received so far.
  std::uint64_t chunks_received() const noexcept { return chunks_; }
  /// The largest chunk accepted (the declared `bulk_options::chunk_bytes`).
  std::size_t chunk_bytes() const noexcept { return chunk_bytes_; }
  /// True once `next()` gave `errc::end_of_stream`: every byte the sender had was received.
  bool complete() const noexcept { return complete_; }

private:
  friend struct detail::bulk_input_awaiter;
  template <class, class, class>
  friend struct detail::bulk_upload_fn;
  friend struct detail::bulk_input_access;

  bulk_input(std::shared_ptr<detail::served_stream> s, std::size_t chunk_bytes) : s_(std::move(s)), chunk_bytes_(chunk_bytes) {}

  result<std::span<const std::byte>> take() {
    if (const std::error_code ec = detail::server_take_input(*s_, buf_)) {
      if (ec == errc::end_of_stream) complete_ = true;
      return ec;
    }
    // A chunk over chunk_bytes_ never gets here: it ended the stream on arrival (max_in_bytes).
    bytes_ += buf_ ? buf_->size() : 0;
    ++chunks_;
    if (!buf_) return std::span<const std::byte>();
    return std::span<const std::byte>(*buf_);
  }

  std::shared_ptr<detail::served_stream> s_;
  std::size_t chunk_bytes_ = 0;
  std::uint64_t bytes_ = 0, chunks_ = 0;
  bool complete_ = false;
  payload buf_; // the current chunk: its buffer is swapped with the stream's, so capacity circulates
};

namespace detail {

inline payload& bulk_input_access::buffer(bulk_input& in) noexcept { return in.buf_; }
inline bool bulk_input_awaiter::await_suspend(std::coroutine_handle<> h) { return server_on_next(*in_->s_, h); }
inline result<std::span<const std::byte>> bulk_input_awaiter::await_resume() { return in_->take(); }

// The bidirectional stream's handler: decodes Meta (bidi_stream_start did), wraps the input.
template <class Meta, class Resp, class F>
struct bulk_upload_fn {
  std::shared_ptr<F> fn;
  std::size_t chunk_bytes = 0;
  stream_generator<Resp> operator()(call_context ctx, Meta meta, stream_input<payload> in) const {
    const auto& state = stream_input_access::state(in);
    {
      // Set as the stream starts, before any chunk can arrive: an oversized one is refused on arrival.
      std::lock_guard lk(state->mu);
      state->max_in_bytes = chunk_bytes;
    }
    bulk_input b(state, chunk_bytes);
    if constexpr (std::is_invocable_v<F&, call_context, Meta, bulk_input>)
      return (*fn)(std::move(ctx), std::move(meta), std::move(b));
    else if constexpr (std::is_invocable_v<F&, Meta, bulk_input>)
      return (*fn)(std::move(meta), std::move(b));
    else
      static_assert(always_false<F>, "a bulk_upload handler takes ([call_context,] Meta, bulk_input) and returns "
                                     "stream_generator<Resp>");
  }
};

/// Cancels the stream on every way out of a transfer (a no-op once it has ended).
struct stream_cancel_guard {
  std::shared_ptr<client_stream_state> s;
  explicit stream_cancel_guard(std::shared_ptr<client_stream_state> st) noexcept : s(std::move(st)) {}
  stream_cancel_guard(const stream_cancel_guard&) = delete;
  stream_cancel_guard& operator=(const stream_cancel_guard&) = delete;
  ~stream_cancel_guard() {
    if (s) stream_cancel(*s);
  }
};

/// The next response of `s` into `out`: 1, or 0 once the stream has ended (see `stream_error`).
inline asio::awaitable<int> bulk_next(std::shared_ptr<client_stream_state> s, payload& out) {
  int got = stream_try_next(*s, out);
  while (got < 0) {
    co_await stream_wait(s, wait_kind::next);
    got = stream_try_next(*s, out);
  }
  co_return got;
}

template <class Resp, class Source>
asio::awaitable<result<Resp>> bulk_send(std::shared_ptr<connection> c, handler_id id, std::optional<subroute_id> sub,
                                        std::vector<std::byte> init, bool nil, stream_capacity cap, bulk_options o,
                                        stream_options opt, Source* src) {
  if (auto valid = o.validate(); !valid) co_return valid.error();
  payload_view initial;
  if (!nil) initial = std::span<const std::byte>(init);
  auto opened = co_await open_stream(std::move(c), id, sub, initial, cap, opt);
  if (!opened) co_return opened.error();
  const stream_cancel_guard guard(std::move(*opened));
  const std::shared_ptr<client_stream_state>& s = guard.s;
  std::vector<std::byte> chunk(o.chunk_bytes); // reused for every chunk: the send copies it out
  for (;;) {
    const std::span<std::byte> into(chunk);
    auto n = co_await read_chunk(*src, into);
    if (!n) {
      stream_cancel(*s); // the handler sees operation_aborted, not a clean end
      co_return n.error();
    }
    if (*n == 0) break;
    const payload_view piece = std::span<const std::byte>(chunk.data(), *n);
    auto sent = co_await stream_send(s, piece);
    if (!sent) {
      if (!stream_error(*s)) { // the stream runs: this chunk was refused (e.g. over the peer's limit)
        stream_cancel(*s);
        co_return sent.error();
      }
      break; // the stream ended: the handler's answer (or its error) says why
    }
    if (*n < o.chunk_bytes) break; // a short chunk: the source has ended
  }
  if (!stream_error(*s)) (void)stream_close_send(*s); // a failure shows as the stream's end below
  payload resp;
  const int got = co_await bulk_next(s, resp);
  if (!got) {
    error e = stream_error(*s);
    if (e == errc::end_of_stream) e = error(errc::end_of_stream, "the bulk handler ended without a response");
    co_return e;
  }
  Resp out{};
  if (auto d = codec<Resp>::unpack(view_of(resp), out); !d) {
    stream_fail(*s, d.error());
    co_return d.error();
  }
  // The handler's end follows its one response: the transfer is over when the handler has returned.
  payload extra;
  const int more = co_await bulk_next(s, extra);
  if (more) {
    const error e(errc::bad_payload, "the bulk handler sent more than one response");
    stream_fail(*s, e);
    co_return e;
  }
  if (error e = stream_error(*s); e != errc::end_of_stream) co_return e;
  co_return out;
}

inline stream_capacity upload_capacity(const bulk_options& o) noexcept {
  // Out 2: the handler's response and its end leave without waiting for a credit, so a sender blocked
  // on a send learns at once that the handler has finished early.
  return stream_capacity{o.window_chunks(), 2};
}

} // namespace detail

/// An upload of data larger than memory: the caller sends a header (`Meta`, a msgpack-cxx type or
/// `cogrid::payload`) and then the bytes of a `byte_source` in chunks of `chunk_bytes`; the handler
/// reads them (`bulk_input`) and answers with one `Resp`. At most `window_chunks()` chunks are in flight:
/// the sender waits for the handler to take a chunk before it sends one more past the window, so a slow
/// handler slows the sender instead of filling memory.
///
/// @par Example
/// @code
/// struct snap_meta { std::uint64_t term = 0, index = 0; MSGPACK_DEFINE_MAP(term, index) };
/// struct snap_resp { std::uint64_t term = 0, bytes = 0; MSGPACK_DEFINE_MAP(term, bytes) };
/// inline const cogrid::bulk_upload<snap_meta, snap_resp> install{cogrid::handler_id{90}};
///
/// struct install_fn { // a named function object: a coroutine lambda must not capture
///   asio::any_io_executor disk; // e.g. an asio::thread_pool's executor
///   cogrid::stream_generator<snap_resp> operator()(snap_meta m, cogrid::bulk_input in) const { return run(disk, m, std::move(in)); }
///   static cogrid::stream_generator<snap_resp> run(asio::any_io_executor disk, snap_meta m, cogrid::bulk_input in) {
///     auto out = co_await cogrid::file_sink::create(disk, "snapshot.tmp");
///     if (!out) throw cogrid::exception(out.error());
///     while (auto c = co_await in.next()) {
///       auto w = co_await out->write(*c);
///       if (!w) throw cogrid::exception(w.error()); // the sender gets a remote error with its text
///     }
///     if (!in.complete()) co_return;               // cut off: nobody waits for an answer
///     auto synced = co_await out->sync();
///     if (!synced) throw cogrid::exception(synced.error());
///     snap_resp done{m.term, in.bytes_received()}; // named: GCC 12 mishandles temporaries in co_yield
///     co_yield done;
///   }
/// };
/// auto served = install.serve(m, install_fn{pool.get_executor()});   // on every node
///
/// auto src = co_await cogrid::file_source::open(pool.get_executor(), "snapshot");  // on the leader
/// auto r = co_await install.send(*conn, meta, *src);                       // result<snap_resp>
/// @endcode
///
/// @par Errors
/// `send`: the source's error (the stream is cancelled: the handler's `next()` gives
/// `operation_aborted`); `errc::remote_error` with the handler's text when it threw, or when a chunk
/// broke its byte budget; `errc::end_of_stream` when the handler ended without a response; the stream's
/// errors (`unknown_handler`, `capacity_mismatch` when the two ends declare different windows,
/// `disconnected`, `timeout`, `operation_aborted`); `errc::invalid_value` for bad options.
/// @par Cancellation
/// Cancelling a waiting `send` cancels the stream (the handler's `next()` gives `operation_aborted`).
/// @par Thread safety
/// Immutable: use from any thread. Must outlive the transfers made through it.
template <class Meta, class Resp>
class bulk_upload {
public:
  /// The upload handler `id`, with chunk size and window `o` (the same on both ends).
  explicit bulk_upload(handler_id id, bulk_options o = {}) : opts_(o), stream_(id, detail::upload_capacity(o)) {}
  /// The same on the subroute `route`.
  bulk_upload(handler_id id, std::string_view route, bulk_options o = {})
      : opts_(o), stream_(id, route, detail::upload_capacity(o)) {}

  /// The handler id.
  handler_id id() const noexcept { return stream_.id(); }
  /// The subroute, when one was given.
  const std::optional<subroute_id>& subroute() const noexcept { return stream_.subroute(); }
  /// The chunk size and window.
  const bulk_options& options() const noexcept { return opts_; }
  /// The stream's capacities: in = `window_chunks()`, out = 2 (the response and the end).
  stream_capacity capacity() const noexcept { return stream_.capacity(); }

  /// Registers `fn`, callable as `([call_context,] Meta, bulk_input)` and returning
  /// `stream_generator<Resp>` that `co_yield`s one response (its last act: the sender's `send` completes
  /// when the handler returns). Throwing fails the upload with the exception's text.
  /// @par Errors
  /// `errc::invalid_value` (bad options), `errc::handler_exists`, `errc::invalid_handler`.
  template <class F>
  [[nodiscard]] result<void> serve(manager& m, F fn) const {
    if (auto valid = opts_.validate(); !valid) return valid;
    return stream_.serve(m, detail::bulk_upload_fn<Meta, Resp, F>{std::make_shared<F>(std::move(fn)), opts_.chunk_bytes});
  }

  /// Opens the stream on `c` with `meta`, sends all of `src` (chunks of `chunk_bytes`, each after a
  /// credit), closes its side and completes with the handler's response. `src` must outlive the
  /// operation; `meta` is encoded at the call.
  template <byte_source Source>
  asio::awaitable<result<Resp>> send(connection& c, const Meta& meta, Source& src, stream_options opt = {}) const {
    std::vector<std::byte> init;
    const bool nil = !detail::codec<Meta>::pack(meta, init);
    return detail::bulk_send<Resp, Source>(c.shared_from_this(), stream_.id(), stream_.subroute(), std::move(init), nil,
                                          stream_.capacity(), opts_, opt, &src);
  }

private:
  bulk_options opts_;
  bidi_stream<payload, Resp, Meta> stream_;
};

// -- download -------------------------------------------------------------------------------------------

class bulk_reader;

namespace detail {
/// Opens a download (the non-template part of `bulk_download::open`).
inline asio::awaitable<result<bulk_reader>> bulk_open(std::shared_ptr<connection> c, handler_id id, std::optional<subroute_id> sub,
                                               std::vector<std::byte> init, bool nil, bulk_options o, stream_options opt);
} // namespace detail

/// The caller's end of a `bulk_download`: the handler's chunks, read with `next()` (whole chunks),
/// `read_some()` (it is a `byte_source`, so a download can feed an upload) or `receive_to(sink)`.
/// Move-only; destroying it (or `cancel()`) before the end cancels the handler.
/// @par Errors
/// `errc::end_of_stream` (from `next()`; `read_some` gives 0) after the last chunk; `errc::remote_error`
/// with the handler's text; `errc::bad_payload` for a chunk over `chunk_bytes` (the stream is cancelled);
/// the stream's failures (`disconnected`, `timeout`, `operation_aborted`).
/// @par Thread safety
/// One operation at a time.
class bulk_reader {
public:
  /// Move-only: the reader owns its download.
  bulk_reader(bulk_reader&&) noexcept = default;
  /// Move-only; the download this reader had is cancelled.
  bulk_reader& operator=(bulk_reader&& o) noexcept {
    if (this != &o) {
      if (s_) detail::stream_cancel(*s_);
      s_ = std::move(o.s_);
      buf_ = std::move(o.buf_);
      pos_ = o.pos_;
      bytes_ = o.bytes_;
    }
    return *this;
  }
  ~bulk_reader() {
    if (s_) detail::stream_cancel(*s_);
  }

  /// The next chunk (what `read_some` left of the current one, if anything), valid until the next call.
  asio::awaitable<result<std::span<const std::byte>>> next() {
    if (!buf_ || pos_ >= buf_->size()) {
      auto filled = co_await fill();
      if (!filled) co_return filled.error();
    }
    const std::span<const std::byte> rest = std::span<const std::byte>(*buf_).subspan(pos_);
    pos_ = buf_->size();
    co_return rest;
  }

  /// Copies up to `out.size()` bytes of the data into `out`; 0 at the end.
  asio::awaitable<result<std::size_t>> read_some(std::span<std::byte> out) {
    if (out.empty()) co_return std::size_t{0};
    while (!buf_ || pos_ >= buf_->size()) {
      auto filled = co_await fill();
      if (!filled) {
        if (filled.error() == errc::end_of_stream) co_return std::size_t{0};
        co_return filled.error();
      }
    }
    const std::size_t n = std::min(out.size(), buf_->size() - pos_);
    std::memcpy(out.data(), buf_->data() + pos_, n);
    pos_ += n;
    co_return n;
  }

  /// Writes every chunk to `sink` until the end; gives the bytes written. Does not sync the sink.
  /// @par Errors
  /// As `next()` (not `end_of_stream`), and the sink's (the stream is then cancelled).
  template <byte_sink Sink>
  asio::awaitable<result<std::uint64_t>> receive_to(Sink& sink) {
    std::uint64_t total = 0;
    for (;;) {
      auto c = co_await next();
      if (!c) {
        if (c.error() == errc::end_of_stream) co_return total;
        co_return c.error();
      }
      if (c->empty()) continue;
      auto w = co_await sink.write(*c);
      if (!w) {
        cancel();
        co_return w.error();
      }
      total += c->size();
    }
  }

  /// Bytes received so far (of chunks taken from the stream).
  std::uint64_t bytes_received() const noexcept { return bytes_; }

  /// Ends the transfer now (`operation_aborted`) and cancels the handler.
  void cancel() {
    if (s_) detail::stream_cancel(*s_);
  }

private:
  friend asio::awaitable<result<bulk_reader>> detail::bulk_open(std::shared_ptr<connection>, handler_id,
                                                                std::optional<subroute_id>, std::vector<std::byte>, bool,
                                                                bulk_options, stream_options);
  explicit bulk_reader(std::shared_ptr<detail::client_stream_state> s) : s_(std::move(s)) {}

  // Takes the next chunk into buf_ (its buffer swapped with the stream's: no allocation per chunk).
  asio::awaitable<result<void>> fill() {
    const int got = co_await detail::bulk_next(s_, buf_);
    pos_ = 0;
    if (!got) {
      buf_.reset();
      co_return detail::stream_error(*s_);
    }
    if (!buf_) buf_.emplace(); // a nil chunk: no bytes
    // A chunk over the declared chunk size never gets here: it ended the stream on arrival (max_in_bytes).
    bytes_ += buf_->size();
    co_return result<void>();
  }

  std::shared_ptr<detail::client_stream_state> s_;
  payload buf_;         // the current chunk
  std::size_t pos_ = 0; // bytes of buf_ already handed out
  std::uint64_t bytes_ = 0;
};

namespace detail {
inline asio::awaitable<result<bulk_reader>> bulk_open(std::shared_ptr<connection> c, handler_id id, std::optional<subroute_id> sub,
                                                      std::vector<std::byte> init, bool nil, bulk_options o, stream_options opt) {
  if (auto valid = o.validate(); !valid) co_return valid.error();
  payload_view initial;
  if (!nil) initial = std::span<const std::byte>(init);
  const stream_capacity cap{0, o.window_chunks()};
  auto opened = co_await open_stream(std::move(c), id, sub, initial, cap, opt, o.chunk_bytes);
  if (!opened) co_return opened.error();
  co_return bulk_reader(std::move(*opened));
}
} // namespace detail

/// A download of data larger than memory: the caller sends a request (`Req`, a msgpack-cxx type or
/// `cogrid::payload`); the handler yields the data as chunks (`cogrid::payload`s of at most
/// `chunk_bytes`), each sent when the caller has room in its window, so a slow reader slows the handler.
///
/// @par Example
/// @code
/// struct send_req { std::string snapshot; MSGPACK_DEFINE_MAP(snapshot) };
/// inline const cogrid::bulk_download<send_req> zsend{cogrid::handler_id{91}};
///
/// struct send_fn {
///   asio::any_io_executor disk;
///   cogrid::stream_generator<cogrid::payload> operator()(send_req r) const { return run(disk, std::move(r)); }
///   static cogrid::stream_generator<cogrid::payload> run(asio::any_io_executor disk, send_req r) {
///     auto src = co_await cogrid::file_source::open(disk, r.snapshot);
///     if (!src) throw cogrid::exception(src.error());     // the caller gets a remote error with its text
///     cogrid::payload chunk = std::vector<std::byte>(zsend.options().chunk_bytes);
///     for (;;) {
///       chunk->resize(zsend.options().chunk_bytes);
///       const std::span<std::byte> into(*chunk);
///       auto n = co_await cogrid::read_chunk(*src, into);
///       if (!n) throw cogrid::exception(n.error());
///       if (*n == 0) break;
///       chunk->resize(*n);
///       co_yield chunk;                                  // an lvalue: sent from where it is, buffer reused
///     }
///   }
/// };
/// auto served = zsend.serve(m, send_fn{pool.get_executor()});
///
/// auto reader = co_await zsend.open(*conn, req);                      // result<bulk_reader>
/// auto out = co_await cogrid::file_sink::create(pool.get_executor(), "recv");
/// auto n = co_await reader->receive_to(*out);                         // result<std::uint64_t>
/// @endcode
///
/// @par Errors
/// `open`: the stream's (`unknown_handler`, `capacity_mismatch`, `disconnected`, `timeout`, ...),
/// `errc::invalid_value` for bad options; then as `bulk_reader`.
/// @par Thread safety
/// Immutable: use from any thread. Must outlive the transfers made through it.
template <class Req>
class bulk_download {
public:
  /// The download handler `id`, with chunk size and window `o` (the same on both ends).
  explicit bulk_download(handler_id id, bulk_options o = {}) : opts_(o), stream_(id, o.window_chunks()) {}
  /// The same on the subroute `route`.
  bulk_download(handler_id id, std::string_view route, bulk_options o = {}) : opts_(o), stream_(id, route, o.window_chunks()) {}

  /// The handler id.
  handler_id id() const noexcept { return stream_.id(); }
  /// The subroute, when one was given.
  const std::optional<subroute_id>& subroute() const noexcept { return stream_.subroute(); }
  /// The chunk size and window.
  const bulk_options& options() const noexcept { return opts_; }
  /// The stream's capacities: in 0, out = `window_chunks()`.
  stream_capacity capacity() const noexcept { return stream_.capacity(); }

  /// Registers `fn`, callable as `([call_context,] Req)` and returning `stream_generator<payload>`.
  /// @par Errors
  /// `errc::invalid_value` (bad options), `errc::handler_exists`, `errc::invalid_handler`.
  template <class F>
  [[nodiscard]] result<void> serve(manager& m, F fn) const {
    if (auto valid = opts_.validate(); !valid) return valid;
    return stream_.serve(m, std::move(fn));
  }

  /// Opens the download on `c` with request `r` (encoded at the call); completes when the remote
  /// acknowledged it.
  asio::awaitable<result<bulk_reader>> open(connection& c, const Req& r, stream_options opt = {}) const {
    std::vector<std::byte> init;
    const bool nil = !detail::codec<Req>::pack(r, init);
    return detail::bulk_open(c.shared_from_this(), stream_.id(), stream_.subroute(), std::move(init), nil, opts_, opt);
  }

private:
  bulk_options opts_;
  server_stream<Req, payload> stream_;
};

} // namespace cogrid

#endif // COGRID_BULK_HPP
