// CUDA back-end of the moments engine: the algorithm of fastprune/moments_plan.h (partition,
// shifts, lanes, trees, merges; run on the host by csrc/cpu/moments_emulate.cpp), on the
// caller's stream, in a workspace the caller allocates (Python: through torch's caching
// allocator). Nothing here allocates, synchronises the device or divides per element.
//
// Kernels (all blocks of kThreads = 256):
//  stats_kernel   grid (splits, channel groups). Planar input: one warp per channel streams the
//                 split's tiles with 16-byte loads (several in flight per lane), fp32 Lane sums,
//                 a shuffle butterfly per tile, fp64 Chan merge. Interleaved input: 32 channels x
//                 8 sample lanes, coalesced along channels, a shared-memory tree per tile.
//  group_stats    count and exact mean of each Gram group (Chan merges of its splits' records).
//  gram_kernel    grid (upper-triangle 64 x 64 block pairs, Gram groups). Chunks of 32 samples
//                 are shifted in fp32 into shared memory and multiplied on tensor cores
//                 (WMMA m16n16k8 3xTF32 for fp32/fp64 input, m16n16k16 3xBF16 for fp16/bf16),
//                 fp32 fragments flushed into fp64 registers every 256 samples; only the
//                 fragments on or above the diagonal of diagonal blocks are formed.
//  image_records  (maps of more than kTile pixels) the splits of each image merged: its std.
//  finish_stats / finish_gram: the second pass, kLanes lanes per output entry walking the
//                 records / Gram groups, then a fixed tree (deterministic).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "fastprune/moments.h"
#include "fastprune/moments_plan.h"

