// raft-transport: raft's traffic between three nodes on loopback, through cogrid::raft::transport. Node 0
// leads: it streams a snapshot to node 1 while it sends a heartbeat every 10 ms to both followers and
// pipelines AppendEntries batches (64 entries of 100 bytes) to node 2. The followers' consumers run on a
// thread pool of their own (a raft library's disk). Before that, a plain bulk_upload of the same size
// on the same link gives the bulk rate the snapshot is compared with.
//
//   raft-transport [--snapshot-mib N] [--threads T] [--depth D] [--load snapshot,heartbeats,pipeline]
//                  [--seconds S] [--json]
//
// --load runs only some of the three loads (all three by default), to see what each costs alone; without
// the snapshot, the others run for --seconds (2 by default).
// Prints (or with --json emits one JSON object): pipeline entries/s, snapshot MiB/s against the bulk
// rate, heartbeat p50/p99/max during the snapshot. Exit status 0 when every check holds: the snapshot
// and the bulk data arrive whole and in order, the followers see the entries in log order and the
// answers come back in the order sent, and every heartbeat is answered.
#include <cogrid/bulk.hpp>
#include <cogrid/io_pool.hpp>
#include <cogrid/raft.hpp>
#include <cogrid/testing.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
namespace raft = cogrid::raft;

const raft::transport raft_net{cogrid::handler_id{200}};

struct blob_meta {
  std::uint64_t size = 0;
  MSGPACK_DEFINE_MAP(size)
};
struct blob_resp {
  std::uint64_t bytes = 0;
  bool intact = false;
  MSGPACK_DEFINE_MAP(bytes, intact)
};
// The reference: cogrid's bulk upload with its default chunk and window.
const cogrid::bulk_upload<blob_meta, blob_resp> bulk_ref{cogrid::handler_id{210}};

// Generated data: the 8-byte word at offset 8w is word(w), so the receiver checks every byte and its place.
// Consecutive words differ by word_step, so both ends walk the data with an add per word (loops the
// compiler vectorizes): the three nodes share two cores, and the data's making and checking should take
// as little of them as it can.
constexpr std::uint64_t word_step = 0x9E3779B97F4A7C15ull;
std::uint64_t word(std::uint64_t w) { return (w + 1) * word_step; }

struct generated_source {
  std::uint64_t total = 0, pos = 0; // pos: always a multiple of 8
  asio::awaitable<cogrid::result<std::size_t>> read_some(std::span<std::byte> out) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size() & ~std::size_t{7}, total - pos));
    std::uint64_t v = word(pos / 8);
    for (std::size_t i = 0; i < n; i += 8, v += word_step) std::memcpy(out.data() + i, &v, 8);
    pos += n;
    co_return n;
  }
};

struct verifier {
  std::uint64_t pos = 0;
  bool intact = true;
  void update(std::span<const std::byte> c) {
    if (c.size() % 8 != 0 || pos % 8 != 0) intact = false;
    std::uint64_t want = word(pos / 8), differ = 0;
    for (std::size_t i = 0; i + 8 <= c.size(); i += 8, want += word_step) {
      std::uint64_t v;
      std::memcpy(&v, c.data() + i, 8);
      differ |= v ^ want;
    }
    if (differ != 0) intact = false;
    pos += c.size();
  }
};

cogrid::stream_generator<blob_resp> verify_blob(blob_meta m, cogrid::bulk_input in) {
  verifier v;
  while (auto c = co_await in.next()) v.update(*c);
  if (!in.complete()) co_return;
  blob_resp r;
  r.bytes = in.bytes_received();
  r.intact = v.intact && r.bytes == m.size;
  co_yield r;
}

raft::rpc_header header_of(const std::string& id) {
  raft::rpc_header h;
  h.id = id;
  h.addr = id;
  return h;
}

// A follower's receiving side: keeps the last index it appended and checks that batches come in log order.
struct follower : raft::consumer {
  std::string id;
  std::atomic<std::uint64_t> last_index{0}, entries{0}, heartbeats{0};
  std::atomic<bool> in_order{true}, snapshot_intact{false};
  std::atomic<std::uint64_t> snapshot_bytes{0};

