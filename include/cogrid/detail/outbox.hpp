// cogrid/detail/outbox.hpp — a connection's outgoing queue: grid messages encoded back to back into one
// buffer as they are sent, from any thread, and taken all at once by the session's writer, which parks
// here while there is nothing to write.
#ifndef COGRID_DETAIL_OUTBOX_HPP
#define COGRID_DETAIL_OUTBOX_HPP

#include <cogrid/error.hpp>
#include <cogrid/message.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/handoff.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace cogrid::detail {

/// The outgoing queue of one connection.
///
/// @par Thread safety
/// `push`, `wake_writer`, `length` and `refused` from any thread (one mutex, held for an encode);
/// `open`, `close`, `take` and `park` from the session's strand only.
class outbox {
public:
  explicit outbox(std::size_t max_messages) noexcept : max_messages_(max_messages) {}

  /// Encodes `m` at the end of the queue for the current session and wakes the writer if it is parked
  /// (a hand-off as `how` says: see handoff.hpp). A `control` message (a reply to something the peer
  /// sent: a response, a pong, a credit) is never refused for a full queue, since dropping it would
  /// leave the peer waiting.
  /// @par Errors
  /// `errc::disconnected` when no session is open; `errc::queue_full` when the queue holds
  /// `max_messages` (not for control messages); `errc::payload_too_large`.
  result<void> push(const message& m, bool control, handoff how) {
    bool wake = false;
    {
      std::lock_guard lk(mu_);
      if (session_ == 0) return errc::disconnected;
      if (!control && ends_.size() >= max_messages_) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        return errc::queue_full;
      }
      if (auto r = encode_append(m, buf_); !r) return r;
      ends_.push_back(buf_.size());
      wake = writer_idle_;
      writer_idle_ = false;
    }
    if (wake) wake_writer(how);
    return {};
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

  /// Session `id` starts: the queue is emptied and accepts messages for it.
  void open(std::uint64_t id) {
    std::lock_guard lk(mu_);
    buf_.clear();
    ends_.clear();
    session_ = id;
    writer_idle_ = false;
    wake_pending_ = false;
  }

  /// Session `id` ended: what it had queued is dropped (returns how many messages) and sends are
  /// refused until the next `open`. Nothing happens when another session is open already.
  std::size_t close(std::uint64_t id) {
    std::lock_guard lk(mu_);
    if (session_ != id) return 0;
    const std::size_t dropped = ends_.size();
    buf_.clear();
    ends_.clear();
    session_ = 0;
    return dropped;
  }

  /// The writer takes everything queued so far: `buf` and `ends` (emptied by the caller) are swapped
  /// with the queue's, so that buffers circulate instead of being reallocated. `may_sleep`: the writer
  /// parks next if nothing was queued, so producers must wake it from now on.
  void take(std::vector<std::byte>& buf, std::vector<std::size_t>& ends, bool may_sleep) {
    std::lock_guard lk(mu_);
    buf.swap(buf_);
    ends.swap(ends_);
    wake_pending_ = false; // everything up to here is seen by the writer
    if (ends.empty() && may_sleep) writer_idle_ = true;
  }

  /// Parks the writer (`h`, its coroutine's handler) until `wake_writer`, unless work came or a wake
  /// was asked for since it last looked, or `failed`: then it resumes at once. Cancelling the park
  /// resumes it with `operation_aborted`.
  void park(wait_handler h, bool failed) {
    waiter now;
    {
      std::lock_guard lk(mu_);
      if (failed || wake_pending_ || !ends_.empty()) {
        wake_pending_ = false;
        now.h.emplace(std::move(h));
      } else {
        arm(writer_, std::move(h), cancel_fn{this});
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

  /// Messages queued now.
  std::size_t length() const {
    std::lock_guard lk(mu_);
    return ends_.size();
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

  const std::size_t max_messages_;
  mutable std::mutex mu_;
  std::vector<std::byte> buf_;
  std::vector<std::size_t> ends_; // end offset of each message in buf_
  std::uint64_t session_ = 0;     // the session the queued messages belong to; 0 = none (sends refused)
  bool writer_idle_ = false;      // the writer sleeps next (or does): producers wake it
  bool wake_pending_ = false;     // wake_writer() found the writer not parked: it must not park
  waiter writer_;                 // the writer, parked while there is nothing to write
  std::atomic<std::uint64_t> refused_{0};
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_OUTBOX_HPP
