// The one TU that compiles cogrid's non-template code when tests build with COGRID_SEPARATE_COMPILATION.
#include <cogrid/src.hpp>
