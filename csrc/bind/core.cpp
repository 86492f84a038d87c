#include <omp.h>
#include <pybind11/stl.h>

#include "bind.h"
#include "fastprune/device.h"
#include "fastprune/isa.h"
#include "fastprune/scratch.h"
#include "fastprune/view.h"

namespace py = pybind11;

namespace fastprune::bind {

void core(py::module_& m) {
  py::enum_<DType>(m, "DType")
      .value("f32", DType::f32).value("f16", DType::f16)
      .value("bf16", DType::bf16).value("f64", DType::f64);
  py::enum_<Device>(m, "Device").value("cpu", Device::cpu).value("cuda", Device::cuda);

  py::class_<View>(m, "View")
      .def(py::init([](std::uintptr_t data, DType dtype, const std::vector<std::int64_t>& shape,
                       const std::vector<std::int64_t>& stride, Device device, int device_index,
                       std::uintptr_t stream) {
             FP_CHECK(shape.size() == stride.size(), "shape and strides differ in length");
             FP_CHECK(shape.size() >= 1 && shape.size() <= static_cast<std::size_t>(kMaxDims),
                      "arrays of 1 to 4 dimensions only");
             View v;
             v.data = data; v.dtype = dtype; v.ndim = static_cast<int>(shape.size());
             for (int i = 0; i < v.ndim; ++i) { v.shape[i] = shape[i]; v.stride[i] = stride[i]; }
             v.device = device; v.device_index = device_index; v.stream = stream;
             return v;
           }),
           py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("stride"),
           py::arg("device") = Device::cpu, py::arg("device_index") = 0, py::arg("stream") = 0)
      .def_property_readonly("shape", [](const View& v) {
        return std::vector<std::int64_t>(v.shape, v.shape + v.ndim);
      })
      .def_property_readonly("stride", [](const View& v) {
        return std::vector<std::int64_t>(v.stride, v.stride + v.ndim);
      });

  m.def("cpu_isa", [] { return std::string(isa_name(active_isa())); },
        "The CPU instruction set the kernels use now.");
  m.def("set_cpu_isa", &set_active_isa, py::arg("name"),
        "Force a CPU ISA variant (baseline, avx2, avx512, auto).");
  m.def("best_cpu_isa", [] { return std::string(isa_name(best_supported_isa())); });
  m.def("compiled_cpu_isas", &compiled_isas);
  m.def("cuda_built", &cuda_built);
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_runtime_version", &cuda_runtime_version);
  m.def("cuda_archs", &cuda_archs);
  m.def("scratch_poison", &scratch::set_poison, py::arg("on"),
        "Tests: fill every scratch block the CPU kernels take with NaN bytes (fastprune/scratch.h).");
  m.def("scratch_held", &scratch::held, "Bytes of scratch the calling thread keeps between calls.");
  m.def("openmp_max_threads", [] { return omp_get_max_threads(); });
  m.def("compiler", [] { return std::string(__VERSION__); });
  m.def("version", [] { return std::string(FASTPRUNE_VERSION); });
}

}  // namespace fastprune::bind