namespace fastprune::moments::cuda {
namespace {

using namespace fastprune::moments::dev;
namespace wmma = nvcuda::wmma;

using cuda_util::check;
using cuda_util::DeviceGuard;

// ---------------------------------------------------------------- loads
// 16 bytes at element i (aligned by the plan) as V floats.
template <DType D> struct Vec;
template <> struct Vec<DType::f32> {
  static constexpr int V = 4;
  static __device__ __forceinline__ void get(std::uintptr_t b, std::int64_t i, float* v) {
    const float4 r = __ldg(reinterpret_cast<const float4*>(reinterpret_cast<const float*>(b) + i));
    v[0] = r.x; v[1] = r.y; v[2] = r.z; v[3] = r.w;
  }
};
template <> struct Vec<DType::f64> {
  static constexpr int V = 2;
  static __device__ __forceinline__ void get(std::uintptr_t b, std::int64_t i, float* v) {
    const double2 r = __ldg(reinterpret_cast<const double2*>(reinterpret_cast<const double*>(b) + i));
    v[0] = static_cast<float>(r.x); v[1] = static_cast<float>(r.y);
  }
};
template <DType D> struct Vec16 {  // fp16 / bf16: 8 halves
  static constexpr int V = 8;
  static __device__ __forceinline__ void get(std::uintptr_t b, std::int64_t i, float* v) {
    const uint4 r = __ldg(reinterpret_cast<const uint4*>(reinterpret_cast<const std::uint16_t*>(b) + i));
    const unsigned w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      v[2 * q] = Elem<D>::f(static_cast<std::uint16_t>(w[q] & 0xffffu));
      v[2 * q + 1] = Elem<D>::f(static_cast<std::uint16_t>(w[q] >> 16));
    }
  }
};
template <> struct Vec<DType::f16> : Vec16<DType::f16> {};
template <> struct Vec<DType::bf16> : Vec16<DType::bf16> {};

// ---------------------------------------------------------------- trees
template <class T> __device__ __forceinline__ T shfl_xor_all(const T& v, int o);
template <> __device__ __forceinline__ Lane shfl_xor_all(const Lane& v, int o) {
  Lane r;
  r.s1 = __shfl_xor_sync(0xffffffffu, v.s1, o);
  r.s2 = __shfl_xor_sync(0xffffffffu, v.s2, o);
  r.ab = __shfl_xor_sync(0xffffffffu, v.ab, o);
  r.mn = __shfl_xor_sync(0xffffffffu, v.mn, o);
  r.mx = __shfl_xor_sync(0xffffffffu, v.mx, o);
  r.z = __shfl_xor_sync(0xffffffffu, v.z, o);
  r.nf = __shfl_xor_sync(0xffffffffu, v.nf, o);
  return r;
}
template <> __device__ __forceinline__ Sum shfl_xor_all(const Sum& v, int o) {
  Sum r;
  r.v = __shfl_xor_sync(0xffffffffu, v.v, o);
  return r;
}
// Shared arrays of the lane structs (their member initialisers forbid a plain __shared__ array).
#define FP_SHARED_LANES(T, name, L)                                   \
  __shared__ __align__(16) unsigned char name##_raw[(L) * kWarp * sizeof(T)]; \
  T(*name)[kWarp] = reinterpret_cast<T(*)[kWarp]>(name##_raw)

// the xor butterfly of host_lane_tree (planar)
template <class T> __device__ __forceinline__ T warp_tree(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) {
    const T other = shfl_xor_all(v, o);
    v.combine(other);
  }
  return v;
}
// the halving tree of host_lane_tree (interleaved) / host_lane_reduce, over y of red[y][x];
// every thread of the block calls it; the result is red[0][x]
template <class T, int L>
__device__ __forceinline__ void block_tree(T (*red)[kWarp], int x, int y) {
  __syncthreads();
#pragma unroll
  for (int o = L / 2; o > 0; o /= 2) {
    if (y < o) red[y][x].combine(red[y + o][x]);
    __syncthreads();
  }
}

// ---------------------------------------------------------------- pass 1: statistics
template <DType D>
__device__ void stats_planar(const Batch& b, const Plan& p, std::int64_t k, std::int64_t g0, std::int64_t g1,
                             double* ws) {
  constexpr int V = Vec<D>::V;
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.y) * kPlanarChannels + w;
  if (c >= p.C) return;  // a whole warp; the planar path has no block barrier
  const TileSpan first = tile_span(p, g0);
  const std::int64_t pn = probe_n(first.n), pe = elem(b, first.image, c, first.p0);
  Sum probe;
  for (std::int64_t s = lane; s < pn; s += kWarp) probe.v += load<D>(b.data, pe + s);
  const float shift = Operand<D>::shift(warp_tree(probe).v / static_cast<float>(pn));
  const bool whole = p.spi == 0 && p.per_image;
  Record rec;
  for (std::int64_t g = g0; g < g1; ++g) {
    const TileSpan t = tile_span(p, g);
    const std::int64_t e = elem(b, t.image, c, t.p0);
    Lane a;
    std::int64_t tail = 0;
    if (p.vec > 1) {
      const std::int64_t nv = t.n / V;
#pragma unroll 4
      for (std::int64_t q = lane; q < nv; q += kWarp) {
        float v[V];
        Vec<D>::get(b.data, e + q * V, v);
#pragma unroll
        for (int i = 0; i < V; ++i) a.add(v[i], shift);
      }
      tail = nv * V;
    }
#pragma unroll 4
    for (std::int64_t s = tail + lane; s < t.n; s += kWarp) a.add(load<D>(b.data, e + s), shift);
    a = warp_tree(a);
    if (lane == 0) rec.absorb(a, shift, static_cast<double>(t.n), whole);
  }
  if (lane == 0) {
    RecordStore{ws + p.off_split, p.splits, p.C}.put(k, c, rec);
    ws[p.off_shift + k * p.C + c] = shift;
  }
}

