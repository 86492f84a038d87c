// The CUDA influence back-end run on the host, step for step (fastprune/influence_plan.h): the
// same plan and table, tiles, staged values, lane-to-position assignment, fp32 FMAs in each lane's
// order, lane trees, fp64 workspace partials and second-pass order; for the patch Gram the same
// block pairs, position groups, chunks, per-entry FMA order and fp64 flushes. Every addition the
// kernels make is made here in the same order, so results match them bitwise. For tests: a CPU
// machine checks the device's partition and numerics against float64 with it.
#include <algorithm>
#include <vector>

#include "fastprune/influence.h"
#include "fastprune/influence_checks.h"
#include "fastprune/influence_plan.h"

namespace fastprune {
namespace {

using namespace influence::dev;
using namespace influence_checks;

template <DType D>
void shift(const View& x, const Plan& p, const std::int64_t* table, double* out) {
  std::vector<double> ws(static_cast<std::size_t>(workspace_doubles(p)));
  std::vector<float> stage(static_cast<std::size_t>(p.stage));
  std::vector<float> acc(static_cast<std::size_t>(kThreads * kJobs));
  float v[kThreads];
  const int lanes = kThreads / p.cg;
  for (std::int64_t grp = 0; grp < p.cgroups; ++grp)
    for (std::int64_t u = 0; u < p.units; ++u) {  // one block
      const Unit un = unit_of(p, table, u);
      for (std::int64_t eb = un.cell.e0; eb < un.cell.e1; eb += kJobs) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::int64_t st = un.s0; st < un.s1; ++st) {
          const Tile t = tile_at(p, un.cell, st);
          for (int ch = 0; ch < p.cg; ++ch) {
            const std::int64_t c = grp * p.cg + ch;
            const bool on = c < p.C;
            const std::int64_t base = on ? plane(p, x.stride[0], t.n0, c) : 0;
            float* s = stage.data() + ch * t.ni * t.sr * t.sc;
            for (int lane = 0; lane < lanes; ++lane)
              stage_tile<D>(p, t, x.data, x.stride[0], base, on, lane, [&](int rr, int col, float v) { s[rr * t.sc + col] = v; });
          }
          const Chunk k = job_chunk(table, p, t, eb);
          for (int tid = 0; tid < kThreads; ++tid) {
            const int ch = tid & (p.cg - 1);
            lane_sums(p, t, tid >> p.cg_log2, lanes, stage.data() + ch * t.ni * t.sr * t.sc, k, acc.data() + tid * kJobs);
          }
        }
        for (int g = 0; g < chunk_size(un.cell, eb); ++g) {
          for (int tid = 0; tid < kThreads; ++tid) v[tid] = acc[static_cast<std::size_t>(tid * kJobs + g)];
          const std::int64_t job = entry(table, p, eb + g)[2];
          for (int ch = 0; ch < p.cg; ++ch) {
            const std::int64_t c = grp * p.cg + ch;
            if (c < p.C)
              ws[static_cast<std::size_t>(ws_row(p, table, job, un.l) * p.C + c)] = static_cast<double>(host_lane_tree(p, v, ch));
          }
        }
      }
    }
  for (std::int64_t j = 0; j < p.njobs; ++j)
    for (std::int64_t c = 0; c < p.C; ++c) out[j * p.C + c] += host_job_total(p, table, ws.data(), j, c);
}

