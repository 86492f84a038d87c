// Front-end of the moments engine: argument checks at the boundary (FP_CHECK -> ValueError),
// layout normalisation to images x channels x pixels, dispatch to the CPU or CUDA back-end.
#include "fastprune/moments.h"

#include "fastprune/device.h"

#include <stdexcept>
#include <string>

#include "fastprune/moments_plan.h"
#include "fastprune/moments_tile.h"

namespace fastprune::moments {
namespace {

std::string shape_str(const View& x) {
  std::string s = "(";
  for (int i = 0; i < x.ndim; ++i) s += (i ? ", " : "") + std::to_string(x.shape[i]);
  return s + (x.ndim == 1 ? ",)" : ")");
}

}  // namespace

std::int64_t out_size(std::int64_t channels, bool cov) { return OutLayout{channels, cov}.size(); }

Batch make_batch(const View& x, bool cov) {
  FP_CHECK(x.ndim == 2 || x.ndim == 4,
           "moments expect (N, C, H, W) or (N, C) input, got shape " + shape_str(x));
  Batch b;
  b.data = x.data;
  b.dtype = x.dtype;
  b.cov = cov;
  b.device = x.device;
  b.device_index = x.device_index;
  b.stream = x.stream;
  b.C = x.shape[1];
  FP_CHECK(b.C >= 1, "moments need at least one channel, got shape " + shape_str(x));
  if (x.ndim == 4) {
    const std::int64_t H = x.shape[2], Wd = x.shape[3];
    b.I = x.shape[0];
    b.P = H * Wd;
    b.sI = x.stride[0];
    b.sC = x.stride[1];
    b.per_image = true;
    const bool pix_contig = (Wd == 1 || x.stride[3] == 1) && (H == 1 || x.stride[2] == Wd);
    const std::int64_t sw = Wd == 1 ? (H == 1 ? b.C : x.stride[2]) : x.stride[3];
    const bool interleaved = (b.C == 1 || b.sC == 1) && (H == 1 || x.stride[2] == Wd * sw);
    if (pix_contig) {
      b.planar = true;
      b.sP = 1;
    } else {
      FP_CHECK(interleaved, "moments need NCHW-contiguous or channels_last input, got strides that are "
                            "neither (the Python API copies such input)");
      b.planar = false;
      b.sP = sw;
      b.sC = 1;
    }
    if (b.I == 1) b.sI = 0;
  } else {
    const std::int64_t N = x.shape[0];
    b.I = 1;
    b.P = N;
    b.sI = 0;
    if (N == 1 || x.stride[0] == 1) {
      b.planar = true;
      b.sP = 1;
      b.sC = x.stride[1];
    } else {
      FP_CHECK(b.C == 1 || x.stride[1] == 1,
               "moments need (N, C) input with contiguous rows or columns (the Python API copies "
               "other strides)");
      b.planar = false;
      b.sP = x.stride[0];
      b.sC = 1;
    }
  }
  return b;
}

dev::Plan dev::plan_of(const View& x, bool cov, const Targets& tg) {
  return make_plan(make_batch(x, cov), static_cast<std::int64_t>(dtype_size(x.dtype)), tg);
}

std::int64_t workspace_size(const View& x, bool cov) {
  return x.device == Device::cpu ? 0 : 8 * dev::plan_of(x, cov).size;
}

void update(const View& x, std::uintptr_t out, std::int64_t out_len, bool cov, std::uintptr_t workspace,
            std::int64_t workspace_bytes) {
  Batch b = make_batch(x, cov);
  FP_CHECK(out_len == out_size(b.C, cov), "moments output buffer has the wrong size");
  FP_CHECK(out != 0, "moments output buffer is null");
  if (b.device == Device::cpu) {
    cpu::run(b, reinterpret_cast<double*>(out));
    return;
  }
  require_cuda();
#if defined(FASTPRUNE_WITH_CUDA)
  cuda::run(b, reinterpret_cast<double*>(out), reinterpret_cast<double*>(workspace), workspace_bytes);
#else
  (void)workspace;
  (void)workspace_bytes;
#endif
}

}  // namespace fastprune::moments
