// Wraps README's transports fragment: statements with the options, io_context and streams it names.
#include <cogrid/cogrid.hpp>

#include <asio/local/stream_protocol.hpp>
#include <asio/posix/stream_descriptor.hpp>
// @includes

void wire(cogrid::manager_options o, asio::io_context& io, asio::posix::stream_descriptor child_stdout,
          asio::posix::stream_descriptor child_stdin, asio::local::stream_protocol::socket unix_socket) {
  // @snippet
}
