// Child processes as transports (cogrid/process.hpp), links over them (manager::attach_process), the
// caller's identity and handlers' authorization hooks (manager::authorize).
//
// The peer of a process link is this test program itself, started again with COGRID_TEST_STDIO_NODE
// set: it then runs a grid node over its stdin and stdout (as `grid-node --stdio` does under an ssh
// forced command) instead of the tests.
#include <cogrid/process.hpp>

#include <cogrid/election.hpp>
#include <cogrid/stream.hpp>
#include <cogrid/testing.hpp>
#include <cogrid/unary.hpp>

#include "net_util.hpp"
#include "grid_helpers.hpp"
#include "test_types.hpp"

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include <doctest/doctest.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <unistd.h>

using namespace cogrid;
using namespace std::chrono_literals;
using cogrid_test::bytes;
using cogrid_test::echo_fn;
using cogrid_test::echo_gen;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;
using cogrid_test::text;

namespace {

const unary_raw echo{handler_id{78}};
const bidi_stream_raw echo_stream{handler_id{78}, "echo"};
const unary_raw whoami{handler_id{80}};
const unary_raw admin{handler_id{81}};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The stdio node's transport: ends the program's io_context when the stream ends.
class ending_transport final : public transport {
public:
  ending_transport(std::unique_ptr<transport> t, asio::io_context& io) : t_(std::move(t)), io_(io) {}
  asio::awaitable<std::size_t> read_some(asio::mutable_buffer b, std::error_code& ec) override {
    const std::size_t n = co_await t_->read_some(b, ec);
    if (ec) io_.stop();
    co_return n;
  }
  asio::awaitable<std::size_t> write_all(asio::const_buffer b, std::error_code& ec) override { return t_->write_all(b, ec); }
  void close() noexcept override {
    t_->close();
    io_.stop();
  }
  std::string peer() const override { return t_->peer(); }
  asio::any_io_executor get_executor() override { return t_->get_executor(); }

private:
  std::unique_ptr<transport> t_;
  asio::io_context& io_;
};

// The peer of the process links: a node over stdin/stdout. COGRID_TEST_STDIO_NODE is "LOCAL REMOTE";
// the token comes in COGRID_TOKEN, the identity of the caller in COGRID_TEST_IDENTITY (as an ssh forced
// command would give the key's name), and the node writes its pid to COGRID_TEST_PIDFILE.
int stdio_node(const std::string& spec) {
  const auto sp = spec.find(' ');
  const std::string local = spec.substr(0, sp), remote = spec.substr(sp + 1);
  if (const std::string pidfile = env("COGRID_TEST_PIDFILE"); !pidfile.empty()) std::ofstream(pidfile) << ::getpid();
  asio::io_context io;
  manager_options o;
  o.local = local;
  o.hosts = {local, remote};
  o.auth = static_token_auth(env("COGRID_TOKEN"));
  o.connection = connection_options::for_tests();
  manager m(io.get_executor(), std::move(o));
  (void)echo.serve(m, echo_fn{});
  (void)echo_stream.serve(m, echo_gen);
  (void)whoami.serve(m, [](const call_context& ctx, payload) { return bytes(ctx.conn->identity() + " " + ctx.conn->remote()); });
  (void)admin.serve(m, [](payload p) { return p; });
  (void)m.authorize(admin.id(), [](const caller_info& who) -> result<void> {
    if (who.identity == "key-admin") return {};
    return remote_error("key " + std::string(who.identity) + " may not call admin");
  });
  using desc = asio::posix::stream_descriptor;
  auto t = make_fd_transport(desc(io, ::dup(0)), desc(io, ::dup(1)), "stdio");
  auto ending = std::make_unique<ending_transport>(std::move(t), io);
  ending->set_identity(env("COGRID_TEST_IDENTITY"));
  if (!m.attach(remote, std::move(ending))) return 3;
  io.run();
  return 0;
}

// Runs the stdio node instead of the tests when this program was started as one.
const int stdio_node_mode = [] {
  if (const std::string spec = env("COGRID_TEST_STDIO_NODE"); !spec.empty()) std::_Exit(stdio_node(spec));
  return 0;
}();

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
}

process_spec command(std::vector<std::string> argv) {
  process_spec s;
  s.argv = std::move(argv);
  return s;
}

process_spec sh(std::string script) { return command({"/bin/sh", "-c", std::move(script)}); }

