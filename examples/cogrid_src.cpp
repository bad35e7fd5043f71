// The one TU that compiles cogrid's non-template code for the examples and the tests (built with
// COGRID_SEPARATE_COMPILATION, so each example compiles in a few seconds; the sources are the same either way).
#include <cogrid/src.hpp>
