// Error checks and the device guard shared by the CUDA back-ends (host code only).
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace fastprune::cuda_util {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("fastprune: CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

// Selects a device for a launch and restores the caller's afterwards.
struct DeviceGuard {
  int prev = 0;
  explicit DeviceGuard(int dev) {
    check(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != dev) check(cudaSetDevice(dev), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(prev); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

}  // namespace fastprune::cuda_util
