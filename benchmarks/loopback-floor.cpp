// loopback-floor: what this machine's kernel allows for grid-bench's mesh load, with no framework at all.
//
// The same traffic as `grid-bench --mode unary --servers N --callers C --payload B`: N nodes in this
// process, one TCP connection on 127.0.0.1 per pair of nodes, C callers that each pick a random source and
// destination per operation, send a request of B bytes and wait for the echo. Here everything a framework
// adds is gone: no WebSocket, no codec, no coroutines, no executor. Each thread owns a share of the
// connection ends in its own level-triggered epoll set; a message is one send() and (at best) a share of
// one recv() and one epoll_wait(). A caller is a record that moves to whichever thread read its response.
// So the figure is an upper bound for any design that sends each message in its own system call — which
// is what a mesh whose links carry about one message at a time forces (benchmarks/README.md).
//
// `--uring` (built when liburing is found) moves the same traffic through io_uring instead: one ring per
// thread (single issuer, deferred task work where the kernel has it), a receive always armed on each end,
// sends queued as submissions, and everything a thread queued submitted in the one io_uring_enter that
// also waits for the next completions. A link keeps one send in flight; what its callers send meanwhile
// goes out together after it. So this asks whether batching the system calls, not the messages, lifts
// the ceiling.
//
//   loopback-floor [--servers N] [--callers C] [--payload B] [--seconds S] [--threads T] [--uring]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(COGRID_FLOOR_URING)
#include <liburing.h>
#endif

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

struct options {
  int servers = 32;
  int callers = 256;
  int payload = 512;
  double seconds = 3;
  int threads = static_cast<int>(std::thread::hardware_concurrency() ? std::thread::hardware_concurrency() : 2);
  bool uring = false;
};

[[noreturn]] void fail_with(const char* what, int error) {
  std::fprintf(stderr, "loopback-floor: %s: %s\n", what, std::strerror(error));
  std::exit(2);
}

[[noreturn]] void fail(const char* what) { fail_with(what, errno); }

// One end of a link. Read by its owning thread only; written by any thread (a caller's request from
// wherever its last response was read, or the owner's echo), so writes take `write_lock`.
struct end_point {
  int fd = -1;
  int node = 0; // the node this end belongs to
  int peer = 0; // the node at the other end
  std::mutex write_lock;
  std::vector<char> in; // bytes read and not yet a whole message
  std::size_t have = 0;
  // io_uring only, under write_lock: bytes waiting for the send in flight, the bytes of that send, how
  // many of them went, and whether one is in flight.
  std::vector<char> queued, sending;
  std::size_t sent = 0;
  bool busy = false;
};

constexpr std::uint32_t response_bit = 0x80000000u;

struct shared_state {
  options opt;
  std::size_t message_size = 0;     // 4-byte header (caller id, response bit) + payload
  std::vector<std::unique_ptr<end_point>> ends; // ends[a * servers + b]: node a's end of the a-b link
  std::atomic<bool> stop{false};

  end_point& end(int a, int b) { return *ends[static_cast<std::size_t>(a * opt.servers + b)]; }
};

// A counter written by one thread and read by the main one.
struct counter {
  std::atomic<std::uint64_t> n{0};
  void bump() noexcept { n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
  std::uint64_t get() const noexcept { return n.load(std::memory_order_relaxed); }
};

// Sends all of a message; a full socket buffer is retried (counted: each try is a system call) until
// the run stops.
void send_all(end_point& e, const char* data, std::size_t n, counter& sends, const std::atomic<bool>& stop) {
  const std::lock_guard<std::mutex> lock(e.write_lock);
  while (n != 0 && !stop.load(std::memory_order_relaxed)) {
    const ssize_t w = ::send(e.fd, data, n, MSG_NOSIGNAL);
    sends.bump();
    if (w > 0) {
      data += w;
      n -= static_cast<std::size_t>(w);
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      fail("send");
    }
  }
}

// What both workers do with the traffic: start a caller's next request, echo a request, count a
// response, and cut what a read brought into messages. Derived::send(e, data, n) puts a message on e's link.
template <class Derived>
struct traffic {
  shared_state* s = nullptr;
  std::minstd_rand rng;
  std::vector<char> out;
  counter ops, sends, recvs, waits;

