// A borrowed, non-owning view of an array that crossed the Python boundary.
// Python turns any DLPack producer (torch, numpy, cupy) into a torch tensor and hands
// over pointer, dtype, shape, strides (in elements), device and stream: the C++ core
// never links libtorch, so one build serves every torch version.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastprune {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };
enum class Device : int { cpu = 1, cuda = 2 };  // DLPack's kDLCPU / kDLCUDA codes

constexpr int kMaxDims = 4;

struct View {
  std::uintptr_t data = 0;
  DType dtype = DType::f32;
  int ndim = 0;
  std::int64_t shape[kMaxDims] = {0, 0, 0, 0};
  std::int64_t stride[kMaxDims] = {0, 0, 0, 0};  // in elements, as DLPack counts them
  Device device = Device::cpu;
  int device_index = 0;
  std::uintptr_t stream = 0;  // cudaStream_t of the caller; 0 = legacy default stream

  template <class T>
  const T* ptr() const { return reinterpret_cast<const T*>(data); }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::f64: return 8;
  }
  return 0;
}

// Argument checks at the boundary (pytorch_scatter style): raise std::invalid_argument,
// which pybind11 turns into ValueError.
#define FP_CHECK(cond, msg)                                               \
  do {                                                                    \
    if (!(cond)) throw std::invalid_argument(std::string("fastprune: ") + (msg)); \
  } while (0)

}  // namespace fastprune
