#include "bind.h"
#include "fastprune/moments.h"
#include "fastprune/moments_plan.h"

namespace fastprune::bind {

void moments(pybind11::module_& m) {
  namespace py = pybind11;
  using fastprune::moments::dev::Plan;
  m.def("moments_out_size", &fastprune::moments::out_size, py::arg("channels"), py::arg("covariance"),
        "Length of the float64 buffer moments_update writes.");
  m.def("moments_workspace_size", &fastprune::moments::workspace_size, py::arg("x"), py::arg("covariance"),
        "Bytes of device workspace moments_update needs for x (0 on the CPU).");
  m.def("moments_update", &fastprune::moments::update, py::arg("x"), py::arg("out"), py::arg("out_len"),
        py::arg("covariance"), py::arg("workspace") = 0, py::arg("workspace_bytes") = 0,
        py::call_guard<py::gil_scoped_release>(),
        "Moments of one batch (View) written into a float64 buffer (pointer) on x's device.");
  m.def("moments_emulate_device", &fastprune::moments::emulate_device, py::arg("x"), py::arg("out"),
        py::arg("out_len"), py::arg("covariance"),
        py::arg("stat_blocks") = fastprune::moments::dev::kStatBlocks,
        py::arg("gram_blocks") = fastprune::moments::dev::kGramBlocks, py::call_guard<py::gil_scoped_release>(),
        "The CUDA back-end's algorithm run on the host for a CPU View (tests).");
  py::class_<Plan>(m, "MomentsPlan", "The CUDA back-end's partition of a batch (fastprune/moments_plan.h).")
      .def_readonly("images", &Plan::I).def_readonly("channels", &Plan::C).def_readonly("pixels", &Plan::P)
      .def_readonly("vec", &Plan::vec).def_readonly("tile", &Plan::tile)
      .def_readonly("tiles_per_image", &Plan::tpi).def_readonly("tiles_per_split", &Plan::tps)
      .def_readonly("splits_per_image", &Plan::spi).def_readonly("images_per_split", &Plan::ips)
      .def_readonly("splits", &Plan::splits).def_readonly("channel_groups", &Plan::cgroups)
      .def_readonly("block_pairs", &Plan::pairs).def_readonly("splits_per_group", &Plan::R)
      .def_readonly("groups", &Plan::groups).def_readonly("records", &Plan::records)
      .def_readonly("workspace_doubles", &Plan::size);
  py::class_<fastprune::moments::dev::Targets>(m, "MomentsTargets")
      .def(py::init<>())
      .def_readwrite("stat_blocks", &fastprune::moments::dev::Targets::stat_blocks)
      .def_readwrite("gram_blocks", &fastprune::moments::dev::Targets::gram_blocks);
  m.def("moments_device_plan", &fastprune::moments::dev::plan_of, py::arg("x"), py::arg("covariance"),
        py::arg("targets") = fastprune::moments::dev::Targets{});
}

}  // namespace fastprune::bind
