// cogrid/detail/pool.hpp — per-thread recycling of the memory a call uses, so that the steady state of
// calls allocates nothing of its own: fixed-size blocks (call state, shared with `std::allocate_shared`)
// and byte buffers (payload copies, packed requests).
//
// Each thread keeps a bounded cache. Memory may be freed on another thread than the one that allocated
// it (a call completes wherever its response arrives); it then joins the freeing thread's cache, or goes
// back to the heap when that cache is full. Nothing is shared between threads, so nothing is locked.
//
// The caches are reached through non-inlined functions: clang 16 and older may keep a thread_local's
// address across a co_await when the access is inlined into a coroutine that resumes on another thread.
#ifndef COGRID_DETAIL_POOL_HPP
#define COGRID_DETAIL_POOL_HPP

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace cogrid::detail {

/// A per-thread cache of memory blocks of `Size` bytes (aligned for any standard type).
template <std::size_t Size>
class block_cache {
public:
  static constexpr std::size_t max_blocks = 512;

  [[gnu::noinline]] static void* take() {
    cache& c = local();
    if (c.head) {
      node* n = c.head;
      c.head = n->next;
      --c.count;
      return n;
    }
    return ::operator new(Size);
  }

  [[gnu::noinline]] static void give(void* p) noexcept {
    cache& c = local();
    if (c.dead || c.count >= max_blocks) {
      ::operator delete(p);
      return;
    }
    node* n = static_cast<node*>(p);
    n->next = c.head;
    c.head = n;
    ++c.count;
  }

private:
  struct node {
    node* next;
  };
  static_assert(Size >= sizeof(node));
  // Trivially destructible, so that it can still be reached while the thread's other thread_locals are
  // destroyed (a call freed then goes straight to the heap).
  struct cache {
    node* head;
    std::size_t count;
    bool dead;
  };
  struct reaper {
    cache& c;
    ~reaper() {
      c.dead = true;
      while (c.head) {
        node* n = c.head;
        c.head = n->next;
        ::operator delete(n);
      }
      c.count = 0;
    }
  };
  static cache& local() {
    thread_local cache c{nullptr, 0, false};
    thread_local reaper r{c};
    return c;
  }
};

/// A standard allocator over `block_cache` for single objects (arrays go to the heap); for
/// `std::allocate_shared`, which allocates the control block and the object as one block, and for the
/// operations Asio allocates when a function is posted to an executor that carries this allocator.
template <class T>
struct pool_allocator {
  using value_type = T;
  pool_allocator() noexcept = default;
  template <class U>
  pool_allocator(const pool_allocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "over-aligned types are not pooled");
    if (n != 1 || sizeof(T) > max_pooled) return static_cast<T*>(::operator new(n * sizeof(T)));
    return static_cast<T*>(block_cache<block_size()>::take());
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n != 1 || sizeof(T) > max_pooled) {
      ::operator delete(p);
      return;
    }
    block_cache<block_size()>::give(p);
  }
  template <class U>
  bool operator==(const pool_allocator<U>&) const noexcept {
    return true;
  }

private:
  static constexpr std::size_t max_pooled = 4096;
  static constexpr std::size_t block_size() noexcept { return (sizeof(T) + 15) / 16 * 16; }
};

/// Coroutine frames of a few sizes (stream generators): sizes up to 2 KiB in classes of 128 bytes come
/// from `block_cache`, larger ones from the heap. For a promise's `operator new` / sized `operator delete`.
struct frame_pool {
  static constexpr std::size_t step = 128, max_pooled = 2048;