template <DType D>
void gather(const View& x, const PatchGeom& g, const GatherPlan& gp, const std::int64_t* pos, double* out) {
  std::vector<double> ws(static_cast<std::size_t>(gp.size));
  std::vector<float> sa(kGChunk * kGBlock), sb(sa.size());
  std::vector<float> acc(kGBlock * kGBlock);
  std::vector<double> acc64(acc.size());
  std::int64_t rc[2][kGBlock], ry[2][kGBlock], rx[2][kGBlock];
  bool ron[2][kGBlock];
  std::int64_t pn[kGChunk], py[kGChunk], px[kGChunk];
  bool pon[kGChunk];
  for (std::int64_t grp = 0; grp < gp.groups; ++grp)
    for (std::int64_t pair = 0; pair < gp.pairs; ++pair) {  // one block
      std::int64_t bi, bj;
      block_pair(gp.nblk, pair, bi, bj);
      for (int side = 0; side < 2; ++side)
        for (int r = 0; r < kGBlock; ++r) {
          const std::int64_t row = (side ? bj : bi) * kGBlock + r;
          std::int64_t c = 0;
          ry[side][r] = rx[side][r] = 0;
          ron[side][r] = row < gp.D;
          if (row < gp.D) patch_row(g, row, c, ry[side][r], rx[side][r]);
          rc[side][r] = c * x.stride[1];
        }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(acc64.begin(), acc64.end(), 0.0);
      std::int64_t c0, c1;
      group_chunks(gp, grp, c0, c1);
      for (std::int64_t ck = c0; ck < c1; ++ck) {
        for (int k = 0; k < kGChunk; ++k) {
          const std::int64_t kk = ck * kGChunk + k;
          std::int64_t n = 0;
          py[k] = px[k] = 0;
          pon[k] = kk < gp.npos;
          if (pon[k]) position(gp, g, pos, kk, n, py[k], px[k]);
          pn[k] = n * x.stride[0];
        }
        for (int k = 0; k < kGChunk; ++k)
          for (int r = 0; r < kGBlock; ++r) {
            sa[k * kGBlock + r] = patch_at<D>(x, pn[k], rc[0][r], py[k] + ry[0][r], px[k] + rx[0][r], pon[k] && ron[0][r]);
            sb[k * kGBlock + r] = patch_at<D>(x, pn[k], rc[1][r], py[k] + ry[1][r], px[k] + rx[1][r], pon[k] && ron[1][r]);
          }
        for (int a = 0; a < kGBlock; ++a)
          for (int b = 0; b < kGBlock; ++b) {
            float s = acc[a * kGBlock + b];
            for (int k = 0; k < kGChunk; ++k) s = fmaf(sa[k * kGBlock + a], sb[k * kGBlock + b], s);
            acc[a * kGBlock + b] = s;
          }
        if (flush_after(ck - c0, c1 - c0))
          for (std::size_t e = 0; e < acc.size(); ++e) {
            acc64[e] += static_cast<double>(acc[e]);
            acc[e] = 0.0f;
          }
      }
      std::copy(acc64.begin(), acc64.end(), ws.begin() + (grp * gp.pairs + pair) * kGBlock * kGBlock);
    }
  for (std::int64_t pair = 0; pair < gp.pairs; ++pair) {
    std::int64_t bi, bj;
    block_pair(gp.nblk, pair, bi, bj);
    for (int r = 0; r < kGBlock; ++r)
      for (int cc = 0; cc < kGBlock; ++cc) {
        const std::int64_t i = bi * kGBlock + r, j = bj * kGBlock + cc;
        if (i < gp.D && j < gp.D && j >= i) out[i * gp.D + j] += gram_total(gp, ws.data(), pair, r, cc);
      }
  }
}

}  // namespace

void influence_emulate_device(const View& x, const ShiftPlanArgs& host_plan, const View& out, const Targets& targets) {
  check_input(x);
  FP_CHECK(x.device == Device::cpu, "the device emulation reads CPU input");
  check_out(out, x, 2, host_plan.njobs, x.shape[1], 1);
  const auto [p, table] = influence_device_plan(x, host_plan, targets);
  double* o = reinterpret_cast<double*>(out.data);
  switch (x.dtype) {
    case DType::f32: shift<DType::f32>(x, p, table.data(), o); break;
    case DType::f16: shift<DType::f16>(x, p, table.data(), o); break;
    case DType::bf16: shift<DType::bf16>(x, p, table.data(), o); break;
    case DType::f64: shift<DType::f64>(x, p, table.data(), o); break;
  }
}

void gram_gather_emulate_device(const View& x, const PatchGeom& g, std::uintptr_t positions, std::int64_t npos,
                                const View& out, std::int64_t target_blocks) {
  check_input(x);
  check_geom(g);
  FP_CHECK(x.device == Device::cpu, "the device emulation reads CPU input");
  const std::int64_t D = x.shape[1] * g.kh * g.kw;
  check_out(out, x, 2, D, D, 1);
  FP_CHECK(target_blocks >= 1, "block target must be positive");
  const bool all = positions == 0;
  FP_CHECK(npos >= 0 && (!all || npos == x.shape[0] * g.ho * g.wo), "bad position count");
  const auto* pos = reinterpret_cast<const std::int64_t*>(positions);
  for (std::int64_t k = 0; k < (all ? 0 : npos); ++k)
    FP_CHECK(pos[2 * k] >= 0 && pos[2 * k] < x.shape[0] && pos[2 * k + 1] >= 0 && pos[2 * k + 1] < g.ho * g.wo,
             "sampled position out of range");
  const GatherPlan gp = gather_plan(D, npos, g.ho * g.wo, g.wo, all, target_blocks);
  double* o = reinterpret_cast<double*>(out.data);
  switch (x.dtype) {
    case DType::f32: gather<DType::f32>(x, g, gp, pos, o); break;
    case DType::f16: gather<DType::f16>(x, g, gp, pos, o); break;
    case DType::bf16: gather<DType::bf16>(x, g, gp, pos, o); break;
    case DType::f64: gather<DType::f64>(x, g, gp, pos, o); break;
  }
}

}  // namespace fastprune
