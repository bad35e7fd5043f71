// Wraps README fragments written at namespace scope (types, handlers, coroutines): the headers they use.
#include <cogrid/cogrid.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>
// @includes
// @snippet