// Reads from `t` until EOF or an error, at most `limit` bytes.
asio::awaitable<std::string> read_all(transport& t, std::size_t limit = 1 << 20) {
  std::string out;
  char buf[256];
  for (;;) {
    std::error_code ec;
    const std::size_t n = co_await t.read_some(asio::buffer(buf), ec);
    out.append(buf, n);
    if (ec || out.size() >= limit) co_return out;
  }
}

asio::awaitable<void> spawn_cases(asio::any_io_executor ex) {
  { // bytes through `cat`; the identity given; the child's end after its stdin closes
    process_spec spec = command({"cat"});
    spec.identity = "the-cat";
    auto t = spawn_process(ex, spec);
    REQUIRE(t);
    CHECK((*t)->identity() == "the-cat");
    CHECK((*t)->peer().find("cat") != std::string::npos);
    const std::string hello = "hello through a child";
    std::error_code ec;
    const std::size_t w = co_await (*t)->write_all(asio::buffer(hello), ec);
    CHECK(w == hello.size());
    std::string got;
    char buf[64];
    while (got.size() < hello.size() && !ec) {
      const std::size_t n = co_await (*t)->read_some(asio::buffer(buf), ec);
      got.append(buf, n);
    }
    CHECK(got == hello);
    auto child = (*t)->child();
    (*t)->close();
    const result<process_exit> end = co_await child->wait();
    REQUIRE(end);
    CHECK(end->exit_code == 0); // cat ended at the end of its input, before any signal
    CHECK(end->signal == 0);
  }
  { // the exit status and the last line of stderr
    auto t = spawn_process(ex, sh("echo first line >&2; echo 'Permission denied (publickey).' >&2; exit 255"));
    REQUIRE(t);
    auto child = (*t)->child();
    const std::string out = co_await read_all(**t);
    CHECK(out.empty());
    const result<process_exit> end = co_await child->wait();
    REQUIRE(end);
    CHECK(end->exit_code == 255);
    CHECK(end->stderr_tail.find("first line") != std::string::npos);
    CHECK(end->describe() == "exited with status 255: Permission denied (publickey).");
  }
  { // the token in the environment variable named, never on the command line; env over ours
    process_spec spec = sh("printf '%s|%s|%s' \"$COGRID_TOKEN\" \"$EXTRA\" \"$HOME\"");
    spec.token_env = "COGRID_TOKEN";
    spec.env = {"EXTRA=given", "HOME=/elsewhere"};
    auto t = spawn_process(ex, spec, "s3cret");
    REQUIRE(t);
    const std::string out = co_await read_all(**t);
    CHECK(out == "s3cret|given|/elsewhere");
  }
  { // a process that ignores the end of its input is sent SIGTERM after the grace
    process_spec spec = sh("trap '' PIPE; exec sleep 30");
    spec.exit_grace = 100ms;
    auto t = spawn_process(ex, spec);
    REQUIRE(t);
    auto child = (*t)->child();
    const auto t0 = std::chrono::steady_clock::now();
    (*t)->close();
    const result<process_exit> end = co_await child->wait();
    REQUIRE(end);
    CHECK(end->signal == SIGTERM);
    CHECK(end->describe() == "ended by signal 15");
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  { // one that ignores SIGTERM too is killed
    process_spec spec = sh("trap '' TERM; while :; do sleep 1; done");
    spec.exit_grace = 100ms;
    auto t = spawn_process(ex, spec);
    REQUIRE(t);
    auto child = (*t)->child();
    (*t)->close();
    const result<process_exit> end = co_await child->wait();
    REQUIRE(end);
    CHECK(end->signal == SIGKILL);
  }
  { // a program that does not exist, and an empty command
    auto t = spawn_process(ex, command({"cogrid-no-such-program"}));
    REQUIRE(!t);
    CHECK(t.error().code == std::errc::no_such_file_or_directory);
    CHECK(t.error().text.find("cogrid-no-such-program") != std::string::npos);
    auto e = spawn_process(ex, process_spec{});
    REQUIRE(!e);
    CHECK(e.error().code == errc::invalid_value);
  }
}

TEST_CASE("spawn_process: a child's stdin and stdout as a transport, its exit, its stderr, its token, its end") {
  run_async(spawn_cases);
}

// A node whose link to "http://child:1" runs over this program started as a stdio node.
struct process_node {
  std::string local, remote;
  std::unique_ptr<manager> m;
  std::string pidfile;
  process_node(asio::any_io_executor ex, std::string l, std::string r) : local(std::move(l)), remote(std::move(r)) {
    manager_options o;
    o.local = local;
    o.hosts = {local, remote};
    o.auth = static_token_auth("process-token");
    o.connection = connection_options::for_tests();
    o.connection.reconnect_min = 50ms;
    o.connection.reconnect_max = 100ms;
    m = std::make_unique<manager>(ex, std::move(o));
    pidfile = "/tmp/cogrid-test-child-" + std::to_string(::getpid()) + "-" + local.substr(7, 1) + ".pid";
  }
  process_spec spec(std::string identity) const {
    process_spec s = command({self_exe()});
    s.env = {"COGRID_TEST_STDIO_NODE=" + remote + " " + local, "COGRID_TEST_IDENTITY=" + identity, "COGRID_TEST_PIDFILE=" + pidfile};
    s.token_env = "COGRID_TOKEN";
    s.identity = "child-host-key";
    return s;
  }
  int child_pid() const {
    std::ifstream f(pidfile);
    int pid = 0;
    f >> pid;
    return pid;
  }
};

asio::awaitable<void> link_cases(asio::any_io_executor ex, std::string local) {
  process_node n(ex, local, "http://child:1");
  REQUIRE(n.m->attach_process(n.remote, n.spec("key-alice")));
  CHECK(n.m->attach_process("http://nobody:1", n.spec("x")) == errc::unknown_host);
  CHECK(n.m->attach_process(n.remote, process_spec{}) == errc::invalid_value);
  auto c = n.m->connection(n.remote);
  const result<void> up = co_await c->wait_for_connect();
  REQUIRE(up);
  CHECK(c->identity() == "child-host-key");

  call_options opt{5s};
  payload req = bytes("over a process");
  auto r = co_await echo.call(*c, req, opt);
  REQUIRE(r);
  CHECK(text(*r) == "over a process");
  // The child's handlers see who calls: the host this node claimed and the key's name it was given.
  payload none;
  auto who = co_await whoami.call(*c, none, opt);
  REQUIRE(who);
  CHECK(text(*who) == "key-alice " + n.local);
  // Its authorization hook refuses this key the admin handler, with its reason; echo is not affected.
  payload secret = bytes("let me in");
  auto refused = co_await admin.call(*c, secret, opt);
  REQUIRE(!refused);
  CHECK(refused.error().code == errc::not_authorized);
  CHECK(refused.error().text == "not authorized: key key-alice may not call admin");

  // A stream, and the child killed in the middle of it: the stream fails, and calls come back within
  // reconnect_max (plus the start of a process) over a new child.
  payload init;
  stream_options so{10s};
  auto s = co_await echo_stream.open(*c, init, so);
  REQUIRE(s);
  payload one = bytes("one");
  const result<void> sent = co_await s->send(one);
  CHECK(sent);
  auto back = co_await s->next();
  REQUIRE(back);
  CHECK(text(*back) == "one");
  const int first = n.child_pid();
  REQUIRE(first > 0);
  const std::uint64_t sessions = c->session_id();
  ::kill(first, SIGKILL);
  auto ended = co_await s->next();
  CHECK(!ended);
  CHECK(ended.error() == errc::disconnected);
  auto again = [&] { return c->session_id() > sessions && c->state() == connection_state::connected; };
  const bool back_up = co_await eventually(again, 5s);
  REQUIRE(back_up);
  CHECK(n.child_pid() != first);
  payload req2 = bytes("after the kill");
  auto r2 = co_await echo.call(*c, req2, opt);
  REQUIRE(r2);
  CHECK(text(*r2) == "after the kill");
  CHECK(c->stats().reconnects >= 1);
  co_await n.m->shutdown();
  std::remove(n.pidfile.c_str());
}

// Both sides of the election: a local host that dials "http://child:1" and one that is dialed.
TEST_CASE("attach_process: calls, streams, identity and authorization over a child process, started again after it is killed") {
  std::string dials, dialed;
  for (char c = 'a'; c <= 'z' && (dials.empty() || dialed.empty()); ++c) {
    const std::string h = std::string("http://") + c + ":1";
    (should_connect(h, "http://child:1") ? dials : dialed) = h;
  }
  REQUIRE(!dials.empty());
  REQUIRE(!dialed.empty());
  for (const std::string& local : {dials, dialed}) {
    CAPTURE(local);
    run_async([local](asio::any_io_executor ex) { return link_cases(ex, local); }, std::chrono::seconds(60));
  }
}

asio::awaitable<void> failing_process(asio::any_io_executor ex) {
  process_node n(ex, "http://a:1", "http://child:1");
  process_spec spec = sh("echo 'Permission denied (publickey).' >&2; exit 255");
  REQUIRE(n.m->attach_process(n.remote, spec));
  auto c = n.m->connection(n.remote);
  const auto t0 = std::chrono::steady_clock::now();
  const result<void> up = co_await c->wait_for_connect(on_refusal::fail);
  REQUIRE(!up);
  CHECK(up.error().code == errc::connection_rejected);
  CHECK(up.error().text.find("exited with status 255: Permission denied (publickey).") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  // Started again after each pause (50-100 ms here), each failure counted and kept as the last error.
  auto retried = [&] { return c->stats().dial_failures >= 3; };
  const bool again = co_await eventually(retried, 5s);
  CHECK(again);
  CHECK(c->stats().last_error.find("Permission denied (publickey).") != std::string::npos);
  co_await n.m->shutdown();
}

TEST_CASE("attach_process: a process that ends before its link is up is a refusal with its stderr, and is started again") {
  run_async(failing_process);
}

asio::awaitable<void> authorize_cases(asio::any_io_executor ex) {
  testing::grid g(ex, 2, {}, testing::grid::network::memory);
  for (std::size_t i = 0; i < 2; ++i) {
    REQUIRE(echo.serve(g.node(i), echo_fn{}));
    REQUIRE(echo_stream.serve(g.node(i), echo_gen));
    REQUIRE(admin.serve(g.node(i), echo_fn{}));
  }
  // Node 1 admits node 0 to admin and refuses it the echo stream; it sees node 0's host (no identity
  // over an in-memory pipe).
  const std::string host0 = g.host(0);
  std::string seen;
  REQUIRE(g.node(1).authorize(admin.id(), [host0, &seen](const caller_info& who) -> result<void> {
    seen = std::string(who.host) + "|" + std::string(who.identity) + "|" + std::to_string(static_cast<int>(who.handler));
    if (who.host == host0) return {};
    return remote_error("unknown host");
  }));
  REQUIRE(g.node(1).authorize(echo_stream.id(), "echo", [](const caller_info&) -> result<void> {
    return error(errc::invalid_value, "streams are closed today");
  }));
  CHECK(g.node(1).authorize(handler_id{99}, [](const caller_info&) -> result<void> { return {}; }) == errc::unknown_handler);
  // A hook that throws refuses with the exception's text.
  REQUIRE(g.node(0).authorize(admin.id(), [](const caller_info&) -> result<void> { throw std::runtime_error("hook broke"); }));
  g.start();
  const result<void> up = co_await g.wait_all_connected();
  REQUIRE(up);
  call_options opt{2s};

  payload p = bytes("admitted");
  auto r = co_await admin.call(*g.link(0, 1), p, opt);
  REQUIRE(r);
  CHECK(text(*r) == "admitted");
  CHECK(seen == host0 + "||81");

  payload q = bytes("refused");
  auto r2 = co_await admin.call(*g.link(1, 0), q, opt);
  REQUIRE(!r2);
  CHECK(r2.error().code == errc::not_authorized);
  CHECK(r2.error().text == "not authorized: hook broke");

  payload init;
  stream_options so{2s};
  auto s = co_await echo_stream.open(*g.link(0, 1), init, so);
  REQUIRE(!s);
  CHECK(s.error().code == errc::not_authorized);
  CHECK(s.error().text == "not authorized: streams are closed today");
  // The refused calls cost nothing else: the link and the other handlers work.
  auto s2 = co_await echo_stream.open(*g.link(1, 0), init, so);
  REQUIRE(s2);
  (void)s2->close_send();
  payload e = bytes("still here");
  auto r3 = co_await echo.call(*g.link(0, 1), e, opt);
  REQUIRE(r3);
  CHECK(g.link(0, 1)->stats().reconnects == 0);
  co_await g.shutdown();
}

TEST_CASE("authorize: a hook admits or refuses callers of a unary or stream handler, with its reason") {
  run_async(authorize_cases);
}

} // namespace