template <DType D>
__device__ void stats_interleaved(const Batch& b, const Plan& p, std::int64_t k, std::int64_t g0,
                                  std::int64_t g1, double* ws) {
  FP_SHARED_LANES(Lane, red, kInterLanes);
  FP_SHARED_LANES(Sum, pred, kInterLanes);
  const int x = threadIdx.x % kWarp, y = threadIdx.x / kWarp;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.y) * kInterChannels + x;
  const bool on = c < p.C;
  const TileSpan first = tile_span(p, g0);
  const std::int64_t pn = probe_n(first.n);
  Sum probe;
  if (on)
    for (std::int64_t s = y; s < pn; s += kInterLanes) probe.v += load<D>(b.data, elem(b, first.image, c, first.p0 + s));
  pred[y][x] = probe;
  block_tree<Sum, kInterLanes>(pred, x, y);
  const float shift = Operand<D>::shift(pred[0][x].v / static_cast<float>(pn));
  const bool whole = p.spi == 0 && p.per_image;
  Record rec;
  for (std::int64_t g = g0; g < g1; ++g) {
    const TileSpan t = tile_span(p, g);
    Lane a;
    if (on) {
      const std::int64_t e = elem(b, t.image, c, t.p0);
#pragma unroll 4
      for (std::int64_t s = y; s < t.n; s += kInterLanes) a.add(load<D>(b.data, e + s * b.sP), shift);
    }
    red[y][x] = a;
    block_tree<Lane, kInterLanes>(red, x, y);
    if (y == 0) rec.absorb(red[0][x], shift, static_cast<double>(t.n), whole);
  }
  if (y == 0 && on) {
    RecordStore{ws + p.off_split, p.splits, p.C}.put(k, c, rec);
    ws[p.off_shift + k * p.C + c] = shift;
  }
}

template <DType D>
__global__ void __launch_bounds__(kThreads, 3) stats_kernel(Batch b, Plan p, double* ws) {
  const std::int64_t k = blockIdx.x;
  std::int64_t g0, g1;
  split_tiles(p, k, g0, g1);
  if (p.planar) stats_planar<D>(b, p, k, g0, g1, ws);
  else stats_interleaved<D>(b, p, k, g0, g1, ws);
}

// Count and mean of each Gram group, Chan merges of its splits in order.
__global__ void __launch_bounds__(kThreads) group_stats(Plan p, double* ws) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.groups * p.C) return;
  const std::int64_t g = i / p.C;
  group_stat(p, ws, g, i - g * p.C);
}

// ---------------------------------------------------------------- pass 1: Gram
constexpr int kLdF = kChunk + 4;  // fp32 plane row (floats): 16-byte rows, 32-byte fragment starts
constexpr int kLdH = kChunk + 8;  // bf16 plane row (halves)

// Shared-memory operand planes of one chunk (64 channels x kChunk samples each).
template <bool TF32> struct Planes;
template <> struct Planes<true> {  // shifted fp32 values; split into hi + lo after the fragment load
  static constexpr int bytes = 2 * kBlock * kLdF * 4;
  float* a; float* b;
  __device__ Planes(unsigned char* s, bool diag)
      : a(reinterpret_cast<float*>(s)), b(diag ? reinterpret_cast<float*>(s) : reinterpret_cast<float*>(s) + kBlock * kLdF) {}
  __device__ void put(bool isb, int row, int k, float d) const { (isb ? b : a)[row * kLdF + k] = d; }
};
template <> struct Planes<false> {  // bf16 hi and lo planes
  static constexpr int bytes = 4 * kBlock * kLdH * 2;
  __nv_bfloat16 *ah, *al, *bh, *bl;
  __device__ Planes(unsigned char* s, bool diag) {
    auto* h = reinterpret_cast<__nv_bfloat16*>(s);
    ah = h; al = h + kBlock * kLdH;
    bh = diag ? ah : h + 2 * kBlock * kLdH;
    bl = diag ? al : h + 3 * kBlock * kLdH;
  }
  static __device__ __nv_bfloat16 bf(float v) {
    __nv_bfloat16_raw r;
    r.x = bf16_bits(v);
    return __nv_bfloat16(r);
  }
  __device__ void put(bool isb, int row, int k, float d) const {
    const float hi = round_bf16(d);
    (isb ? bh : ah)[row * kLdH + k] = bf(hi);
    (isb ? bl : al)[row * kLdH + k] = bf(d - hi);
  }
};