  explicit follower(std::string name) : id(std::move(name)) {}

  asio::awaitable<cogrid::result<raft::append_entries_response>> append_entries(raft::peer_info,
                                                                                raft::append_entries_request req) override {
    raft::append_entries_response r;
    r.header = header_of(id);
    r.term = req.term;
    if (req.prev_log_entry != last_index.load()) {
      in_order = false;
    } else if (!req.entries.empty()) {
      last_index = req.entries.back().index;
      entries += req.entries.size();
    }
    r.last_log = last_index;
    r.success = true;
    co_return r;
  }
  asio::awaitable<cogrid::result<raft::request_vote_response>> request_vote(raft::peer_info, raft::request_vote_request req) override {
    raft::request_vote_response r;
    r.header = header_of(id);
    r.term = req.term;
    r.granted = true;
    co_return r;
  }
  asio::awaitable<cogrid::result<raft::timeout_now_response>> timeout_now(raft::peer_info, raft::timeout_now_request) override {
    raft::timeout_now_response r;
    r.header = header_of(id);
    co_return r;
  }
  asio::awaitable<cogrid::result<raft::install_snapshot_response>> install_snapshot(raft::peer_info, raft::install_snapshot_request req,
                                                                                    raft::snapshot_reader& data) override {
    verifier v;
    for (;;) {
      auto c = co_await data.next();
      if (!c) {
        if (c.error() == cogrid::errc::end_of_stream) break;
        co_return c.error();
      }
      v.update(*c);
    }
    snapshot_bytes = data.bytes_received();
    snapshot_intact = v.intact && data.complete() && data.bytes_received() == static_cast<std::uint64_t>(req.size);
    raft::install_snapshot_response r;
    r.header = header_of(id);
    r.term = req.term;
    r.success = snapshot_intact;
    co_return r;
  }
  cogrid::result<raft::append_entries_response> heartbeat(const raft::peer_info&, const raft::append_entries_request& req) override {
    heartbeats.fetch_add(1, std::memory_order_relaxed);
    raft::append_entries_response r;
    r.header = header_of(id);
    r.term = req.term;
    r.last_log = last_index.load(std::memory_order_relaxed);
    r.success = true;
    return r;
  }
};

struct config {
  std::uint64_t snapshot_mib = 256;
  unsigned threads = 1;
  std::uint32_t depth = 8;
  bool snapshot = true, heartbeats = true, pipeline = true;
  double seconds = 2;
  bool json = false;
};

struct figures {
  double bulk_mib_s = 0, snapshot_mib_s = 0, pipeline_entries_s = 0;
  double hb_p50_ms = 0, hb_p99_ms = 0, hb_max_ms = 0;
  std::size_t heartbeats = 0, heartbeats_failed = 0;
  std::uint64_t entries = 0;
  double rss_growth_mib = 0; // the peak live RSS during the snapshot, over the RSS before it
  bool bulk_intact = false, snapshot_intact = false, log_in_order = true, answers_in_order = true;
  std::string failure;
};

// Shared by the leader's coroutines during the snapshot (all on one io thread).
struct run_state {
  explicit run_state(const asio::any_io_executor& ex) : finished(ex, asio::steady_timer::time_point::max()) {}
  std::atomic<bool> snapshot_done{false};
  std::vector<double> heartbeat_ms;
  std::size_t heartbeats_failed = 0;
  std::uint64_t entries_answered = 0;
  bool answers_in_order = true;
  std::string failure;
  int tasks_left = 4;
  asio::steady_timer finished; // cancelled when the last task is done
  void task_done() {
    if (--tasks_left == 0) finished.cancel();
  }
};

