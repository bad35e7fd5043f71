// cogrid/detail/websocket.hpp — a WebSocket connection after the upgrade (RFC 6455 data transfer).
// Binary data frames, the hot path, are unframed here (and framed by message.hpp's merge framer), unmasking a machine
// word at a time, with no copy beyond the one into the message (wslay masks a byte at a time and copies
// each frame through its own buffer); control and text frames go through wslay's frame-level API
// (wslay_frame_send / wslay_frame_recv), which never sees a data frame's bytes.
#ifndef COGRID_DETAIL_WEBSOCKET_HPP
#define COGRID_DETAIL_WEBSOCKET_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/detail/http.hpp>
#include <cogrid/detail/deadline.hpp>
#include <cogrid/error.hpp>
#include <cogrid/message.hpp>
#include <cogrid/message.hpp>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <openssl/rand.h>
#include <wslay/wslay.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace cogrid::detail {

enum class ws_role { client, server };

/// One WebSocket connection after the HTTP upgrade. Binary messages only (as MinIO's grid): text frames
/// are discarded, pings answered, pongs ignored.
///
/// @par Thread safety
/// Not thread-safe: all calls are made on the connection's strand. One reader coroutine
/// (read_message) and one writer coroutine (frame_binary, take_control_output, write_raw) may use it
/// concurrently; close() may be called from either or from a third coroutine.
///
/// @par Errors
/// After read_message fails, the stream stays failed (every later read_message returns the same error);
/// the owner closes it.
template <class Tag>
class basic_ws_stream {
public:
  /// `leftover`: bytes read past the HTTP head, the first bytes of the WebSocket stream.
  basic_ws_stream(std::unique_ptr<transport> t, ws_role role, ws_limits limits, std::vector<std::byte> leftover = {});
  ~basic_ws_stream();
  basic_ws_stream(const basic_ws_stream&) = delete;
  basic_ws_stream& operator=(const basic_ws_stream&) = delete;

  /// Reads the next complete binary message, fragments joined, into `msg` (cleared first; its capacity is
  /// reused unless it exceeds 128 KiB, in which case the buffer is dropped first, as MinIO does after a
  /// large message). A ping queues a pong (control output), a close queues the close reply.
  /// Errors: websocket_closed (the peer sent close), websocket_protocol (RSV bits, unknown opcode, bad
  /// control frame, fragmentation or masking), message_too_large (the frame headers announce more than
  /// limits.max_message_bytes; found before the payload is read), disconnected (the transport failed or
  /// ended; the transport's error is in last_transport_error()).
  /// @par Cancellation
  /// Cancelling (or closing the transport) makes it fail with disconnected; the stream is then unusable.
  /// `msg` may use any allocator: a session's reader uses one that does not zero what a read overwrites.
  template <class Alloc>
  asio::awaitable<std::error_code> read_message(std::vector<std::byte, Alloc>& msg);

  /// Appends one binary FIN frame holding `payload` to `out`: header and payload, masked with a fresh
  /// random key on the client side. Allocates only to grow `out` (geometrically).
  void frame_binary(std::span<const std::byte> payload, std::vector<std::byte>& out);

  /// One transport write of framed bytes. Errors: disconnected (the write failed, or close() has begun).
  asio::awaitable<std::error_code> write_raw(std::span<const std::byte> bytes);

  /// write_raw in three steps, for a writer that awaits `lower().write_all` itself (one coroutine frame
  /// less per write): begin_write is false once close() has begun (then do not write: disconnected);
  /// end_write takes the transport's result and returns write_raw's.
  bool begin_write() noexcept;
  std::error_code end_write(std::error_code transport_ec) noexcept;

  /// Appends the control frames the reader queued (pongs, the close reply) to `out`; returns whether any.
  bool take_control_output(std::vector<std::byte>& out);

  /// Called on the strand, from read_message, when control output was queued, so the owner can wake its
  /// writer.
  std::function<void()> on_control_output;

  /// How long close() waits to write its close frame before it closes the transport anyway.
  std::chrono::milliseconds close_timeout = std::chrono::seconds(1);

  /// Sends queued control output and a close frame with `code` (unless a close was already queued),
  /// best effort and bounded by close_timeout; skipped if a write_raw is in flight. Then closes the
  /// transport. Idempotent.
  asio::awaitable<void> close(std::uint16_t code = 1000);

