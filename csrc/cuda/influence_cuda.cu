// CUDA back-end of the influence kernels: the algorithm of fastprune/influence_plan.h (partition,
// staging, lane sums, trees, merges; run on the host by csrc/cpu/influence_emulate.cpp), on the
// caller's stream, in a workspace the caller allocates (Python: torch's caching allocator).
// Nothing here allocates, synchronises the device or divides per element; every output element is
// owned by one thread and reduced in a fixed order (deterministic, no atomics). Non-finite inputs
// are counted by the Python layer.
//
// Kernels (blocks of kThreads = 256), templated on the input dtype:
//  shift_kernel   grid (units, channel groups). Per tile step of the unit (a tile of one image
//                 or of several, for small maps), stages it (plus its max_dy / pad_x halo) for
//                 cg channels in shared memory (16-byte loads where rows are aligned), then kJobs
//                 deltas at a time over groups of kV positions: kV shared loads of v(p) serve all
//                 deltas, a delta's kV partners are loaded (or, sliding along dx, one of them; a
//                 whole 3 x 3 window loads its three partner rows once), fp32 FMAs; per job a
//                 warp sums the 8 warps' values in shared memory and an xor butterfly the lanes;
//                 the unit's partial goes to the workspace.
//  shift_finish   grid (jobs, channel groups of 32): kFinishLanes lanes per (job, channel), each
//                 every kFinishLanes-th unit in order in fp64, then a halving tree; added into out.
//  gather_kernel  grid (upper-triangle 64 x 64 block pairs, position groups). Chunks of 32
//                 positions: both patch panels gathered into shared memory, 4 x 4 fp32 entries per
//                 thread (float4 shared loads), flushed into fp64 every 8 chunks.
//  gather_finish  one thread per upper entry: the groups in order, fp64, added into out.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "fastprune/influence.h"
#include "fastprune/influence_plan.h"