asio::awaitable<void> sleep_for(std::chrono::microseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// The process's resident memory in MiB, freed heap handed back to the system first.
double live_rss_mib() {
  malloc_trim(0);
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

// Samples the live RSS every 10 ms until the snapshot is done, keeping its peak.
asio::awaitable<void> sample_rss(std::shared_ptr<run_state> st, double* peak) {
  while (!st->snapshot_done) {
    *peak = std::max(*peak, live_rss_mib());
    co_await sleep_for(10ms);
  }
  st->task_done();
}

asio::awaitable<void> heartbeats(cogrid::testing::grid& g, std::shared_ptr<run_state> st) {
  raft::append_entries_request hb;
  hb.header = header_of("leader");
  hb.term = 1;
  hb.leader = "leader";
  cogrid::call_options quick;
  quick.timeout = 1s;
  auto next = clock_type::now();
  while (!st->snapshot_done) {
    for (std::size_t f = 1; f <= 2; ++f) {
      const auto t0 = clock_type::now();
      auto r = co_await raft_net.append_entries(*g.link(0, f), hb, quick);
      const auto t1 = clock_type::now();
      if (r && r->success) st->heartbeat_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      else ++st->heartbeats_failed;
    }
    next += 10ms;
    const auto now = clock_type::now();
    if (next > now) co_await sleep_for(std::chrono::duration_cast<std::chrono::microseconds>(next - now));
    else next = now;
  }
  st->task_done();
}

asio::awaitable<void> append_batches(raft::append_pipeline* p, std::shared_ptr<run_state> st) {
  raft::append_entries_request req;
  req.header = header_of("leader");
  req.term = 1;
  req.leader = "leader";
  req.entries.resize(64);
  for (auto& e : req.entries) {
    e.term = 1;
    e.data.assign(100, 0x5a);
  }
  std::uint64_t index = 0;
  while (!st->snapshot_done) {
    req.prev_log_entry = index;
    req.prev_log_term = index ? 1 : 0;
    for (auto& e : req.entries) e.index = ++index;
    auto sent = co_await p->append(req);
    if (!sent) {
      st->failure = "pipeline append: " + sent.error().message();
      break;
    }
  }
  p->close();
  st->task_done();
}

asio::awaitable<void> take_answers(raft::append_pipeline* p, std::shared_ptr<run_state> st) {
  std::uint64_t expect = 0;
  for (;;) {
    auto done = co_await p->next();
    if (!done) {
      if (done.error() != cogrid::errc::end_of_stream) st->failure = "pipeline: " + done.error().message();
      break;
    }
    expect += 64;
    if (done->request.last_index != expect || done->response.last_log != expect || !done->response.success)
      st->answers_in_order = false;
    st->entries_answered += done->request.entries;
  }
  st->task_done();
}

asio::awaitable<void> lead(cogrid::testing::grid& g, config cfg, std::shared_ptr<follower> f1, std::shared_ptr<follower> f2,
                           figures* out) {
  std::uint64_t bytes = cfg.snapshot_mib << 20;
  {
    generated_source src{bytes};
    blob_meta m{bytes};
    const auto t0 = clock_type::now();
    auto r = co_await bulk_ref.send(*g.link(0, 1), m, src);
    const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (!r) {
      out->failure = "bulk upload: " + r.error().message();
      co_return;
    }
    out->bulk_intact = r->intact;
    out->bulk_mib_s = static_cast<double>(cfg.snapshot_mib) / s;
  }

  auto pipe = co_await raft_net.pipeline(*g.link(0, 2), cfg.depth);
  if (!pipe) {
    out->failure = "pipeline: " + pipe.error().message();
    co_return;
  }
  const asio::any_io_executor ex = co_await asio::this_coro::executor;
  auto st = std::make_shared<run_state>(ex);
  const double rss_before = live_rss_mib();
  double rss_peak = rss_before;
  asio::co_spawn(ex, sample_rss(st, &rss_peak), asio::detached);
  const auto t0 = clock_type::now();
  if (cfg.heartbeats) asio::co_spawn(ex, heartbeats(g, st), asio::detached);
  else st->task_done();
  if (cfg.pipeline) {
    asio::co_spawn(ex, append_batches(&*pipe, st), asio::detached);
    asio::co_spawn(ex, take_answers(&*pipe, st), asio::detached);
  } else {
    pipe->close();
    st->task_done();
    st->task_done();
  }

  if (!cfg.snapshot) {
    co_await sleep_for(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(cfg.seconds)));
    bytes = 0; // an empty snapshot ends the run
  }
  generated_source src{bytes};
  raft::install_snapshot_request meta;
  meta.header = header_of("leader");
  meta.term = 1;
  meta.leader = "leader";
  meta.last_log_index = 1;
  meta.last_log_term = 1;
  meta.size = static_cast<std::int64_t>(bytes);
  auto r = co_await raft_net.install_snapshot(*g.link(0, 1), meta, src);
  const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
  st->snapshot_done = true;
  if (st->tasks_left > 0) {
    std::error_code ec;
    co_await st->finished.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  if (!r) out->failure = "snapshot: " + r.error().message();
  out->snapshot_intact = r && r->success && f1->snapshot_intact && f1->snapshot_bytes == bytes;
  out->snapshot_mib_s = cfg.snapshot ? static_cast<double>(cfg.snapshot_mib) / s : 0;
  out->rss_growth_mib = rss_peak - rss_before;
  out->entries = st->entries_answered;
  out->pipeline_entries_s = static_cast<double>(st->entries_answered) / s;
  out->log_in_order = f2->in_order && f2->last_index == st->entries_answered;
  out->answers_in_order = st->answers_in_order;
  if (out->failure.empty()) out->failure = st->failure;
  auto& ms = st->heartbeat_ms;
  out->heartbeats = ms.size();
  out->heartbeats_failed = st->heartbeats_failed;
  if (!ms.empty()) {
    std::sort(ms.begin(), ms.end());
    out->hb_p50_ms = ms[ms.size() / 2];
    out->hb_p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    out->hb_max_ms = ms.back();
  }
}

int usage() {
  std::fprintf(stderr, "usage: raft-transport [--snapshot-mib N] [--threads T] [--depth D] "
                       "[--load snapshot,heartbeats,pipeline] [--seconds S] [--json]\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> const char* { return i + 1 < argc ? argv[++i] : "0"; };
    if (k == "--snapshot-mib") cfg.snapshot_mib = std::strtoull(val(), nullptr, 10);
    else if (k == "--threads") cfg.threads = static_cast<unsigned>(std::strtoul(val(), nullptr, 10));
    else if (k == "--depth") cfg.depth = static_cast<std::uint32_t>(std::strtoul(val(), nullptr, 10));
    else if (k == "--seconds") cfg.seconds = std::strtod(val(), nullptr);
    else if (k == "--load") {
      const std::string l = std::string(",") + val() + ",";
      cfg.snapshot = l.find(",snapshot,") != std::string::npos;
      cfg.heartbeats = l.find(",heartbeats,") != std::string::npos;
      cfg.pipeline = l.find(",pipeline,") != std::string::npos;
    } else if (k == "--json") cfg.json = true;
    else return usage();
  }
  if (cfg.snapshot_mib == 0 || cfg.threads == 0 || cfg.depth == 0 || cfg.seconds <= 0 ||
      !(cfg.snapshot || cfg.heartbeats || cfg.pipeline))
    return usage();

  cogrid::io_pool io(cfg.threads);
  asio::thread_pool disks[3] = {asio::thread_pool(1), asio::thread_pool(1), asio::thread_pool(1)}; // each node's consumer
  std::vector<asio::any_io_executor> executors;
  for (std::size_t i = 0; i < io.size(); ++i) executors.push_back(io.executor(i));
  cogrid::testing::grid g(executors, 3);
  auto f1 = std::make_shared<follower>("node1"), f2 = std::make_shared<follower>("node2");
  auto leader = std::make_shared<follower>("node0");
  const std::shared_ptr<follower> consumers[] = {leader, f1, f2};
  for (std::size_t i = 0; i < 3; ++i) {
    if (auto r = raft_net.serve(g.node(i), consumers[i], disks[i].get_executor()); !r) {
      std::fprintf(stderr, "serve: %s\n", r.error().message().c_str());
      return 1;
    }
    if (auto r = bulk_ref.serve(g.node(i), verify_blob); !r) {
      std::fprintf(stderr, "serve: %s\n", r.error().message().c_str());
      return 1;
    }
  }

  figures fig;
  asio::co_spawn(
      io.executor(0),
      [](cogrid::testing::grid* gp, config c, std::shared_ptr<follower> a, std::shared_ptr<follower> b,
         figures* out) -> asio::awaitable<void> {
        gp->start();
        auto up = co_await gp->wait_all_connected();
        if (!up) out->failure = "connect: " + up.error().message();
        else co_await lead(*gp, c, std::move(a), std::move(b), out);
        co_await gp->shutdown();
      }(&g, cfg, f1, f2, &fig),
      [&](std::exception_ptr e) {
        if (e) fig.failure = "exception";
        io.finish();
      });
  io.start();
  io.join();
  for (auto& d : disks) d.join();

  const double ratio = fig.bulk_mib_s > 0 ? fig.snapshot_mib_s / fig.bulk_mib_s : 0;
  const bool ok = fig.failure.empty() && fig.bulk_intact && fig.snapshot_intact && fig.log_in_order && fig.answers_in_order &&
                  (!cfg.heartbeats || (fig.heartbeats > 0 && fig.heartbeats_failed == 0)) && (!cfg.pipeline || fig.entries > 0);
  std::string load;
  for (const auto& [on, name] : {std::pair{cfg.snapshot, "snapshot"}, std::pair{cfg.heartbeats, "heartbeats"}, std::pair{cfg.pipeline, "pipeline"}})
    if (on) load += (load.empty() ? "" : ",") + std::string(name);
  if (cfg.json) {
    std::printf("{\"threads\":%u,\"depth\":%u,\"load\":\"%s\",\"snapshot_mib\":%llu,\"bulk_mib_s\":%.1f,\"snapshot_mib_s\":%.1f,"
                "\"snapshot_vs_bulk\":%.3f,\"pipeline_entries_s\":%.0f,\"entries\":%llu,\"heartbeats\":%zu,"
                "\"heartbeats_failed\":%zu,\"heartbeat_p50_ms\":%.3f,\"heartbeat_p99_ms\":%.3f,\"heartbeat_max_ms\":%.3f,\"peak_rss_growth_mib\":%.1f,"
                "\"ok\":%s}\n",
                cfg.threads, cfg.depth, load.c_str(), static_cast<unsigned long long>(cfg.snapshot_mib), fig.bulk_mib_s, fig.snapshot_mib_s, ratio,
                fig.pipeline_entries_s, static_cast<unsigned long long>(fig.entries), fig.heartbeats, fig.heartbeats_failed,
                fig.hb_p50_ms, fig.hb_p99_ms, fig.hb_max_ms, fig.rss_growth_mib, ok ? "true" : "false");
  } else {
    std::printf("io threads %u, pipeline depth %u, snapshot %llu MiB, load %s\n", cfg.threads, cfg.depth,
                static_cast<unsigned long long>(cfg.snapshot_mib), load.c_str());
    std::printf("bulk upload (reference)  %8.1f MiB/s  %s\n", fig.bulk_mib_s, fig.bulk_intact ? "intact" : "CORRUPT");
    std::printf("snapshot                 %8.1f MiB/s  %.0f %% of the bulk rate  %s\n", fig.snapshot_mib_s, ratio * 100,
                fig.snapshot_intact ? "intact" : "NOT INSTALLED");
    std::printf("pipeline                 %8.0f entries/s  (%llu entries, %s)\n", fig.pipeline_entries_s,
                static_cast<unsigned long long>(fig.entries), fig.log_in_order && fig.answers_in_order ? "in order" : "OUT OF ORDER");
    std::printf("heartbeats               %zu answered, %zu failed: p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", fig.heartbeats,
                fig.heartbeats_failed, fig.hb_p50_ms, fig.hb_p99_ms, fig.hb_max_ms);
    std::printf("memory                   peak live RSS %.1f MiB over the start, during the snapshot\n", fig.rss_growth_mib);
    if (!fig.failure.empty()) std::printf("failure: %s\n", fig.failure.c_str());
    std::printf("%s\n", ok ? "every check holds" : "CHECKS FAILED");
  }
  return ok ? 0 : 1;
}
