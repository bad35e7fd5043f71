// cogrid/impl/process.ipp — child processes as transports (cogrid/process.hpp): spawning, reaping,
// their stderr and their termination.
#ifndef COGRID_IMPL_PROCESS_IPP
#define COGRID_IMPL_PROCESS_IPP

#include <cogrid/process.hpp>
#include <cogrid/error.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string_view>

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace cogrid {

COGRID_DECL std::string process_exit::describe() const {
  std::string s;
  if (signal != 0) s = "ended by signal " + std::to_string(signal);
  else if (exit_code >= 0) s = "exited with status " + std::to_string(exit_code);
  else s = "ended (its status was collected elsewhere)";
  // The last line of stderr says why, as a rule ("Permission denied (publickey).").
  std::string_view tail = stderr_tail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.remove_suffix(1);
  if (const auto nl = tail.find_last_of('\n'); nl != std::string_view::npos) tail.remove_prefix(nl + 1);
  if (!tail.empty()) s += ": " + std::string(tail);
  return s;
}

namespace detail {

COGRID_DECL child_process::child_process(asio::any_io_executor ex, int pid, int pidfd, int errfd, bool forward_stderr,
                                         std::chrono::milliseconds grace)
    : ex_(ex), pid_(pid), pidfd_(ex), err_(ex), forward_(forward_stderr), grace_(grace), exited_(ex), steps_(ex) {
  std::error_code ignored;
  if (pidfd >= 0) pidfd_.assign(pidfd, ignored);
  err_.assign(errfd, ignored);
  exit_.pid = pid;
  exited_.expires_at(asio::steady_timer::time_point::max());
}

COGRID_DECL child_process::~child_process() {
  if (reaped_) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

COGRID_DECL void child_process::start() {
  auto self = shared_from_this();
  if (pidfd_.is_open()) asio::co_spawn(ex_, watch_exit(self), asio::detached);
  asio::co_spawn(ex_, read_stderr(self), asio::detached);
}

COGRID_DECL void child_process::terminate() noexcept {
  try {
    asio::post(ex_, [self = shared_from_this()] {
      if (self->terminating_ || self->reaped_) return;
      self->terminating_ = true;
      asio::co_spawn(self->ex_, escalate(self), asio::detached);
    });
  } catch (...) { // no memory: the destructor still kills and reaps it
  }
}

COGRID_DECL asio::awaitable<result<process_exit>> child_process::wait() {
  while (!reaped_) {
    std::error_code ec;
    co_await exited_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!reaped_) co_return error(asio::error::operation_aborted); // our wait was cancelled
  }
  co_return exit_;
}

COGRID_DECL void child_process::keep(const char* p, std::size_t n) {
  if (forward_) {
    for (std::size_t done = 0; done < n;) {
      const ssize_t w = ::write(2, p + done, n - done);
      if (w <= 0) break;
      done += static_cast<std::size_t>(w);
    }
  }
  std::string& t = exit_.stderr_tail;
  t.append(p, n);
  if (t.size() > process_exit::max_stderr_tail) t.erase(0, t.size() - process_exit::max_stderr_tail);
}

COGRID_DECL void child_process::check() noexcept {
  if (reaped_) return;
  int status = 0;
  pid_t r;
  do r = ::waitpid(pid_, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; // still running
  if (r == pid_) {
    if (WIFEXITED(status)) exit_.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) exit_.signal = WTERMSIG(status);
  } // else ECHILD: reaped by someone else (SIGCHLD ignored): how it ended is unknown
  reaped_ = true;
  // What it wrote last is in the pipe already (unless a process it started holds stderr open).
  if (err_.is_open()) {
    char buf[4096];
    const int fd = err_.native_handle();
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) keep(buf, static_cast<std::size_t>(n));
  }
  std::error_code ignored;
  err_.close(ignored);
  pidfd_.close(ignored);
  exited_.cancel();
  steps_.cancel(); // the termination ends here (and nothing keeps its io_context running)
}

COGRID_DECL asio::awaitable<void> child_process::watch_exit(std::shared_ptr<child_process> self) {
  // A pidfd turns readable when the process ends. (Asio does not retry a wait speculatively, so an end
  // that another thread's reactor saw between the check and the wait would be missed: the end of its
  // stderr and the termination steps check again.)
  while (!self->reaped_) {
    self->check();
    if (self->reaped_) break;
    std::error_code ec;
    co_await self->pidfd_.async_wait(asio::posix::descriptor_base::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return; // closed, or the io_context is going away
  }
}

COGRID_DECL asio::awaitable<void> child_process::read_stderr(std::shared_ptr<child_process> self) {
  char buf[1024];
  for (;;) {
    std::error_code ec;
    const std::size_t n = co_await self->err_.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (n > 0) self->keep(buf, n);
    if (ec) break;
  }
  self->check(); // stderr ended (or was closed when the child was reaped): it has, as a rule, exited
}

COGRID_DECL asio::awaitable<void> child_process::escalate(std::shared_ptr<child_process> self) {
  asio::steady_timer& t = self->steps_;
  for (const int sig : {SIGTERM, SIGKILL}) {
    self->check();
    if (self->reaped_) co_return;
    t.expires_after(self->grace_);
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    self->check();
    if (self->reaped_) co_return;
    ::kill(self->pid_, sig);
  }
  // After SIGKILL it ends at once; wait for it without a pidfd as well.
  while (!self->reaped_) {
    t.expires_after(std::chrono::milliseconds(10));
    std::error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    self->check();
  }
}

// The child's side of spawn_process.
struct spawn_actions {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  spawn_actions() {
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawnattr_init(&attr);
  }
  ~spawn_actions() {
    ::posix_spawn_file_actions_destroy(&fa);
    ::posix_spawnattr_destroy(&attr);
  }
  spawn_actions(const spawn_actions&) = delete;
  spawn_actions& operator=(const spawn_actions&) = delete;
};

struct owned_fd {
  int fd = -1;
  explicit owned_fd(int f) noexcept : fd(f) {}
  ~owned_fd() {
    if (fd >= 0) ::close(fd);
  }
  owned_fd(const owned_fd&) = delete;
  owned_fd& operator=(const owned_fd&) = delete;
  int release() noexcept { return std::exchange(fd, -1); }
  void reset() noexcept {
    if (fd >= 0) ::close(release());
  }
};

} // namespace detail

COGRID_DECL result<std::unique_ptr<process_transport>> spawn_process(asio::any_io_executor ex, const process_spec& spec,
                                                                     const std::string& token) {
  if (spec.argv.empty() || spec.argv[0].empty()) return error(errc::invalid_value, "process_spec::argv is empty");
  const std::string& program = spec.argv[0];
  auto sys_error = [&](int e, const char* what) {
    return error(std::error_code(e, std::system_category()), std::string(what) + " for " + program + ": " + std::strerror(e));
  };

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return sys_error(errno, "socketpair");
  detail::owned_fd ours{sv[0]}, theirs{sv[1]};
  int ep[2];
  if (::pipe2(ep, O_CLOEXEC) != 0) return sys_error(errno, "pipe");
  detail::owned_fd err_read{ep[0]}, err_write{ep[1]};

  // The environment: ours, with spec.env and the token over it.
  std::vector<std::string> vars = spec.env;
  if (!spec.token_env.empty()) vars.push_back(spec.token_env + "=" + token);
  auto name_of = [](std::string_view v) { return v.substr(0, v.find('=')); };
  std::vector<char*> envp;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view name = name_of(*e);
    bool replaced = false;
    for (const auto& v : vars) replaced = replaced || name_of(v) == name;
    if (!replaced) envp.push_back(*e);
  }
  for (auto& v : vars) envp.push_back(const_cast<char*>(v.c_str()));
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  detail::spawn_actions sa;
  ::posix_spawn_file_actions_adddup2(&sa.fa, theirs.fd, 0);
  ::posix_spawn_file_actions_adddup2(&sa.fa, theirs.fd, 1);
  ::posix_spawn_file_actions_adddup2(&sa.fa, err_write.fd, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  ::posix_spawn_file_actions_addclosefrom_np(&sa.fa, 3); // sockets of ours without FD_CLOEXEC stay here
#endif
  // The child starts with default signal handling (this process may ignore SIGPIPE or SIGINT).
  sigset_t all, none;
  ::sigfillset(&all);
  ::sigemptyset(&none);
  ::posix_spawnattr_setsigdefault(&sa.attr, &all);
  ::posix_spawnattr_setsigmask(&sa.attr, &none);
  ::posix_spawnattr_setflags(&sa.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  if (const int e = ::posix_spawnp(&pid, program.c_str(), &sa.fa, &sa.attr, argv.data(), envp.data()); e != 0)
    return sys_error(e, "cannot start the process");
  theirs.reset();
  err_write.reset();
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); // -1 on kernels before 5.3

  auto child = std::make_shared<detail::child_process>(ex, pid, pidfd, err_read.release(), spec.forward_stderr, spec.exit_grace);
  child->start();
  std::error_code ec;
  asio::local::stream_protocol::socket sock(ex);
  sock.assign(asio::local::stream_protocol(), ours.fd, ec);
  if (ec) {
    child->terminate();
    return error(ec, "cannot use the socket to " + program);
  }
  ours.release();
  std::string peer = "process " + std::to_string(pid) + ": " + program;
  auto t = std::make_unique<process_transport>(make_stream_transport(std::move(sock), std::move(peer)), std::move(child));
  t->set_identity(spec.identity);
  return t;
}

} // namespace cogrid

#endif // COGRID_IMPL_PROCESS_IPP
