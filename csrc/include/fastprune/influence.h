// Front-end of the influence kernels (CPU, and the device back-end). Checks happen in Python and
// again here (FP_CHECK -> ValueError); all outputs are float64 and are accumulated into (+=).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "fastprune/influence_plan.h"
#include "fastprune/influence_tile.h"
#include "fastprune/scratch.h"
#include "fastprune/view.h"

namespace fastprune {

// CPU kernels (CPU input, plan arrays on the host).
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
                              std::int64_t r0, std::int64_t r1, scratch::Vector<float>& scratch,     \
                              double* out);                                                      \
  std::int64_t gram_unit(const View& x, const ShiftPlanArgs& p, std::int64_t n, std::int64_t r0, \
                         std::int64_t r1, scratch::Vector<float>& scratch, double* out,              \
                         std::int64_t cpad);                                                     \
  void gram_gather_chunk(const View& x, const PatchGeom& g, const std::int64_t* pos,            \
                         std::int64_t count, scratch::Vector<float>& scratch, double* out,           \
                         std::int64_t dpad);
namespace baseline { FP_INFLUENCE_ISA_DECLS }
namespace avx2 { FP_INFLUENCE_ISA_DECLS }
namespace avx512 { FP_INFLUENCE_ISA_DECLS }
#undef FP_INFLUENCE_ISA_DECLS
}  // namespace cpu

// The device back-end (fastprune/influence_plan.h). The plan and its table are built on the host
// from the host copy of the shift plan; the caller moves the table to the input's device and
// provides the workspace (torch's caching allocator); launches go on x's stream.
std::pair<influence::dev::Plan, std::vector<std::int64_t>> influence_device_plan(
    const View& x, const ShiftPlanArgs& host_plan, const influence::dev::Targets& targets);
// Shifted auto-moments of CUDA input x: out (njobs, C) f64 += per-job sums; table: the plan's
// table on x's device; workspace: at least influence_workspace_size bytes. Returns 0 (non-finite
// input is counted by the caller).
std::int64_t influence_shift_device(const View& x, const influence::dev::Plan& plan, std::uintptr_t table,
                                    std::uintptr_t workspace, std::int64_t workspace_bytes, const View& out);
std::int64_t influence_workspace_size(const View& x, const influence::dev::Plan& plan);
// Patch Gram of CUDA input x over positions (npos, 2) on x's device, or over every output position
// in order when positions is 0 (npos = N * ho * wo): out (D, D) f64 += upper triangle.
std::int64_t gram_gather_device(const View& x, const PatchGeom& g, std::uintptr_t positions, std::int64_t npos,
                                std::uintptr_t workspace, std::int64_t workspace_bytes, const View& out);
std::int64_t gram_gather_workspace_size(const View& x, const PatchGeom& g, std::int64_t npos, bool all_positions);

// The device algorithms run on the host for CPU input (tests): the same plan, staging, lane
// sums, trees and merges. Positions as for gram_gather_device (0: all, in order).
void influence_emulate_device(const View& x, const ShiftPlanArgs& host_plan, const View& out,
                              const influence::dev::Targets& targets);
void gram_gather_emulate_device(const View& x, const PatchGeom& g, std::uintptr_t positions, std::int64_t npos,
                                const View& out, std::int64_t target_blocks);

#if defined(FASTPRUNE_WITH_CUDA)
namespace cuda {
void influence_shift(const View& x, const influence::dev::Plan& plan, const std::int64_t* table, double* ws,
                     const View& out);
void gram_gather(const View& x, const PatchGeom& g, const influence::dev::GatherPlan& gp,
                 const std::int64_t* positions, double* ws, const View& out);
}  // namespace cuda
#endif

}  // namespace fastprune