// Fragment products of one chunk into a warp's accumulator (rows fr, columns fc of the block).
template <bool TF32> struct Mma;
template <> struct Mma<true> {
  static constexpr int K = 8;
  using Acc = wmma::fragment<wmma::accumulator, kFrag, kFrag, K, float>;
  static __device__ void run(const Planes<true>& s, int fr, int fc, Acc& acc) {
    wmma::fragment<wmma::matrix_a, kFrag, kFrag, K, wmma::precision::tf32, wmma::row_major> ah, al;
    wmma::fragment<wmma::matrix_b, kFrag, kFrag, K, wmma::precision::tf32, wmma::col_major> bh, bl;
#pragma unroll
    for (int k = 0; k < kChunk; k += K) {
      wmma::load_matrix_sync(ah, s.a + fr * kFrag * kLdF + k, kLdF);
      wmma::load_matrix_sync(bh, s.b + fc * kFrag * kLdF + k, kLdF);
#pragma unroll
      for (int t = 0; t < ah.num_elements; ++t) {
        const float v = ah.x[t], h = round_tf32(v);
        ah.x[t] = h;
        al.x[t] = round_tf32(v - h);
      }
#pragma unroll
      for (int t = 0; t < bh.num_elements; ++t) {
        const float v = bh.x[t], h = round_tf32(v);
        bh.x[t] = h;
        bl.x[t] = round_tf32(v - h);
      }
      wmma::mma_sync(acc, al, bh, acc);
      wmma::mma_sync(acc, ah, bl, acc);
      wmma::mma_sync(acc, ah, bh, acc);
    }
  }
};
template <> struct Mma<false> {
  static constexpr int K = 16;
  using Acc = wmma::fragment<wmma::accumulator, kFrag, kFrag, K, float>;
  static __device__ void run(const Planes<false>& s, int fr, int fc, Acc& acc) {
    wmma::fragment<wmma::matrix_a, kFrag, kFrag, K, __nv_bfloat16, wmma::row_major> ah, al;
    wmma::fragment<wmma::matrix_b, kFrag, kFrag, K, __nv_bfloat16, wmma::col_major> bh, bl;
#pragma unroll
    for (int k = 0; k < kChunk; k += K) {
      wmma::load_matrix_sync(ah, s.ah + fr * kFrag * kLdH + k, kLdH);
      wmma::load_matrix_sync(al, s.al + fr * kFrag * kLdH + k, kLdH);
      wmma::load_matrix_sync(bh, s.bh + fc * kFrag * kLdH + k, kLdH);
      wmma::load_matrix_sync(bl, s.bl + fc * kFrag * kLdH + k, kLdH);
      wmma::mma_sync(acc, al, bh, acc);
      wmma::mma_sync(acc, ah, bl, acc);
      wmma::mma_sync(acc, ah, bh, acc);
    }
  }
};

