// What the CUDA back-end can see at run time. Defined in csrc/cuda/device_cuda.cu when the
// CUDA back-end is built, and in csrc/cpu/device_none.cpp otherwise.
#pragma once
#include <string>

#include "fastprune/view.h"

namespace fastprune {

bool cuda_built();
int cuda_device_count();          // 0 when no driver, no device, or not built
int cuda_runtime_version();       // CUDART_VERSION compiled against, 0 if not built
std::string cuda_archs();         // the arch list compiled, "" if not built

// Before a launch on CUDA input: ValueError unless this build has the CUDA back-end and a device.
inline void require_cuda() {
  FP_CHECK(cuda_built(), "a CUDA tensor was given but this build of fastprune has no CUDA back-end");
  FP_CHECK(cuda_device_count() > 0, "a CUDA tensor was given but no CUDA device is visible");
}

}  // namespace fastprune
