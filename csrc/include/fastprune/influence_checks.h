// Argument checks of the influence front-ends (csrc/cpu/influence.cpp, csrc/influence_device.cpp):
// FP_CHECK -> ValueError. check_plan reads the shift plan, so its arrays must be on the host.
#pragma once
#include <cstdint>

#include "fastprune/influence_tile.h"
#include "fastprune/view.h"

namespace fastprune::influence_checks {

inline void check_input(const View& x) {
  FP_CHECK(x.ndim == 4, "input must have shape (N, C, H, W)");
  for (int i = 0; i < 4; ++i) FP_CHECK(x.shape[i] > 0, "input has an empty dimension");
}

inline void check_out(const View& out, const View& x, int ndim, std::int64_t d0, std::int64_t d1,
                      std::int64_t d2) {
  FP_CHECK(out.dtype == DType::f64, "output accumulator must be float64");
  FP_CHECK(out.device == x.device, "output accumulator must be on the input's device");
  FP_CHECK(out.ndim == ndim, "output accumulator has the wrong number of dimensions");
  const std::int64_t want[3] = {d0, d1, d2};
  std::int64_t expect_stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    FP_CHECK(out.shape[i] == want[i], "output accumulator has the wrong shape");
    FP_CHECK(out.stride[i] == expect_stride || out.shape[i] == 1, "output accumulator must be contiguous");
    expect_stride *= out.shape[i];
  }
}

inline void check_plan(const View& x, const ShiftPlanArgs& p) {
  FP_CHECK(p.max_dy >= 0 && p.pad_x >= 0, "bad shift plan");
  for (std::int64_t c = 0; c < p.ncell; ++c) {
    const std::int64_t* cell = p.cells + 6 * c;
    FP_CHECK(cell[0] >= 0 && cell[1] <= x.shape[2] && cell[0] < cell[1] && cell[2] >= 1 &&
                 cell[3] >= 0 && cell[4] <= x.shape[3] && cell[3] < cell[4] && cell[5] >= 1,
             "shift plan does not match the input size");
    FP_CHECK(p.cell_ptr[c] <= p.cell_ptr[c + 1], "bad shift plan");
  }
  FP_CHECK(p.cell_ptr[p.ncell] == p.njobs, "bad shift plan");
  for (std::int64_t j = 0; j < p.njobs; ++j) {
    const std::int64_t d = p.job_delta[j];
    FP_CHECK(d >= 0 && d < p.nd, "bad shift plan");
    FP_CHECK(p.deltas[2 * d] >= 0 && p.deltas[2 * d] <= p.max_dy &&
                 p.deltas[2 * d + 1] >= -p.pad_x && p.deltas[2 * d + 1] <= p.pad_x,
             "bad shift plan");
  }
}

inline void check_geom(const PatchGeom& g) {
  FP_CHECK(g.ho >= 1 && g.wo >= 1 && g.kh >= 1 && g.kw >= 1 && g.sh >= 1 && g.sw >= 1 && g.dh >= 1 && g.dw >= 1,
           "bad patch geometry");
}

}  // namespace fastprune::influence_checks
