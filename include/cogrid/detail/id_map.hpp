// cogrid/detail/id_map.hpp — the calls and streams in flight on a connection, by mux id: an open-addressing
// hash table (linear probing, backward-shift deletion) that allocates only when it grows, unlike a node
// per entry for std::unordered_map. Not thread-safe (the connection's mux lock guards it).
#ifndef COGRID_DETAIL_ID_MAP_HPP
#define COGRID_DETAIL_ID_MAP_HPP

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace cogrid::detail {

template <class V>
class id_map {
public:
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  /// The value for `key`, or null.
  V* find(std::uint64_t key) noexcept {
    if (slots_.empty()) return nullptr;
    for (std::size_t i = index(key);; i = (i + 1) & mask()) {
      slot& s = slots_[i];
      if (!s.used) return nullptr;
      if (s.key == key) return &s.value;
    }
  }

  /// Inserts or replaces; returns the stored value.
  V& put(std::uint64_t key, V value) {
    if ((size_ + 1) * 4 > slots_.size() * 3) grow();
    for (std::size_t i = index(key);; i = (i + 1) & mask()) {
      slot& s = slots_[i];
      if (!s.used) {
        s.used = true;
        s.key = key;
        s.value = std::move(value);
        ++size_;
        return s.value;
      }
      if (s.key == key) {
        s.value = std::move(value);
        return s.value;
      }
    }
  }

  /// Removes `key`; returns its value (default-constructed when absent).
  V take(std::uint64_t key) {
    if (slots_.empty()) return V();
    std::size_t i = index(key);
    for (;; i = (i + 1) & mask()) {
      if (!slots_[i].used) return V();
      if (slots_[i].key == key) break;
    }
    V out = std::move(slots_[i].value);
    // Backward shift: move later members of the probe run into the hole so that no lookup stops early.
    for (std::size_t j = (i + 1) & mask();; j = (j + 1) & mask()) {
      slot& s = slots_[j];
      if (!s.used) break;
      const std::size_t home = index(s.key);
      // `s` may move to the hole at `i` if its home is not in the cyclic range (i, j].
      const bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (stays) continue;
      slots_[i].key = s.key;
      slots_[i].value = std::move(s.value);
      i = j;
    }
    slots_[i].used = false;
    slots_[i].value = V();
    --size_;
    if (slots_.size() > 64 && size_ * 8 < slots_.size()) resize(slots_.size() / 4); // give back after a burst
    return out;
  }

  template <class F>
  void for_each(F&& f) {
    for (slot& s : slots_)
      if (s.used) f(s.key, s.value);
  }

  void clear() {
    slots_.clear();
    size_ = 0;
  }

private:
  struct slot {
    std::uint64_t key = 0;
    bool used = false;
    V value{};
  };

  std::size_t mask() const noexcept { return slots_.size() - 1; }
  std::size_t index(std::uint64_t key) const noexcept {
    // Fibonacci hashing: sequential mux ids spread over the table.
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask();
  }

  void grow() { resize(slots_.empty() ? 16 : slots_.size() * 2); }

  void resize(std::size_t n) {
    std::vector<slot> old = std::move(slots_);
    slots_ = std::vector<slot>(n);
    size_ = 0;
    for (slot& s : old)
      if (s.used) put(s.key, std::move(s.value));
  }

  std::vector<slot> slots_;
  std::size_t size_ = 0;
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_ID_MAP_HPP
