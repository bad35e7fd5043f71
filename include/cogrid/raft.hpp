// cogrid/raft.hpp — a network transport for a raft implementation: typed AppendEntries, RequestVote
// (and PreVote), TimeoutNow and InstallSnapshot between the nodes of a grid, an AppendEntries pipeline
// with a bounded number of requests in flight, snapshots streamed from a byte source with bounded
// memory, and a heartbeat path that nothing else on the link waits in front of.
//
// The shape is that of hashicorp/raft's `Transport`: the leader side calls the RPCs on a peer's
// connection; the receiving side is a `raft::consumer` whose calls run on an executor the user gives
// (a thread pool that may block on fsync), except the heartbeat, which is answered on the connection's
// thread at once. Six handler ids from a base the user chooses carry the traffic, so that raft shares a
// grid with other handlers.
#ifndef COGRID_RAFT_HPP
#define COGRID_RAFT_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/bulk.hpp>
#include <cogrid/call.hpp>
#include <cogrid/connection.hpp>
#include <cogrid/manager.hpp>
#include <cogrid/result.hpp>
#include <cogrid/stream.hpp>
#include <cogrid/unary.hpp>
#include <cogrid/detail/wait_channel.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cogrid::raft {

/// What a log entry holds (hashicorp/raft's `LogType`).
enum class log_type : std::uint8_t {
  command = 0,       ///< applied to the user's state machine
  noop = 1,          ///< a leader's first entry of its term
  add_peer = 2,      ///< kept for old logs
  remove_peer = 3,   ///< kept for old logs
  barrier = 4,       ///< waits for what came before it to be applied
  configuration = 5, ///< a membership configuration
};

} // namespace cogrid::raft

MSGPACK_ADD_ENUM(cogrid::raft::log_type);

namespace cogrid::raft {

/// Who sent a request or response, carried in each: the protocol version and the sender's server id and
/// address (raft's `RPCHeader`).
struct rpc_header {
  std::int32_t protocol_version = 3; ///< the raft protocol version of the sender
  std::string id;                    ///< the sender's server id
  std::string addr;                  ///< the sender's address
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("ProtocolVersion", protocol_version), MSGPACK_NVP("ID", id), MSGPACK_NVP("Addr", addr))
  /// Equal when every field is.
  friend bool operator==(const rpc_header&, const rpc_header&) = default;
};

/// One entry of the replicated log.
struct log_entry {
  std::uint64_t index = 0;              ///< its position in the log
  std::uint64_t term = 0;               ///< the term of the leader that created it
  log_type type = log_type::command;    ///< what it holds
  std::vector<std::uint8_t> data;       ///< the command (msgpack bin)
  std::vector<std::uint8_t> extensions; ///< what the raft library adds to it (msgpack bin)
  std::int64_t appended_at = 0;         ///< when the leader appended it: nanoseconds since the Unix epoch
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("Index", index), MSGPACK_NVP("Term", term), MSGPACK_NVP("Type", type),
                     MSGPACK_NVP("Data", data), MSGPACK_NVP("Extensions", extensions),
                     MSGPACK_NVP("AppendedAt", appended_at))
  /// Equal when every field is.
  friend bool operator==(const log_entry&, const log_entry&) = default;
};

/// AppendEntries: the leader replicates entries, or (with none) asserts its leadership.
struct append_entries_request {
  rpc_header header;                     ///< the leader
  std::uint64_t term = 0;                ///< the leader's term
  std::string leader;                    ///< the leader's address, for clients redirected to it
  std::uint64_t prev_log_entry = 0;      ///< the index of the entry before `entries`
  std::uint64_t prev_log_term = 0;       ///< its term
  std::vector<log_entry> entries;        ///< the entries to append (none for a heartbeat)
  std::uint64_t leader_commit_index = 0; ///< the leader's commit index
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header), MSGPACK_NVP("Term", term), MSGPACK_NVP("Leader", leader),
                     MSGPACK_NVP("PrevLogEntry", prev_log_entry), MSGPACK_NVP("PrevLogTerm", prev_log_term),
                     MSGPACK_NVP("Entries", entries), MSGPACK_NVP("LeaderCommitIndex", leader_commit_index))
  /// Equal when every field is.
  friend bool operator==(const append_entries_request&, const append_entries_request&) = default;
};

