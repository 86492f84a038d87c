// CUDA back-end of the influence kernels. Launches on the caller's stream and never
// synchronises; every output element is owned by one block and reduced in a fixed order, so
// results are deterministic (no atomics). Non-finite inputs are counted by the Python layer.
//
// influence_shift: one block per (job, channel); threads stride over the job's positions of
// all images (consecutive threads take consecutive x: coalesced for NCHW), fp32 products summed
// in fp64 per thread, then a fixed-shape shared-memory tree.
// gram_gather: one block per upper 32x32 tile of the (D, D) patch Gram; positions are taken 32
// at a time, both patch panels gathered into shared memory (zero padding included), each thread
// owns one output entry, sums a panel in fp32 and folds it into an fp64 register.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "fastprune/influence.h"

namespace fastprune::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 32;

using cuda_util::check;
using cuda_util::DeviceGuard;

__global__ void influence_shift_kernel(View x, ShiftPlanArgs p, double* out) {
  const std::int64_t job = blockIdx.x;
  const std::int64_t c = blockIdx.y;
  const std::int64_t C = x.shape[1], H = x.shape[2], W = x.shape[3];
  // the cell holding this job: last cell with cell_ptr[cell] <= job
  std::int64_t lo = 0, hi = p.ncell - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (p.cell_ptr[mid] <= job) lo = mid; else hi = mid - 1;
  }
  const std::int64_t* cell = p.cells + 6 * lo;
  const std::int64_t* d = p.deltas + 2 * p.job_delta[job];
  const std::int64_t dy = d[0], dx = d[1];
  const std::int64_t nrows = (cell[1] - cell[0] + cell[2] - 1) / cell[2];
  const std::int64_t ncols = (cell[4] - cell[3] + cell[5] - 1) / cell[5];
  const std::int64_t per_image = nrows * ncols;
  const std::int64_t total = x.shape[0] * per_image;
  double acc = 0.0;
  for (std::int64_t k = threadIdx.x; k < total; k += blockDim.x) {
    const std::int64_t n = k / per_image, rem = k % per_image;
    const std::int64_t y = cell[0] + (rem / ncols) * cell[2];
    const std::int64_t xx = cell[3] + (rem % ncols) * cell[5];
    const std::int64_t y2 = y + dy, x2 = xx + dx;
    if (y2 >= H || x2 < 0 || x2 >= W) continue;
    const std::int64_t base = n * x.stride[0] + c * x.stride[1];
    const float a = load_as_float(x.data, x.dtype, base + y * x.stride[2] + xx * x.stride[3]);
    const float b = load_as_float(x.data, x.dtype, base + y2 * x.stride[2] + x2 * x.stride[3]);
    acc += static_cast<double>(a * b);
  }
  __shared__ double red[kThreads];
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[job * C + c] += red[0];
}

__global__ void gram_gather_kernel(View x, PatchGeom g, const std::int64_t* pos, std::int64_t npos,
                                   std::int64_t D, double* out) {
  const std::int64_t ti = blockIdx.y, tj = blockIdx.x;
  if (tj < ti) return;  // upper tiles only
  const std::int64_t i0 = ti * kTile, j0 = tj * kTile;
  __shared__ float pa[kTile][kTile + 1];  // [position][row]
  __shared__ float pb[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;  // entry (i0 + ty, j0 + tx)
  double acc = 0.0;
  for (std::int64_t k0 = 0; k0 < npos; k0 += kTile) {
    // thread (ty, tx) loads position k0 + ty, rows i0 + tx and j0 + tx
    const std::int64_t k = k0 + ty;
    float va = 0.0f, vb = 0.0f;
    if (k < npos) {
      const std::int64_t n = pos[2 * k], q = pos[2 * k + 1];
      const std::int64_t qy = q / g.wo, qx = q % g.wo;
      if (i0 + tx < D) va = patch_value(x, g, n, i0 + tx, qy, qx);
      if (j0 + tx < D) vb = patch_value(x, g, n, j0 + tx, qy, qx);
    }
    pa[ty][tx] = va;
    pb[ty][tx] = vb;
    __syncthreads();
    float s = 0.0f;
#pragma unroll 8
    for (int kk = 0; kk < kTile; ++kk) s += pa[kk][ty] * pb[kk][tx];
    acc += static_cast<double>(s);
    __syncthreads();
  }
  const std::int64_t i = i0 + ty, j = j0 + tx;
  if (i < D && j < D && j >= i) out[i * D + j] += acc;
}

}  // namespace

std::int64_t influence_shift(const View& x, const ShiftPlanArgs& plan, const View& out) {
  if (plan.njobs == 0) return 0;
  FP_CHECK(x.shape[1] <= 65535, "too many channels for one launch (at most 65535)");
  DeviceGuard guard(x.device_index);
  const dim3 grid(static_cast<unsigned>(plan.njobs), static_cast<unsigned>(x.shape[1]));
  influence_shift_kernel<<<grid, kThreads, 0, reinterpret_cast<cudaStream_t>(x.stream)>>>(
      x, plan, reinterpret_cast<double*>(out.data));
  check(cudaGetLastError(), "influence_shift launch");
  return 0;
}

std::int64_t gram_gather(const View& x, const PatchGeom& g, const std::int64_t* positions,
                         std::int64_t npos, const View& out) {
  if (npos == 0) return 0;
  const std::int64_t D = x.shape[1] * g.kh * g.kw;
  const std::int64_t tiles = (D + kTile - 1) / kTile;
  FP_CHECK(tiles <= 65535, "patch Gram too large for one launch");
  DeviceGuard guard(x.device_index);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(tiles));
  const dim3 block(kTile, kTile);
  gram_gather_kernel<<<grid, block, 0, reinterpret_cast<cudaStream_t>(x.stream)>>>(
      x, g, positions, npos, D, reinterpret_cast<double*>(out.data));
  check(cudaGetLastError(), "gram_gather launch");
  return 0;
}

}  // namespace fastprune::cuda
