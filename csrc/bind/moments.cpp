#include "bind.h"

namespace fastprune::bind {
void moments(pybind11::module_&) {}  // filled by the moments kernel family
}  // namespace fastprune::bind