/// The answer to AppendEntries.
struct append_entries_response {
  rpc_header header;             ///< the follower
  std::uint64_t term = 0;        ///< the follower's term, for a stale leader to step down
  std::uint64_t last_log = 0;    ///< the follower's last log index, to find where the logs part
  bool success = false;          ///< the entries were appended
  bool no_retry_backoff = false; ///< a failure the leader may retry at once
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header), MSGPACK_NVP("Term", term), MSGPACK_NVP("LastLog", last_log),
                     MSGPACK_NVP("Success", success), MSGPACK_NVP("NoRetryBackoff", no_retry_backoff))
  /// Equal when every field is.
  friend bool operator==(const append_entries_response&, const append_entries_response&) = default;
};

/// RequestVote: a candidate asks for a vote, or (`pre_vote`) whether it would get one.
struct request_vote_request {
  rpc_header header;                ///< the candidate
  std::uint64_t term = 0;           ///< the candidate's term (the next term, for a pre-vote)
  std::string candidate;            ///< the candidate's address
  std::uint64_t last_log_index = 0; ///< the candidate's last log index
  std::uint64_t last_log_term = 0;  ///< its term
  bool leadership_transfer = false; ///< the vote is asked for in a leadership transfer
  bool pre_vote = false;            ///< a pre-vote: no term changes on the voter
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header), MSGPACK_NVP("Term", term), MSGPACK_NVP("Candidate", candidate),
                     MSGPACK_NVP("LastLogIndex", last_log_index), MSGPACK_NVP("LastLogTerm", last_log_term),
                     MSGPACK_NVP("LeadershipTransfer", leadership_transfer), MSGPACK_NVP("PreVote", pre_vote))
  /// Equal when every field is.
  friend bool operator==(const request_vote_request&, const request_vote_request&) = default;
};

/// The answer to RequestVote.
struct request_vote_response {
  rpc_header header;      ///< the voter
  std::uint64_t term = 0; ///< the voter's term
  bool granted = false;   ///< the vote (or pre-vote) was granted
  bool pre_vote = false;  ///< it answers a pre-vote
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header), MSGPACK_NVP("Term", term), MSGPACK_NVP("Granted", granted),
                     MSGPACK_NVP("PreVote", pre_vote))
  /// Equal when every field is.
  friend bool operator==(const request_vote_response&, const request_vote_response&) = default;
};

/// TimeoutNow: a leader transferring leadership tells the chosen follower to start an election now.
struct timeout_now_request {
  rpc_header header; ///< the leader
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header))
  /// Equal when every field is.
  friend bool operator==(const timeout_now_request&, const timeout_now_request&) = default;
};

/// The answer to TimeoutNow.
struct timeout_now_response {
  rpc_header header; ///< the follower
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header))
  /// Equal when every field is.
  friend bool operator==(const timeout_now_response&, const timeout_now_response&) = default;
};

/// InstallSnapshot's metadata; the snapshot's bytes follow it as a stream.
struct install_snapshot_request {
  rpc_header header;                       ///< the leader
  std::int32_t snapshot_version = 1;       ///< the format of the snapshot
  std::uint64_t term = 0;                  ///< the leader's term
  std::string leader;                      ///< the leader's address
  std::uint64_t last_log_index = 0;        ///< the last index the snapshot covers
  std::uint64_t last_log_term = 0;         ///< its term
  std::vector<std::uint8_t> configuration; ///< the membership configuration in the snapshot (encoded by raft)
  std::uint64_t configuration_index = 0;   ///< the index of that configuration
  std::int64_t size = 0;                   ///< the snapshot's size in bytes
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header), MSGPACK_NVP("SnapshotVersion", snapshot_version),
                     MSGPACK_NVP("Term", term), MSGPACK_NVP("Leader", leader), MSGPACK_NVP("LastLogIndex", last_log_index),
                     MSGPACK_NVP("LastLogTerm", last_log_term), MSGPACK_NVP("Configuration", configuration),
                     MSGPACK_NVP("ConfigurationIndex", configuration_index), MSGPACK_NVP("Size", size))
  /// Equal when every field is.
  friend bool operator==(const install_snapshot_request&, const install_snapshot_request&) = default;
};

