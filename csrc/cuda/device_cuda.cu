#include <cuda_runtime.h>

#include "fastprune/device.h"

namespace fastprune {

bool cuda_built() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver"/"no device" error
    return 0;
  }
  return n;
}

int cuda_runtime_version() { return CUDART_VERSION; }

std::string cuda_archs() { return FASTPRUNE_CUDA_ARCHS; }

}  // namespace fastprune
