// Front-end of the influence kernels (CPU and, when built, CUDA). Checks happen in Python and
// again here (FP_CHECK -> ValueError); all outputs are float64 and are accumulated into (+=).
#pragma once
#include <cstdint>
#include <vector>

#include "fastprune/influence_tile.h"
#include "fastprune/view.h"

namespace fastprune {

// Shifted auto-moments: out (njobs, C) f64 += per-channel job sums. Returns the number of
// non-finite input elements (out is left unchanged when it is not 0).
std::int64_t influence_shift(const View& x, const ShiftPlanArgs& plan, const View& out);
// Shifted cross-moments: out (njobs, C, C) f64 += sum_p A(p) A(p + delta)^T. Returns the
// non-finite count like influence_shift.
std::int64_t gram_shift(const View& x, const ShiftPlanArgs& plan, const View& out);
// Patch Gram over explicit positions (npos, 2) = (image, output index qy*wo + qx): out (D, D)
// f64 += upper triangle (j >= i) of sum U U^T. Returns the non-finite count of the whole x.
std::int64_t gram_gather(const View& x, const PatchGeom& g, const std::int64_t* positions,
                         std::int64_t npos, const View& out);

namespace cpu {
#define FP_INFLUENCE_ISA_DECLS                                                                   \
  int influence_lanes();                                                                         \
  std::int64_t influence_unit(const View& x, const ShiftPlanArgs& p, std::int64_t n,             \
                              std::int64_t r0, std::int64_t r1, std::vector<float>& scratch,     \
                              double* out);                                                      \
  std::int64_t gram_unit(const View& x, const ShiftPlanArgs& p, std::int64_t n, std::int64_t r0, \
                         std::int64_t r1, std::vector<float>& scratch, double* out,              \
                         std::int64_t cpad);                                                     \
  void gram_gather_chunk(const View& x, const PatchGeom& g, const std::int64_t* pos,            \
                         std::int64_t count, std::vector<float>& scratch, double* out,           \
                         std::int64_t dpad);
namespace baseline { FP_INFLUENCE_ISA_DECLS }
namespace avx2 { FP_INFLUENCE_ISA_DECLS }
namespace avx512 { FP_INFLUENCE_ISA_DECLS }
#undef FP_INFLUENCE_ISA_DECLS
}  // namespace cpu

#if defined(FASTPRUNE_WITH_CUDA)
namespace cuda {
std::int64_t influence_shift(const View& x, const ShiftPlanArgs& plan, const View& out);
std::int64_t gram_gather(const View& x, const PatchGeom& g, const std::int64_t* positions,
                         std::int64_t npos, const View& out);
}  // namespace cuda
#endif

}  // namespace fastprune