// One chunk (samples [s0, s0 + kChunk) of tile t, zero past its end) of one operand block
// (channels cb ..), shifted, into the planes.
template <DType D, bool TF32>
__device__ __forceinline__ void load_chunk(const Batch& b, const Plan& p, const TileSpan& t, std::int64_t s0,
                                           std::int64_t cb, const float* shift, bool isb, const Planes<TF32>& s) {
  constexpr int V = Vec<D>::V;
  const int vec = p.vec > 1 ? V : 1;
  const std::int64_t left = t.n - s0;  // samples of the tile from s0 on
  if (p.planar) {  // rows of samples: vectors along k
    const int per_row = kChunk / vec, items = kBlock * per_row;
    for (int it = threadIdx.x; it < items; it += kThreads) {
      const int row = it / per_row, k = (it - row * per_row) * vec;
      const std::int64_t c = cb + row;
      float v[V];  // registers: every index below is a compile-time constant
      if (c < p.C && vec > 1 && k + vec <= left) {
        Vec<D>::get(b.data, elem(b, t.image, c, t.p0 + s0 + k), v);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e)
          v[e] = e < vec && c < p.C && k + e < left ? load<D>(b.data, elem(b, t.image, c, t.p0 + s0 + k + e)) : 0.0f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (e < vec) s.put(isb, row, k + e, c < p.C && k + e < left ? v[e] - shift[row] : 0.0f);
    }
  } else {  // rows of channels: vectors along the channels (C % vec == 0 when vec > 1)
    const int per_k = kBlock / vec, items = kChunk * per_k;
    for (int it = threadIdx.x; it < items; it += kThreads) {
      const int k = it / per_k, row = (it - k * per_k) * vec;
      const std::int64_t c = cb + row;
      float v[V];
      const bool in = k < left && c < p.C;
      if (in && vec > 1) {
        Vec<D>::get(b.data, elem(b, t.image, c, t.p0 + s0 + k), v);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e)
          v[e] = e < vec && k < left && c + e < p.C ? load<D>(b.data, elem(b, t.image, c + e, t.p0 + s0 + k)) : 0.0f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (e < vec) s.put(isb, row + e, k, k < left && c + e < p.C ? v[e] - shift[row + e] : 0.0f);
    }
  }
}

template <DType D>
__global__ void __launch_bounds__(kThreads, 2) gram_kernel(Batch b, Plan p, double* ws) {
  constexpr bool TF32 = Operand<D>::tf32;
  using M = Mma<TF32>;
  constexpr int kStage = kFrag * kFrag;  // floats per staged fragment
  constexpr int kSmem = kThreads / kWarp * 2 * 2 * kStage * 4;  // final staging: 8 warps x 2 frags x hi/lo
  static_assert(Planes<TF32>::bytes <= kSmem, "operand planes fit the staging buffer");
  __shared__ __align__(128) unsigned char smem[kSmem];
  __shared__ float sh_i[kBlock], sh_j[kBlock];
  // pairs along x: consecutive blocks read the same group's samples (shared in L2)
  const std::int64_t pair = blockIdx.x, g = blockIdx.y;
  std::int64_t bi, bj;
  block_pair(p.nblk, pair, bi, bj);
  const bool diag = bi == bj;
  const std::int64_t ci0 = bi * kBlock, cj0 = bj * kBlock;
  std::int64_t k0, k1;
  group_splits(p, g, k0, k1);
  if (threadIdx.x < kBlock) {
    const std::int64_t ci = ci0 + threadIdx.x, cj = cj0 + threadIdx.x;
    sh_i[threadIdx.x] = ci < p.C ? static_cast<float>(ws[p.off_shift + k0 * p.C + ci]) : 0.0f;
    sh_j[threadIdx.x] = cj < p.C ? static_cast<float>(ws[p.off_shift + k0 * p.C + cj]) : 0.0f;
  }
  const Planes<TF32> planes(smem, diag);
  const int w = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int nf = block_fragments(diag);
  typename M::Acc acc[2];
  double acc64[2][M::Acc::num_elements] = {};
  int fr[2] = {0, 0}, fc[2] = {0, 0};
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    wmma::fill_fragment(acc[q], 0.0f);
    if (w + q * 8 < nf) fragment_rc(diag, w + q * 8, fr[q], fc[q]);
  }
  auto flush = [&] {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
#pragma unroll
      for (int t = 0; t < acc[q].num_elements; ++t) acc64[q][t] += acc[q].x[t];
      wmma::fill_fragment(acc[q], 0.0f);
    }
  };
  group_chunks(p, g, [&](const TileSpan& t, std::int64_t s0) {
    __syncthreads();  // the previous chunk's fragments are loaded (and the shifts are set)
    load_chunk<D, TF32>(b, p, t, s0, ci0, sh_i, false, planes);
    if (!diag) load_chunk<D, TF32>(b, p, t, s0, cj0, sh_j, true, planes);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < 2; ++q)
      if (w + q * 8 < nf) M::run(planes, fr[q], fc[q], acc[q]);
  }, flush);
  __syncthreads();  // the planes are free: stage the fp64 sums as hi + lo fp32 fragments
  float* stage = reinterpret_cast<float*>(smem) + w * 4 * kStage;
  const double n = ws[p.off_gn + g];
  const double* gmean = ws + p.off_gmean + g * p.C;
  double* out = ws + p.off_gpart + (g * p.pairs + pair) * kBlock * kBlock;
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    if (w + q * 8 >= nf) continue;
    typename M::Acc hi, lo;
