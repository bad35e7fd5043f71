// cogrid/detail/registry.hpp — the handlers a node serves: one table keyed by kind (unary or stream) and
// route (a handler id, or a handler id's subroute), read without a lock on every request.
#ifndef COGRID_DETAIL_REGISTRY_HPP
#define COGRID_DETAIL_REGISTRY_HPP

#include <cogrid/call.hpp>
#include <cogrid/message.hpp>
#include <cogrid/metrics.hpp>
#include <cogrid/result.hpp>
#include <cogrid/subroute.hpp>

#include <array>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace cogrid::detail {

struct served_stream;
struct gen_promise_base;

/// The frame of a stream handler's generator, as the core sees it.
struct gen_start {
  std::coroutine_handle<> handle;
  gen_promise_base* promise = nullptr;
};

/// The handler of a stream, in bytes: builds the generator (suspended) for one stream, or throws.
using raw_stream_start = std::function<gen_start(call_context, payload, const std::shared_ptr<served_stream>&)>;

enum class handler_kind : std::uint8_t { unary, stream };

/// One registered handler. Unary: `fn` (a coroutine) or `sync` (a plain function); stream: `cap` and `start`.
struct handler_entry {
  handler_kind kind = handler_kind::unary;
  raw_unary_handler fn;
  sync_unary_handler sync;
  stream_capacity cap;
  raw_stream_start start;
  std::vector<std::byte> ack;         // stream: the OpAckMux payload (our capacities), encoded once
  handler_metrics* metrics = nullptr; // set at registration
  authorize_hook authorize;           // empty: every caller is admitted
};

/// The prefix of the error text of a call refused by an authorization hook: a cogrid caller reports
/// such a refusal as `errc::not_authorized` (MinIO sends no text that begins so).
inline constexpr std::string_view not_authorized_prefix = "not authorized: ";

/// Handlers by kind and route. Tables are copied on registration (rare, before start) and published
/// with a release store; a lookup is an acquire load and a hash probe. Entries and the tables of
/// earlier registrations live as long as the registry, so what a lookup returns stays valid.
class handler_registry {
public:
  handler_registry() { current_.store(tables_.emplace_back(std::make_unique<table>()).get(), std::memory_order_release); }

  /// Adds `e` under `h` (and subroute `sub`); `route` names the subroute in statistics.
  /// @par Errors
  /// `errc::invalid_handler` for id 0; `errc::handler_exists`.
  result<void> add(handler_id h, const std::optional<subroute_id>& sub, std::string_view route, handler_entry e,
                   metrics_registry& metrics) {
    if (static_cast<std::uint8_t>(h) == 0) return errc::invalid_handler;
    const key k = make_key(e.kind, h, sub);
    std::lock_guard lk(mu_);
    const table& now = *current_.load(std::memory_order_relaxed);
    if (now.count(k)) return errc::handler_exists;
    e.metrics = &metrics.served(e.kind == handler_kind::unary ? call_kind::unary : call_kind::stream, h, sub, route);
    const handler_entry* stored = entries_.emplace_back(std::make_unique<handler_entry>(std::move(e))).get();
    auto next = std::make_unique<table>(now);
    next->emplace(k, stored);
    current_.store(tables_.emplace_back(std::move(next)).get(), std::memory_order_release);
    return {};
  }

  /// Sets the authorization hook of the handlers (unary and stream) registered under `h` (and subroute
  /// `sub`): each is replaced by a copy with the hook, published as a registration is.
  /// @par Errors
  /// `errc::unknown_handler` when no handler is registered there.
  result<void> authorize(handler_id h, const std::optional<subroute_id>& sub, authorize_hook fn) {
    std::lock_guard lk(mu_);
    const table& now = *current_.load(std::memory_order_relaxed);
    auto next = std::make_unique<table>(now);
    bool found = false;
    for (const handler_kind kind : {handler_kind::unary, handler_kind::stream}) {
      auto it = next->find(make_key(kind, h, sub));
      if (it == next->end()) continue;
      auto copy = std::make_unique<handler_entry>(*it->second);
      copy->authorize = fn;
      it->second = entries_.emplace_back(std::move(copy)).get();
      found = true;
    }
    if (!found) return error(errc::unknown_handler, "authorize: no handler is registered under this id and subroute");
    current_.store(tables_.emplace_back(std::move(next)).get(), std::memory_order_release);
    return {};
  }

  /// Whether a handler of either kind is registered under `h` itself (not under a subroute).
  bool contains(handler_id h) const noexcept {
    const table& t = *current_.load(std::memory_order_acquire);
    for (const handler_kind kind : {handler_kind::unary, handler_kind::stream})
      if (t.count(make_key(kind, h, std::nullopt))) return true;
    return false;
  }

  /// The handler of `kind` that `m` (a request or stream open) addresses, or null.
  const handler_entry* find(handler_kind kind, const message& m) const noexcept {
    if (static_cast<std::uint8_t>(m.handler) == 0) return nullptr;
    const table& t = *current_.load(std::memory_order_acquire);
    auto it = t.find(make_key(kind, m.handler, m.subroute));
    return it == t.end() ? nullptr : it->second;
  }

private:
  // The route bytes: a subroute's id, or MinIO's zero subroute id {h, 0, ...} for a plain handler (a
  // real subroute id has SHA-256 bytes after its first two, never all zero).
  struct key {
    handler_kind kind;
    std::array<std::byte, 32> route;
    friend bool operator==(const key&, const key&) = default;
  };
  struct key_hash {
    std::size_t operator()(const key& k) const noexcept {
      std::uint64_t v;
      std::memcpy(&v, k.route.data() + 2, sizeof v);
      return static_cast<std::size_t>((v ^ (static_cast<std::uint64_t>(k.route[0]) << 8) ^ static_cast<std::uint64_t>(k.kind)) *
                                      0x9E3779B97F4A7C15ULL);
    }
  };
  using table = std::unordered_map<key, const handler_entry*, key_hash>;

  static key make_key(handler_kind kind, handler_id h, const std::optional<subroute_id>& sub) noexcept {
    key k{kind, {}};
    if (sub) k.route = sub->bytes;
    else k.route[0] = static_cast<std::byte>(h);
    return k;
  }

  std::mutex mu_;
  std::vector<std::unique_ptr<handler_entry>> entries_;
  std::vector<std::unique_ptr<table>> tables_;
  std::atomic<const table*> current_{nullptr};
};

} // namespace cogrid::detail

#endif // COGRID_DETAIL_REGISTRY_HPP