/// The answer to InstallSnapshot.
struct install_snapshot_response {
  rpc_header header;      ///< the follower
  std::uint64_t term = 0; ///< the follower's term
  bool success = false;   ///< the snapshot was installed
  MSGPACK_DEFINE_MAP(MSGPACK_NVP("RPCHeader", header), MSGPACK_NVP("Term", term), MSGPACK_NVP("Success", success))
  /// Equal when every field is.
  friend bool operator==(const install_snapshot_response&, const install_snapshot_response&) = default;
};

} // namespace cogrid::raft

// AppendEntries is the hot path of raft's traffic: its request, its entries and its response are decoded
// by a walk over the map's keys, not through msgpack-cxx's MSGPACK_DEFINE_MAP (which builds a std::map of
// the keys for every struct: for a batch of entries, most of the decoding time). Same encoding, same
// rules: unknown keys are skipped, absent ones leave the field as it was.
namespace cogrid::raft::detail {

/// Calls `field(key, value)` for each entry of the msgpack map `o` whose key is a string.
template <class F>
void for_each_field(const msgpack::object& o, F&& field) {
  if (o.type != msgpack::type::MAP) throw msgpack::type_error();
  for (const msgpack::object_kv& kv : std::span(o.via.map.ptr, o.via.map.size))
    if (kv.key.type == msgpack::type::STR) field(std::string_view(kv.key.via.str.ptr, kv.key.via.str.size), kv.val);
}

} // namespace cogrid::raft::detail

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {

template <>
struct convert<cogrid::raft::log_entry> {
  const msgpack::object& operator()(const msgpack::object& o, cogrid::raft::log_entry& v) const {
    cogrid::raft::detail::for_each_field(o, [&v](std::string_view k, const msgpack::object& val) {
      if (k == "Index") val.convert(v.index);
      else if (k == "Term") val.convert(v.term);
      else if (k == "Type") val.convert(v.type);
      else if (k == "Data") val.convert(v.data);
      else if (k == "Extensions") val.convert(v.extensions);
      else if (k == "AppendedAt") val.convert(v.appended_at);
    });
    return o;
  }
};

template <>
struct convert<cogrid::raft::append_entries_request> {
  const msgpack::object& operator()(const msgpack::object& o, cogrid::raft::append_entries_request& v) const {
    cogrid::raft::detail::for_each_field(o, [&v](std::string_view k, const msgpack::object& val) {
      if (k == "RPCHeader") val.convert(v.header);
      else if (k == "Term") val.convert(v.term);
      else if (k == "Leader") val.convert(v.leader);
      else if (k == "PrevLogEntry") val.convert(v.prev_log_entry);
      else if (k == "PrevLogTerm") val.convert(v.prev_log_term);
      else if (k == "Entries") val.convert(v.entries);
      else if (k == "LeaderCommitIndex") val.convert(v.leader_commit_index);
    });
    return o;
  }
};

template <>
struct convert<cogrid::raft::append_entries_response> {
  const msgpack::object& operator()(const msgpack::object& o, cogrid::raft::append_entries_response& v) const {
    cogrid::raft::detail::for_each_field(o, [&v](std::string_view k, const msgpack::object& val) {
      if (k == "RPCHeader") val.convert(v.header);
      else if (k == "Term") val.convert(v.term);
      else if (k == "LastLog") val.convert(v.last_log);
      else if (k == "Success") val.convert(v.success);
      else if (k == "NoRetryBackoff") val.convert(v.no_retry_backoff);
    });
    return o;
  }
};

} // namespace adaptor
} // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
} // namespace msgpack