  // Before the worker's thread starts: the run it belongs to, its own random sequence.
  void attach(shared_state& run, unsigned seed) {
    s = &run;
    rng.seed(seed);
    out.assign(run.message_size, 'x');
  }

  // A caller's next operation: a random pair of distinct nodes, a request on the source's end.
  void start_call(std::uint32_t caller) {
    const int n = s->opt.servers;
    const int src = static_cast<int>(rng() % static_cast<unsigned>(n));
    int dst = static_cast<int>(rng() % static_cast<unsigned>(n - 1));
    if (dst >= src) ++dst;
    std::memcpy(out.data(), &caller, 4);
    self().send(s->end(src, dst), out.data(), out.size());
  }

  void on_message(end_point& e, const char* m) {
    std::uint32_t head = 0;
    std::memcpy(&head, m, 4);
    if ((head & response_bit) == 0) { // a request: echo it with the response bit
      head |= response_bit;
      std::memcpy(out.data(), &head, 4);
      std::memcpy(out.data() + 4, m + 4, out.size() - 4);
      self().send(e, out.data(), out.size());
      return;
    }
    ops.bump();
    if (!s->stop.load(std::memory_order_relaxed)) start_call(head & ~response_bit);
  }

  // `n` bytes were read into e.in after the e.have held already.
  void on_bytes(end_point& e, std::size_t n) {
    e.have += n;
    const std::size_t size = s->message_size;
    std::size_t at = 0;
    for (; e.have - at >= size; at += size) on_message(e, e.in.data() + at);
    if (at != 0) {
      std::memmove(e.in.data(), e.in.data() + at, e.have - at);
      e.have -= at;
    }
  }

private:
  Derived& self() noexcept { return static_cast<Derived&>(*this); }
};

struct worker : traffic<worker> {
  int epfd = -1;

  void send(end_point& e, const char* data, std::size_t n) { send_all(e, data, n, sends, s->stop); }

  void run() {
    epoll_event events[256];
    while (!s->stop.load(std::memory_order_relaxed)) {
      const int k = ::epoll_wait(epfd, events, 256, 50);
      waits.bump();
      if (k < 0 && errno != EINTR) fail("epoll_wait");
      for (int i = 0; i < k; ++i) {
        end_point& e = *static_cast<end_point*>(events[i].data.ptr);
        const ssize_t r = ::recv(e.fd, e.in.data() + e.have, e.in.size() - e.have, 0);
        recvs.bump();
        if (r <= 0) {
          if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
          if (s->stop.load()) break;
          fail("recv");
        }
        on_bytes(e, static_cast<std::size_t>(r));
      }
    }
  }
};

#if defined(COGRID_FLOOR_URING)
// The same worker over io_uring. Completions carry the end they are for, the low bit set for a send.
struct uring_worker : traffic<uring_worker> {
  io_uring ring{};
  int in_flight = 0; // receives and sends submitted (or queued) on this ring and not completed

  io_uring_sqe* next_sqe() {
    io_uring_sqe* q = ::io_uring_get_sqe(&ring);
    if (q == nullptr) { // the submission queue is full: hand it to the kernel now
      const int r = ::io_uring_submit(&ring);
      waits.bump();
      if (r < 0) fail_with("io_uring_submit", -r);
      q = ::io_uring_get_sqe(&ring);
      if (q == nullptr) fail_with("io_uring_get_sqe", EBUSY);
    }
    return q;
  }

  void arm_recv(end_point& e) {
    io_uring_sqe* q = next_sqe();
    ::io_uring_prep_recv(q, e.fd, e.in.data() + e.have, e.in.size() - e.have, 0);
    ::io_uring_sqe_set_data64(q, reinterpret_cast<std::uint64_t>(&e));
    recvs.bump();
    ++in_flight;
  }

  // Under e.write_lock, e.busy set: what was queued becomes the send in flight.
  void send_queued(end_point& e) {
    e.sending.swap(e.queued);
    e.queued.clear();
    e.sent = 0;
    arm_send(e);
  }

