// Shared arithmetic of the influence kernels (shifted auto-/cross-moments and the patch Gram),
// host and device: the plan arguments, element loads of any input dtype (the CPU kernels; the
// device kernels load through dtype templates, fastprune/influence_plan.h), and the input
// coordinate a consumer tap reads. The shift plan (cells, deltas, jobs) is built in Python
// (fastprune/stats/influence_geometry.py).
#pragma once
#include <cstdint>

#include "fastprune/convert.h"
#include "fastprune/view.h"

namespace fastprune {

// Jobs of the shifted-moment kernels. A cell is a strided rectangle of first-tap positions
// (y0, y1, sy, x0, x1, sx; all inside the image); each of its jobs j in
// [cell_ptr[c], cell_ptr[c+1]) adds sum_p A(p) * A(p + delta[job_delta[j]]) with A = 0 outside
// the image. dy >= 0, |dx| <= pad_x, dy <= max_dy.
struct ShiftPlanArgs {
  const std::int64_t* deltas = nullptr;    // (nd, 2)
  std::int64_t nd = 0;
  const std::int64_t* cells = nullptr;     // (ncell, 6)
  std::int64_t ncell = 0;
  const std::int64_t* cell_ptr = nullptr;  // (ncell + 1)
  const std::int64_t* job_delta = nullptr; // (njobs)
  std::int64_t njobs = 0;
  std::int64_t max_dy = 0;
  std::int64_t pad_x = 0;
};

// Consumer geometry for explicit patch gathering (sampled patch Gram).
struct PatchGeom {
  std::int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0, ho = 1, wo = 1;
};

// Element i (in elements) of a float array of any supported dtype, as fp32.
FP_HD float load_as_float(std::uintptr_t data, DType dt, std::int64_t i) {
  switch (dt) {
    case DType::f16: return Load<f16_t>::get(reinterpret_cast<const f16_t*>(data), i);
    case DType::bf16: return Load<bf16_t>::get(reinterpret_cast<const bf16_t*>(data), i);
    case DType::f64: return static_cast<float>(reinterpret_cast<const double*>(data)[i]);
    default: return reinterpret_cast<const float*>(data)[i];
  }
}

// NaN or +-Inf, by the exponent bits (independent of fast-math settings).
FP_HD bool is_nonfinite(float v) {
#if defined(__CUDA_ARCH__)
  const std::uint32_t u = __float_as_uint(v);
#else
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
#endif
  return (u & 0x7f800000u) == 0x7f800000u;
}

// Input coordinate read by tap `i` for output coordinate `q` (may fall in the zero padding).
FP_HD std::int64_t tap_coord(std::int64_t q, std::int64_t s, std::int64_t i, std::int64_t d,
                             std::int64_t pad) {
  return q * s + i * d - pad;
}

// Patch row r = (c, i, j) in torch unfold's order (c major, then kh, kw) at output position
// (qy, qx) of image n: the input value, or 0 in the padding.
FP_HD float patch_value(const View& x, const PatchGeom& g, std::int64_t n, std::int64_t r,
                        std::int64_t qy, std::int64_t qx) {
  const std::int64_t taps = g.kh * g.kw;
  const std::int64_t c = r / taps, t = r % taps;
  const std::int64_t yy = tap_coord(qy, g.sh, t / g.kw, g.dh, g.pt);
  const std::int64_t xx = tap_coord(qx, g.sw, t % g.kw, g.dw, g.pl);
  if (yy < 0 || yy >= x.shape[2] || xx < 0 || xx >= x.shape[3]) return 0.0f;
  return load_as_float(x.data, x.dtype,
                       n * x.stride[0] + c * x.stride[1] + yy * x.stride[2] + xx * x.stride[3]);
}

}  // namespace fastprune
