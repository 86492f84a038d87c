#include <cstdint>

#include <pybind11/stl.h>

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
        "Upper triangle of the patch Gram over (image, output index) positions into out (D, D) f64 (CPU).");

  namespace dev = influence::dev;
  py::class_<dev::Plan>(m, "InfluenceDevicePlan", "The device back-end's partition (fastprune/influence_plan.h).")
      .def_readonly("planar", &dev::Plan::planar).def_readonly("channels_per_block", &dev::Plan::cg)
      .def_readonly("vec", &dev::Plan::vec)
      .def_readonly("tile_rows", &dev::Plan::tr).def_readonly("tile_cols", &dev::Plan::tc)
      .def_readonly("cells", &dev::Plan::ncell).def_readonly("jobs", &dev::Plan::njobs)
      .def_readonly("units", &dev::Plan::units).def_readonly("workspace_rows", &dev::Plan::rows)
      .def_readonly("channel_groups", &dev::Plan::cgroups).def_readonly("stage_floats", &dev::Plan::stage)
      .def_readonly("table_len", &dev::Plan::table_len);
  py::class_<dev::Targets>(m, "InfluenceTargets")
      .def(py::init<>())
      .def_readwrite("tile_rows", &dev::Targets::tile_rows)
      .def_readwrite("tile_cols", &dev::Targets::tile_cols)
      .def_readwrite("steps_per_unit", &dev::Targets::run)
      .def_readwrite("images_per_tile", &dev::Targets::images)
      .def_readwrite("full3", &dev::Targets::full3)
      .def_readwrite("merge64", &dev::Targets::merge64);
  m.def("influence_device_plan", &influence_device_plan, py::arg("x"), py::arg("host_plan"),
        py::arg("targets") = dev::Targets{},
        "(plan, table): the device partition of x for a shift plan whose arrays are on the host.");
  m.def("influence_workspace_size", &influence_workspace_size, py::arg("x"), py::arg("plan"),
        "Bytes of device workspace influence_shift_device needs for x.");
  m.def("influence_shift_device", &influence_shift_device, py::arg("x"), py::arg("plan"), py::arg("table"),
        py::arg("workspace"), py::arg("workspace_bytes"), py::arg("out"), py::call_guard<py::gil_scoped_release>(),
        "Shifted auto-moments of CUDA input into out (njobs, C) f64 on x's stream; table and workspace on x's device.");
  m.def("gram_gather_workspace_size", &gram_gather_workspace_size, py::arg("x"), py::arg("geom"), py::arg("npos"),
        py::arg("all_positions"), "Bytes of device workspace gram_gather_device needs.");
  m.def("gram_gather_device", &gram_gather_device, py::arg("x"), py::arg("geom"), py::arg("positions"),
        py::arg("npos"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>(),
        "Upper triangle of the patch Gram of CUDA input into out (D, D) f64; positions 0 = every output position.");
  m.def("influence_emulate_device", &influence_emulate_device, py::arg("x"), py::arg("host_plan"), py::arg("out"),
        py::arg("targets") = dev::Targets{}, py::call_guard<py::gil_scoped_release>(),
        "The device shifted auto-moments run on the host for a CPU View (tests).");
  m.def("gram_gather_emulate_device", &gram_gather_emulate_device, py::arg("x"), py::arg("geom"),
        py::arg("positions"), py::arg("npos"), py::arg("out"), py::arg("target_blocks") = dev::kGramBlocks,
        py::call_guard<py::gil_scoped_release>(),
        "The device patch Gram run on the host for a CPU View (tests); positions 0 = every output position.");
}

}  // namespace fastprune::bind