#pragma unroll
    for (int t = 0; t < hi.num_elements; ++t) {
      hi.x[t] = static_cast<float>(acc64[q][t]);
      lo.x[t] = static_cast<float>(acc64[q][t] - static_cast<double>(hi.x[t]));
    }
    float* sh = stage + q * 2 * kStage;
    wmma::store_matrix_sync(sh, hi, kFrag, wmma::mem_row_major);
    wmma::store_matrix_sync(sh + kStage, lo, kFrag, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < kFrag * kFrag; e += kWarp) {
      const int r = fr[q] * kFrag + e / kFrag, cc = fc[q] * kFrag + e % kFrag;
      const std::int64_t i = ci0 + r, j = cj0 + cc;
      if (i >= p.C || j >= p.C) continue;
      const double G = static_cast<double>(sh[e]) + static_cast<double>(sh[kStage + e]);
      out[r * kBlock + cc] = group_comoment(G, n, gmean[i], sh_i[r], gmean[j], sh_j[cc]);
    }
  }
}

// ---------------------------------------------------------------- pass 2
// The splits of each image merged (maps of more than kTile pixels): the image's record and std.
__global__ void __launch_bounds__(kThreads) image_records(Plan p, double* ws) {
  FP_SHARED_LANES(Record, red, kLanes);
  const int x = threadIdx.x % kWarp, y = threadIdx.x / kWarp;
  const std::int64_t image = blockIdx.x, c = static_cast<std::int64_t>(blockIdx.y) * kWarp + x;
  const RecordStore rs{ws + p.off_split, p.splits, p.C};
  Record r;
  if (c < p.C) r = lane_walk<Record>(y, p.spi, [&](std::int64_t j) { return rs.get(image * p.spi + j, c); });
  red[y][x] = r;
  block_tree<Record, kLanes>(red, x, y);
  if (y == 0 && c < p.C) {
    Record whole = red[0][x];
    if (p.per_image) whole.msd = image_std(whole.m2, whole.n);
    RecordStore{ws + p.off_image, p.I, p.C}.put(image, c, whole);
  }
}

__global__ void __launch_bounds__(kThreads) finish_stats(Plan p, double* ws, double* out) {
  FP_SHARED_LANES(Record, red, kLanes);
  const int x = threadIdx.x % kWarp, y = threadIdx.x / kWarp;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kWarp + x;
  const RecordStore rs{ws + (p.spi > 0 ? p.off_image : p.off_split), p.records, p.C};
  Record r;
  if (c < p.C) r = lane_walk<Record>(y, p.records, [&](std::int64_t k) { return rs.get(k, c); });
  red[y][x] = r;
  block_tree<Record, kLanes>(red, x, y);
  if (y != 0 || c >= p.C) return;
  write_totals(p, c, red[0][x], out);
}

