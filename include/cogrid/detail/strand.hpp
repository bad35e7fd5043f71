// cogrid/detail/strand.hpp — the strands cogrid runs its coroutines on.
#ifndef COGRID_DETAIL_STRAND_HPP
#define COGRID_DETAIL_STRAND_HPP

#include <asio/any_io_executor.hpp>
#include <asio/execution/context.hpp>
#include <asio/io_context.hpp>
#include <asio/query.hpp>
#include <asio/strand.hpp>

#include <memory>
#if !defined(ASIO_NO_TYPEID)
#include <typeinfo>
#endif

namespace cogrid::detail {

/// An io_context's own executor, as `io_context::get_executor()` gives it (no properties required).
using io_executor = asio::io_context::basic_executor_type<std::allocator<void>, 0>;

/// The executor inside `ex` when it is exactly a `T`, else null. Asio 1.22's `any_executor::target<T>()`
/// casts without checking the type (later Asio checks it), so the type is compared here first. Without
/// RTTI (ASIO_NO_TYPEID) nothing is recognised and callers take their generic path.
template <class T>
const T* exact_target(const asio::any_io_executor& ex) noexcept {
#if !defined(ASIO_NO_TYPEID)
  if (ex && ex.target_type() == typeid(T)) return ex.template target<T>();
#else
  (void)ex;
#endif
  return nullptr;
}

/// A new strand on `ex`'s execution context, as an `any_io_executor`. On an io_context this is a strand
/// of the io_context's own executor: small enough for `any_io_executor` to hold without a heap block
/// (a `strand<any_io_executor>` is not, and every operation started on it would copy it to the heap).
inline asio::any_io_executor make_strand_executor(const asio::any_io_executor& ex) {
  using tracked = asio::io_context::basic_executor_type<std::allocator<void>, 4>; // outstanding_work.tracked
  if (const auto* e = exact_target<io_executor>(ex)) return asio::make_strand(asio::query(*e, asio::execution::context).get_executor());
  if (const auto* e = exact_target<tracked>(ex)) return asio::make_strand(asio::query(*e, asio::execution::context).get_executor());
  return asio::make_strand(ex);
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_STRAND_HPP