namespace cogrid::raft {

/// True for the AppendEntries raft sends as a heartbeat (a term and a leader, and nothing else: no
/// entries, no previous entry, no commit index). `transport::append_entries` sends these on the
/// heartbeat path, answered by `consumer::heartbeat`.
inline bool is_heartbeat(const append_entries_request& r) noexcept {
  return r.term != 0 && !r.leader.empty() && r.prev_log_entry == 0 && r.prev_log_term == 0 && r.entries.empty() &&
         r.leader_commit_index == 0;
}

/// The node an RPC came from.
struct peer_info {
  std::string host;     ///< its host string (`connection::remote()`)
  std::string identity; ///< what its transport vouched for (`connection::identity()`); empty for TCP and TLS
};

namespace detail {
struct snapshot_pipe;
struct pipeline_state;
} // namespace detail

/// The bytes of a snapshot being received, as `consumer::install_snapshot` reads them: `next()` gives
/// each chunk as it arrives (a span valid until the next call; after a `read_some` that took part of a
/// chunk, the rest of that chunk), `read_some` copies (a `byte_source`, for `read_chunk` and the like). Memory is bounded by the transfer's window: the sender
/// waits while the consumer has not taken what is in flight.
///
/// `next()` gives a chunk, `errc::end_of_stream` after the last one (`complete()` is then true),
/// `operation_aborted` when the sender gave up or its link went, `errc::bad_payload` for a chunk over the
/// declared size.
/// @par Thread safety
/// One read at a time, from the consumer's coroutine (on any executor).
class snapshot_reader {
public:
  /// The next chunk: a span into the reader's buffer, valid until the next `next()` or `read_some()`.
  COGRID_DECL asio::awaitable<result<std::span<const std::byte>>> next();
  /// Copies up to `out.size()` bytes; 0 at the end of the data.
  /// @par Errors
  /// As `next()`, except that the end of the data is 0 rather than `errc::end_of_stream`.
  COGRID_DECL asio::awaitable<result<std::size_t>> read_some(std::span<std::byte> out);
  /// Bytes received so far.
  std::uint64_t bytes_received() const noexcept { return bytes_; }
  /// True once every byte the sender had was received.
  bool complete() const noexcept { return complete_; }

  /// A reader of `p` (made by the transport).
  explicit snapshot_reader(std::shared_ptr<detail::snapshot_pipe> p) noexcept : p_(std::move(p)) {}

private:
  std::shared_ptr<detail::snapshot_pipe> p_;
  std::span<const std::byte> rest_; // what read_some has not copied yet of the current chunk
  std::uint64_t bytes_ = 0;
  bool complete_ = false;
};

/// The receiving side of raft's RPCs: what a raft library implements to be given them. Every call but
/// `heartbeat` runs as a coroutine on the executor given to `transport::serve` (a thread pool, so that a
/// consumer that blocks — an fsync — never holds up a connection's reader, writer or pings); calls from
/// one peer's pipeline arrive one after another, in the order sent. A call returning an error or throwing
/// fails the RPC: the caller gets `errc::remote_error` with its text.
///
/// `heartbeat` runs on the connection's thread the moment the heartbeat arrives, without waiting for
/// the consumer's executor, a pipeline or a snapshot: it must not block (compare the term and note the
/// leader's contact under a short lock).
class consumer {
public:
  /// Destroyed once no connection holds it (the transport shares it with the calls in progress).
  virtual ~consumer() = default;
  /// An AppendEntries from `from`'s `transport::append_entries` or its pipeline.
  virtual asio::awaitable<result<append_entries_response>> append_entries(peer_info from, append_entries_request req) = 0;
  /// A RequestVote (or pre-vote).
  virtual asio::awaitable<result<request_vote_response>> request_vote(peer_info from, request_vote_request req) = 0;
  /// A TimeoutNow.
  virtual asio::awaitable<result<timeout_now_response>> timeout_now(peer_info from, timeout_now_request req) = 0;
  /// An InstallSnapshot: read the snapshot's bytes from `data` (which lives until this returns), then
  /// answer. Returning before `data.complete()` stops the transfer: the sender's call completes with the
  /// answer.
  virtual asio::awaitable<result<install_snapshot_response>> install_snapshot(peer_info from, install_snapshot_request req,
                                                                              snapshot_reader& data) = 0;
  /// An AppendEntries that `is_heartbeat`: answered here, on the connection's thread. Must not block.
  virtual result<append_entries_response> heartbeat(const peer_info& from, const append_entries_request& req) = 0;
};

/// The settings of a transport: both ends of a link declare the same ones (one definition shared by the
/// nodes, as for other handlers).
struct transport_options {
  /// The most requests a pipeline may have in flight (the pipeline stream's capacity); each pipeline
  /// chooses its own depth up to this.
  std::uint32_t max_pipeline = 128;
  /// InstallSnapshot's chunk and window. The defaults keep a megabyte in flight: a heartbeat queued
  /// behind a window of snapshot data waits for it to be written.
  bulk_options snapshot{128u << 10, 1u << 20};

