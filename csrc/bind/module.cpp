#include "bind.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastprune compiled core: streaming statistics kernels (CPU and CUDA)";
  fastprune::bind::core(m);
  fastprune::bind::moments(m);
  fastprune::bind::influence(m);
}