  // Under e.write_lock, e.busy set: the rest of e.sending goes out.
  void arm_send(end_point& e) {
    io_uring_sqe* q = next_sqe();
    ::io_uring_prep_send(q, e.fd, e.sending.data() + e.sent, e.sending.size() - e.sent, MSG_NOSIGNAL);
    ::io_uring_sqe_set_data64(q, reinterpret_cast<std::uint64_t>(&e) | 1u);
    sends.bump();
    ++in_flight;
  }

  void send(end_point& e, const char* data, std::size_t n) {
    const std::lock_guard<std::mutex> lock(e.write_lock);
    e.queued.insert(e.queued.end(), data, data + n);
    if (e.busy) return; // goes out after the send in flight
    e.busy = true;
    send_queued(e);
  }

  void on_sent(end_point& e, int res) {
    if (res < 0) {
      if (s->stop.load()) return; // main shut the sockets down at the end
      fail_with("send", -res);
    }
    const std::lock_guard<std::mutex> lock(e.write_lock);
    e.sent += static_cast<std::size_t>(res);
    if (e.sent < e.sending.size()) return arm_send(e);
    if (e.queued.empty()) {
      e.busy = false;
      return;
    }
    send_queued(e);
  }

  void on_received(end_point& e, int res) {
    if (res <= 0) {
      if (s->stop.load()) return; // main shut the sockets down at the end
      fail_with("recv", res == 0 ? ECONNRESET : -res);
    }
    on_bytes(e, static_cast<std::size_t>(res));
    arm_recv(e);
  }

  // Runs on its own thread, which must be the ring's only submitter (IORING_SETUP_SINGLE_ISSUER): the
  // ring is made here. `ready` counts the threads whose receives are armed; callers start after all.
  void run(int index, std::atomic<int>& ready) {
    int r = ::io_uring_queue_init(4096, &ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (r == -EINVAL) r = ::io_uring_queue_init(4096, &ring, IORING_SETUP_COOP_TASKRUN); // before Linux 6.1
    if (r == -EINVAL) r = ::io_uring_queue_init(4096, &ring, 0);
    if (r < 0) fail_with("io_uring_queue_init", -r);
    const int threads = s->opt.threads;
    for (int a = 0; a < s->opt.servers; ++a)
      if (a % threads == index)
        for (int b = 0; b < s->opt.servers; ++b)
          if (a != b) arm_recv(s->end(a, b));
    ready.fetch_add(1);
    while (ready.load() < threads) std::this_thread::yield();
    for (int c = index; c < s->opt.callers; c += threads) start_call(static_cast<std::uint32_t>(c));

    __kernel_timespec tick{};
    tick.tv_nsec = 50'000'000;
    while (!s->stop.load(std::memory_order_relaxed)) {
      io_uring_cqe* cqe = nullptr;
      r = ::io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &tick, nullptr);
      waits.bump();
      if (r < 0 && r != -ETIME && r != -EINTR) fail_with("io_uring_submit_and_wait_timeout", -r);
      unsigned head = 0;
      unsigned seen = 0;
      io_uring_for_each_cqe(&ring, head, cqe) {
        const std::uint64_t d = ::io_uring_cqe_get_data64(cqe);
        auto& e = *reinterpret_cast<end_point*>(d & ~std::uint64_t{1});
        --in_flight;
        if (d & 1u) on_sent(e, cqe->res);
        else on_received(e, cqe->res);
        ++seen;
      }
      ::io_uring_cq_advance(&ring, seen);
    }
    // The run is over and main has shut every socket down (measure()), which ends every receive and
    // send: reap them all here, so that none is still in the kernel when main closes the sockets and
    // frees the buffers.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (in_flight > 0) {
      if (std::chrono::steady_clock::now() > give_up) fail_with("io_uring: operations left at the end", ETIMEDOUT);
      io_uring_cqe* cqe = nullptr;
      r = ::io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &tick, nullptr);
      if (r < 0 && r != -ETIME && r != -EINTR) fail_with("io_uring_submit_and_wait_timeout", -r);
      unsigned head = 0;
      unsigned seen = 0;
      io_uring_for_each_cqe(&ring, head, cqe) ++seen;
      ::io_uring_cq_advance(&ring, seen);
      in_flight -= static_cast<int>(seen);
    }
    ::io_uring_queue_exit(&ring);
  }
};
#endif