  transport& lower() noexcept { return *t_; }
  /// Whether bytes of the stream are buffered here, read from the transport and not yet taken by
  /// `read_message` (the start of the next frame, often all of it).
  bool buffered() const noexcept { return rpos_ != rend_; }
  /// Moves the transport onto `ex` if it can (see transport::rebind); nothing may be outstanding on it.
  void rebind(const asio::any_io_executor& ex) {
    if (auto t = t_->rebind(ex)) t_ = std::move(t);
  }
  ws_role role() const noexcept { return role_; }
  /// What the peer told of its limits in the upgrade exchange (all zero: a MinIO peer, which tells nothing).
  grid_limits peer_limits{};
  /// The transport error behind the last disconnected, if any.
  std::error_code last_transport_error() const noexcept { return last_transport_error_; }
  /// Whether the peer sent a close frame.
  bool close_received() const noexcept { return close_received_; }

  /// Messages whose buffer grew beyond this are followed by a fresh buffer (MinIO #18813).
  static constexpr std::size_t shrink_threshold = 128 * 1024;
  /// The most read at once straight into a message.
  static constexpr std::size_t direct_read_max = 1024 * 1024;
  /// Bytes read from the transport at once.
  static constexpr std::size_t read_buffer_size = 32 * 1024;
  /// A message buffer up to this capacity is kept for the next message (shrink_threshold unless the
  /// owner expects larger messages often: the pieces of large payloads).
  std::size_t keep_bytes = shrink_threshold;

private:
  enum : std::uint8_t { op_continuation = 0, op_text = 1, op_binary = 2, op_close = 8, op_ping = 9, op_pong = 10 };
  enum class msg_kind : std::uint8_t { none, binary, discard };

  static ssize_t on_send(const std::uint8_t* data, std::size_t len, int flags, void* user) noexcept;
  static ssize_t on_recv(std::uint8_t* buf, std::size_t len, int flags, void* user) noexcept;
  static int on_genmask(std::uint8_t* buf, std::size_t len, void* user) noexcept;

  void frame(std::uint8_t opcode, std::span<const std::byte> payload, std::vector<std::byte>& out);
  void queue_control(std::uint8_t opcode, std::span<const std::byte> payload);
  std::error_code fail(errc e) {
    failed_ = make_error_code(e);
    return failed_;
  }
  std::error_code begin_frame(std::size_t msg_size, bool& need_more);

  // Clears a flag when a scope ends (also by an exception). Not a local class of the coroutine that uses
  // it: g++-12 crashes mangling local classes of inline coroutines (ICE in write_encoding).
  struct flag_reset {
    bool& flag;
    ~flag_reset() { flag = false; }
  };
  void make_room() noexcept;

  std::unique_ptr<transport> t_;
  ws_role role_;
  ws_limits limits_;
  wslay_frame_context_ptr ctx_ = nullptr;

  // Read side. Bytes arrive in rbuf_[rpos_, rend_). wslay pulls them through on_recv, but never past
  // the end of the current frame (feed_left_), so that between frames its own buffer is empty and the
  // next header can be checked here before any of its payload is read.
  std::vector<std::byte> rbuf_;
  std::size_t rpos_ = 0, rend_ = 0;
  bool frame_active_ = false;
  std::uint64_t feed_left_ = 0;    // bytes of the current frame not yet given to wslay
  std::uint64_t payload_left_ = 0; // payload bytes of the current frame wslay has not returned yet
  std::uint8_t frame_op_ = 0;      // data frames: op_binary or op_text (continuations resolved); or control
  bool frame_fin_ = false;
  bool frame_masked_ = false;               // binary frames (read here, not by wslay): the masking key
  std::array<std::uint8_t, 4> frame_key_{}; // and the offset of the next payload byte
  std::size_t frame_phase_ = 0;
  msg_kind msg_kind_ = msg_kind::none;
  std::array<std::byte, 125> ctrl_{};
  std::size_t ctrl_len_ = 0;
  std::error_code failed_;
  std::error_code last_transport_error_;

  // Write side.
  std::vector<std::byte>* out_ = nullptr; // where on_send appends, during frame()
  std::vector<std::byte> control_out_;
  bool close_queued_ = false;
  bool close_received_ = false;
  bool writing_ = false;
  bool closing_ = false;
};

/// The WebSocket stream cogrid uses (a template only so that its definitions compile where they are used).
using ws_stream = basic_ws_stream<void>;

// ---- definitions ------------------------------------------------------------------------------------