  /// @par Errors
  /// `errc::invalid_value` for a `max_pipeline` of 0, or bad snapshot options.
  result<void> validate() const {
    if (max_pipeline == 0) return error(errc::invalid_value, "raft transport: max_pipeline must be at least 1");
    return snapshot.validate();
  }
};

/// What a pipeline keeps of a request it sent, to give back with its response: enough for raft to
/// advance a follower's match index.
struct append_sent {
  std::uint64_t term = 0;                ///< the request's term
  std::uint64_t prev_log_entry = 0;      ///< the index before its entries
  std::uint64_t prev_log_term = 0;       ///< that index's term
  std::uint64_t leader_commit_index = 0; ///< the commit index it carried
  std::size_t entries = 0;               ///< how many entries it carried
  std::uint64_t last_index = 0;          ///< the index of its last entry (`prev_log_entry` when none)
  std::chrono::steady_clock::time_point sent_at; ///< when it was sent
};

/// A pipelined AppendEntries and its response (raft's `AppendFuture`).
struct append_completion {
  append_sent request;              ///< what was sent
  append_entries_response response; ///< the follower's answer
};

/// AppendEntries to one peer, pipelined: `append()` sends without waiting for the answers to what was
/// sent before (up to `depth()` in flight), and `next()` gives the answers in the order the requests were
/// sent. The peer's consumer takes them one after another, in order.
///
/// An error (the link lost, the consumer failing, a deadline) ends the pipeline: every request still in
/// flight completes in `next()` with that error, and `append()` fails with it. `close()` ends it
/// cleanly: no more appends, the answers to those in flight still arrive, then `next()` gives
/// `errc::end_of_stream`. Destroying the pipeline cancels it.
/// @par Thread safety
/// One coroutine appends and one takes answers (they may be different coroutines, on different threads).
class append_pipeline {
public:
  /// Move-only.
  append_pipeline(append_pipeline&&) noexcept = default;
  /// Move-only; the pipeline this object had is cancelled.
  COGRID_DECL append_pipeline& operator=(append_pipeline&& o) noexcept;
  /// Cancels the pipeline (a no-op once it has ended).
  COGRID_DECL ~append_pipeline();

  /// Sends `req`, first waiting while `depth()` requests are in flight (sent, their answer not yet taken
  /// by `next()`). `req` is read when it is sent: it must stay as it is until `append` completes.
  /// @par Errors
  /// `errc::stream_closed` after `close()`; the pipeline's error once it has failed; `errc::bad_payload`
  /// for a request that cannot be encoded.
  COGRID_DECL asio::awaitable<result<void>> append(const append_entries_request& req);
  /// The answer to the oldest request in flight, waiting for one to be sent if none is.
  /// @par Errors
  /// `errc::end_of_stream` after `close()` once every answer was given; the pipeline's error.
  COGRID_DECL asio::awaitable<result<append_completion>> next();
  /// No more appends: the answers to those in flight still arrive. Call it after the last `append()`
  /// has completed.
  COGRID_DECL void close();
  /// Ends the pipeline now: what is in flight fails with `operation_aborted`, and the remote stops.
  COGRID_DECL void cancel();

