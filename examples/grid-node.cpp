// grid-node: run one node of a grid from the shell, or make one call to a node.
//
//   grid-node --local URL --hosts URL,URL,... [--route PATH] serve
//   grid-node --local URL --hosts URL,URL,... [--route PATH] call HOST HANDLER PAYLOAD
//   grid-node --local URL --hosts URL,URL,... [--route PATH] stream HOST HANDLER [--subroute S] PAYLOAD [REQUEST...]
//   grid-node --local URL --hosts URL,URL,... [--route PATH] watch HOST ROUNDS INTERVAL_MS
//   ... [--token-file F] [--stdio HOST] [--exec [HOST=]COMMAND] [--allow ID,ID,...] [--cert PEM --key PEM] [--ca PEM] [--wait MS]
//
// `serve` runs until SIGINT/SIGTERM with MinIO's test handlers: unary 78 echoes its payload, unary 79
// fails with "test error: <payload>"; stream 78 on subroute "echo" (capacities 1/1) echoes each request,
// stream 79 (no input, out capacity 1) sends N responses "resp-0" ... "resp-<N-1>" for payload N.
// `call` joins the grid as --local (listening there too, since the election may make HOST dial us),
// makes one unary call and prints the response payload, or "error: <text>". `stream` opens a stream
// (input capacity 1 when REQUESTs are given, else none), sends each REQUEST, ends its input and prints
// each response on its own line, then "error: <text>" if it failed. Exit status: 0 success, 1 remote
// error (the handler failed, or refused this caller), 2 any other failure.
// The token is read from the environment (COGRID_TOKEN) or from --token-file F, never from the
// command line, where every user of the machine can read it (`--token T` still works, with a warning);
// without either it is "cogrid".
// `--stdio HOST` speaks the grid to HOST over stdin/stdout instead of TCP (no listener; the node exits
// when stdin ends), in the manner of an ssh forced command: `command="COGRID_IDENTITY=alice grid-node
// --stdio HOST ..."` in authorized_keys; COGRID_IDENTITY names the caller to the handlers and to --allow.
// `--exec [HOST=]COMMAND` runs COMMAND (with /bin/sh; repeatable) and speaks the grid to HOST (call's
// and stream's HOST when not given) over the child's stdin/stdout, started again when it ends
// (`manager::attach_process`); the child gets the token as COGRID_TOKEN and the remote as
// COGRID_REMOTE in its environment, and its stderr goes to ours. `--allow ID,...` admits to the
// handlers only callers whose identity is listed.
// With https:// hosts, --cert/--key are this node's certificate chain and key (PEM files) and --ca the
// CA that signed the peers' certificates. `call`/`stream` wait --wait ms (default 10000) for the link.
#include <cogrid/cogrid.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <string>
#include <vector>

namespace {

struct args {
  std::string local, route = std::string(cogrid::route_v1), token = "cogrid", subroute, stdio_host, cert, key, ca;
  long wait_ms = 10000;
  std::vector<std::string> hosts, rest, execs, allow;
};

int usage() {
  std::fprintf(stderr, "usage: grid-node --local URL --hosts URL,URL,... [--route PATH] serve\n"
                       "       grid-node --local URL --hosts URL,URL,... [--route PATH] call HOST HANDLER PAYLOAD\n"
                       "       grid-node --local URL --hosts URL,URL,... [--route PATH] stream HOST HANDLER [--subroute S] PAYLOAD [REQUEST...]\n"
                       "       grid-node --local URL --hosts URL,URL,... [--route PATH] watch HOST ROUNDS INTERVAL_MS\n"
                       "       the token: COGRID_TOKEN in the environment, or --token-file FILE\n"
                       "       options: --stdio HOST (the grid to HOST over stdin/stdout; COGRID_IDENTITY names the caller),\n"
                       "                --exec [HOST=]COMMAND (over a child's stdin/stdout, restarted when it ends),\n"
                       "                --allow ID,... (only callers with these identities), --cert PEM --key PEM --ca PEM\n"
                       "                (TLS for https:// hosts), --wait MS (call/stream: wait for the link)\n");
  return 2;
}

cogrid::payload bytes(const std::string& s) {
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size());
}
std::string text(const cogrid::payload& p) { return p ? std::string(reinterpret_cast<const char*>(p->data()), p->size()) : ""; }

