// cogrid/detail/serialize.hpp — how typed handlers' values become payload bytes: msgpack-cxx for user
// types (declare them with MSGPACK_DEFINE_MAP to get maps keyed by field name, as MinIO's msgp structs
// are), and raw bytes for `cogrid::payload`.
#ifndef COGRID_DETAIL_SERIALIZE_HPP
#define COGRID_DETAIL_SERIALIZE_HPP

#include <cogrid/detail/config.hpp>
#include <cogrid/call.hpp>
#include <cogrid/result.hpp>
#include <cogrid/detail/pool.hpp>

#include <msgpack.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace cogrid::detail {

/// Appends `b` to `out`; a large payload's room is reserved as such (reserve_large: fewer page faults).
inline void append_bytes(std::vector<std::byte>& out, std::span<const std::byte> b) {
  if (b.size() >= large_payload_bytes) reserve_large(out, out.size() + b.size());
  out.insert(out.end(), b.begin(), b.end());
}

/// msgpack-cxx's output stream concept over a byte vector, appending. The packer writes a value in many
/// small writes (a field's header, then its body); each goes into room already made in the vector (a
/// copy and an add), 1 KiB of room made at a time, and the vector is cut back to what was written when
/// the sink goes. A write of 1 KiB or more (a blob) is appended as it is, without zeroing room first.
class byte_sink {
public:
  explicit byte_sink(std::vector<std::byte>& out) noexcept : out_(out), end_(out.size()) {}
  ~byte_sink() { out_.resize(end_); }
  byte_sink(const byte_sink&) = delete;
  byte_sink& operator=(const byte_sink&) = delete;

  void write(const char* p, std::size_t n) {
    if (n == 0) return; // msgpack-cxx may pass a null pointer with it (an empty string_view)
    if (n > out_.size() - end_) {
      if (n >= room_step) { // once: straight in
        out_.resize(end_);
        append_bytes(out_, std::span<const std::byte>(reinterpret_cast<const std::byte*>(p), n));
        end_ = out_.size();
        return;
      }
      make_room();
    }
    std::memcpy(out_.data() + end_, p, n);
    end_ += n;
  }

private:
  static constexpr std::size_t room_step = 1024;
  void make_room() {
    const std::size_t want = end_ + room_step;
    if (want > out_.capacity()) out_.reserve(std::max(want, 2 * out_.capacity()));
    out_.resize(want);
  }
  std::vector<std::byte>& out_;
  std::size_t end_; // bytes of out_ written; those after it are room
};

/// The msgpack zone a decode builds its object tree in: a per-thread zone, cleared after each decode,
/// so that decoding a small value allocates nothing (msgpack-cxx's `unpack` without a zone allocates a
/// zone and its first 8 KiB chunk per call). Clearing keeps the zone's first chunk and frees the rest:
/// the shared zone's first chunk is 64 KiB, so that a value of a few hundred fields (a raft batch of
/// entries) decodes without a malloc and free of further chunks each time. A decode nested in another
/// (a user's adaptor decoding) gets a zone of its own.
class zone_lease {
public:
  zone_lease() : shared_(acquire()) {
    if (!shared_) own_.emplace();
  }
  ~zone_lease() {
    if (shared_) release(*shared_);
  }
  zone_lease(const zone_lease&) = delete;
  zone_lease& operator=(const zone_lease&) = delete;
  msgpack::zone& get() noexcept { return shared_ ? shared_->zone : *own_; }

private:
  struct slot {
    msgpack::zone zone{std::size_t{64} << 10};
    bool busy = false;
  };
  // Not inlined: clang 16 may keep a thread_local's address across a co_await (see pool.hpp).
  [[gnu::noinline]] static slot* acquire() {
    thread_local slot s;
    if (s.busy) return nullptr;
    s.busy = true;
    return &s;
  }
  static void release(slot& s) noexcept {
    s.zone.clear();
    s.busy = false;
  }
  slot* shared_;
  std::optional<msgpack::zone> own_;
};

template <class T>
struct codec {
  /// Appends the encoding of `v`; returns false for a nil payload (never, for msgpack values).
  static bool pack(const T& v, std::vector<std::byte>& out) {
    byte_sink s(out);
    msgpack::pack(s, v);
    return true;
  }
  /// Decodes `in` into `out`: nil or empty decodes as a default `T`.
  /// @par Errors
  /// `errc::bad_payload`, with msgpack-cxx's reason as its text.
  static result<void> unpack(const std::optional<std::span<const std::byte>>& in, T& out) {
    if (!in || in->empty()) {
      out = T{};
      return {};
    }
    zone_lease z;
    try {
      std::size_t off = 0;
      const msgpack::object obj = msgpack::unpack(z.get(), reinterpret_cast<const char*>(in->data()), in->size(), off);
      if (off != in->size()) return error(errc::bad_payload, "trailing bytes after the msgpack value");
      obj.convert(out);
      return {};
    } catch (const std::exception& e) {
      return error(errc::bad_payload, e.what());
    }
  }
};

/// Raw bytes: the payload itself, nil kept nil.
template <>
struct codec<payload> {
  static bool pack(const payload& v, std::vector<std::byte>& out) {
    if (!v) return false;
    append_bytes(out, *v);
    return true;
  }
  static result<void> unpack(const std::optional<std::span<const std::byte>>& in, payload& out) {
    if (!in) out.reset();
    else out.emplace(in->begin(), in->end());
    return {};
  }
};

inline std::optional<std::span<const std::byte>> view_of(const payload& p) {
  if (!p) return std::nullopt;
  return std::span<const std::byte>(*p);
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_SERIALIZE_HPP
