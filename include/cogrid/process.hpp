// cogrid/process.hpp — the grid over a child process's standard input and output, in zrepl's manner:
// `ssh host grid-node --stdio ...` (an ssh forced command on the other side), reaped and started again
// when it ends (`manager::attach_process`).
#ifndef COGRID_PROCESS_HPP
#define COGRID_PROCESS_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/result.hpp>
#include <cogrid/transport.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace cogrid {

/// A command whose standard input and output carry the grid to one remote node, and what it is given.
///
/// The child's stdin and stdout are one end of a Unix socket pair (writes to it never raise SIGPIPE in
/// this process); its stderr is a pipe that cogrid reads, keeping the last lines for the report of its
/// exit (and copying them to this process's stderr when `forward_stderr` is set). No other descriptor
/// of this process is passed on.
struct process_spec {
  /// The program and its arguments; argv[0] is looked up in PATH. No shell runs unless named
  /// ({"/bin/sh", "-c", "..."}). Must not be empty.
  std::vector<std::string> argv;
  /// Variables set in the child's environment ("NAME=value"), over those of this process.
  std::vector<std::string> env;
  /// When not empty, the name of a variable of the child's environment that is set to the token this
  /// node presents (`manager_options::auth`), e.g. "COGRID_TOKEN": a secret for the child must never be
  /// on its command line, which every user of the machine can read (`ps`). (ssh passes a variable on
  /// only when told to: `-o SendEnv=COGRID_TOKEN` here and `AcceptEnv COGRID_TOKEN` in sshd_config.)
  std::string token_env;
  /// What this node knows of the remote through the process (for example the ssh host key's name):
  /// `connection::identity()` and the callers that handlers' authorization hooks see. Empty: nothing.
  std::string identity;
  /// Copies the child's stderr to this process's stderr as it comes (it is kept for the exit report
  /// either way).
  bool forward_stderr = false;
  /// After the link closes the child's stdin, the child has this long to exit before it is sent
  /// SIGTERM, and as long again before SIGKILL.
  std::chrono::milliseconds exit_grace = std::chrono::seconds(2);
};

/// How a child process ended.
struct process_exit {
  int pid = 0;          ///< its process id
  int exit_code = -1;   ///< its exit status (0-255), or -1 when a signal ended it or the status is unknown
  int signal = 0;       ///< the signal that ended it, or 0
  std::string stderr_tail; ///< the last lines it wrote to stderr (at most `max_stderr_tail` bytes)

  /// The most of its stderr kept.
  static constexpr std::size_t max_stderr_tail = 4096;
  /// E.g. "exited with status 255: Permission denied (publickey)." or "ended by signal 15".
  COGRID_DECL std::string describe() const;
};

namespace detail {

/// A spawned child: its reaping, its stderr and its termination. Everything runs on the executor it was
/// made with, which must run one handler at a time (a strand, or an io_context run by one thread).
class child_process : public std::enable_shared_from_this<child_process> {
public:
  COGRID_DECL child_process(asio::any_io_executor ex, int pid, int pidfd, int errfd, bool forward_stderr,
                            std::chrono::milliseconds grace);
  /// An unreaped child (its io_context went away first) is killed (SIGKILL) and reaped here.
  COGRID_DECL ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// Starts the watchers (after construction: they hold a shared_ptr to this).
  COGRID_DECL void start();
  /// The stream to it has closed: it has `grace` to exit, then SIGTERM, then SIGKILL. Any thread.
  COGRID_DECL void terminate() noexcept;
  /// Completes when the child has been reaped, with how it ended; `operation_aborted` when the
  /// awaiting coroutine is cancelled first. Await it on the executor the child was made with.
  COGRID_DECL asio::awaitable<result<process_exit>> wait();
  /// The process id.
  int pid() const noexcept { return pid_; }

private:
  static asio::awaitable<void> watch_exit(std::shared_ptr<child_process> self);
  static asio::awaitable<void> read_stderr(std::shared_ptr<child_process> self);
  static asio::awaitable<void> escalate(std::shared_ptr<child_process> self);
  void check() noexcept;  // reaps the child if it has exited
  void keep(const char* p, std::size_t n);

  asio::any_io_executor ex_;
  int pid_;
  asio::posix::stream_descriptor pidfd_, err_;
  bool forward_;
  std::chrono::milliseconds grace_;
  bool reaped_ = false;       // ex_
  bool terminating_ = false;  // ex_
  process_exit exit_;         // ex_
  asio::steady_timer exited_; // ex_: cancelled when reaped
  asio::steady_timer steps_;   // ex_: the termination's pauses, cancelled when reaped
};

} // namespace detail

/// The transport over a child process's stdin and stdout (see `process_spec`). Closing it closes the
/// child's stdin and stdout and starts its termination (`process_spec::exit_grace`).
class process_transport final : public transport {
public:
  /// Used by `spawn_process`.
  process_transport(std::unique_ptr<transport> inner, std::shared_ptr<detail::child_process> child)
      : inner_(std::move(inner)), child_(std::move(child)) {}
  /// Closes the stream (the child is terminated as by close()).
  ~process_transport() override { process_transport::close(); }

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec) override {
    return inner_->read_some(buf, ec);
  }
  asio::awaitable<std::size_t> write_all(asio::const_buffer bytes, std::error_code& ec) override {
    ++writes_;
    return inner_->write_all(bytes, ec);
  }
  void close() noexcept override {
    inner_->close();
    child_->terminate();
  }
  std::string peer() const override { return inner_->peer(); }
  asio::any_io_executor get_executor() override { return inner_->get_executor(); }

  /// The child: its pid, and `wait()` for its end.
  const std::shared_ptr<detail::child_process>& child() const noexcept { return child_; }

private:
  std::unique_ptr<transport> inner_;
  std::shared_ptr<detail::child_process> child_;
};

/// Starts `spec.argv` with its stdin and stdout joined to the returned transport, on `ex` (which must run
/// one handler at a time: a strand, or an io_context run by one thread). `token` is what
/// `spec.token_env` is set to. The transport's identity() is `spec.identity`.
/// @par Errors
/// `errc::invalid_value` for an empty argv; the system's error when the program cannot be started
/// (`errc::no_such_file_or_directory` when it is not found), with the program's name in the text.
COGRID_DECL result<std::unique_ptr<process_transport>> spawn_process(asio::any_io_executor ex, const process_spec& spec,
                                                                     const std::string& token = {});

} // namespace cogrid

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/process.ipp>
#endif

#endif // COGRID_PROCESS_HPP
