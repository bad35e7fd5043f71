#include <cogrid/metrics.hpp>

#include <cogrid/stream.hpp>
#include <cogrid/testing.hpp>
#include <cogrid/unary.hpp>

#include "net_util.hpp"
#include "grid_helpers.hpp"
#include "test_types.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <mutex>
#include <sstream>

using namespace cogrid;
using namespace std::chrono_literals;
using cogrid_test::bytes;
using cogrid_test::echo_fn;
using cogrid_test::eventually;
using cogrid_test::run_async;
using cogrid_test::sleep_for;
using cogrid_test::text;

namespace {

const unary_raw echo{handler_id{78}};
const unary_raw fail{handler_id{79}};
const unary_raw slow{handler_id{80}, "slow-route"};
const server_stream_raw count{handler_id{79}, 1};

struct fail_fn {
  result<payload> operator()(payload p) const { return remote_error("no: " + text(p)); }
};
asio::awaitable<result<payload>> slow_fn(payload p) {
  co_await sleep_for(std::chrono::milliseconds(std::stoi(text(p))));
  co_return p;
}
stream_generator<payload> count_gen(payload n) {
  for (int i = 0; i < std::stoi(text(n)); ++i) {
    payload p = bytes("r" + std::to_string(i));
    co_yield std::move(p);
  }
}

void serve_all(testing::grid& g) {
  for (std::size_t i = 0; i < g.size(); ++i) {
    REQUIRE(echo.serve(g.node(i), echo_fn{}));
    REQUIRE(fail.serve(g.node(i), fail_fn{}));
    REQUIRE(slow.serve(g.node(i), slow_fn));
    REQUIRE(count.serve(g.node(i), count_gen));
  }
}

const handler_stats* find(const std::vector<handler_stats>& all, int h, call_kind k, call_side s, std::string_view sub = {}) {
  for (const auto& x : all)
    if (static_cast<int>(x.handler) == h && x.kind == k && x.side == s && x.subroute == sub) return &x;
  return nullptr;
}

// A Prometheus sample line: name{label="value",...} number (values may hold \" and \\ escapes).
// (No std::regex: GCC 12 at -O1 with ASan warns inside <regex>.)
bool valid_series(const std::string& line) {
  std::size_t i = 0;
  auto name_char = [&](char c) { return (c >= 'a' && c <= 'z') || c == '_'; };
  const std::size_t name_start = i;
  while (i < line.size() && name_char(line[i])) ++i;
  if (i == name_start || i >= line.size() || line[i] != '{') return false;
  ++i;
  for (bool first = true;; first = false) {
    if (i < line.size() && line[i] == '}') {
      if (first) return false;
      ++i;
      break;
    }
    if (!first) {
      if (line[i] != ',') return false;
      ++i;
    }
    const std::size_t key = i;
    while (i < line.size() && name_char(line[i])) ++i;
    if (i == key || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return false;
    i += 2;
    while (i < line.size() && line[i] != '"') i += line[i] == '\\' ? 2 : 1;
    if (i >= line.size()) return false;
    ++i;
  }
  if (i >= line.size() || line[i] != ' ') return false;
  const std::string value = line.substr(i + 1);
  char* end = nullptr;
  (void)std::strtod(value.c_str(), &end);
  return !value.empty() && end == value.c_str() + value.size();
}

// The traces one node saw, thread-safe.
struct trace_log {
  std::mutex mu;
  std::vector<call_trace> seen;
  std::vector<std::string> peers;
  void add(const call_trace& t) {
    std::lock_guard lk(mu);
    seen.push_back(t);
    peers.emplace_back(t.peer);
    seen.back().peer = {};
  }
  std::size_t size() {
    std::lock_guard lk(mu);
    return seen.size();
  }
};

} // namespace

TEST_SUITE_BEGIN("metrics");

TEST_CASE("latency_histogram: quantiles interpolate within buckets") {
  latency_histogram h;
  CHECK(h.quantile(0.5) == 0);
  // 100 calls: 50 in (0, 25] us, 50 in (100, 250] us.
  h.counts[0] = 50;
  h.counts[3] = 50;
  h.count = 100;
  CHECK(h.quantile(0.25) == doctest::Approx(12.5));
  CHECK(h.quantile(0.5) == doctest::Approx(25));
  CHECK(h.quantile(0.99) == doctest::Approx(100 + 150 * 0.98));
  h.counts[latency_histogram::bounds_us.size()] = 100; // beyond the last bound
  h.count = 200;
  CHECK(h.quantile(0.99) == doctest::Approx(10'000'000));
}

TEST_CASE("handler statistics: served and called, unary and streams, errors, bytes, subroute names, latency") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    testing::grid g(ex, 2, {}, testing::grid::network::memory);
    serve_all(g);
    g.start();
    auto up = co_await g.wait_all_connected();
    REQUIRE(up);
    auto c = g.link(0, 1);
    for (int i = 0; i < 10; ++i) {
      payload p = bytes("hello"); // 5 bytes each way
      auto r = co_await echo.call(*c, p);
      CHECK(r);
    }
    for (int i = 0; i < 3; ++i) {
      payload p = bytes("x");
      auto r = co_await fail.call(*c, p);
      CHECK(!r);
    }
    payload ms = bytes("20");
    auto slow_r = co_await slow.call(*c, ms);
    CHECK(slow_r);
    payload n = bytes("4");
    auto s = co_await count.open(*c, n);
    REQUIRE(s);
    for (;;) {
      auto r = co_await s->next();
      if (!r) {
        CHECK(r == errc::end_of_stream);
        break;
      }
    }

