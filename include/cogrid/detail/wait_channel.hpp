// cogrid/detail/wait_channel.hpp — a one-shot wake-up across threads: a coroutine waiting in
// connection::wait_for_connect, or a manager's shutdown waiting for the incoming handshakes to drain.
#ifndef COGRID_DETAIL_WAIT_CHANNEL_HPP
#define COGRID_DETAIL_WAIT_CHANNEL_HPP

#include <asio/experimental/concurrent_channel.hpp>

#include <system_error>

namespace cogrid::detail {

using wait_channel = asio::experimental::concurrent_channel<void(std::error_code, int)>;

} // namespace cogrid::detail

#endif // COGRID_DETAIL_WAIT_CHANNEL_HPP
