// Wraps README's statistics fragment: statements on a manager and its options.
#include <cogrid/cogrid.hpp>

#include <cstdio>
#include <string>
// @includes

void observe(cogrid::manager& m, cogrid::manager_options& o) {
  // @snippet
}