    auto is_idle = [&] {
      for (std::size_t i = 0; i < 2; ++i)
        for (const auto& h : g.node(i).handler_statistics())
          if (h.in_flight != 0) return false;
      return true;
    };
    CHECK(co_await eventually(is_idle));
    const auto caller = g.node(0).handler_statistics();
    const auto server = g.node(1).handler_statistics();

    const auto* ec = find(caller, 78, call_kind::unary, call_side::called);
    const auto* es = find(server, 78, call_kind::unary, call_side::served);
    REQUIRE(ec);
    REQUIRE(es);
    CHECK(ec->calls == 10);
    CHECK(es->calls == 10);
    CHECK(ec->errors == 0);
    CHECK(ec->bytes_out == 50);
    CHECK(ec->bytes_in == 50);
    CHECK(es->bytes_in == 50);
    CHECK(es->bytes_out == 50);
    CHECK(ec->latency.count == 10);
    CHECK(ec->p50_us() > 0);
    CHECK(ec->p99_us() >= ec->p50_us());
    CHECK(ec->latency.sum.count() > 0);

    const auto* fc = find(caller, 79, call_kind::unary, call_side::called);
    const auto* fs = find(server, 79, call_kind::unary, call_side::served);
    REQUIRE(fc);
    REQUIRE(fs);
    CHECK(fc->calls == 3);
    CHECK(fc->errors == 3);
    CHECK(fs->errors == 3);

    // The subroute carries its name on both sides (the caller names it after its own registration).
    const auto* sc = find(caller, 80, call_kind::unary, call_side::called, "slow-route");
    const auto* ss = find(server, 80, call_kind::unary, call_side::served, "slow-route");
    REQUIRE(sc);
    REQUIRE(ss);
    CHECK(sc->calls == 1);
    CHECK(ss->p50_us() >= 10'000); // the handler slept 20 ms: its bucket is (10 ms, 25 ms], or the next
    CHECK(ss->p50_us() <= 50'000); // one, (25 ms, 50 ms], when the timer fires late on a loaded machine

    const auto* tc = find(caller, 79, call_kind::stream, call_side::called);
    const auto* ts = find(server, 79, call_kind::stream, call_side::served);
    REQUIRE(tc);
    REQUIRE(ts);
    CHECK(tc->calls == 1);
    CHECK(tc->errors == 0);
    CHECK(tc->bytes_in == 8); // r0..r3
    CHECK(tc->bytes_out == 1); // the initial payload "4"
    CHECK(ts->bytes_out == 8);
    CHECK(ts->bytes_in == 1);
    // Handlers registered but never called are listed with zero counts (the served side exists at once).
    CHECK(find(caller, 78, call_kind::unary, call_side::served));
    co_await g.shutdown();
  });
}

