// cogrid/detail/outbox.hpp — a connection's outgoing queue: grid messages encoded back to back into one
// buffer as they are sent, from any thread, and taken all at once by the session's writer, which parks
// here while there is nothing to write. Large payloads (to a peer that takes pieces) wait in a second
// lane, whole, and leave one piece per write, so that the small messages of the link go between them.
#ifndef COGRID_DETAIL_OUTBOX_HPP
#define COGRID_DETAIL_OUTBOX_HPP

#include <cogrid/error.hpp>
#include <cogrid/message.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/handoff.hpp>
#include <cogrid/detail/pool.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

namespace cogrid::detail {

/// What a session may send: the largest payload its peer takes and the size of pieces (0: none).
struct send_limits {
  std::size_t max_payload = 0;
  std::size_t piece = 0;
  std::size_t window = 0; ///< bytes of pieces sent and not yet acknowledged by the peer; 0: no limit
  /// Payloads of `outbox::large_min` bytes or more, whole or in pieces, keep the CRC trailer of their
  /// message's flags (connection_options::large_payload_crc). A peer that takes no pieces (`piece` 0: a
  /// MinIO node) gets it whatever this says.
  bool large_crc = false;
};

/// Which side of a call or stream sent a message: its caller (request, stream open, stream requests,
/// credits and cancels from the caller) or its server. With the mux id, it names the message's
/// call or stream on a connection, whose messages keep their order.
constexpr bool from_server(op_code op) noexcept {
  switch (op) {
  case op_code::pong:
  case op_code::mux_connect_error:
  case op_code::disconnect_client_mux:
  case op_code::mux_server_msg:
  case op_code::unblock_cl_mux:
  case op_code::ack_mux:
  case op_code::response: return true;
  default: return false;
  }
}
constexpr std::uint64_t flow_key(std::uint64_t mux, op_code op) noexcept { return mux * 2 + (from_server(op) ? 1 : 0); }

/// The outgoing queue of one connection.
///
/// @par Thread safety
/// `push`, `cancel_flow`, `acknowledged`, `wake_writer`, `length` and `refused` from any thread (one
/// mutex, held for an encode of a small message or a move of a large one); `open`, `close`, `take`,
/// `written`, `take_spare`, `shrink` and `park` from the session's strand only.
class outbox {
  struct bulk_item;

public:
  explicit outbox(std::size_t max_messages) noexcept : max_messages_(max_messages) {}

  /// A piece of a large payload that the writer sends from the payload's buffer rather than from the
  /// queue (see take): its message (`head.payload` views the piece), and the buffer, kept alive until the
  /// writer gives the piece back with `written`. The writer may mask the piece's bytes in place.
  struct piece {
    message head;
    std::byte* data = nullptr;
    std::size_t size = 0;
    std::shared_ptr<bulk_item> owner;
    explicit operator bool() const noexcept { return owner != nullptr; }
  };
  /// Pieces from this size on are taken as `piece`s, not copied into the queue.
  static constexpr std::size_t piece_in_place_min = std::size_t{64} << 10;
  /// Payloads from this size on are large data: sent to a peer that takes pieces (a cogrid node), they
  /// go without the CRC trailer unless `send_limits::large_crc`, whole or in pieces.
  static constexpr std::size_t large_min = std::size_t{64} << 10;

