#include <cstdint>

#include "bind.h"
#include "fastprune/influence.h"

namespace py = pybind11;

namespace fastprune::bind {

void influence(py::module_& m) {
  py::class_<ShiftPlanArgs>(m, "ShiftPlanArgs")
      .def(py::init([](std::uintptr_t deltas, std::int64_t nd, std::uintptr_t cells, std::int64_t ncell,
                       std::uintptr_t cell_ptr, std::uintptr_t job_delta, std::int64_t njobs,
                       std::int64_t max_dy, std::int64_t pad_x) {
             ShiftPlanArgs p;
             p.deltas = reinterpret_cast<const std::int64_t*>(deltas);
             p.nd = nd;
             p.cells = reinterpret_cast<const std::int64_t*>(cells);
             p.ncell = ncell;
             p.cell_ptr = reinterpret_cast<const std::int64_t*>(cell_ptr);
             p.job_delta = reinterpret_cast<const std::int64_t*>(job_delta);
             p.njobs = njobs;
             p.max_dy = max_dy;
             p.pad_x = pad_x;
             return p;
           }),
           py::arg("deltas"), py::arg("nd"), py::arg("cells"), py::arg("ncell"), py::arg("cell_ptr"),
           py::arg("job_delta"), py::arg("njobs"), py::arg("max_dy"), py::arg("pad_x"),
           "Borrowed int64 plan arrays (data pointers on the input's device).");
  py::class_<PatchGeom>(m, "PatchGeom")
      .def(py::init([](std::int64_t kh, std::int64_t kw, std::int64_t sh, std::int64_t sw, std::int64_t dh,
                       std::int64_t dw, std::int64_t pt, std::int64_t pl, std::int64_t ho, std::int64_t wo) {
             return PatchGeom{kh, kw, sh, sw, dh, dw, pt, pl, ho, wo};
           }),
           py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("dh"), py::arg("dw"),
           py::arg("pt"), py::arg("pl"), py::arg("ho"), py::arg("wo"));
  m.def("influence_shift", &influence_shift, py::arg("x"), py::arg("plan"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>(),
        "Shifted auto-moments per (cell, delta) job into out (njobs, C) f64; returns the non-finite count.");
  m.def("gram_shift", &gram_shift, py::arg("x"), py::arg("plan"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>(),
        "Shifted cross-moments per job into out (njobs, C, C) f64 (CPU); returns the non-finite count.");
  m.def("gram_gather",
        [](const View& x, const PatchGeom& g, std::uintptr_t positions, std::int64_t npos, const View& out) {
          return gram_gather(x, g, reinterpret_cast<const std::int64_t*>(positions), npos, out);
        },
        py::arg("x"), py::arg("geom"), py::arg("positions"), py::arg("npos"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>(),
        "Upper triangle of the patch Gram over (image, output index) positions into out (D, D) f64.");
}

}  // namespace fastprune::bind