TEST_CASE("trace hook: one record per call and side, with handler, peer, status and sizes; cancellation seen") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    auto logs = std::make_shared<std::array<trace_log, 2>>();
    auto configure = [logs](std::size_t i, manager_options& o) {
      o.trace = [logs, i](const call_trace& t) { (*logs)[i].add(t); };
    };
    testing::grid g(ex, 2, configure, testing::grid::network::memory);
    serve_all(g);
    g.start();
    auto up = co_await g.wait_all_connected();
    REQUIRE(up);
    auto c = g.link(0, 1);
    payload p = bytes("abc");
    auto echoed = co_await echo.call(*c, p);
    CHECK(echoed);
    payload x = bytes("x");
    auto failed = co_await fail.call(*c, x);
    CHECK(!failed);
    payload ms = bytes("2000");
    call_options short_deadline{50ms};
    auto r = co_await slow.call(*c, ms, short_deadline);
    CHECK(r.error().code == errc::timeout);
    auto done = [&] { return (*logs)[0].size() == 3 && (*logs)[1].size() == 3; };
    CHECK(co_await eventually(done));
    auto& a = (*logs)[0];
    auto& b = (*logs)[1];
    std::lock_guard la(a.mu), lb(b.mu);
    REQUIRE(a.seen.size() == 3);
    REQUIRE(b.seen.size() == 3);
    CHECK(static_cast<int>(a.seen[0].handler) == 78);
    CHECK(a.seen[0].side == call_side::called);
    CHECK(a.seen[0].kind == call_kind::unary);
    CHECK(!a.seen[0].status);
    CHECK(a.seen[0].bytes_out == 3);
    CHECK(a.seen[0].bytes_in == 3);
    CHECK(a.peers[0] == g.host(1));
    CHECK(a.seen[0].duration.count() > 0);
    CHECK(a.seen[1].status == errc::remote_error);
    CHECK(a.seen[2].status == errc::timeout);
    CHECK(a.seen[2].subroute == make_subroute_id(handler_id{80}, "slow-route"));
    // The server's side: its handler was cancelled by the caller's deadline.
    CHECK(b.seen[0].side == call_side::served);
    CHECK(b.peers[0] == g.host(0));
    CHECK(b.seen[1].status == errc::remote_error);
    bool aborted_or_timeout = b.seen[2].status == asio::error::operation_aborted || b.seen[2].status == errc::timeout;
    CHECK(aborted_or_timeout);
    co_await g.shutdown();
  });
}

TEST_CASE("Prometheus text: well-formed series, connection gauges, cumulative histogram buckets") {
  run_async([](asio::any_io_executor ex) -> asio::awaitable<void> {
    testing::grid g(ex, 2, {}, testing::grid::network::memory);
    serve_all(g);
    g.start();
    auto up = co_await g.wait_all_connected();
    REQUIRE(up);
    auto c = g.link(0, 1);
    for (int i = 0; i < 5; ++i) {
      payload p = bytes("p");
      auto r = co_await echo.call(*c, p);
      CHECK(r);
    }
    const std::string text = g.node(0).prometheus();
    std::istringstream in(text);
    std::string line;
    int lines = 0, bad = 0;
    while (std::getline(in, line)) {
      ++lines;
      if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
      if (!valid_series(line)) {
        ++bad;
        MESSAGE("malformed: " << line);
      }
    }
    CHECK(lines > 50);
    CHECK(bad == 0);
    const std::string node = "node=\"" + g.host(0) + "\"";
    CHECK(text.find("cogrid_connection_up{" + node + ",remote=\"" + g.host(1) + "\"} 1\n") != std::string::npos);
    const std::string calls = "cogrid_handler_calls_total{" + node +
                              ",handler=\"78\",subroute=\"\",kind=\"unary\",side=\"called\"} 5\n";
    CHECK(text.find(calls) != std::string::npos);
    const std::string inf = "cogrid_handler_duration_seconds_bucket{" + node +
                            ",handler=\"78\",subroute=\"\",kind=\"unary\",side=\"called\",le=\"+Inf\"} 5\n";
    CHECK(text.find(inf) != std::string::npos);
    CHECK(!valid_series("cogrid_x{a=\"1\"} notanumber"));
    CHECK(!valid_series("cogrid_x{a=\"1} 1"));
    CHECK(valid_series("cogrid_x{a=\"q\\\"\"} 1"));
    // Label values are escaped.
    connection_stats odd;
    odd.remote = "a\"b\\c";
    const std::string esc = render_prometheus("n", {odd}, {});
    CHECK(esc.find("remote=\"a\\\"b\\\\c\"") != std::string::npos);
    co_await g.shutdown();
  });
}

TEST_SUITE_END();