struct echo_fn {
  cogrid::payload operator()(cogrid::payload p) const { return p; }
};
struct fail_fn {
  cogrid::result<cogrid::payload> operator()(cogrid::payload p) const { return cogrid::remote_error("test error: " + text(p)); }
};

cogrid::stream_generator<cogrid::payload> echo_stream(cogrid::payload, cogrid::stream_input<cogrid::payload> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

cogrid::stream_generator<cogrid::payload> count_stream(cogrid::payload n) {
  const long count = std::strtol(text(n).c_str(), nullptr, 10);
  for (long i = 0; i < count; ++i) {
    cogrid::payload p = bytes("resp-" + std::to_string(i));
    co_yield std::move(p);
  }
}

// The transport of --stdio: ends the program (as SIGTERM does) when the stream ends or is closed.
class stdio_transport final : public cogrid::transport {
public:
  explicit stdio_transport(std::unique_ptr<cogrid::transport> t) : t_(std::move(t)) {}
  asio::awaitable<std::size_t> read_some(asio::mutable_buffer b, std::error_code& ec) override {
    const std::size_t n = co_await t_->read_some(b, ec);
    if (ec) end();
    co_return n;
  }
  asio::awaitable<std::size_t> write_all(asio::const_buffer b, std::error_code& ec) override {
    return t_->write_all(b, ec);
  }
  void close() noexcept override { // refused, or shut down: nothing more can come over stdio
    t_->close();
    end();
  }
  std::string peer() const override { return t_->peer(); }
  asio::any_io_executor get_executor() override { return t_->get_executor(); }

private:
  void end() {
    if (!ended_.exchange(true)) std::raise(SIGTERM);
  }
  std::unique_ptr<cogrid::transport> t_;
  std::atomic<bool> ended_{false};
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at <= list.size();) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    if (comma > at) out.push_back(list.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

asio::awaitable<void> wait_signal(asio::signal_set& signals, cogrid::manager& m) {
  co_await signals.async_wait(asio::use_awaitable);
  co_await m.shutdown();
}

int report(const cogrid::error& e) {
  std::printf("error: %s\n", e.message().c_str());
  return e.code == cogrid::errc::remote_error || e.code == cogrid::errc::not_authorized ? 1 : 2;
}

// Sends every request while printing the responses as they come, then the rest of them.
asio::awaitable<void> send_requests(cogrid::client_stream<cogrid::payload, cogrid::payload>& s, std::vector<std::string> requests) {
  for (const auto& r : requests) {
    const cogrid::payload p = bytes(r);
    const cogrid::result<void> sent = co_await s.send(p); // named: GCC 12 and co_await results in conditions
    if (!sent) co_return; // the stream ended: its error is reported by the reader
  }
  (void)s.close_send();
}

// Prints each response on its own line until the stream ends; 0 after a clean end.
template <class Stream>
asio::awaitable<int> print_responses(Stream& s) {
  for (;;) {
    auto r = co_await s.next();
    if (!r) co_return r.error() == cogrid::errc::end_of_stream ? 0 : report(r.error());
    std::printf("%s\n", text(*r).c_str());
  }
}

asio::awaitable<int> run_stream(cogrid::client_stream<cogrid::payload, cogrid::payload>& s, std::vector<std::string> requests) {
  using namespace asio::experimental::awaitable_operators;
  co_return co_await (print_responses(s) && send_requests(s, std::move(requests)));
}

long g_wait_ms = 10000;

std::string read_file(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// A one-shot client's wait for its link: ended early when an incoming dial is refused (our token or
// the dialer's is wrong: waiting longer would not help). Single-threaded: the io_context runs on main.
asio::steady_timer* g_wait_limit = nullptr;
std::string g_refused_incoming;

void on_rejected(const std::string& reason, const std::string& peer) {
  if (!g_refused_incoming.empty()) return;
  g_refused_incoming = "refused an incoming dial from " + peer + ": " + reason;
  if (g_wait_limit) g_wait_limit->cancel();
}

// Waits (--wait ms at most) for the connection to `host`, and no longer once a handshake was refused
// either way; prints why not and returns null on failure.
asio::awaitable<std::shared_ptr<cogrid::connection>> connect_to(cogrid::manager& m, const std::string& host) {
  auto c = m.connection(host);
  if (!c) {
    std::fprintf(stderr, "error: %s is not in --hosts\n", host.c_str());
    co_return nullptr;
  }
  asio::steady_timer limit(co_await asio::this_coro::executor, std::chrono::milliseconds(g_wait_ms));
  g_wait_limit = &limit;
  std::error_code limit_ec;
  using namespace asio::experimental::awaitable_operators;
  auto w = co_await (c->wait_for_connect(cogrid::on_refusal::fail) ||
                     limit.async_wait(asio::redirect_error(asio::use_awaitable, limit_ec)));
  g_wait_limit = nullptr;
  if (w.index() == 1 || !std::get<0>(w)) {
    std::string why;
    if (w.index() == 0) why = std::get<0>(w).error().message(); // a refusal: says which side refused and why
    else if (!g_refused_incoming.empty()) why = g_refused_incoming;
    else why = c->stats().last_error;
    std::printf("error: not connected to %s: %s\n", host.c_str(), why.c_str());
    co_return nullptr;
  }
  co_return c;
}

asio::awaitable<int> call_once(cogrid::manager& m, std::string host, int handler, std::string body) {
  int status = 2;
  if (auto c = co_await connect_to(m, host)) {
    const cogrid::unary_raw u{cogrid::handler_id{static_cast<std::uint8_t>(handler)}};
    const cogrid::payload req = bytes(body);
    auto r = co_await u.call(*c, req);
    if (r) {
      std::printf("%s\n", text(*r).c_str());
      status = 0;
    } else {
      status = report(r.error());
    }
  }
  co_await m.shutdown();
  co_return status;
}

asio::awaitable<int> stream_once(cogrid::manager& m, std::string host, int handler, std::string subroute,
                                 std::string body, std::vector<std::string> requests) {
  int status = 2;
  if (auto c = co_await connect_to(m, host)) {
    const cogrid::handler_id id{static_cast<std::uint8_t>(handler)};
    const cogrid::payload init = bytes(body);
    if (requests.empty()) { // one-way: the payload is the request
      const auto h = subroute.empty() ? cogrid::server_stream_raw(id) : cogrid::server_stream_raw(id, subroute);
      auto s = co_await h.open(*c, init);
      if (s) status = co_await print_responses(*s);
      else status = report(s.error());
    } else {
      const auto h = subroute.empty() ? cogrid::bidi_stream_raw(id) : cogrid::bidi_stream_raw(id, subroute);
      auto s = co_await h.open(*c, init);
      if (s) status = co_await run_stream(*s, std::move(requests));
      else status = report(s.error());
    }
  }
  co_await m.shutdown();
  co_return status;
}

// `watch HOST ROUNDS INTERVAL_MS`: each round makes one unary echo call (78) and one stream round trip
// (78/echo, one request), then prints "<ms since start> ok" or "<ms since start> error: <text>"; exits 0
// when the last round succeeded. For watching a link ride out failures (a killed ssh child).
asio::awaitable<int> watch(cogrid::manager& m, std::string host, int rounds, int interval_ms) {
  const auto t0 = std::chrono::steady_clock::now();
  auto c = m.connection(host);
  bool last_ok = false;
  if (auto first = co_await connect_to(m, host); first) {
    asio::steady_timer pause(co_await asio::this_coro::executor);
    const cogrid::unary_raw echo{cogrid::handler_id{78}};
    const cogrid::bidi_stream_raw echo_stream(cogrid::handler_id{78}, "echo", cogrid::stream_capacity{1, 1});
    for (int i = 0; i < rounds; ++i) {
      std::string why;
      const cogrid::payload req = bytes("round " + std::to_string(i));
      cogrid::call_options opt{std::chrono::seconds(2)};
      auto r = co_await echo.call(*c, req, opt);
      if (!r) why = "unary: " + r.error().message();
      else {
        cogrid::stream_options so{std::chrono::seconds(2)};
        const cogrid::payload init;
        auto s = co_await echo_stream.open(*c, init, so);
        if (!s) why = "stream: " + s.error().message();
        else {
          const cogrid::result<void> sent = co_await s->send(req);
          auto back = co_await s->next();
          if (!sent) why = "stream send: " + sent.error().message();
          else if (!back) why = "stream: " + back.error().message();
          else if (text(*back) != text(req)) why = "stream: wrong echo";
          (void)s->close_send();
        }
      }
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
      if (why.empty()) std::printf("%lld ok\n", static_cast<long long>(ms));
      else std::printf("%lld error: %s\n", static_cast<long long>(ms), why.c_str());
      std::fflush(stdout);
      last_ok = why.empty();
      pause.expires_after(std::chrono::milliseconds(interval_ms));
      co_await pause.async_wait(asio::use_awaitable);
    }
  }
  co_await m.shutdown();
  co_return last_ok ? 0 : 2;
}

} // namespace

int main(int argc, char** argv) {
  args a;
  if (const char* t = std::getenv("COGRID_TOKEN"); t && *t) a.token = t;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : std::string(); };
    if (k == "--local") a.local = next();
    else if (k == "--token") {
      a.token = next();
      std::fprintf(stderr, "warning: --token is visible to every user of this machine (ps); use COGRID_TOKEN or --token-file\n");
    } else if (k == "--token-file") {
      const std::string path = next();
      a.token = read_file(path);
      while (!a.token.empty() && (a.token.back() == '\n' || a.token.back() == '\r')) a.token.pop_back();
      if (a.token.empty()) {
        std::fprintf(stderr, "error: --token-file %s: cannot read a token from it\n", path.c_str());
        return 2;
      }
    } else if (k == "--allow") a.allow = split(next());
    else if (k == "--route") a.route = next();
    else if (k == "--subroute") a.subroute = next();
    else if (k == "--stdio") a.stdio_host = next();
    else if (k == "--exec") a.execs.push_back(next());
    else if (k == "--cert") a.cert = next();
    else if (k == "--key") a.key = next();
    else if (k == "--ca") a.ca = next();
    else if (k == "--wait") a.wait_ms = std::atol(next().c_str());
    else if (k == "--hosts") a.hosts = split(next());
    else a.rest.push_back(k);
  }
  if (a.local.empty() || a.hosts.empty() || a.rest.empty()) return usage();
  const bool serve = a.rest[0] == "serve" && a.rest.size() == 1;
  const bool call = a.rest[0] == "call" && a.rest.size() == 4;
  const bool stream = a.rest[0] == "stream" && a.rest.size() >= 4;
  const bool watching = a.rest[0] == "watch" && a.rest.size() == 4;
  if (!serve && !call && !stream && !watching) return usage();

  asio::io_context io;
  cogrid::manager_options o;
  o.local = a.local;
  o.hosts = a.hosts;
  o.route = a.route;
  o.auth = cogrid::static_token_auth(a.token);
  if (!serve) o.on_rejected = on_rejected;
  g_wait_ms = a.wait_ms;
  std::unique_ptr<cogrid::manager> m;
  try {
    if (!a.ca.empty()) o.tls_client = cogrid::make_client_tls_context(read_file(a.ca));
    if (!a.cert.empty()) o.tls_server = cogrid::make_server_tls_context(read_file(a.cert), read_file(a.key));
    m = std::make_unique<cogrid::manager>(io.get_executor(), std::move(o));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  if (!cogrid::unary_raw{cogrid::handler_id{78}}.serve(*m, echo_fn{}) || !cogrid::unary_raw{cogrid::handler_id{79}}.serve(*m, fail_fn{}) ||
      !cogrid::bidi_stream_raw(cogrid::handler_id{78}, "echo", cogrid::stream_capacity{1, 1}).serve(*m, echo_stream) ||
      !cogrid::server_stream_raw(cogrid::handler_id{79}, 1).serve(*m, count_stream)) {
    std::fprintf(stderr, "error: registering the test handlers failed\n");
    return 2;
  }
  if (!a.allow.empty()) {
    auto allowed = [list = a.allow](const cogrid::caller_info& who) -> cogrid::result<void> {
      for (const auto& id : list)
        if (who.identity == id) return {};
      return cogrid::remote_error(who.identity.empty() ? std::string("the caller has no identity")
                                                       : "identity " + std::string(who.identity) + " is not allowed");
    };
    const cogrid::handler_id ids[] = {cogrid::handler_id{78}, cogrid::handler_id{79}};
    for (const auto id : ids) (void)m->authorize(id, allowed);
    (void)m->authorize(cogrid::handler_id{78}, "echo", allowed);
  }
  std::signal(SIGPIPE, SIG_IGN); // a peer gone while we write is an error code, not a signal
  if (!a.stdio_host.empty()) {
    using desc = asio::posix::stream_descriptor;
    auto t = std::make_unique<stdio_transport>(cogrid::make_fd_transport(desc(io, ::dup(0)), desc(io, ::dup(1)), "stdio"));
    if (const char* id = std::getenv("COGRID_IDENTITY")) t->set_identity(id);
    ::dup2(2, 1); // from here on, stdout is the grid's alone: anything printed goes to stderr
    if (auto r = m->attach(a.stdio_host, std::move(t)); !r) {
      std::fprintf(stderr, "error: --stdio %s: %s\n", a.stdio_host.c_str(), r.error().message().c_str());
      return 2;
    }
  } else if (!a.execs.empty()) {
    for (const auto& e : a.execs) {
      // HOST=COMMAND, or COMMAND for call's and stream's HOST.
      std::string host, command = e;
      if (const auto eq = e.find('='); eq != std::string::npos && e.compare(0, 4, "http") == 0 && e.find("://") < eq) {
        host = e.substr(0, eq);
        command = e.substr(eq + 1);
      } else if (!serve) {
        host = a.rest[1];
      } else {
        std::fprintf(stderr, "error: serve --exec needs HOST=COMMAND\n");
        return 2;
      }
      cogrid::process_spec spec;
      spec.argv = {"/bin/sh", "-c", command};
      spec.token_env = "COGRID_TOKEN";
      spec.env = {"COGRID_REMOTE=" + host};
      spec.forward_stderr = true;
      if (auto r = m->attach_process(host, std::move(spec)); !r) {
        std::fprintf(stderr, "error: --exec for %s: %s\n", host.c_str(), r.error().message().c_str());
        return 2;
      }
    }
  } else {
    if (auto r = m->listen(); !r) {
      std::fprintf(stderr, "error: cannot listen on %s: %s\n", a.local.c_str(), r.error().message().c_str());
      return 2;
    }
    m->start();
  }
  int status = 0;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  if (serve) {
    asio::co_spawn(io, wait_signal(signals, *m), asio::detached);
    std::fprintf(stderr, "grid-node %s serving (unary 78 echo, 79 error; stream 78/echo echo, 79 count)\n", a.local.c_str());
  } else if (watching) {
    signals.cancel();
    asio::co_spawn(io, watch(*m, a.rest[1], std::atoi(a.rest[2].c_str()), std::atoi(a.rest[3].c_str())),
                   [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  } else if (stream) {
    signals.cancel();
    std::vector<std::string> requests(a.rest.begin() + 4, a.rest.end());
    asio::co_spawn(io, stream_once(*m, a.rest[1], std::atoi(a.rest[2].c_str()), a.subroute, a.rest[3], std::move(requests)),
                   [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  } else {
    signals.cancel();
    asio::co_spawn(io, call_once(*m, a.rest[1], std::atoi(a.rest[2].c_str()), a.rest[3]),
                   [&](std::exception_ptr e, int s) { status = e ? 2 : s; });
  }
  io.run();
  return status;
}
