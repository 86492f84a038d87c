// CUDA back-end of the moments engine. Everything is launched on the caller's stream with
// stream-ordered scratch memory (cudaMallocAsync); nothing synchronises the device.
//
// The samples are cut into splits that never cross an image (split = image x pixel chunk), so
// per-image spatial std (msd) comes out of the same partials. Passes:
//  1. stats_kernel   (split, 32-channel group): shifted fp32 sums over 256-sample shared-memory
//                    tiles, flushed into fp64 per tile; per-split n, mean, m2, |x|, zeros, min,
//                    max, non-finite count.
//  2. group_means    consecutive splits form "Gram groups" (split-K for the C x C co-moments);
//                    each group's mean by Chan merges of its splits, in order.
//  3. gram_kernel    (group, 64x64 upper-triangle block pair): shared-memory tiles shifted by the
//                    group mean, 4x4 register tiles accumulated in fp32 over 256 samples and
//                    flushed into fp64; centred exactly with the shift's offset.
//  4. reduce_stats / reduce_gram: deterministic second pass, one thread per channel / entry,
//                    Chan merges over splits / groups in a fixed order.
// Tile arithmetic and merges: moments_tile.h (shared with the CPU back-end).
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "fastprune/convert.h"
#include "fastprune/moments.h"
#include "fastprune/moments_tile.h"

namespace fastprune::moments::cuda {
namespace {

constexpr int kStatThreads = 256;  // 32 channels x 8 lanes
constexpr int kStatChannels = 32;
constexpr int kStatTile = 256;     // samples per shared-memory tile
constexpr int kBlock = 64;         // Gram block (channels)
constexpr int kChunk = 32;         // Gram samples per shared-memory chunk
constexpr int kFlush = 8;          // Gram chunks per fp32 accumulation (256 samples)

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("fastprune: CUDA moments: ") + what + ": " + cudaGetErrorString(e));
}

template <DType D> __device__ __forceinline__ float load(std::uintptr_t base, std::int64_t i);
template <> __device__ __forceinline__ float load<DType::f32>(std::uintptr_t b, std::int64_t i) {
  return reinterpret_cast<const float*>(b)[i];
}
template <> __device__ __forceinline__ float load<DType::f64>(std::uintptr_t b, std::int64_t i) {
  return static_cast<float>(reinterpret_cast<const double*>(b)[i]);
}
template <> __device__ __forceinline__ float load<DType::f16>(std::uintptr_t b, std::int64_t i) {
  return half_to_float(reinterpret_cast<const std::uint16_t*>(b)[i]);
}
template <> __device__ __forceinline__ float load<DType::bf16>(std::uintptr_t b, std::int64_t i) {
  return bf16_to_float(reinterpret_cast<const std::uint16_t*>(b)[i]);
}

// Element (channel c, global sample m = image * P + pixel).
template <DType D>
__device__ __forceinline__ float at(const Batch& b, std::int64_t c, std::int64_t m) {
  const std::int64_t image = m / b.P, p = m - image * b.P;
  return load<D>(b.data, image * b.sI + c * b.sC + p * b.sP);
}

// Per-split partials, fields of S x C doubles.
struct Partials {
  double *n, *mean, *m2, *abs, *zeros, *mn, *mx, *nonfin;
};

struct Splits {
  std::int64_t per_image;  // splits per image
  std::int64_t chunk;      // pixels per split (the last of an image may be shorter)
  std::int64_t count;      // I * per_image
};

__device__ __forceinline__ void split_range(const Batch& b, const Splits& s, std::int64_t k,
                                            std::int64_t& m0, std::int64_t& m1) {
  const std::int64_t image = k / s.per_image, j = k - image * s.per_image;
  const std::int64_t p0 = j * s.chunk, p1 = p0 + s.chunk < b.P ? p0 + s.chunk : b.P;
  m0 = image * b.P + p0;
  m1 = image * b.P + p1;
}

