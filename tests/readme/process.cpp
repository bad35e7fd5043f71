// Wraps README's process fragment: statements with the two managers and the stdio descriptors it names.
#include <cogrid/cogrid.hpp>

#include <asio/posix/stream_descriptor.hpp>

#include <cstdlib>
#include <string>
// @includes

void link(cogrid::manager& m, cogrid::manager& remote, asio::posix::stream_descriptor stdin_desc,
          asio::posix::stream_descriptor stdout_desc) {
  // @snippet
  (void)linked;
  (void)attached;
  (void)guarded;
}