  /// Encodes `m` at the end of the queue for the current session and wakes the writer if it is parked
  /// (a hand-off as `how` says: see handoff.hpp). A `control` message (a reply to something the peer
  /// sent: a response, a pong, a credit) is never refused for a full queue, since dropping it would
  /// leave the peer waiting. A payload over the session's piece size goes to the large lane (copied, or
  /// moved from `movable` when given: the vector `m.payload` views), and so does any later message of
  /// the same call or stream while one of its payloads waits there, so that they keep their order.
  /// @par Errors
  /// `errc::disconnected` when no session is open; `errc::queue_full` when the queue holds
  /// `max_messages` (not for control messages); `errc::payload_too_large` when the payload is over
  /// the peer's limit (nothing is queued).
  result<void> push(const message& m, bool control, handoff how, std::vector<std::byte>* movable = nullptr) {
    bool wake = false;
    {
      std::lock_guard lk(mu_);
      if (session_ == 0) return errc::disconnected;
      if (!control && ends_.size() + bulk_.size() >= max_messages_) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        return errc::queue_full;
      }
      const std::size_t n = m.payload ? m.payload->size() : 0;
      if (n > limits_.max_payload)
        return error(errc::payload_too_large, "payload of " + std::to_string(n) + " bytes is over the limit of " +
                                                  std::to_string(limits_.max_payload) + " bytes " + limit_owner_);
      const bool large = limits_.piece != 0 && n > limits_.piece;
      // Large data to a peer that takes pieces goes without the CRC trailer unless asked for it.
      const bool bare = n >= large_min && !limits_.large_crc && limits_.piece != 0 && has(m.flags, msg_flags::crc);
      if (large || (!bulk_.empty() && m.mux_id != 0 && in_bulk(flow_key(m.mux_id, m.op)))) {
        auto item = std::make_shared<bulk_item>();
        item->head = m;
        item->head.payload.reset();
        if (bare) item->head.flags &= ~msg_flags::crc;
        item->nil = !m.payload;
        item->cut = large;
        item->key = m.mux_id != 0 ? flow_key(m.mux_id, m.op) : ~std::uint64_t{0};
        if (movable && m.payload && movable->data() == m.payload->data() && movable->size() == n) item->data = std::move(*movable);
        else if (m.payload) item->data.assign(m.payload->begin(), m.payload->end());
        bulk_.push_back(std::move(item));
      } else {
        std::optional<message> without_crc; // a copy only for large data
        if (bare) without_crc.emplace(m).flags &= ~msg_flags::crc;
        if (auto r = encode_append(without_crc ? *without_crc : m, buf_); !r) return r;
        ends_.push_back(buf_.size());
      }
      wake = writer_idle_;
      writer_idle_ = false;
    }
    if (wake) wake_writer(how);
    return {};
  }

  /// The call or stream `mux` (whose messages `op` is one of) ended on this side: what of its large
  /// payloads has not left yet stays here. A payload partly sent is cut off, and the peer drops the
  /// pieces it had when the cancel that ended it arrives.
  void cancel_flow(std::uint64_t mux, op_code op) {
    const std::uint64_t key = flow_key(mux, op);
    std::lock_guard lk(mu_);
    for (auto& item : bulk_)
      if (item->key == key) item->cancelled = true;
  }

  /// Wakes the writer if it is parked; if it is not, it will not park before it looked again.
  void wake_writer(handoff how) {
    waiter w;
    {
      std::lock_guard lk(mu_);
      if (writer_.h) take_waiter(writer_, w);
      else wake_pending_ = true;
    }
    wake(std::move(w), how);
  }

  /// Session `id` starts: the queue is emptied and accepts messages for it, within `limits` (`owner`
  /// says whose limit it is, for the error text).
  void open(std::uint64_t id, send_limits limits, std::string owner) {
    std::lock_guard lk(mu_);
    buf_.clear();
    ends_.clear();
    bulk_.clear();
    unacked_ = 0;
    limits_ = limits;
    limit_owner_ = std::move(owner);
    session_ = id;
    writer_idle_ = false;
    wake_pending_ = false;
  }

  /// Session `id` ended: what it had queued is dropped (returns how many messages) and sends are
  /// refused until the next `open`. Nothing happens when another session is open already.
  std::size_t close(std::uint64_t id) {
    std::lock_guard lk(mu_);
    if (session_ != id) return 0;
    const std::size_t dropped = ends_.size() + bulk_.size();
    buf_.clear();
    ends_.clear();
    bulk_.clear();
    spare_ = std::vector<std::byte>();
    session_ = 0;
    return dropped;
  }