template <class Tag>
basic_ws_stream<Tag>::basic_ws_stream(std::unique_ptr<transport> t, ws_role role, ws_limits limits,
                            std::vector<std::byte> leftover)
    : t_(std::move(t)), role_(role), limits_(limits), rbuf_(std::move(leftover)) {
  rend_ = rbuf_.size();
  if (rbuf_.size() < read_buffer_size) rbuf_.resize(read_buffer_size);
  const wslay_frame_callbacks callbacks{&basic_ws_stream::on_send, &basic_ws_stream::on_recv, &basic_ws_stream::on_genmask};
  if (wslay_frame_context_init(&ctx_, &callbacks, this) != 0) throw std::bad_alloc();
}

template <class Tag>
basic_ws_stream<Tag>::~basic_ws_stream() { wslay_frame_context_free(ctx_); }

template <class Tag>
ssize_t basic_ws_stream<Tag>::on_send(const std::uint8_t* data, std::size_t len, int, void* user) noexcept {
  auto* self = static_cast<basic_ws_stream*>(user);
  const auto* p = reinterpret_cast<const std::byte*>(data);
  self->out_->insert(self->out_->end(), p, p + len); // capacity reserved by frame(): no allocation
  return static_cast<ssize_t>(len);
}

template <class Tag>
ssize_t basic_ws_stream<Tag>::on_recv(std::uint8_t* buf, std::size_t len, int, void* user) noexcept {
  auto* self = static_cast<basic_ws_stream*>(user);
  std::size_t n = std::min(len, self->rend_ - self->rpos_);
  if (self->feed_left_ < n) n = static_cast<std::size_t>(self->feed_left_);
  if (n == 0) return 0; // wslay: WSLAY_ERR_WANT_READ
  std::memcpy(buf, self->rbuf_.data() + self->rpos_, n);
  self->rpos_ += n;
  self->feed_left_ -= n;
  return static_cast<ssize_t>(n);
}

template <class Tag>
int basic_ws_stream<Tag>::on_genmask(std::uint8_t* buf, std::size_t len, void*) noexcept {
  return RAND_bytes(buf, len) == 1 ? 0 : -1;
}

template <class Tag>
void basic_ws_stream<Tag>::frame(std::uint8_t opcode, std::span<const std::byte> payload, std::vector<std::byte>& out) {
  const std::size_t old_size = out.size();
  if (opcode == op_binary) {
    append_binary_frame(payload, role_ == ws_role::client, out);
    return;
  }
  const std::size_t need = old_size + 14 + payload.size(); // 14: the longest header (64-bit length, mask)
  if (need > out.capacity()) out.reserve(std::max(need, out.capacity() * 2));
  wslay_frame_iocb iocb{};
  iocb.fin = 1;
  iocb.rsv = 0;
  iocb.opcode = opcode;
  iocb.mask = role_ == ws_role::client ? 1 : 0;
  iocb.payload_length = payload.size();
  iocb.data = reinterpret_cast<const std::uint8_t*>(payload.data());
  iocb.data_length = payload.size();
  out_ = &out;
  const ssize_t r = wslay_frame_send(ctx_, &iocb);
  out_ = nullptr;
  if (r != static_cast<ssize_t>(payload.size())) {
    out.resize(old_size);
    throw std::runtime_error("wslay_frame_send failed");
  }
}

template <class Tag>
void basic_ws_stream<Tag>::frame_binary(std::span<const std::byte> payload, std::vector<std::byte>& out) {
  frame(op_binary, payload, out);
}

template <class Tag>
void basic_ws_stream<Tag>::queue_control(std::uint8_t opcode, std::span<const std::byte> payload) {
  frame(opcode, payload, control_out_);
  if (on_control_output) on_control_output();
}

template <class Tag>
bool basic_ws_stream<Tag>::take_control_output(std::vector<std::byte>& out) {
  if (control_out_.empty()) return false;
  out.insert(out.end(), control_out_.begin(), control_out_.end());
  control_out_.clear();
  return true;
}

