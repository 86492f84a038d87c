#include "bind.h"
#include "fastprune/moments.h"

namespace fastprune::bind {

void moments(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("moments_out_size", &fastprune::moments::out_size, py::arg("channels"), py::arg("covariance"),
        "Length of the float64 buffer moments_update writes.");
  m.def("moments_update", &fastprune::moments::update, py::arg("x"), py::arg("out"), py::arg("out_len"),
        py::arg("covariance"), py::call_guard<py::gil_scoped_release>(),
        "Moments of one batch (View) written into a float64 buffer (pointer) on x's device.");
}

}  // namespace fastprune::bind