  /// The writer takes everything queued so far: `buf` and `ends` (emptied by the caller) are swapped
  /// with the queue's, so that buffers circulate instead of being reallocated; then, when a message of the
  /// large lane may go, it is appended: the next piece of the first large payload (a grid message of its
  /// own, with `msg_flags::more` unless it is the last), or a whole message queued there behind one.
  /// Both are chosen under one hold of the lock, so that a call's or stream's messages keep their order
  /// across the two lanes. A piece of `piece_in_place_min` bytes or more is not appended but returned in
  /// `p`, to be written after the queue's messages. `may_sleep`: the writer parks next if nothing was
  /// taken, so producers must wake it from now on.
  void take(std::vector<std::byte>& buf, std::vector<std::size_t>& ends, bool may_sleep, piece& p) {
    bulk_item* item = nullptr;
    std::size_t n = 0;
    {
      std::lock_guard lk(mu_);
      buf.swap(buf_);
      ends.swap(ends_);
      wake_pending_ = false; // everything up to here is seen by the writer
      while (!bulk_.empty() && bulk_.front()->cancelled) bulk_.pop_front();
      if (bulk_ready()) {
        item = bulk_.front().get(); // only this strand pops: it stays valid after the lock
        const std::size_t left = item->data.size() - item->sent;
        n = item->cut ? std::min(left, limits_.piece) : left;
        if (item->cut) unacked_ += n; // a piece: the peer acknowledges it once it has it
      } else if (ends.empty() && may_sleep) {
        writer_idle_ = true;
      }
    }
    if (!item) return;
    // Encoded outside the lock: producers are not held up by a copy of a piece.
    message m = item->head;
    if (!item->nil) m.payload = std::span<const std::byte>(item->data.data() + item->sent, n);
    if (item->sent + n < item->data.size()) m.flags |= msg_flags::more;
    else m.flags &= ~msg_flags::more;
    if (n >= piece_in_place_min) {
      p.head = m;
      p.data = item->data.data() + item->sent;
      p.size = n;
      p.owner = bulk_.front(); // only this strand pops: still the front
      item->sent += n;
      if (item->sent >= item->data.size()) {
        std::lock_guard lk(mu_);
        bulk_.pop_front(); // its buffer lives on in `p` until written
      }
      return;
    }
    const bool encoded = static_cast<bool>(encode_append(m, buf)); // sizes were checked at push
    if (encoded) ends.push_back(buf.size());
    item->sent += n;
    if (item->sent >= item->data.size() || !encoded) {
      std::lock_guard lk(mu_);
      if (!encoded && item->cut) unacked_ -= std::min(unacked_, n); // never sent: nothing to acknowledge
      keep_spare(item->data);
      bulk_.pop_front();
    }
  }

  /// The writer wrote piece `p`: when it was its payload's last, the payload's buffer may become the
  /// spare (see take_spare).
  void written(piece& p) noexcept {
    std::shared_ptr<bulk_item> item = std::move(p.owner);
    p = piece();
    if (!item || item->sent < item->data.size()) return;
    std::lock_guard lk(mu_);
    keep_spare(item->data);
  }

  /// The buffer of a large payload that was sent, for a large payload arriving on the link (the reader
  /// puts its pieces together in it): its memory is resident already, so the next payload does not fault
  /// in fresh pages, and the one that was sent is not unmapped under the lock. Empty when none is kept.
  std::vector<std::byte> take_spare() {
    std::lock_guard lk(mu_);
    std::vector<std::byte> v = std::move(spare_);
    spare_ = std::vector<std::byte>();
    v.clear();
    return v;
  }

  /// Gives back the queue's buffer when it is empty and over `keep` bytes (the writer and the queue swap
  /// buffers, so after a burst of large messages the queue may hold the large one while the link idles).
  /// The spare buffer of a sent large payload (see take_spare) goes too.
  void shrink(std::size_t keep) {
    std::vector<std::byte> drop, spare;
    std::lock_guard lk(mu_);
    if (buf_.empty() && buf_.capacity() > keep) drop.swap(buf_);
    spare.swap(spare_);
  }

  /// The peer took `n` bytes of pieces: more may go (and the writer is woken if it waits for that).
  void acknowledged(std::size_t n, handoff how) {
    bool wake = false;
    {
      std::lock_guard lk(mu_);
      unacked_ -= std::min(unacked_, n);
      wake = writer_idle_ && bulk_ready();
      if (wake) writer_idle_ = false;
    }
    if (wake) wake_writer(how);
  }

