// cogrid/detail/framer.hpp — how a batch of encoded grid messages becomes the bytes of one socket write:
// runs of messages packed into OpMerged containers (message.hpp), each container or lone message one
// WebSocket binary frame (RFC 6455), masked on the client side a machine word at a time.
#ifndef COGRID_DETAIL_FRAMER_HPP
#define COGRID_DETAIL_FRAMER_HPP

#include <cogrid/message.hpp>

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <vector>

namespace cogrid::detail {

/// XORs `n` bytes at `p` with the 4-byte masking `key` (RFC 6455 §5.3), starting at byte `phase` of the
/// key (the offset of p in the frame's payload, modulo 4). Eight bytes per step; returns the phase after.
inline std::size_t ws_mask(std::byte* p, std::size_t n, const std::array<std::uint8_t, 4>& key, std::size_t phase) noexcept {
  phase &= 3;
  std::uint8_t rot[8];
  for (std::size_t i = 0; i < 8; ++i) rot[i] = key[(phase + i) & 3];
  std::uint64_t k8;
  std::memcpy(&k8, rot, 8); // byte order does not matter: memory order in, memory order out
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    w ^= k8;
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] ^= static_cast<std::byte>(rot[i & 7]);
  return (phase + n) & 3;
}

/// A fresh masking key: four bytes of BoringSSL's CSPRNG, drawn 256 at a time per thread. Not inlined:
/// clang 16 may keep a thread_local's address across a co_await (see pool.hpp), and the writer
/// coroutine reaches this.
[[gnu::noinline]] inline std::array<std::uint8_t, 4> ws_mask_key() {
  struct pool {
    std::uint8_t bytes[256];
    std::size_t next = sizeof bytes;
  };
  thread_local pool p;
  if (p.next + 4 > sizeof p.bytes) {
    if (RAND_bytes(p.bytes, sizeof p.bytes) != 1) throw std::runtime_error("RAND_bytes failed");
    p.next = 0;
  }
  std::array<std::uint8_t, 4> k;
  std::memcpy(k.data(), p.bytes + p.next, 4);
  p.next += 4;
  return k;
}

/// Appends one binary FIN frame holding `payload` to `out`: header and payload, masked with a fresh
/// random key when `mask` (a client's frames). Allocates only to grow `out` (geometrically).
inline void append_binary_frame(std::span<const std::byte> payload, bool mask, std::vector<std::byte>& out) {
  std::uint8_t h[14];
  std::size_t hl = 2;
  const std::size_t n = payload.size();
  h[0] = 0x80 | 0x2; // FIN, binary
  if (n < 126) {
    h[1] = static_cast<std::uint8_t>(n);
  } else if (n <= 0xffff) {
    h[1] = 126;
    h[2] = static_cast<std::uint8_t>(n >> 8);
    h[3] = static_cast<std::uint8_t>(n);
    hl = 4;
  } else {
    h[1] = 127;
    for (std::size_t i = 0; i < 8; ++i) h[2 + i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(n) >> (56 - 8 * i));
    hl = 10;
  }
  std::array<std::uint8_t, 4> key{};
  if (mask) {
    key = ws_mask_key();
    h[1] |= 0x80;
    std::memcpy(h + hl, key.data(), 4);
    hl += 4;
  }
  const std::size_t old_size = out.size();
  const std::size_t need = old_size + hl + n;
  if (need > out.capacity()) out.reserve(std::max(need, out.capacity() * 2));
  const auto* hb = reinterpret_cast<const std::byte*>(h);
  out.insert(out.end(), hb, hb + hl);
  out.insert(out.end(), payload.begin(), payload.end());
  if (mask) ws_mask(out.data() + old_size + hl, n, key, 0);
}

/// Limits of one batch's framing (from `connection_options`).
struct merge_limits {
  std::size_t max_messages = 50; ///< grid messages per OpMerged container
  std::size_t max_bytes = 31u << 10; ///< bytes of messages per container (a message larger than this goes alone)
};

/// Appends to `out` the frames of a batch: `queue` holds encoded messages back to back, message i
/// ending at `ends[i]`. Runs of up to `limits` go into one OpMerged container (built in `scratch`); a run
/// of one goes alone. Each container or lone message is one binary frame, masked when `mask`.
inline void frame_batch(std::span<const std::byte> queue, std::span<const std::size_t> ends, merge_limits limits, bool mask,
                        std::vector<std::byte>& scratch, std::vector<std::byte>& out) {
  const std::size_t n = ends.size();
  std::size_t i = 0, start = 0;
  while (i < n) {
    std::size_t j = i, bytes = 0, end = start;
    while (j < n && j - i < limits.max_messages) {
      const std::size_t len = ends[j] - end;
      if (j > i && bytes + len > limits.max_bytes) break;
      bytes += len;
      end = ends[j];
      ++j;
    }
    if (j - i == 1) {
      append_binary_frame(queue.subspan(start, end - start), mask, out);
    } else {
      merge_builder mb(scratch);
      std::size_t at = start;
      for (std::size_t k = i; k < j; ++k) {
        (void)mb.add(queue.subspan(at, ends[k] - at)); // each item is under max_bytes: it fits
        at = ends[k];
      }
      append_binary_frame(mb.finish(), mask, out);
    }
    start = end;
    i = j;
  }
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_FRAMER_HPP