  /// The most requests in flight.
  std::uint32_t depth() const noexcept { return depth_; }
  /// Requests sent whose answer `next()` has not given yet.
  COGRID_DECL std::size_t in_flight() const;

  /// A pipeline over `s` (made by `transport::pipeline`).
  COGRID_DECL append_pipeline(client_stream<append_entries_request, append_entries_response> s, std::uint32_t depth,
                              asio::any_io_executor ex);

private:
  std::shared_ptr<detail::pipeline_state> st_;
  std::uint32_t depth_ = 0;
};

namespace detail {

/// Runs `a` on `ex` and completes with its value, back on the awaiting coroutine's executor. Not
/// cancellable: the consumer's call runs to its end (Asio 1.22 does not carry a cancellation across
/// executors safely).
template <class T>
asio::awaitable<T> run_on(asio::any_io_executor ex, asio::awaitable<T> a) {
  co_return co_await asio::co_spawn(ex, std::move(a), asio::bind_cancellation_slot(asio::cancellation_slot(), asio::use_awaitable));
}

inline peer_info peer_of(const call_context& ctx) {
  peer_info p;
  if (ctx.conn) {
    p.host = ctx.conn->remote();
    p.identity = ctx.conn->identity();
  }
  return p;
}

/// The state the consumer's executor and the transport share.
struct consumer_binding {
  std::shared_ptr<consumer> c;
  asio::any_io_executor ex;
};

struct append_fn {
  std::shared_ptr<consumer_binding> b;
  asio::awaitable<result<append_entries_response>> operator()(const call_context& ctx, append_entries_request r) const {
    return run_on(b->ex, b->c->append_entries(peer_of(ctx), std::move(r)));
  }
};

struct vote_fn {
  std::shared_ptr<consumer_binding> b;
  asio::awaitable<result<request_vote_response>> operator()(const call_context& ctx, request_vote_request r) const {
    return run_on(b->ex, b->c->request_vote(peer_of(ctx), std::move(r)));
  }
};

struct timeout_now_fn {
  std::shared_ptr<consumer_binding> b;
  asio::awaitable<result<timeout_now_response>> operator()(const call_context& ctx, timeout_now_request r) const {
    return run_on(b->ex, b->c->timeout_now(peer_of(ctx), std::move(r)));
  }
};

struct heartbeat_fn {
  std::shared_ptr<consumer_binding> b;
  result<append_entries_response> operator()(const call_context& ctx, append_entries_request r) const {
    return b->c->heartbeat(peer_of(ctx), r);
  }
};

/// The pipeline's handler: the requests go to one coroutine on the consumer's executor, which takes them
/// one after another while more are queued (no hop between executors per request under load); the
/// answers come back in order.
COGRID_DECL stream_generator<append_entries_response> pipeline_run(std::shared_ptr<consumer_binding> b, peer_info from,
                                                                  stream_input<append_entries_request> in,
                                                                  std::uint32_t max_in_flight);

struct pipeline_fn {
  std::shared_ptr<consumer_binding> b;
  std::uint32_t max_in_flight = 0;
  stream_generator<append_entries_response> operator()(call_context ctx, stream_input<append_entries_request> in) const {
    return pipeline_run(b, peer_of(ctx), std::move(in), max_in_flight);
  }
};

/// The snapshot's handler: hands each chunk to the consumer's reader and answers with what the consumer
/// returned (nothing when the transfer was cut off).
COGRID_DECL stream_generator<install_snapshot_response> snapshot_run(std::shared_ptr<consumer_binding> b, peer_info from,
                                                                     install_snapshot_request req, bulk_input in);

struct snapshot_fn {
  std::shared_ptr<consumer_binding> b;
  stream_generator<install_snapshot_response> operator()(call_context ctx, install_snapshot_request req, bulk_input in) const {
    return snapshot_run(b, peer_of(ctx), std::move(req), std::move(in));
  }
};

} // namespace detail

/// Raft's RPCs over a grid: declare one `transport` with the same base id and options on every node,
/// `serve` it with the node's consumer, and call peers through their connections.
///
/// Handler ids: `base` (AppendEntries), `base + 1` (the pipeline), `base + 2` (heartbeats), `base + 3`
/// (RequestVote), `base + 4` (TimeoutNow), `base + 5` (InstallSnapshot): six ids the grid's other
/// handlers must leave free.
///
/// @par Example
/// @code
/// inline const cogrid::raft::transport raft_net{cogrid::handler_id{200}};
/// auto served = raft_net.serve(manager, std::make_shared<my_raft_node>(), pool.get_executor());
/// auto link = manager.connection(peer_address);
/// auto vote = co_await raft_net.request_vote(*link, req);          // result<request_vote_response>
/// auto pipe = co_await raft_net.pipeline(*link, 8);                 // result<append_pipeline>
/// auto sent = co_await pipe->append(batch);                         // in one coroutine
/// auto done = co_await pipe->next();                                // in another, in order
/// auto snap = co_await cogrid::file_source::open(pool.get_executor(), "snapshot.bin");
/// auto installed = co_await raft_net.install_snapshot(*link, meta, *snap);
/// @endcode
///
/// @par Errors
/// The calls': `errc::remote_error` with the consumer's text, `errc::unknown_handler` when the peer does
/// not serve raft, `errc::timeout` past the deadline, `errc::disconnected`, `errc::queue_full`,
/// `errc::shutdown`, `operation_aborted` when cancelled. `errc::invalid_value` for a base id whose six
/// ids pass 255 or bad options (`serve`, and every call).
/// @par Thread safety
/// Immutable: use from any thread. Must outlive the calls made through it.
class transport {
public:
  /// The number of handler ids a transport takes from its base.
  static constexpr unsigned handler_count = 6;

