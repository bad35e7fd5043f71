// cogrid/detail/strand.hpp — the strands cogrid runs its coroutines on.
#ifndef COGRID_DETAIL_STRAND_HPP
#define COGRID_DETAIL_STRAND_HPP

#include <asio/any_io_executor.hpp>
#include <asio/execution/context.hpp>
#include <asio/io_context.hpp>
#include <asio/query.hpp>
#include <asio/strand.hpp>

#include <memory>

namespace cogrid::detail {

/// A new strand on `ex`'s execution context, as an `any_io_executor`. On an io_context this is a strand
/// of the io_context's own executor: small enough for `any_io_executor` to hold without a heap block
/// (a `strand<any_io_executor>` is not, and every operation started on it would copy it to the heap).
inline asio::any_io_executor make_strand_executor(const asio::any_io_executor& ex) {
  using plain = asio::io_context::basic_executor_type<std::allocator<void>, 0>;
  using tracked = asio::io_context::basic_executor_type<std::allocator<void>, 4>; // outstanding_work.tracked
  if (const auto* e = ex.target<plain>()) return asio::make_strand(asio::query(*e, asio::execution::context).get_executor());
  if (const auto* e = ex.target<tracked>()) return asio::make_strand(asio::query(*e, asio::execution::context).get_executor());
  return asio::make_strand(ex);
}

} // namespace cogrid::detail

#endif // COGRID_DETAIL_STRAND_HPP