// Checks the next frame's header, which starts at rbuf_[rpos_] (wslay's buffer is empty between
// frames), and sets up the frame. need_more: the header is not complete in rbuf_ yet.
template <class Tag>
std::error_code basic_ws_stream<Tag>::begin_frame(std::size_t msg_size, bool& need_more) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(rbuf_.data()) + rpos_;
  const std::size_t avail = rend_ - rpos_;
  need_more = true;
  if (avail < 2) return {};
  const std::uint8_t len7 = p[1] & 0x7f;
  const bool masked = (p[1] & 0x80) != 0;
  const std::size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  const std::size_t header_len = 2 + ext + (masked ? 4 : 0);
  if (avail < header_len) return {};
  need_more = false;
  std::uint64_t len = len7;
  if (ext != 0) {
    len = 0;
    for (std::size_t i = 0; i < ext; ++i) len = (len << 8) | p[2 + i];
  }
  const bool fin = (p[0] & 0x80) != 0;
  const std::uint8_t rsv = (p[0] >> 4) & 7;
  const std::uint8_t op = p[0] & 0x0f;
  const bool control = (op & 8) != 0;
  if (rsv != 0) return fail(errc::websocket_protocol);
  if (op != op_continuation && op != op_text && op != op_binary && op != op_close && op != op_ping && op != op_pong)
    return fail(errc::websocket_protocol);
  if (control && (!fin || len > 125)) return fail(errc::websocket_protocol);
  if (masked != (role_ == ws_role::server)) return fail(errc::websocket_protocol); // clients mask, servers do not
  if (len >> 63) return fail(errc::websocket_protocol);
  if ((ext == 2 && len < 126) || (ext == 8 && len <= 0xffff)) return fail(errc::websocket_protocol); // not minimal
  if (!control) {
    if (op == op_continuation) {
      if (msg_kind_ == msg_kind::none) return fail(errc::websocket_protocol); // continuation without a start
    } else {
      if (msg_kind_ != msg_kind::none) return fail(errc::websocket_protocol); // new message inside a fragmented one
      msg_kind_ = op == op_binary ? msg_kind::binary : msg_kind::discard;
    }
    if (msg_kind_ == msg_kind::binary && len > limits_.max_message_bytes - std::min(msg_size, limits_.max_message_bytes))
      return fail(errc::message_too_large);
    frame_op_ = msg_kind_ == msg_kind::binary ? op_binary : op_text;
  } else {
    frame_op_ = op;
    ctrl_len_ = 0;
  }
  frame_fin_ = fin;
  frame_active_ = true;
  payload_left_ = len;
  if (frame_op_ == op_binary) { // read here: skip the header, keep the key
    frame_masked_ = masked;
    if (masked) std::memcpy(frame_key_.data(), p + 2 + ext, 4);
    frame_phase_ = 0;
    rpos_ += header_len;
    feed_left_ = 0;
  } else {
    feed_left_ = header_len + len; // wslay reads it, header and all
  }
  return {};
}

// Before a read: an empty buffer starts over; a partial header moves to the front.
template <class Tag>
void basic_ws_stream<Tag>::make_room() noexcept {
  if (rpos_ == rend_) {
    rpos_ = rend_ = 0;
  } else if (rpos_ != 0) {
    std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
    rend_ -= rpos_;
    rpos_ = 0;
  }
}