template <DType D>
__global__ void __launch_bounds__(kStatThreads) stats_kernel(Batch b, Splits s, Partials out) {
  __shared__ float tile[kStatChannels][kStatTile + 1];
  __shared__ double red[8][kStatChannels][4];
  __shared__ float redf[8][kStatChannels][2];
  __shared__ double rednf[8][kStatChannels];
  const std::int64_t split = blockIdx.x, c0 = static_cast<std::int64_t>(blockIdx.y) * kStatChannels;
  const int tid = threadIdx.x, cl = tid % kStatChannels, lane = tid / kStatChannels;
  const std::int64_t c = c0 + cl;
  std::int64_t m0, m1;
  split_range(b, s, split, m0, m1);
  // shift: the split's first sample (within a few std of the mean for any channel)
  const float shift = c < b.C ? at<D>(b, c, m0) : 0.0f;
  double S1 = 0, S2 = 0, A = 0, Z = 0, NF = 0;
  float mn = INFINITY, mx = -INFINITY;
  for (std::int64_t t0 = m0; t0 < m1; t0 += kStatTile) {
    const std::int64_t tn = m1 - t0 < kStatTile ? m1 - t0 : kStatTile;
    __syncthreads();
    for (int idx = tid; idx < kStatChannels * kStatTile; idx += kStatThreads) {
      // coalesced along whatever is contiguous: pixels (planar) or channels (interleaved)
      const int k = b.planar ? idx % kStatTile : idx / kStatChannels;
      const int ch = b.planar ? idx / kStatTile : idx % kStatChannels;
      tile[ch][k] = (k < tn && c0 + ch < b.C) ? at<D>(b, c0 + ch, t0 + k) : 0.0f;
    }
    __syncthreads();
    float s1 = 0, s2 = 0, ab = 0;
    int z = 0, nf = 0;
    for (int k = lane; k < tn; k += 8) {
      const float v = tile[cl][k], d = v - shift;
      s1 += d;
      s2 = fmaf(d, d, s2);
      ab += fabsf(v);
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
      z += v == 0.0f;
      nf += moments::nonfinite(v);
    }
    S1 += s1; S2 += s2; A += ab; Z += z; NF += nf;
  }
  red[lane][cl][0] = S1; red[lane][cl][1] = S2; red[lane][cl][2] = A; red[lane][cl][3] = Z;
  redf[lane][cl][0] = mn; redf[lane][cl][1] = mx;
  rednf[lane][cl] = NF;
  __syncthreads();
  if (lane == 0 && c < b.C) {
    double s1 = 0, s2 = 0, a = 0, zz = 0, nfs = 0;
    float fmn = INFINITY, fmx = -INFINITY;
    for (int l = 0; l < 8; ++l) {  // fixed order: deterministic
      s1 += red[l][cl][0]; s2 += red[l][cl][1]; a += red[l][cl][2]; zz += red[l][cl][3];
      nfs += rednf[l][cl];
      fmn = fminf(fmn, redf[l][cl][0]);
      fmx = fmaxf(fmx, redf[l][cl][1]);
    }
    const double n = static_cast<double>(m1 - m0);
    const std::int64_t o = split * b.C + c;
    out.n[o] = n;
    out.mean[o] = tile_mean(shift, s1, n);
    out.m2[o] = tile_m2(s2, s1, n);
    out.abs[o] = a;
    out.zeros[o] = zz;
    out.nonfin[o] = nfs;
    out.mn[o] = fmn;
    out.mx[o] = fmx;
  }
}

// Mean and count of each Gram group (splits [g R, (g+1) R)), Chan merges in split order.
__global__ void group_means(Batch b, std::int64_t splits, std::int64_t R, std::int64_t groups,
                            Partials p, double* gmean, double* gn) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= groups * b.C) return;
  const std::int64_t g = i / b.C, c = i - g * b.C;
  double n = 0, mean = 0;
  for (std::int64_t k = g * R; k < splits && k < (g + 1) * R; ++k) {
    const double nb = p.n[k * b.C + c];
    mean = chan_mean(mean, n, p.mean[k * b.C + c], nb);
    n += nb;
  }
  gmean[i] = mean;
  if (c == 0) gn[g] = n;
}

