// What the CUDA back-end can see at run time. Defined in csrc/cuda/device_cuda.cu when the
// CUDA back-end is built, and in csrc/cpu/device_none.cpp otherwise.
#pragma once
#include <string>

namespace fastprune {

bool cuda_built();
int cuda_device_count();          // 0 when no driver, no device, or not built
int cuda_runtime_version();       // CUDART_VERSION compiled against, 0 if not built
std::string cuda_archs();         // the arch list compiled, "" if not built

}  // namespace fastprune