  /// Raft's handlers on ids `base` to `base + 5`, with options `o` (the same on every node).
  explicit transport(handler_id base, transport_options o = {})
      : base_(base), opts_(o), append_(at(0)), pipeline_(at(1), stream_capacity{o.max_pipeline, o.max_pipeline}),
        heartbeat_(at(2)), vote_(at(3)), timeout_now_(at(4)), snapshot_(at(5), o.snapshot) {}

  /// The first handler id.
  handler_id base() const noexcept { return base_; }
  /// The options.
  const transport_options& options() const noexcept { return opts_; }

  /// Registers the six handlers on `m`, each call of `c` to run on `ex` (heartbeats excepted: see
  /// `consumer`), which must outlive `m`'s shutdown. Once per manager.
  /// @par Errors
  /// `errc::invalid_value` (the base, the options, a null consumer), `errc::handler_exists` (a handler
  /// of either kind is registered on one of the six ids). On an error nothing is registered (as with every
  /// registration, no other registration on `m` may run at the same time).
  [[nodiscard]] result<void> serve(manager& m, std::shared_ptr<consumer> c, asio::any_io_executor ex) const {
    if (auto v = validate(); !v) return v;
    if (!c) return error(errc::invalid_value, "raft transport: no consumer");
    for (unsigned i = 0; i < handler_count; ++i)
      if (m.serves(at(i)))
        return error(errc::handler_exists, "raft transport: handler id " + std::to_string(static_cast<unsigned>(at(i))) +
                                               " is taken; none of the six was registered");
    auto b = std::make_shared<detail::consumer_binding>(detail::consumer_binding{std::move(c), std::move(ex)});
    if (auto r = append_.serve(m, detail::append_fn{b}); !r) return r;
    if (auto r = pipeline_.serve(m, detail::pipeline_fn{b, opts_.max_pipeline}); !r) return r;
    if (auto r = heartbeat_.serve(m, detail::heartbeat_fn{b}); !r) return r;
    if (auto r = vote_.serve(m, detail::vote_fn{b}); !r) return r;
    if (auto r = timeout_now_.serve(m, detail::timeout_now_fn{b}); !r) return r;
    return snapshot_.serve(m, detail::snapshot_fn{b});
  }

