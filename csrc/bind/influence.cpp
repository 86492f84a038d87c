#include "bind.h"

namespace fastprune::bind {
void influence(pybind11::module_&) {}  // filled by the influence kernel family
}  // namespace fastprune::bind