template <DType D>
__global__ void __launch_bounds__(256) gram_kernel(Batch b, Splits s, std::int64_t R, const double* gmean,
                                                   const double* gn, double* gpart) {
  __shared__ float As[kChunk][kBlock + 4];
  __shared__ float Bs[kChunk][kBlock + 4];
  __shared__ float shA[kBlock], shB[kBlock];
  // blockIdx.y -> (bi, bj), bi <= bj, row-major over the upper triangle of blocks
  const int nb = static_cast<int>((b.C + kBlock - 1) / kBlock);
  int bi = 0, rem = blockIdx.y;
  while (rem >= nb - bi) { rem -= nb - bi; ++bi; }
  const int bj = bi + rem;
  const std::int64_t g = blockIdx.x;
  const std::int64_t ci0 = static_cast<std::int64_t>(bi) * kBlock, cj0 = static_cast<std::int64_t>(bj) * kBlock;
  std::int64_t m0, m1, tmp;
  split_range(b, s, g * R, m0, tmp);
  split_range(b, s, std::min(s.count, (g + 1) * R) - 1, tmp, m1);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  if (tid < kBlock) {
    shA[tid] = ci0 + tid < b.C ? static_cast<float>(gmean[g * b.C + ci0 + tid]) : 0.0f;
    shB[tid] = cj0 + tid < b.C ? static_cast<float>(gmean[g * b.C + cj0 + tid]) : 0.0f;
  }
  float acc[4][4] = {};
  double acc64[4][4] = {};
  int chunks = 0;
  for (std::int64_t t0 = m0; t0 < m1; t0 += kChunk) {
    __syncthreads();
    for (int idx = tid; idx < kChunk * kBlock; idx += 256) {
      const int k = b.planar ? idx % kChunk : idx / kBlock;
      const int ch = b.planar ? idx / kChunk : idx % kBlock;
      const bool in = t0 + k < m1;
      As[k][ch] = (in && ci0 + ch < b.C) ? at<D>(b, ci0 + ch, t0 + k) - shA[ch] : 0.0f;
      Bs[k][ch] = (in && cj0 + ch < b.C) ? at<D>(b, cj0 + ch, t0 + k) - shB[ch] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kChunk; ++k) {
      float a[4], bb[4];
      for (int r = 0; r < 4; ++r) { a[r] = As[k][ty * 4 + r]; bb[r] = Bs[k][tx * 4 + r]; }
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) acc[r][q] = fmaf(a[r], bb[q], acc[r][q]);
    }
    if (++chunks == kFlush) {  // bounded fp32 accumulation, then fp64
      chunks = 0;
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) { acc64[r][q] += acc[r][q]; acc[r][q] = 0.0f; }
    }
  }
  const double n = gn[g];
  for (int r = 0; r < 4; ++r) {
    const std::int64_t i = ci0 + ty * 4 + r;
    if (i >= b.C) continue;
    // the shift differs from the group mean by its fp32 rounding: centre exactly
    const double oi = (gmean[g * b.C + i] - static_cast<double>(shA[ty * 4 + r])) * n;
    for (int q = 0; q < 4; ++q) {
      const std::int64_t j = cj0 + tx * 4 + q;
      if (j >= b.C) continue;
      const double oj = (gmean[g * b.C + j] - static_cast<double>(shB[tx * 4 + q])) * n;
      gpart[(g * b.C + i) * b.C + j] = tile_comoment(acc64[r][q] + acc[r][q], oi, oj / n);
    }
  }
}

// Totals per channel (and per-image std for msd), Chan merges over splits in order.
__global__ void reduce_stats(Batch b, Splits s, Partials p, double* out) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= b.C) return;
  const OutLayout L{b.C, b.cov};
  double n = 0, mean = 0, m2 = 0, a = 0, z = 0, nf = 0, msd = 0, mn = INFINITY, mx = -INFINITY;
  for (std::int64_t image = 0; image < b.I && s.count > 0; ++image) {
    double in = 0, imean = 0, im2 = 0;
    for (std::int64_t j = 0; j < s.per_image; ++j) {
      const std::int64_t o = (image * s.per_image + j) * b.C + c;
      const double nb = p.n[o], mb = p.mean[o], m2b = p.m2[o];
      double d = mb - imean;
      im2 = chan_comoment(im2, m2b, d, d, chan_weight(in, nb));
      imean = chan_mean(imean, in, mb, nb);
      in += nb;
      d = mb - mean;
      m2 = chan_comoment(m2, m2b, d, d, chan_weight(n, nb));
      mean = chan_mean(mean, n, mb, nb);
      n += nb;
      a += p.abs[o]; z += p.zeros[o]; nf += p.nonfin[o];
      mn = fmin(mn, p.mn[o]);
      mx = fmax(mx, p.mx[o]);
    }
    if (b.per_image) msd += image_std(im2, in);
  }
  if (c == 0) {
    out[0] = n;
    out[1] = b.per_image && s.count > 0 ? static_cast<double>(b.I) : 0.0;
  }
  out[L.mean() + c] = mean;
  out[L.abs_sum() + c] = a;
  out[L.zeros() + c] = z;
  out[L.min() + c] = mn;
  out[L.max() + c] = mx;
  out[L.nonfinite() + c] = nf;
  out[L.msd_sum() + c] = msd;
  out[L.m2() + (b.cov ? c * b.C + c : c)] = m2;
}

// Off-diagonal co-moments, Chan merges over Gram groups in order.
__global__ void reduce_gram(Batch b, std::int64_t groups, const double* gmean, const double* gn,
                            const double* gpart, double* out) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= b.C * b.C) return;
  const std::int64_t i = e / b.C, j = e - i * b.C;
  if (j <= i) return;
  double n = 0, mi = 0, mj = 0, m = 0;
  for (std::int64_t g = 0; g < groups; ++g) {
    const double nb = gn[g], bi = gmean[g * b.C + i], bj = gmean[g * b.C + j];
    m = chan_comoment(m, gpart[(g * b.C + i) * b.C + j], bi - mi, bj - mj, chan_weight(n, nb));
    mi = chan_mean(mi, n, bi, nb);
    mj = chan_mean(mj, n, bj, nb);
    n += nb;
  }
  const OutLayout L{b.C, b.cov};
  out[L.m2() + i * b.C + j] = m;
  out[L.m2() + j * b.C + i] = m;
}