namespace fastprune::cuda {
namespace {

using namespace fastprune::influence::dev;
using cuda_util::check;
using cuda_util::DeviceGuard;

// ---------------------------------------------------------------- shifted auto-moments
// static shared memory of shift_kernel + the largest staged tile: within the 48 KiB a block may
// use without opting in
static_assert((kJobs * kThreads + kJobs + 1) * 4 + kStageFloats * 4 <= 48 * 1024, "shift_kernel shared memory");

template <DType D>
__global__ void __launch_bounds__(kThreads, 3) shift_kernel(Plan p, std::uintptr_t data, std::int64_t sN,
                                                         const std::int64_t* table, double* ws) {
  extern __shared__ float stage[];  // cg x sr x sc
  __shared__ float red[kJobs][kThreads];
  __shared__ int chunk_off[kJobs];
  __shared__ unsigned chunk_slide;
  const Unit un = unit_of(p, table, blockIdx.x);
  const int tid = threadIdx.x, ch = tid & (p.cg - 1), lane = tid >> p.cg_log2, lanes = kThreads >> p.cg_log2;
  const int w = tid / kWarp, wl = tid % kWarp;
  const std::int64_t grp = blockIdx.y, c = grp * p.cg + ch;
  const bool on = c < p.C;
  for (std::int64_t eb = un.cell.e0; eb < un.cell.e1; eb += kJobs) {
    const int kn = chunk_size(un.cell, eb);
    float acc[kJobs];
#pragma unroll
    for (int g = 0; g < kJobs; ++g) acc[g] = 0.0f;
    for (std::int64_t st = un.s0; st < un.s1; ++st) {
      const Tile t = tile_at(p, un.cell, st);
      float* s = stage + ch * t.ni * t.sr * t.sc;
      const std::int64_t base = on ? plane(p, sN, t.n0, c) : 0;
      __syncthreads();  // the previous step's stage and chunk are read
      stage_tile<D>(p, t, data, sN, base, on, lane, [&](int rr, int col, float v) { s[rr * t.sc + col] = v; });
      if (tid < kJobs) {  // job_chunk, one thread per entry
        int off = 0;
        bool slide = false;
        if (tid < kn) chunk_entry(table, p, t, eb, tid, off, slide);
        chunk_off[tid] = off;
        const unsigned bits = __ballot_sync(0xffffu, slide);
        if (tid == 0) chunk_slide = bits;
      }
      __syncthreads();
      Chunk k;
      k.n = kn;
      k.full3 = un.cell.full3;
#pragma unroll
      for (int g = 0; g < kJobs; ++g) k.off[g] = chunk_off[g];
      k.slide = chunk_slide;
      lane_sums(p, t, lane, lanes, s, k, acc);
    }
#pragma unroll
    for (int g = 0; g < kJobs; ++g) red[g][tid] = acc[g];
    __syncthreads();
    // warp w reduces jobs w and w + kWarps: host_lane_tree's additions
    for (int g = w; g < kn; g += kWarps) {
      float v = red[g][wl];
#pragma unroll
      for (int u = 1; u < kWarps; ++u) v += red[g][u * kWarp + wl];
#pragma unroll
      for (int o = kWarp / 2; o > 0; o /= 2) {  // every lane shuffles; offsets below cg add nothing
        const float x = __shfl_xor_sync(0xffffffffu, v, o);
        if (o >= p.cg) v += x;
      }
      const std::int64_t cw = grp * p.cg + wl;
      if (wl < p.cg && cw < p.C) ws[ws_row(p, table, entry(table, p, eb + g)[2], un.l) * p.C + cw] = static_cast<double>(v);
    }
  }
}

// grid (jobs, channel groups of 32); block: 32 channels (coalesced) x kFinishLanes lanes.
__global__ void __launch_bounds__(kThreads) shift_finish(Plan p, const std::int64_t* table, const double* ws,
                                                         double* out) {
  __shared__ double red[kFinishLanes][kWarp];
  const int x = threadIdx.x % kWarp, y = threadIdx.x / kWarp;
  const std::int64_t j = blockIdx.x, c = static_cast<std::int64_t>(blockIdx.y) * kWarp + x;
  red[y][x] = c < p.C ? job_lane(p, table, ws, j, c, y) : 0.0;
  __syncthreads();
#pragma unroll
  for (int o = kFinishLanes / 2; o > 0; o /= 2) {
    if (y < o) red[y][x] = lane_merge(p, red[y][x], red[y + o][x]);
    __syncthreads();
  }
  if (y == 0 && c < p.C) out[j * p.C + c] += red[0][x];
}

// ---------------------------------------------------------------- patch Gram (gather)
constexpr int kLd = kGBlock + 4;  // staged panel row: 16-byte aligned float4 reads

template <DType D>
__global__ void __launch_bounds__(kThreads) gather_kernel(View x, PatchGeom g, GatherPlan gp, const std::int64_t* pos,
                                                          double* ws) {
  __shared__ __align__(16) float sa[kGChunk][kLd];
  __shared__ __align__(16) float sb[kGChunk][kLd];
  __shared__ std::int64_t row_c[2][kGBlock];  // channel offset of each panel row
  __shared__ int row_y[2][kGBlock], row_x[2][kGBlock];
  __shared__ bool row_on[2][kGBlock];
  __shared__ std::int64_t pos_n[kGChunk];     // image offset of each chunk position
  __shared__ int pos_y[kGChunk], pos_x[kGChunk];
  __shared__ bool pos_on[kGChunk];
  const std::int64_t pair = blockIdx.x, grp = blockIdx.y;
  std::int64_t bi, bj;
  block_pair(gp.nblk, pair, bi, bj);
  const bool diag = bi == bj;
  const int tid = threadIdx.x;
  if (tid < 2 * kGBlock) {
    const int side = tid / kGBlock, r = tid % kGBlock;
    const std::int64_t row = (side ? bj : bi) * kGBlock + r;
    std::int64_t c = 0, dy = 0, dx = 0;
    row_on[side][r] = row < gp.D;
    if (row < gp.D) patch_row(g, row, c, dy, dx);
    row_c[side][r] = c * x.stride[1];
    row_y[side][r] = static_cast<int>(dy);
    row_x[side][r] = static_cast<int>(dx);
  }
  const int ti = tid / (kGBlock / kGTile), tj = tid % (kGBlock / kGTile);
  float acc[kGTile][kGTile];
  double acc64[kGTile][kGTile];
#pragma unroll
  for (int a = 0; a < kGTile; ++a)
#pragma unroll
    for (int b = 0; b < kGTile; ++b) { acc[a][b] = 0.0f; acc64[a][b] = 0.0; }
  const float(*pb)[kLd] = diag ? sa : sb;
  std::int64_t c0, c1;
  group_chunks(gp, grp, c0, c1);
  for (std::int64_t ck = c0; ck < c1; ++ck) {
    __syncthreads();  // the previous chunk's panels are read (and the row tables are set)
    if (tid < kGChunk) {
      const std::int64_t k = ck * kGChunk + tid;
      std::int64_t n = 0, y = 0, xx = 0;
      pos_on[tid] = k < gp.npos;
      if (k < gp.npos) position(gp, g, pos, k, n, y, xx);
      pos_n[tid] = n * x.stride[0];
      pos_y[tid] = static_cast<int>(y);
      pos_x[tid] = static_cast<int>(xx);
    }
    __syncthreads();
    // consecutive threads take consecutive positions of one panel row (coalesced along x)
#pragma unroll 4
    for (int it = tid; it < kGChunk * kGBlock; it += kThreads) {
      const int k = it % kGChunk, r = it / kGChunk;
      sa[k][r] = patch_at<D>(x, pos_n[k], row_c[0][r], pos_y[k] + row_y[0][r], pos_x[k] + row_x[0][r],
                             pos_on[k] && row_on[0][r]);
      if (!diag)
        sb[k][r] = patch_at<D>(x, pos_n[k], row_c[1][r], pos_y[k] + row_y[1][r], pos_x[k] + row_x[1][r],
                               pos_on[k] && row_on[1][r]);
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kGChunk; ++k) {
      const float4 a4 = *reinterpret_cast<const float4*>(&sa[k][ti * kGTile]);
      const float4 b4 = *reinterpret_cast<const float4*>(&pb[k][tj * kGTile]);
      const float av[kGTile] = {a4.x, a4.y, a4.z, a4.w}, bv[kGTile] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
      for (int a = 0; a < kGTile; ++a)
#pragma unroll
        for (int b = 0; b < kGTile; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
    }
    if (flush_after(ck - c0, c1 - c0)) {
#pragma unroll
      for (int a = 0; a < kGTile; ++a)
#pragma unroll
        for (int b = 0; b < kGTile; ++b) { acc64[a][b] += static_cast<double>(acc[a][b]); acc[a][b] = 0.0f; }
    }
  }
  double* out = ws + (grp * gp.pairs + pair) * kGBlock * kGBlock;
#pragma unroll
  for (int a = 0; a < kGTile; ++a)
#pragma unroll
    for (int b = 0; b < kGTile; ++b) out[(ti * kGTile + a) * kGBlock + tj * kGTile + b] = acc64[a][b];
}

// Grid (pairs, kGBlock / 4): 4 rows of 64 entries per block.
__global__ void __launch_bounds__(kThreads) gather_finish(GatherPlan gp, const double* ws, double* out) {
  const std::int64_t pair = blockIdx.x;
  const int r = static_cast<int>(blockIdx.y) * (kThreads / kGBlock) + threadIdx.x / kGBlock, cc = threadIdx.x % kGBlock;
  std::int64_t bi, bj;
  block_pair(gp.nblk, pair, bi, bj);
  const std::int64_t i = bi * kGBlock + r, j = bj * kGBlock + cc;
  if (i >= gp.D || j >= gp.D || j < i) return;
  out[i * gp.D + j] += gram_total(gp, ws, pair, r, cc);
}

unsigned grid_dim(std::int64_t n, std::int64_t most, const char* what) {
  if (n > most) throw std::invalid_argument(std::string("fastprune: influence: too many ") + what + " for one CUDA launch");
  return static_cast<unsigned>(n);
}

template <DType D>
void launch_shift(const View& x, const Plan& p, const std::int64_t* table, double* ws, double* out, cudaStream_t st) {
  if (p.units > 0) {
    const dim3 grid(grid_dim(p.units, 0x7fffffff, "tiles"), grid_dim(p.cgroups, 65535, "channels"));
    shift_kernel<D><<<grid, kThreads, static_cast<std::size_t>(p.stage) * sizeof(float), st>>>(p, x.data, x.stride[0],
                                                                                               table, ws);
  }
  if (p.njobs > 0 && p.C > 0)
    shift_finish<<<dim3(grid_dim(p.njobs, 0x7fffffff, "jobs"), grid_dim(ceil_div(p.C, kWarp), 65535, "channels")),
                   kThreads, 0, st>>>(p, table, ws, out);
  check(cudaGetLastError(), "influence_shift launch");
}

template <DType D>
void launch_gather(const View& x, const PatchGeom& g, const GatherPlan& gp, const std::int64_t* pos, double* ws,
                   double* out, cudaStream_t st) {
  if (gp.groups == 0) return;
  gather_kernel<D><<<dim3(grid_dim(gp.pairs, 0x7fffffff, "patch rows"), grid_dim(gp.groups, 65535, "positions")),
                     kThreads, 0, st>>>(x, g, gp, pos, ws);
  gather_finish<<<dim3(static_cast<unsigned>(gp.pairs), kGBlock / (kThreads / kGBlock)), kThreads, 0, st>>>(gp, ws, out);
  check(cudaGetLastError(), "gram_gather launch");
}

}  // namespace

void influence_shift(const View& x, const Plan& p, const std::int64_t* table, double* ws, const View& out) {
  DeviceGuard guard(x.device_index);
  const auto st = reinterpret_cast<cudaStream_t>(x.stream);
  double* o = reinterpret_cast<double*>(out.data);
  switch (x.dtype) {
    case DType::f32: launch_shift<DType::f32>(x, p, table, ws, o, st); break;
    case DType::f16: launch_shift<DType::f16>(x, p, table, ws, o, st); break;
    case DType::bf16: launch_shift<DType::bf16>(x, p, table, ws, o, st); break;
    case DType::f64: launch_shift<DType::f64>(x, p, table, ws, o, st); break;
  }
}

void gram_gather(const View& x, const PatchGeom& g, const GatherPlan& gp, const std::int64_t* positions, double* ws,
                 const View& out) {
  DeviceGuard guard(x.device_index);
  const auto st = reinterpret_cast<cudaStream_t>(x.stream);
  double* o = reinterpret_cast<double*>(out.data);
  switch (x.dtype) {
    case DType::f32: launch_gather<DType::f32>(x, g, gp, positions, ws, o, st); break;
    case DType::f16: launch_gather<DType::f16>(x, g, gp, positions, ws, o, st); break;
    case DType::bf16: launch_gather<DType::bf16>(x, g, gp, positions, ws, o, st); break;
    case DType::f64: launch_gather<DType::f64>(x, g, gp, positions, ws, o, st); break;
  }
}

}  // namespace fastprune::cuda