// Grid (pairs, 64 rows, 2 halves): entry (row r, 32 columns) of a block pair over the groups.
__global__ void __launch_bounds__(kThreads) finish_gram(Plan p, const double* ws, double* out) {
  FP_SHARED_LANES(Co, red, kLanes);
  const int x = threadIdx.x % kWarp, y = threadIdx.x / kWarp;
  const std::int64_t pair = blockIdx.x, r = blockIdx.y, cc = static_cast<std::int64_t>(blockIdx.z) * kWarp + x;
  std::int64_t bi, bj;
  block_pair(p.nblk, pair, bi, bj);
  const std::int64_t i = bi * kBlock + r, j = bj * kBlock + cc;
  const bool on = i < p.C && j < p.C && j >= i;
  Co acc;
  if (on)
    acc = lane_walk<Co>(y, p.groups, [&](std::int64_t g) { return group_entry(p, ws, g, pair, r, cc, i, j); });
  red[y][x] = acc;
  block_tree<Co, kLanes>(red, x, y);
  if (y != 0 || !on) return;
  const std::int64_t m2 = OutLayout{p.C, true}.m2();
  out[m2 + i * p.C + j] = red[0][x].m;
  out[m2 + j * p.C + i] = red[0][x].m;
}

unsigned grid_dim(std::int64_t n, const char* what) {
  if (n > 0x7fffffff) throw std::invalid_argument(std::string("fastprune: moments: too many ") + what + " for one launch");
  return static_cast<unsigned>(n);
}

template <DType D>
void launch(const Batch& b, const Plan& p, double* ws, double* out, cudaStream_t st) {
  FP_CHECK(p.cgroups <= 65535 && p.pairs <= 65535 && p.groups <= 65535,
           "moments: too many channels for one CUDA launch");
  if (p.splits > 0)
    stats_kernel<D><<<dim3(grid_dim(p.splits, "splits"), static_cast<unsigned>(p.cgroups)), kThreads, 0, st>>>(b, p, ws);
  if (p.groups > 0) {
    group_stats<<<grid_dim(ceil_div(p.groups * p.C, kThreads), "groups"), kThreads, 0, st>>>(p, ws);
    gram_kernel<D><<<dim3(grid_dim(p.pairs, "block pairs"), static_cast<unsigned>(p.groups)), kThreads, 0, st>>>(b, p, ws);
    finish_gram<<<dim3(static_cast<unsigned>(p.pairs), kBlock, kBlock / kWarp), kThreads, 0, st>>>(p, ws, out);
  } else if (p.cov) {  // empty batch
    check(cudaMemsetAsync(out + OutLayout{p.C, true}.m2(), 0, sizeof(double) * p.C * p.C, st), "memset");
  }
  if (p.spi > 0)
    image_records<<<dim3(grid_dim(p.I, "images"), static_cast<unsigned>(ceil_div(p.C, kWarp))), kThreads, 0, st>>>(p, ws);
  finish_stats<<<grid_dim(ceil_div(p.C, kWarp), "channels"), kThreads, 0, st>>>(p, ws, out);
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace

void run(const Batch& b, double* out, double* workspace, std::int64_t workspace_bytes) {
  FP_CHECK(b.I * b.P * b.C < (std::int64_t(1) << 53), "moments: input too large");
  const Plan p = make_plan(b, static_cast<std::int64_t>(dtype_size(b.dtype)));
  FP_CHECK(workspace_bytes >= 8 * p.size, "moments: CUDA workspace too small (see moments_workspace_size)");
  FP_CHECK(p.size == 0 || reinterpret_cast<std::uintptr_t>(workspace) % 16 == 0, "moments: CUDA workspace not 16-byte aligned");
  DeviceGuard guard(b.device_index);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(b.stream);
  switch (b.dtype) {
    case DType::f32: launch<DType::f32>(b, p, workspace, out, st); break;
    case DType::f16: launch<DType::f16>(b, p, workspace, out, st); break;
    case DType::bf16: launch<DType::bf16>(b, p, workspace, out, st); break;
    case DType::f64: launch<DType::f64>(b, p, workspace, out, st); break;
  }
}

}  // namespace fastprune::moments::cuda