  /// Parks the writer (`h`, its coroutine's handler) until `wake_writer`, unless work came or a wake
  /// was asked for since it last looked, or `failed`: then it resumes at once. Cancelling the park
  /// resumes it with `operation_aborted`.
  void park(wait_handler h, bool failed) {
    waiter now;
    {
      std::lock_guard lk(mu_);
      if (failed || wake_pending_ || !ends_.empty() || bulk_ready()) {
        wake_pending_ = false;
        now.h.emplace(std::move(h));
      } else {
        arm(writer_, std::move(h), cancel_fn{this});
        writer_idle_ = true; // parked: whatever comes next must wake it
      }
    }
    wake(std::move(now), handoff::continuation); // the writer is suspended: only our code runs here
  }

  /// The parked writer, taken for `abandon` (its execution context is going away).
  waiter take_parked() {
    waiter w;
    std::lock_guard lk(mu_);
    take_waiter(writer_, w);
    return w;
  }

  /// Messages queued now (a large payload counts once).
  std::size_t length() const {
    std::lock_guard lk(mu_);
    return ends_.size() + bulk_.size();
  }
  /// Sends refused because the queue was full, ever.
  std::uint64_t refused() const noexcept { return refused_.load(std::memory_order_relaxed); }

private:
  struct cancel_fn {
    outbox* self;
    void operator()(asio::cancellation_type) const {
      waiter w;
      {
        std::lock_guard lk(self->mu_);
        take_waiter(self->writer_, w);
      }
      wake(std::move(w), handoff::continuation, asio::error::operation_aborted);
    }
  };

  // A message of the large lane: its payload held whole (copied or moved in), sent piece by piece.
  struct bulk_item {
    message head; // without its payload
    std::vector<std::byte> data;
    bool nil = false;
    bool cut = false; // sent as pieces (else whole, queued here only to keep its call's order)
    bool cancelled = false;
    std::size_t sent = 0;
    std::uint64_t key = 0; // flow_key of its call or stream
  };
  // Under mu_: a message of the large lane may go now (a piece only within the window; a whole message
  // of the lane, or any piece when nothing is outstanding, always).
  bool bulk_ready() const noexcept {
    if (bulk_.empty()) return false;
    if (limits_.window == 0 || limits_.piece == 0 || unacked_ == 0) return true;
    const bulk_item& f = *bulk_.front();
    return f.cancelled || !f.cut || unacked_ + std::min(f.data.size() - f.sent, limits_.piece) <= limits_.window;
  }
  // Under mu_: keeps `data` (a large payload's buffer, done with) as the spare when it is larger than the
  // spare held; the smaller of the two is freed.
  void keep_spare(std::vector<std::byte>& data) noexcept {
    if (data.capacity() >= spare_min_bytes && data.capacity() > spare_.capacity()) spare_.swap(data);
  }
  bool in_bulk(std::uint64_t key) const noexcept {
    return std::any_of(bulk_.begin(), bulk_.end(), [&](const auto& item) { return item->key == key && !item->cancelled; });
  }

  const std::size_t max_messages_;
  mutable std::mutex mu_;
  std::vector<std::byte> buf_;
  std::vector<std::size_t> ends_; // end offset of each message in buf_
  std::deque<std::shared_ptr<bulk_item>> bulk_; // the large lane, first in first out
  std::vector<std::byte> spare_;                // see take_spare
  static constexpr std::size_t spare_min_bytes = large_payload_bytes;
  send_limits limits_;
  std::size_t unacked_ = 0; // bytes of pieces sent, not yet acknowledged
  std::string limit_owner_;
  std::uint64_t session_ = 0;     // the session the queued messages belong to; 0 = none (sends refused)
  bool writer_idle_ = false;      // the writer sleeps next (or does): producers wake it
  bool wake_pending_ = false;     // wake_writer() found the writer not parked: it must not park
  waiter writer_;                 // the writer, parked while there is nothing to write
  std::atomic<std::uint64_t> refused_{0};
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_OUTBOX_HPP