int connect_pair(int listener, const sockaddr_in& addr, int& accepted) {
  const int c = ::socket(AF_INET, SOCK_STREAM, 0);
  if (c < 0) fail("socket");
  if (::connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) fail("connect");
  accepted = ::accept(listener, nullptr, nullptr);
  if (accepted < 0) fail("accept");
  return c;
}

// io_uring's sockets are left blocking: io_uring waits for readiness itself (the epoll mode's O_NONBLOCK is
// what its own recv/send loop needs).
void tune(int fd, bool non_blocking) {
  const int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) fail("TCP_NODELAY");
  if (non_blocking && ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) fail("O_NONBLOCK");
}

// An option's value: all of it a number (so that "--payload --uring" is refused, not read as 0).
template <class T>
T number(const std::string& option, const char* text) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text, &end);
  const bool whole = std::is_floating_point_v<T> || v == static_cast<double>(static_cast<long long>(v));
  if (end == text || *end != '\0' || errno != 0 || !whole || v > 1e9 || v < -1e9) {
    std::fprintf(stderr, "loopback-floor: %s wants a number, not '%s'\n", option.c_str(), text);
    std::exit(2);
  }
  return static_cast<T>(v);
}

options parse(int argc, char** argv) {
  options o;
  int i = 1;
  for (; i + 1 < argc || (i < argc && std::string(argv[i]) == "--uring"); i += 2) {
    const std::string k = argv[i];
    if (k == "--uring") {
#if defined(COGRID_FLOOR_URING)
      o.uring = true;
      --i; // takes no value
      continue;
#else
      std::fprintf(stderr, "loopback-floor: built without liburing: no --uring\n");
      std::exit(2);
#endif
    }
    const char* v = argv[i + 1];
    if (k == "--servers") o.servers = number<int>(k, v);
    else if (k == "--callers") o.callers = number<int>(k, v);
    else if (k == "--payload") o.payload = number<int>(k, v);
    else if (k == "--seconds") o.seconds = number<double>(k, v);
    else if (k == "--threads") o.threads = number<int>(k, v);
    else {
      std::fprintf(stderr, "loopback-floor: unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  if (i != argc) {
    std::fprintf(stderr, "usage: loopback-floor [--servers N] [--callers C] [--payload B] [--seconds S] [--threads T] [--uring]\n");
    std::exit(2);
  }
  if (o.servers < 2 || o.callers < 1 || o.payload < 0 || o.seconds <= 0 || o.threads < 1) {
    std::fprintf(stderr, "loopback-floor: servers >= 2, callers >= 1, payload >= 0, seconds > 0, threads >= 1\n");
    std::exit(2);
  }
  return o;
}

// Lets the workers warm up, counts what they do for the run's seconds, stops and joins them, and prints
// the line. Returns the operations counted.
template <class Worker>
std::uint64_t measure(shared_state& s, std::vector<Worker>& workers, std::vector<std::thread>& threads, const char* wait_name) {
  const options& o = s.opt;
  using clock = std::chrono::steady_clock;
  std::this_thread::sleep_for(std::chrono::duration<double>(std::min(1.0, o.seconds / 5)));
  struct totals {
    std::uint64_t ops = 0, sends = 0, recvs = 0, waits = 0;
  };
  auto sum = [&workers] {
    totals t;
    for (auto& w : workers) {
      t.ops += w.ops.get();
      t.sends += w.sends.get();
      t.recvs += w.recvs.get();
      t.waits += w.waits.get();
    }
    return t;
  };
  const totals before = sum();
  const auto t0 = clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  const totals after = sum();
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  s.stop = true;
  if (o.uring) // ends every receive and send in the rings, which the workers then reap before they exit
    for (auto& e : s.ends)
      if (e->fd >= 0) ::shutdown(e->fd, SHUT_RDWR);
  for (auto& t : threads) t.join();

  const std::uint64_t ops = after.ops - before.ops;
  const double per_op = ops ? 1.0 / static_cast<double>(ops) : 0;
  std::printf("loopback-floor%s: %d servers, %d callers, %d B, %d threads: %.0f ops/s; per op: %.2f send, %.2f recv, "
              "%.2f %s\n",
              o.uring ? " --uring" : "", o.servers, o.callers, o.payload, o.threads, static_cast<double>(ops) / secs,
              static_cast<double>(after.sends - before.sends) * per_op, static_cast<double>(after.recvs - before.recvs) * per_op,
              static_cast<double>(after.waits - before.waits) * per_op, wait_name);
  return ops;
}

} // namespace

int main(int argc, char** argv) {
  shared_state s;
  s.opt = parse(argc, argv);
  const options& o = s.opt;
  s.message_size = 4 + static_cast<std::size_t>(o.payload);

  // Two descriptors per pair of nodes: 32 nodes need 992 and more, above the usual soft limit of 1,024.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &files);
  }
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0; // the OS picks
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener, 1024) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    fail("listen");

  s.ends.resize(static_cast<std::size_t>(o.servers * o.servers));
  for (auto& e : s.ends) e = std::make_unique<end_point>();
  for (int a = 0; a < o.servers; ++a)
    for (int b = a + 1; b < o.servers; ++b) {
      int accepted = -1;
      s.end(a, b).fd = connect_pair(listener, addr, accepted);
      s.end(b, a).fd = accepted;
    }
  ::close(listener);

  // A node's ends belong to one thread (node % threads), as a node would own its connections.
  for (int a = 0; a < o.servers; ++a)
    for (int b = 0; b < o.servers; ++b) {
      if (a == b) continue;
      end_point& e = s.end(a, b);
      e.node = a;
      e.peer = b;
      e.in.resize(64 * 1024 + s.message_size);
      tune(e.fd, !o.uring);
    }

  std::uint64_t ops = 0;
  if (o.uring) {
#if defined(COGRID_FLOOR_URING)
    { // a kernel or sandbox without io_uring: say so and exit 77 (a skip, not a failure)
      io_uring probe{};
      const int r = ::io_uring_queue_init(8, &probe, 0);
      if (r == -EPERM || r == -ENOSYS || r == -EACCES) {
        std::fprintf(stderr, "loopback-floor: io_uring unavailable here: %s\n", std::strerror(-r));
        return 77;
      }
      if (r < 0) fail_with("io_uring_queue_init", -r);
      ::io_uring_queue_exit(&probe);
    }
    std::vector<uring_worker> workers(static_cast<std::size_t>(o.threads));
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < workers.size(); ++t) workers[t].attach(s, static_cast<unsigned>(t + 1));
    for (std::size_t t = 0; t < workers.size(); ++t)
      threads.emplace_back([&workers, &ready, t] { workers[t].run(static_cast<int>(t), ready); });
    ops = measure(s, workers, threads, "io_uring_enter");
#endif
  } else {
    std::vector<worker> workers(static_cast<std::size_t>(o.threads));
    for (std::size_t t = 0; t < workers.size(); ++t) {
      workers[t].attach(s, static_cast<unsigned>(t + 1));
      workers[t].epfd = ::epoll_create1(0);
      if (workers[t].epfd < 0) fail("epoll_create1");
    }
    for (auto& e : s.ends) {
      if (e->fd < 0) continue; // the unused diagonal (a node and itself)
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = e.get();
      if (::epoll_ctl(workers[static_cast<std::size_t>(e->node % o.threads)].epfd, EPOLL_CTL_ADD, e->fd, &ev) != 0)
        fail("epoll_ctl");
    }
    for (int c = 0; c < o.callers; ++c) workers[static_cast<std::size_t>(c % o.threads)].start_call(static_cast<std::uint32_t>(c));
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w.run(); });
    ops = measure(s, workers, threads, "epoll_wait");
    for (auto& w : workers) ::close(w.epfd);
  }
  for (auto& e : s.ends)
    if (e->fd >= 0) ::close(e->fd);
  return ops != 0 ? 0 : 1;
}