  static void* allocate(std::size_t n) {
    return n > max_pooled ? ::operator new(n) : dispatch<1>(n, nullptr);
  }
  static void deallocate(void* p, std::size_t n) noexcept {
    if (n > max_pooled) ::operator delete(p);
    else dispatch<1>(n, p);
  }

private:
  // Takes (p == null) or gives back a block of the class of `n`.
  template <std::size_t K>
  static void* dispatch(std::size_t n, void* p) noexcept(false) {
    if constexpr (K * step > max_pooled) {
      return nullptr; // unreachable: n <= max_pooled
    } else {
      if (n > K * step) return dispatch<K + 1>(n, p);
      if (!p) return block_cache<K * step>::take();
      block_cache<K * step>::give(p);
      return nullptr;
    }
  }
};

/// Payloads from this size on are large (their buffers are reserved with reserve_large).
inline constexpr std::size_t large_payload_bytes = std::size_t{4} << 20;

/// Reserves `n` bytes in `v` for a large payload being put together: the memory is only reserved, and
/// becomes resident as it is written. On Linux the region is marked for transparent huge pages, so that
/// writing it costs a page fault per 2 MiB rather than per 4 KiB (where the system allows them only on
/// request, as Debian's default does).
inline void reserve_large(std::vector<std::byte>& v, std::size_t n) {
  v.reserve(n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
  if (v.capacity() >= 2 * huge) {
    const auto begin = reinterpret_cast<std::uintptr_t>(v.data());
    const std::uintptr_t first = (begin + huge - 1) & ~(huge - 1);
    const std::uintptr_t last = (begin + v.capacity()) & ~(huge - 1);
    if (last > first) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE); // advice only
  }
#endif
}

/// A standard allocator whose construction without a value leaves the element uninitialized, so that a
/// byte buffer grown by `resize` just before a read overwrites it is not zeroed first.
template <class T>
struct uninit_allocator : std::allocator<T> {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = uninit_allocator<U>;
  };
  uninit_allocator() noexcept = default;
  template <class U>
  uninit_allocator(const uninit_allocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};

/// Bytes read from a socket: grown to the size of a read before it, without zeroing.
using read_buffer = std::vector<std::byte, uninit_allocator<std::byte>>;

/// A per-thread cache of byte buffers for payload copies and packed requests: `take` returns an empty
/// vector (with capacity when one was cached), `give` keeps a finished one for the next `take`. Buffers
/// above `max_capacity` are freed rather than kept, so a burst of large messages does not pin memory.
class buffer_cache {
public:
  static constexpr std::size_t max_buffers = 256;
  static constexpr std::size_t max_capacity = 16 * 1024;

  [[gnu::noinline]] static std::vector<std::byte> take() {
    cache& c = local();
    if (!c.list || c.list->empty()) return {};
    std::vector<std::byte> v = std::move(c.list->back());
    c.list->pop_back();
    return v;
  }

  [[gnu::noinline]] static void give(std::vector<std::byte>&& v) noexcept {
    if (v.capacity() == 0 || v.capacity() > max_capacity) return;
    cache& c = local();
    if (!c.list || c.list->size() >= max_buffers) return;
    v.clear();
    c.list->push_back(std::move(v)); // capacity reserved up front: no allocation, cannot throw
  }

  static void give(std::optional<std::vector<std::byte>>&& v) noexcept {
    if (v) give(std::move(*v));
  }

  /// A copy of `size` bytes at `data` in a cached buffer.
  static std::vector<std::byte> copy(const std::byte* data, std::size_t size) {
    std::vector<std::byte> v = take();
    v.assign(data, data + size);
    return v;
  }

private:
  using list_type = std::vector<std::vector<std::byte>>;
  struct cache {
    list_type* list; // null once the thread's cache is gone (see block_cache)
  };
  struct reaper {
    cache& c;
    explicit reaper(cache& cc) : c(cc) {
      c.list = new list_type();
      c.list->reserve(max_buffers);
    }
    reaper(const reaper&) = delete;
    reaper& operator=(const reaper&) = delete;
    ~reaper() {
      delete c.list;
      c.list = nullptr;
    }
  };
  static cache& local() {
    thread_local cache c{nullptr};
    thread_local reaper r{c};
    return c;
  }
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_POOL_HPP