template <DType D>
void launch(const Batch& b, double* out, cudaStream_t st) {
  const std::int64_t M = b.I * b.P, C = b.C;
  const std::int64_t nblk = (C + kBlock - 1) / kBlock, pairs = nblk * (nblk + 1) / 2;
  // splits: about 1024 of at least 2048 samples, never crossing an image
  Splits s{0, 0, 0};
  if (M > 0) {
    const std::int64_t want = std::max<std::int64_t>(2048, (M + 1023) / 1024);
    s.per_image = std::max<std::int64_t>(1, (b.P + want - 1) / want);
    s.chunk = (b.P + s.per_image - 1) / s.per_image;
    s.count = b.I * s.per_image;
  }
  // Gram groups: enough blocks to fill the GPU, partials capped at 256 MiB
  std::int64_t groups = 0, R = 1;
  if (b.cov && s.count > 0) {
    const std::int64_t cap = std::max<std::int64_t>(1, (std::int64_t(256) << 20) / (8 * C * C));
    const std::int64_t target = std::min({s.count, std::max<std::int64_t>(1, 1024 / pairs), cap});
    R = (s.count + target - 1) / target;
    groups = (s.count + R - 1) / R;
  }
  const std::size_t fields = static_cast<std::size_t>(s.count * C);
  const std::size_t bytes = sizeof(double) * (8 * fields + groups * C + groups + groups * C * C) + 64;
  void* scratch = nullptr;
  check(cudaMallocAsync(&scratch, bytes, st), "cudaMallocAsync");
  double* base = static_cast<double*>(scratch);
  Partials p{base, base + fields, base + 2 * fields, base + 3 * fields, base + 4 * fields,
             base + 5 * fields, base + 6 * fields, base + 7 * fields};
  double* gmean = base + 8 * fields;
  double* gn = gmean + groups * C;
  double* gpart = gn + groups;
  if (s.count > 0) {
    stats_kernel<D><<<dim3(static_cast<unsigned>(s.count), static_cast<unsigned>((C + kStatChannels - 1) / kStatChannels)),
                      kStatThreads, 0, st>>>(b, s, p);
  }
  if (groups > 0) {
    const std::int64_t n = groups * C;
    group_means<<<static_cast<unsigned>((n + 255) / 256), 256, 0, st>>>(b, s.count, R, groups, p, gmean, gn);
    gram_kernel<D><<<dim3(static_cast<unsigned>(groups), static_cast<unsigned>(pairs)), 256, 0, st>>>(
        b, s, R, gmean, gn, gpart);
  }
  if (b.cov && groups == 0)  // empty batch
    check(cudaMemsetAsync(out + OutLayout{C, true}.m2(), 0, sizeof(double) * C * C, st), "memset");
  reduce_stats<<<static_cast<unsigned>((C + 127) / 128), 128, 0, st>>>(b, s, p, out);
  if (groups > 0)
    reduce_gram<<<static_cast<unsigned>((C * C + 255) / 256), 256, 0, st>>>(b, groups, gmean, gn, gpart, out);
  check(cudaGetLastError(), "kernel launch");
  check(cudaFreeAsync(scratch, st), "cudaFreeAsync");
}

}  // namespace

void run(const Batch& b, double* out) {
  FP_CHECK(b.I * b.P * b.C < (std::int64_t(1) << 53), "moments: input too large");
  int prev = 0;
  check(cudaGetDevice(&prev), "cudaGetDevice");
  if (prev != b.device_index) check(cudaSetDevice(b.device_index), "cudaSetDevice");
  cudaStream_t st = reinterpret_cast<cudaStream_t>(b.stream);
  try {
    switch (b.dtype) {
      case DType::f32: launch<DType::f32>(b, out, st); break;
      case DType::f16: launch<DType::f16>(b, out, st); break;
      case DType::bf16: launch<DType::bf16>(b, out, st); break;
      case DType::f64: launch<DType::f64>(b, out, st); break;
    }
  } catch (...) {
    if (prev != b.device_index) cudaSetDevice(prev);
    throw;
  }
  if (prev != b.device_index) check(cudaSetDevice(prev), "cudaSetDevice");
}

}  // namespace fastprune::moments::cuda
