// Handlers and checks the loopback tests share: MinIO's echo handlers (unary and stream) and "no call or
// stream left open".
#ifndef COGRID_TESTS_GRID_HELPERS_HPP
#define COGRID_TESTS_GRID_HELPERS_HPP

#include <cogrid/stream.hpp>
#include <cogrid/testing.hpp>

namespace cogrid_test {

/// Unary handler 78: returns its request.
struct echo_fn {
  cogrid::payload operator()(cogrid::payload p) const { return p; }
};

/// Stream handler: echoes each request.
inline cogrid::stream_generator<cogrid::payload> echo_gen(cogrid::payload, cogrid::stream_input<cogrid::payload> in) {
  while (auto r = co_await in.next()) co_yield std::move(*r);
}

/// True when no connection of the grid has a call or stream open, in either direction.
inline bool idle(cogrid::testing::grid& g) {
  for (std::size_t i = 0; i < g.size(); ++i)
    for (auto& c : g.node(i).connections()) {
      const auto st = c->stats();
      if (st.calls_out || st.calls_in || st.streams_out || st.streams_in) return false;
    }
  return true;
}

} // namespace cogrid_test

#endif // COGRID_TESTS_GRID_HELPERS_HPP
