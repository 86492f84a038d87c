// Front-end of the device influence back-end (fastprune/influence_plan.h): the plan and its
// table on the host, argument checks, and dispatch to the CUDA launches (csrc/cuda/influence_cuda.cu).
#include <cstdint>
#include <utility>
#include <vector>

#include "fastprune/device.h"
#include "fastprune/influence.h"
#include "fastprune/influence_checks.h"
#include "fastprune/influence_plan.h"

namespace fastprune {

using namespace influence_checks;
namespace dev = influence::dev;

std::pair<dev::Plan, std::vector<std::int64_t>> influence_device_plan(const View& x, const ShiftPlanArgs& host_plan,
                                                                      const dev::Targets& targets) {
  check_input(x);
  check_plan(x, host_plan);
  FP_CHECK(targets.tile_rows >= 0 && targets.tile_cols >= 0 && targets.run >= 0 && targets.images >= 0,
           "tile sizes must be >= 0");
  const dev::Plan p = dev::make_plan(x, host_plan, targets, nullptr);
  std::vector<std::int64_t> table(static_cast<std::size_t>(p.table_len));
  dev::make_plan(x, host_plan, targets, table.data());
  return {p, std::move(table)};
}

namespace {

// x matches the plan's shape and layout.
void check_planned(const View& x, const dev::Plan& p) {
  check_input(x);
  FP_CHECK(x.shape[0] == p.N && x.shape[1] == p.C && x.shape[2] == p.H && x.shape[3] == p.W && x.stride[1] == p.sC &&
               x.stride[2] == p.sH && x.stride[3] == p.sW,
           "input does not match the device plan (shape, or strides after the image axis)");
  FP_CHECK(static_cast<int>(dtype_size(x.dtype)) == p.elem && (p.vec == 1 || (x.data % 16 == 0 && x.stride[0] % p.vec == 0)),
           "input does not match the device plan (dtype or alignment)");
  FP_CHECK(p.merge64, "the probe plan (merge64 = false) is for the emulation only");
}

void check_cuda(const View& x) {
  FP_CHECK(x.device == Device::cuda, "the device back-end reads CUDA input");
  require_cuda();
}

void check_workspace(std::uintptr_t ws, std::int64_t have, std::int64_t need) {
  FP_CHECK(have >= need, "CUDA workspace too small");
  FP_CHECK(need == 0 || (ws != 0 && ws % 16 == 0), "CUDA workspace missing or not 16-byte aligned");
}

dev::GatherPlan gather_plan_of(const View& x, const PatchGeom& g, std::int64_t npos, bool all) {
  return dev::gather_plan(x.shape[1] * g.kh * g.kw, npos, g.ho * g.wo, g.wo, all);
}

}  // namespace

std::int64_t influence_workspace_size(const View& x, const dev::Plan& plan) {
  check_planned(x, plan);
  return 8 * dev::workspace_doubles(plan);
}

std::int64_t influence_shift_device(const View& x, const dev::Plan& plan, std::uintptr_t table,
                                    std::uintptr_t workspace, std::int64_t workspace_bytes, const View& out) {
  check_planned(x, plan);
  check_out(out, x, 2, plan.njobs, x.shape[1], 1);
  check_cuda(x);
  FP_CHECK(table != 0, "device plan table missing");
  check_workspace(workspace, workspace_bytes, 8 * dev::workspace_doubles(plan));
#if defined(FASTPRUNE_WITH_CUDA)
  cuda::influence_shift(x, plan, reinterpret_cast<const std::int64_t*>(table), reinterpret_cast<double*>(workspace), out);
#endif
  return 0;
}

std::int64_t gram_gather_workspace_size(const View& x, const PatchGeom& g, std::int64_t npos, bool all_positions) {
  check_input(x);
  check_geom(g);
  return 8 * gather_plan_of(x, g, npos, all_positions).size;
}

std::int64_t gram_gather_device(const View& x, const PatchGeom& g, std::uintptr_t positions, std::int64_t npos,
                                std::uintptr_t workspace, std::int64_t workspace_bytes, const View& out) {
  check_input(x);
  check_geom(g);
  const std::int64_t D = x.shape[1] * g.kh * g.kw;
  check_out(out, x, 2, D, D, 1);
  check_cuda(x);
  const bool all = positions == 0;
  FP_CHECK(npos >= 0 && (!all || npos == x.shape[0] * g.ho * g.wo), "bad position count");
  const dev::GatherPlan gp = gather_plan_of(x, g, npos, all);
  check_workspace(workspace, workspace_bytes, 8 * gp.size);
#if defined(FASTPRUNE_WITH_CUDA)
  cuda::gram_gather(x, g, gp, reinterpret_cast<const std::int64_t*>(positions), reinterpret_cast<double*>(workspace), out);
#endif
  return 0;
}

}  // namespace fastprune
