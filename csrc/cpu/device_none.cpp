#include "fastprune/device.h"

#if !defined(FASTPRUNE_WITH_CUDA)
namespace fastprune {
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
int cuda_runtime_version() { return 0; }
std::string cuda_archs() { return ""; }
}  // namespace fastprune
#endif