template <class Tag>
template <class Alloc>
asio::awaitable<std::error_code> basic_ws_stream<Tag>::read_message(std::vector<std::byte, Alloc>& msg) {
  if (failed_) co_return failed_;
  if (msg.capacity() > keep_bytes) msg = std::vector<std::byte, Alloc>();
  else msg.clear();
  msg_kind_ = msg_kind::none;
  bool want_bytes = false;
  for (;;) {
    if (want_bytes) { // the one place that reads: inline, no coroutine frame of its own per read
      want_bytes = false;
      make_room();
      std::error_code ec;
      const std::size_t n = co_await t_->read_some(asio::buffer(rbuf_.data() + rend_, rbuf_.size() - rend_), ec);
      if (ec || n == 0) {
        last_transport_error_ = ec ? ec : make_error_code(asio::error::eof);
        co_return fail(errc::disconnected);
      }
      rend_ += n;
    }
    if (!frame_active_) {
      bool need_more = false;
      std::error_code ec = begin_frame(msg.size(), need_more);
      if (ec) co_return ec;
      if (need_more) {
        want_bytes = true;
        continue;
      }
      if (frame_op_ == op_binary) {
        const std::size_t need = msg.size() + static_cast<std::size_t>(payload_left_);
        if (need > msg.capacity())
          msg.reserve(std::max(need, std::min(msg.capacity() * 2, limits_.max_message_bytes)));
      }
    }

    if (frame_op_ == op_binary) {
      if (payload_left_ != 0) {
        if (rpos_ == rend_ && payload_left_ >= read_buffer_size) {
          // A large frame, nothing buffered: its payload is read straight into the message (no copy
          // through the read buffer, fewer reads), and unmasked there.
          const std::size_t at = msg.size();
          const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(payload_left_, direct_read_max));
          msg.resize(at + want);
          std::error_code ec;
          const std::size_t n = co_await t_->read_some(asio::buffer(msg.data() + at, want), ec);
          msg.resize(at + n);
          if (ec || n == 0) {
            last_transport_error_ = ec ? ec : make_error_code(asio::error::eof);
            co_return fail(errc::disconnected);
          }
          if (frame_masked_) frame_phase_ = ws_mask(msg.data() + at, n, frame_key_, frame_phase_);
          payload_left_ -= n;
        } else {
          if (rpos_ == rend_) {
            want_bytes = true;
            continue;
          }
          const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(payload_left_, rend_ - rpos_));
          const std::size_t at = msg.size();
          msg.resize(at + n); // then copied: an allocator's element-wise insert would copy byte by byte
          std::memcpy(msg.data() + at, rbuf_.data() + rpos_, n);
          if (frame_masked_) frame_phase_ = ws_mask(msg.data() + at, n, frame_key_, frame_phase_);
          rpos_ += n;
          payload_left_ -= n;
        }
        if (payload_left_ != 0) continue;
      }
      frame_active_ = false;
      if (frame_fin_) {
        msg_kind_ = msg_kind::none;
        co_return std::error_code{};
      }
      continue;
    }

    wslay_frame_iocb iocb{};
    const ssize_t r = wslay_frame_recv(ctx_, &iocb);
    if (r == WSLAY_ERR_WANT_READ) {
      if (rpos_ == rend_) {
        want_bytes = true;
      } else if (feed_left_ == 0) {
        co_return fail(errc::websocket_protocol); // wslay wants more than the frame holds
      }
      continue;
    }
    if (r < 0 || iocb.data_length > payload_left_) co_return fail(errc::websocket_protocol); // WSLAY_ERR_PROTO

    const auto* data = reinterpret_cast<const std::byte*>(iocb.data);
    const std::size_t n = iocb.data_length;
    if (frame_op_ != op_text && n != 0) {
      std::memcpy(ctrl_.data() + ctrl_len_, data, n); // control payloads are <= 125 bytes
      ctrl_len_ += n;
    }
    payload_left_ -= n;
    if (payload_left_ != 0) continue;

    frame_active_ = false;
    switch (frame_op_) {
    case op_text:
      if (frame_fin_) msg_kind_ = msg_kind::none;
      break;
    case op_ping:
      if (!close_queued_) queue_control(op_pong, std::span<const std::byte>(ctrl_.data(), ctrl_len_));
      break;
    case op_pong:
      break;
    case op_close:
      close_received_ = true;
      if (ctrl_len_ == 1) co_return fail(errc::websocket_protocol); // a status code has two bytes
      if (!close_queued_) {
        close_queued_ = true;
        queue_control(op_close, std::span<const std::byte>(ctrl_.data(), std::min<std::size_t>(ctrl_len_, 2)));
      }
      co_return fail(errc::websocket_closed);
    default:
      co_return fail(errc::websocket_protocol);
    }
  }
}

template <class Tag>
bool basic_ws_stream<Tag>::begin_write() noexcept {
  if (closing_) return false;
  writing_ = true;
  return true;
}

template <class Tag>
std::error_code basic_ws_stream<Tag>::end_write(std::error_code transport_ec) noexcept {
  writing_ = false;
  if (!transport_ec) return {};
  last_transport_error_ = transport_ec;
  return make_error_code(errc::disconnected);
}

template <class Tag>
asio::awaitable<std::error_code> basic_ws_stream<Tag>::write_raw(std::span<const std::byte> bytes) {
  if (!begin_write()) co_return make_error_code(errc::disconnected);
  const flag_reset guard{writing_}; // also when the coroutine ends by an exception
  std::error_code ec;
  co_await t_->write_all(asio::buffer(bytes.data(), bytes.size()), ec);
  co_return end_write(ec);
}

template <class Tag>
asio::awaitable<void> basic_ws_stream<Tag>::close(std::uint16_t code) {
  if (closing_) co_return;
  closing_ = true;
  if (!writing_) {
    std::vector<std::byte> out;
    take_control_output(out);
    if (!close_queued_) {
      close_queued_ = true;
      const std::byte payload[2] = {static_cast<std::byte>(code >> 8), static_cast<std::byte>(code & 0xff)};
      frame(op_close, payload, out);
    }
    if (!out.empty()) {
      writing_ = true;
      const std::error_code written = co_await with_deadline<Tag>(write_all_status<Tag>(*t_, asio::buffer(out)), close_timeout);
      (void)written; // best effort: the transport is closed either way
      writing_ = false;
    }
  }
  t_->close();
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_WEBSOCKET_HPP