  /// One AppendEntries. A heartbeat (`is_heartbeat(req)`) goes on the heartbeat path: the peer's
  /// `consumer::heartbeat` answers it on arrival, ahead of its consumer's queue.
  asio::awaitable<result<append_entries_response>> append_entries(connection& c, const append_entries_request& req,
                                                                  call_options opt = {}) const {
    if (auto v = validate(); !v) return invalid(v.error());
    return is_heartbeat(req) ? heartbeat_.call(c, req, opt) : append_.call(c, req, opt);
  }

  /// One RequestVote (or pre-vote).
  asio::awaitable<result<request_vote_response>> request_vote(connection& c, const request_vote_request& req,
                                                              call_options opt = {}) const {
    if (auto v = validate(); !v) return invalid<request_vote_response>(v.error());
    return vote_.call(c, req, opt);
  }

  /// One TimeoutNow.
  asio::awaitable<result<timeout_now_response>> timeout_now(connection& c, const timeout_now_request& req,
                                                            call_options opt = {}) const {
    if (auto v = validate(); !v) return invalid<timeout_now_response>(v.error());
    return timeout_now_.call(c, req, opt);
  }

  /// InstallSnapshot: sends `req`, then all of `data` in chunks (at most the window in flight), and
  /// completes with the consumer's answer. `data` must outlive the operation.
  /// @par Errors
  /// Also `data`'s error (the consumer's reader gives `operation_aborted`).
  template <byte_source Source>
  asio::awaitable<result<install_snapshot_response>> install_snapshot(connection& c, const install_snapshot_request& req,
                                                                      Source& data, stream_options opt = {}) const {
    if (auto v = validate(); !v) return invalid<install_snapshot_response>(v.error());
    return snapshot_.send(c, req, data, opt);
  }

  /// Opens an AppendEntries pipeline to `c` with at most `depth` requests in flight (1 to
  /// `options().max_pipeline`; raft's default is 2).
  /// @par Errors
  /// `errc::invalid_value` for a depth out of range; the stream's (`unknown_handler`,
  /// `capacity_mismatch` when the peer declares another `max_pipeline`, `disconnected`, ...).
  COGRID_DECL asio::awaitable<result<append_pipeline>> pipeline(connection& c, std::uint32_t depth = 2,
                                                              stream_options opt = {}) const;

private:
  handler_id at(unsigned i) const noexcept { return handler_id{static_cast<std::uint8_t>(static_cast<unsigned>(base_) + i)}; }

  result<void> validate() const {
    if (static_cast<unsigned>(base_) + handler_count - 1 > 255)
      return error(errc::invalid_value, "raft transport: the base id " + std::to_string(static_cast<unsigned>(base_)) +
                                            " leaves no room for its six handler ids (at most 250)");
    return opts_.validate();
  }

  template <class T = append_entries_response>
  static asio::awaitable<result<T>> invalid(error e) {
    co_return e;
  }

  handler_id base_;
  transport_options opts_;
  unary<append_entries_request, append_entries_response> append_;
  bidi_stream<append_entries_request, append_entries_response> pipeline_;
  unary<append_entries_request, append_entries_response> heartbeat_;
  unary<request_vote_request, request_vote_response> vote_;
  unary<timeout_now_request, timeout_now_response> timeout_now_;
  bulk_upload<install_snapshot_request, install_snapshot_response> snapshot_;
};

} // namespace cogrid::raft

#if defined(COGRID_HEADER_ONLY)
#include <cogrid/impl/raft.ipp>
#endif

#endif // COGRID_RAFT_HPP
