// Hot loop of the CPU moments engine, compiled once per ISA (baseline, avx2, avx512) from this
// one source: GCC vector extensions of the ISA's width, FMA where the ISA has it.
//
// A thread walks its sample range tile by tile (K samples of one image). Packing a tile converts
// it to fp32, shifts it by a per-channel value near the mean and, with covariance, writes a
// channel-major panel (row c = the tile's shifted samples of channel c; channels_last input is
// transposed W x W in registers); the same loads fold the per-channel statistics. The upper
// triangle of the panel's fp32 Gram is then formed by inner products over samples of channel
// rows (RI x RJ blocks of lane-partial sums, reduced once per tile by lane_sums) in strips of RI rows that start
// on the diagonal, so that only the upper triangle is computed. The pack adds up the shifted sums;
// the Gram's diagonal gives the shifted sums of squares. Planar (NCHW) input
// is pipelined: the Gram's blocks prefetch the next tile into L2 and pack it as they go. The tile
// is merged into the thread's fp64 totals with Chan's update (moments_tile.h).
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <utility>

#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "fastprune/convert.h"
#include "fastprune/moments.h"
#include "fastprune/moments_tile.h"
#include "fastprune/scratch.h"




namespace fastprune::cpu::FASTPRUNE_ISA {
namespace {

using moments::Acc;
using moments::Batch;

#if defined(__AVX512F__)
constexpr int W = 16;
#elif defined(__AVX2__)
constexpr int W = 8;
#else
constexpr int W = 4;
#endif
// inner-product blocks of the channel-major Gram: RI x RJ vector accumulators and
// min(RI, RJ) + 1 loaded vectors (32 registers with AVX-512, 16 with AVX2 and SSE)
#if defined(__AVX512F__)
constexpr int RI = 5, RJ = 5;
#elif defined(__AVX2__)
constexpr int RI = 3, RJ = 4;
#else
constexpr int RI = 3, RJ = 3;
#endif
static_assert(RI <= RJ, "inner_tile holds the RI vectors and streams the RJ ones");

typedef float vf __attribute__((vector_size(W * 4)));
typedef std::int32_t vi __attribute__((vector_size(W * 4)));
typedef std::uint32_t vu __attribute__((vector_size(W * 4)));
typedef std::uint16_t vh __attribute__((vector_size(W * 2)));
typedef double vd __attribute__((vector_size(W * 8)));

inline vf fmadd(vf a, vf b, vf c) {
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && defined(__AVX2__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// a broadcast (vf{} + x would add a zero: an extra dependent op per broadcast)
inline vf splat(float x) {
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(x);
#elif defined(__AVX2__)
  return (vf)_mm256_set1_ps(x);
#elif defined(__SSE2__)
  return (vf)_mm_set1_ps(x);
#else
  vf v;
  for (int l = 0; l < W; ++l) v[l] = x;
  return v;
#endif
}
inline vf vabs(vf v) { return (vf)((vu)v & 0x7fffffffu); }
// z + 1 in the lanes where v is zero (AVX-512: one masked add instead of a select and a subtract)
inline vi count_zeros(vf v, vi z) {
#if defined(__AVX512F__)
  return (vi)_mm512_mask_add_epi32((__m512i)z, _mm512_cmpeq_ps_mask((__m512)v, _mm512_setzero_ps()),
                                   (__m512i)z, _mm512_set1_epi32(1));
#else
  return z - (vi)(v == 0.0f);
#endif
}
// the same for two vectors: their two masks added first (one op on z's dependency chain)
inline vi count_zeros(vf v, vf u, vi z) {
#if defined(__AVX512F__)
  return count_zeros(u, count_zeros(v, z));
#else
  return z - ((vi)(v == 0.0f) + (vi)(u == 0.0f));
#endif
}
inline vf vload(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// Element loads by storage dtype: a vector of W consecutive elements, and one element.
template <DType D> struct Elem;
template <> struct Elem<DType::f32> {
  using T = float;
  static float one(const T* p) { return *p; }
  static vf vec(const T* p) { return vload(p); }
};
template <> struct Elem<DType::bf16> {
  using T = std::uint16_t;
  static float one(const T* p) { return bf16_to_float(*p); }
  static vf vec(const T* p) {
    vh h; std::memcpy(&h, p, sizeof h);
    return (vf)(__builtin_convertvector(h, vu) << 16);
  }
};
template <> struct Elem<DType::f16> {
  using T = std::uint16_t;
  static float one(const T* p) { return half_to_float(*p); }
  static vf vec(const T* p) {
#if defined(__AVX512F__)
    return (vf)_mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xffff), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));  // maskz: gcc 12 flags _mm512_undefined_ps
#elif defined(__F16C__) && defined(__AVX2__)
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
    vf v;
    for (int l = 0; l < W; ++l) v[l] = half_to_float(p[l]);
    return v;
#endif
  }
};

// Per-thread scratch of one tile: the shifted channel-major panel, its fp32 Gram and the
// per-channel sums.
// A pipelined run (planar input with cov) keeps two tiles, one being reduced while the next is
// packed, that share one Gram (`gram` points to the first tile's).
struct Tile {
  std::int64_t C, ld, K, kp = 0;  // kp: row stride of a channel-major panel
  // panel and Gram not zeroed (every entry read was written first); the per-channel sums zeroed
  scratch::Buffer<float> panel, gram_store, shift, s1, s2, abs, mn, mx;
  scratch::Buffer<std::int32_t> zeros, nonfin;
  float* gram = nullptr;

  Tile(std::int64_t channels, bool cov, bool planar_input, float* shared_gram = nullptr)
      : C(channels) {
    ld = ((C + 15) / 16) * 16;
    if (!cov) {
      // no panel: planar tiles are long runs per channel (fewer merges; sums are blocked), an
      // interleaved tile stays in L2 (<= 256 KiB: the pack walks it once per vector of channels)
      K = planar_input ? 2048 : std::min<std::int64_t>(2048, std::max<std::int64_t>(16, (65536 / ld) / 16 * 16));
    } else {
      // channel-major panels (a channels_last tile is transposed by its pack), <= 2 MiB each for
      // C <= 512 and K = 1024 below: the RI rows of an inner-product block stay in L1 while the
      // others stream from L2 (gram_inner's column panels); the per-tile lane reduction and fp64
      // merge are amortised over >= 128 samples; lane sums hold K / W <= 64 terms each
      K = 1024;  // a power of two in [128, 1024] (gram_inner's strides)
      while (K > 128 && K * C > 524288) K /= 2;
      kp = K + 16;  // a row stride off the 4 KiB multiples: the rows of a block share no L1 set
      panel = scratch::buffer<float>(static_cast<std::size_t>(ld * kp));
      if (shared_gram == nullptr) gram_store = scratch::buffer<float>(static_cast<std::size_t>(ld * ld));
    }
    gram = shared_gram != nullptr ? shared_gram : gram_store.get();
    for (auto* p : {&shift, &s1, &s2, &abs, &mn, &mx}) *p = scratch::zeros<float>(ld);
    zeros = scratch::zeros<std::int32_t>(ld);
    nonfin = scratch::zeros<std::int32_t>(ld);
  }
  // kn rounded up to whole vectors (the zero-padded length of a channel-major panel row)
  std::int64_t kv(std::int64_t kn) const { return (kn + W - 1) / W * W; }
};

// Per-lane running statistics of vectors of samples, with the shifted sums and, with SQUARES, the
// shifted sums of squares (a covariance pack leaves those to the Gram's diagonal).
struct LaneStats {
  vf s1{}, s2{}, s2b{}, ab{}, mn = splat(std::numeric_limits<float>::infinity()), mx = -mn;
  vi z{};

  template <bool SQUARES>
  inline void add(vf v, vf d) {
    s1 += d;
    if constexpr (SQUARES) s2 = fmadd(d, d, s2);
    ab += vabs(v);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    z = count_zeros(v, z);
  }
  // Two vectors a step (v, u; shifted d, e) with one dependency chain per statistic: the pair is
  // combined first (d + e, min(v, u), ...), so a chain advances once a step; only the squares keep
  // two chains (s2, s2b), their FMA being the longest latency. Ten accumulators (two sets of the
  // above) and the loop's temporaries did not fit AVX2's 16 registers: one spilled, and its
  // load-add-store chain through the stack set the pace of the whole loop.
  template <bool SQUARES>
  inline void add2(vf v, vf d, vf u, vf e) {
    s1 += d + e;
    if constexpr (SQUARES) {
      s2 = fmadd(d, d, s2);
      s2b = fmadd(e, e, s2b);
    }
    ab += vabs(v) + vabs(u);
    const vf lo = v < u ? v : u, hi = v > u ? v : u;
    mn = lo < mn ? lo : mn;
    mx = hi > mx ? hi : mx;
    z = count_zeros(v, u, z);
  }
  inline void merge(const LaneStats& o) {
    s1 += o.s1; s2 += o.s2; s2b += o.s2b; ab += o.ab;
    mn = o.mn < mn ? o.mn : mn;
    mx = o.mx > mx ? o.mx : mx;
    z += o.z;
  }
  vf squares() const { return s2 + s2b; }
};

// The same for single samples (tails and leftover channels), with the count of non-finite ones.
struct ScalarStats {
  float s1 = 0, s2 = 0, ab = 0, mn = std::numeric_limits<float>::infinity(), mx = -mn;
  std::int32_t z = 0, nf = 0;

  inline void add(float v, float d) {
    s1 += d; s2 += d * d; ab += v < 0 ? -v : v;
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    z += v == 0.0f;
    nf += moments::nonfinite(v);
  }
};

// op over the lanes of v by a shuffle tree (log2 W steps instead of W extracts), in a fixed order.
// (Indexing the lanes one by one would also make the vector addressable: GCC then kept an integer
// accumulator of the calling loop on the stack.)
template <class V, class Op>
inline auto fold(V v, Op op) {
#if defined(__AVX512F__)
  v = op(v, __builtin_shuffle(v, vi{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}));
  v = op(v, __builtin_shuffle(v, vi{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11}));
  v = op(v, __builtin_shuffle(v, vi{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13}));
  v = op(v, __builtin_shuffle(v, vi{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14}));
#elif defined(__AVX2__)
  v = op(v, __builtin_shuffle(v, vi{4, 5, 6, 7, 0, 1, 2, 3}));
  v = op(v, __builtin_shuffle(v, vi{2, 3, 0, 1, 6, 7, 4, 5}));
  v = op(v, __builtin_shuffle(v, vi{1, 0, 3, 2, 5, 4, 7, 6}));
#else
  v = op(v, __builtin_shuffle(v, vi{2, 3, 0, 1}));
  v = op(v, __builtin_shuffle(v, vi{1, 0, 3, 2}));
#endif
  return v[0];
}

// The log2 W shuffle stages shared by transpose and lane_sums: stage s pairs vectors a and b
// and takes, in every block of 2 H[s] lanes, a's first H[s] lanes then b's (lo[s]) or a's last
// H[s] lanes then b's (hi[s]).
struct Stages {
#if defined(__AVX512F__)
  static constexpr int N = 4;
  static constexpr int H[N] = {8, 4, 2, 1};
  static constexpr vi lo[N] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                               {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                               {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                               {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
  static constexpr vi hi[N] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                               {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
                               {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
                               {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
#elif defined(__AVX2__)
  static constexpr int N = 3;
  static constexpr int H[N] = {4, 2, 1};
  static constexpr vi lo[N] = {{0, 1, 2, 3, 8, 9, 10, 11}, {0, 1, 8, 9, 4, 5, 12, 13}, {0, 8, 2, 10, 4, 12, 6, 14}};
  static constexpr vi hi[N] = {{4, 5, 6, 7, 12, 13, 14, 15}, {2, 3, 10, 11, 6, 7, 14, 15}, {1, 9, 3, 11, 5, 13, 7, 15}};
#else
  static constexpr int N = 2;
  static constexpr int H[N] = {2, 1};
  static constexpr vi lo[N] = {{0, 1, 4, 5}, {0, 4, 2, 6}};
  static constexpr vi hi[N] = {{2, 3, 6, 7}, {1, 5, 3, 7}};
#endif
};

// In-register transpose of a W x W block (v[q] lane l -> v[l] lane q): the stages swap the
// off-diagonal H x H blocks of every 2H x 2H diagonal block.
inline void transpose(vf (&v)[W]) {
#pragma GCC unroll 4
  for (int s = 0; s < Stages::N; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) {
      if (i & Stages::H[s]) continue;
      const vf a = v[i], b = v[i + Stages::H[s]];
      v[i] = __builtin_shuffle(a, b, Stages::lo[s]);
      v[i + Stages::H[s]] = __builtin_shuffle(a, b, Stages::hi[s]);
    }
  }
}

// out[q] = the sum of v[q]'s lanes, q < W, in a fixed order: a tree of the same stages (each
// adds the two halves of a pair's blocks), 2 shuffles and an add per pair instead of a
// horizontal sum (log2 W shuffles and adds) per vector. After stage s, the blocks of H[s] lanes
// hold v's in bit-reversed order.
inline void lane_sums(vf (&v)[W], float* out) {
#pragma GCC unroll 4
  for (int s = 0, n = W / 2; s < Stages::N; ++s, n /= 2) {
#pragma GCC unroll 8
    for (int i = 0; i < n; ++i)
      v[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], Stages::lo[s]) +
             __builtin_shuffle(v[2 * i], v[2 * i + 1], Stages::hi[s]);
  }
#pragma GCC unroll 16
  for (int l = 0; l < W; ++l) {
    int q = 0;
    for (int bit = 0; bit < Stages::N; ++bit) q |= ((l >> bit) & 1) << (Stages::N - 1 - bit);
    out[q] = v[0][l];
  }
}

// Non-finite values among n samples (stride s) whose |x| sum is abs_sum: a NaN or Inf makes that
// sum non-finite, so the hot loops only sum |x| and the (rare) count is taken here, again.
template <DType D>
std::int32_t count_nonfinite(float abs_sum, const typename Elem<D>::T* x, std::int64_t n, std::int64_t s) {
  if (!moments::nonfinite(abs_sum)) return 0;
  std::int32_t count = 0;
  for (std::int64_t k = 0; k < n; ++k) count += moments::nonfinite(Elem<D>::one(x + k * s));
  return count;
}

// Bytes a statistics-only pass prefetches ahead of its loads, into L2: the loop's arithmetic keeps
// too few of its own loads in flight to stream from DRAM (measured on an AVX-512 Xeon: 9 GB/s
// with none or with a prefetch into L1 one run ahead, 14 GB/s, a plain sum's rate, with this).
constexpr std::int64_t kStreamAhead = 12288;

// Statistics of one channel over k planar (contiguous) samples; panel row c when cov. Without
// cov the samples kStreamAhead bytes further on are prefetched in step (the walk is one stream).
template <DType D, bool COV>
void pack_planar_channel(const typename Elem<D>::T* x, std::int64_t kn, std::int64_t c, Tile& t) {
  const float sh = t.shift[c];
  const vf vsh = splat(sh);
  LaneStats st;
  float* row = COV ? t.panel.get() + c * t.kp : nullptr;
  using T = typename Elem<D>::T;
  std::int64_t k = 0;
  for (; k + 2 * W <= kn; k += 2 * W) {
    if constexpr (!COV)  // with cov: during the Gram
      for (std::size_t o = 0; o < 2 * W * sizeof(T); o += 64)
        __builtin_prefetch(reinterpret_cast<const char*>(x + k) + kStreamAhead + o, 0, 1);
    const vf v = Elem<D>::vec(x + k), u = Elem<D>::vec(x + k + W);
    const vf d = v - vsh, e = u - vsh;
    st.add2<!COV>(v, d, u, e);  // with cov the Gram's diagonal gives the sums of squares
    if constexpr (COV) { vstore(row + k, d); vstore(row + k + W, e); }
  }
  for (; k + W <= kn; k += W) {
    const vf v = Elem<D>::vec(x + k);
    const vf d = v - vsh;
    st.add<!COV>(v, d);
    if constexpr (COV) vstore(row + k, d);
  }
  const auto vmin = [](auto a, auto b) { return a < b ? a : b; };
  const auto vmax = [](auto a, auto b) { return a > b ? a : b; };
  const auto plus = [](auto a, auto b) { return a + b; };
  ScalarStats f;
  f.s1 = fold(st.s1, plus);
  if constexpr (!COV) f.s2 = fold(st.squares(), plus);
  f.ab = fold(st.ab, plus);
  f.mn = fold(st.mn, vmin);
  f.mx = fold(st.mx, vmax);
  f.z = fold(st.z, plus);
  f.nf = count_nonfinite<D>(f.ab, x, k, 1);
  for (; k < kn; ++k) {
    const float v = Elem<D>::one(x + k);
    f.add(v, v - sh);
    if constexpr (COV) row[k] = v - sh;
  }
  if constexpr (COV) {
    for (k = kn; k < t.kv(kn); ++k) row[k] = 0.0f;  // pad to whole vectors
  }
  t.s1[c] = f.s1;
  if constexpr (!COV) t.s2[c] = f.s2;
  t.abs[c] = f.ab; t.mn[c] = f.mn; t.mx[c] = f.mx;
  t.zeros[c] = f.z; t.nonfin[c] = f.nf;
}

// Statistics of k interleaved samples (channels contiguous, sample stride sp); panel rows when cov.
template <DType D, bool COV>
void pack_interleaved(const typename Elem<D>::T* x, std::int64_t sp, std::int64_t kn, Tile& t) {
  const std::int64_t C = t.C, cv = C / W * W;
  // the next tile, into L2: a strided walk over rows defeats the hardware prefetcher
  const char* next = reinterpret_cast<const char*>(x + kn * sp);
  const std::int64_t row_bytes = C * static_cast<std::int64_t>(sizeof(typename Elem<D>::T));
  const std::int64_t stride_bytes = sp * static_cast<std::int64_t>(sizeof(typename Elem<D>::T));
  for (std::int64_t k = 0; k < kn; ++k)
    for (std::int64_t o = 0; o < row_bytes; o += 64) __builtin_prefetch(next + k * stride_bytes + o, 0, 2);
  for (std::int64_t c0 = 0; c0 < cv; c0 += W) {
    const vf vsh = vload(t.shift.get() + c0);
    float* rows = COV ? t.panel.get() + c0 * t.kp : nullptr;  // channel-major panel rows c0..
    LaneStats st;
    // sums in blocks of 32 samples, then added: keeps the fp32 rounding of long tiles small
    for (std::int64_t kb = 0; kb < kn; kb += 32) {
      LaneStats blk;
      const std::int64_t ke = std::min<std::int64_t>(kn, kb + 32);
      std::int64_t k = kb;
      if constexpr (COV) {
        for (; k + W <= ke; k += W) {  // W samples x W channels, transposed into W panel rows
          vf d[W];
#pragma GCC unroll 16
          for (int q = 0; q < W; ++q) {
            const vf v = Elem<D>::vec(x + (k + q) * sp + c0);
            d[q] = v - vsh;
            blk.add<!COV>(v, d[q]);  // with cov the Gram's diagonal gives the sums of squares
          }
          transpose(d);
#pragma GCC unroll 16
          for (int l = 0; l < W; ++l) vstore(rows + l * t.kp + k, d[l]);
        }
      }
      for (; k < ke; ++k) {
        const vf v = Elem<D>::vec(x + k * sp + c0);
        const vf d = v - vsh;
        blk.add<!COV>(v, d);
        if constexpr (COV)
          for (int l = 0; l < W; ++l) rows[l * t.kp + k] = d[l];
      }
      st.merge(blk);
    }
    vstore(t.s1.get() + c0, st.s1); vstore(t.s2.get() + c0, st.squares()); vstore(t.abs.get() + c0, st.ab);
    vstore(t.mn.get() + c0, st.mn); vstore(t.mx.get() + c0, st.mx);
    std::memcpy(t.zeros.get() + c0, &st.z, sizeof st.z);
    for (int l = 0; l < W; ++l) t.nonfin[c0 + l] = count_nonfinite<D>(st.ab[l], x + c0 + l, kn, sp);
  }
  for (std::int64_t c = cv; c < C; ++c) {
    const float sh = t.shift[c];
    ScalarStats f;
    for (std::int64_t k = 0; k < kn; ++k) {
      const float v = Elem<D>::one(x + k * sp + c);
      f.add(v, v - sh);
      if constexpr (COV) t.panel[c * t.kp + k] = v - sh;
    }
    t.s1[c] = f.s1; t.s2[c] = f.s2; t.abs[c] = f.ab; t.mn[c] = f.mn; t.mx[c] = f.mx;
    t.zeros[c] = f.z; t.nonfin[c] = f.nf;
  }
  if constexpr (COV) {
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t k = kn; k < t.kv(kn); ++k) t.panel[c * t.kp + k] = 0.0f;  // pad to whole vectors
  }
}

// Lines of the next planar tile to prefetch into L2 during a Gram block: `left` lines from offset
// `o` of `row` on (rows `stride` bytes apart, `bytes` each), one every `mask + 1` loop steps.
// Spread out so: a line every step keeps ~50 DRAM misses in flight, which fill the L1's miss
// buffers that the block's own loads from L2 need (measured on an AVX2 EPYC, one 32 x 512^2 map,
// the pack switched off: the Gram 4.4 ms alone, 7.8 ms beside a line a step, 5.5 ms spread).
struct Ahead {
  const char* row = nullptr;
  std::int64_t o = 0, bytes = 0, stride = 0, left = 0, mask = 0;

  inline void one() {
    __builtin_prefetch(row + o, 0, 2);
    o += 64;
    if (o >= bytes) {
      o = 0;
      row += stride;
    }
    --left;
  }
  inline void step(std::int64_t s) {
    if (left > 0 && (s & mask) == 0) one();
  }
  inline void rest() {
    while (left > 0) one();
  }
};

// g[i0 + i][j0 + j] = sum_k p[i0 + i][k] * p[j0 + j][k], i < NI <= RI, j < NJ <= RJ: rows of a
// channel-major panel (row stride KP, a compile-time constant so that the row addresses are
// immediate offsets), over kv samples (a multiple of W). Lane partial sums, reduced at the end by lane_sums.
// DIAG: a block that starts on the diagonal (i0 == j0), of which only j >= i is needed.
// ahead: lines of the next tile to prefetch along the way (then the ones its steps did not reach).
template <std::int64_t KP, int NI, int NJ, bool DIAG>
void inner_tile(const float* p, std::int64_t kv, std::int64_t i0, std::int64_t j0, float* g,
                std::int64_t ld, Ahead& ahead) {
  vf acc[NI][NJ] = {};
  const float* ri = p + i0 * KP;
  const float* rj = p + j0 * KP;
  const std::int64_t kp = KP;
  Ahead pf = ahead;  // a local copy: its fields stay in registers
  for (std::int64_t k = 0; k < kv; k += W) {
    pf.step(k / W);
    vf a[NI];  // hold the i vectors, stream the j vectors (NI <= RI <= RJ)
#pragma GCC unroll 8
    for (int i = 0; i < NI; ++i) a[i] = vload(ri + i * kp + k);
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) {
      const vf b = DIAG && j < NI ? a[j] : vload(rj + j * kp + k);
#pragma GCC unroll 8
      for (int i = 0; i < NI; ++i)
        if (!DIAG || j >= i) acc[i][j] = fmadd(a[i], b, acc[i][j]);
    }
  }
  ahead = pf;
  constexpr int N = NI * NJ;  // lane sums W accumulators at a time (a DIAG block's j < i are 0)
  float sums[(N + W - 1) / W * W];
#pragma GCC unroll 4
  for (int b = 0; b < N; b += W) {
    vf v[W];
#pragma GCC unroll 16
    for (int q = 0; q < W; ++q) v[q] = b + q < N ? acc[(b + q) / NJ][(b + q) % NJ] : vf{};
    lane_sums(v, sums + b);
  }
#pragma GCC unroll 8
  for (int i = 0; i < NI; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j)
      if (!DIAG || j >= i) g[(i0 + i) * ld + j0 + j] = sums[i * NJ + j];
}

// inner_tile for every block shape: [DIAG][ni - 1][nj - 1].
using BlockFn = void (*)(const float*, std::int64_t, std::int64_t, std::int64_t, float*, std::int64_t, Ahead&);
template <std::int64_t KP, bool DIAG, std::size_t... S>
constexpr std::array<BlockFn, RI * RJ> block_shapes(std::index_sequence<S...>) {
  return {&inner_tile<KP, static_cast<int>(S / RJ) + 1, static_cast<int>(S % RJ) + 1, DIAG>...};
}
template <std::int64_t KP>
constexpr std::array<std::array<BlockFn, RI * RJ>, 2> kBlocks = {
    block_shapes<KP, false>(std::make_index_sequence<RI * RJ>{}),
    block_shapes<KP, true>(std::make_index_sequence<RI * RJ>{})};

// Mean of n samples `stride` apart: the shift of an image's first tile. A shift only has to be
// near the tile's mean (the merge centres exactly), so contiguous samples are summed in fp32
// lanes: this pass re-reads a whole tile per image, as much as the pack itself on small maps.
template <DType D>
float channel_mean(const typename Elem<D>::T* x, std::int64_t n, std::int64_t stride) {
  double sum = 0;
  std::int64_t k = 0;
  if (stride == 1) {
    vf lanes{};
    for (; k + W <= n; k += W) lanes += Elem<D>::vec(x + k);
    for (int l = 0; l < W; ++l) sum += lanes[l];
  }
  for (; k < n; ++k) sum += Elem<D>::one(x + k * stride);
  return static_cast<float>(sum / static_cast<double>(n));
}

// The next planar tile (kn samples of row c at base + c * stride), packed into `t` row by row
// while the current tile's Gram computes: its lines are prefetched into L2 spread over the
// Gram's blocks (Ahead), and a row is packed once the block after the one that prefetched its
// last line is done (LAG = 2). Its loads then come from L2 (rows a power-of-two channel stride
// apart share L2 sets, so rows prefetched a whole tile ahead would be evicted again).
template <DType D>
struct NextTile {
  static constexpr std::int64_t LAG = 2;
  const typename Elem<D>::T* base = nullptr;
  std::int64_t stride = 0, kn = 0;
  bool own_shift = false;  // an image's first tile: each row is shifted by its own mean
  Tile* t = nullptr;

  const char* row(std::int64_t c) const { return reinterpret_cast<const char*>(base + c * stride); }
  std::int64_t bytes() const { return kn * static_cast<std::int64_t>(sizeof(typename Elem<D>::T)); }
  std::int64_t row_stride_bytes() const { return stride * static_cast<std::int64_t>(sizeof(typename Elem<D>::T)); }
  void pack(std::int64_t c) const {
    if (own_shift) t->shift[c] = channel_mean<D>(base + c * stride, kn, 1);
    pack_planar_channel<D, true>(base + c * stride, kn, c, *t);
  }
};

// Bytes of the Gram's streamed rows that one column panel holds: half the core's L2 (the other
// half holds the strip rows, the next tile's prefetched lines and the panel it is packed into), at
// most 512 KiB. Measured on an AVX2 EPYC (512 KiB L2), thread time: 512 KiB panels ran C = 128..512
// 7-13 % slower than 256 KiB ones (C = 64 alike); on an AVX-512 Xeon (2 MiB L2) this is the
// 512 KiB it was tuned at.
std::int64_t column_panel_bytes() {
  static const std::int64_t bytes = [] {
#if defined(_SC_LEVEL2_CACHE_SIZE)  // glibc; elsewhere, or where it reads 0, the 512 KiB
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
    const long l2 = 0;
#endif
    return l2 > 0 ? std::clamp<std::int64_t>(l2 / 2, 65536, 524288) : std::int64_t{524288};
  }();
  return bytes;
}

// Upper triangle of a channel-major panel's Gram (its diagonal: the shifted sums of squares), and
// the pack of the next tile (if any) alongside.
template <std::int64_t KP, DType D>
void gram_inner_kp(Tile& t, std::int64_t kn, const NextTile<D>* next) {
  const std::int64_t kv = t.kv(kn), C = t.C;
  // blocks in column panels of JC columns (column_panel_bytes of rows: the streamed rows stay in
  // L2 however many channels); in each, strips of RI rows that reach it, from the diagonal on
  const std::int64_t JC = std::max<std::int64_t>(RJ, column_panel_bytes() / 4 / KP / RJ * RJ);
  const auto for_blocks = [&](auto&& f) {
    for (std::int64_t jc = 0; jc < C; jc += JC) {
      const std::int64_t jend = std::min(C, jc + JC);
      for (std::int64_t i0 = 0; i0 < jend; i0 += RI)
        for (std::int64_t j0 = std::max(jc, i0); j0 < jend; j0 += RJ)
          f(i0, std::min<std::int64_t>(RI, C - i0), j0, std::min<std::int64_t>(RJ, jend - j0));
    }
  };
  std::int64_t blocks = 0;
  for_blocks([&](std::int64_t, std::int64_t, std::int64_t, std::int64_t) { ++blocks; });
  // the next tile's lines split evenly over the blocks: block b prefetches lines [lines b / blocks,
  // lines (b + 1) / blocks), one every `gap` loop steps (its steps per line, rounded down to a
  // power of two)
  const std::int64_t rows = next != nullptr ? next->t->C : 0;
  const std::int64_t bytes = next != nullptr ? next->bytes() : 0, per_row = (bytes + 63) / 64, lines = rows * per_row;
  const auto first_line = [&](std::int64_t blk) { return lines * blk / blocks; };
  std::int64_t gap = 1;
  while (lines > 0 && 2 * gap * lines <= blocks * (kv / W)) gap *= 2;
  std::int64_t b = 0, packed = 0;
  for_blocks([&](std::int64_t i0, std::int64_t ni, std::int64_t j0, std::int64_t nj) {
      Ahead ahead;
      if (lines > 0) {
        const std::int64_t l0 = first_line(b);
        ahead = Ahead{next->row(l0 / per_row), l0 % per_row * 64, bytes, next->row_stride_bytes(), first_line(b + 1) - l0, gap - 1};
      }
      kBlocks<KP>[j0 == i0][(ni - 1) * RJ + nj - 1](t.panel.get(), kv, i0, j0, t.gram, t.ld, ahead);
      ahead.rest();
      if (lines > 0 && b + 1 >= NextTile<D>::LAG)
        for (const std::int64_t upto = first_line(b + 2 - NextTile<D>::LAG) / per_row; packed < upto; ++packed) next->pack(packed);
      ++b;
    });
  for (; packed < rows; ++packed) next->pack(packed);
  for (std::int64_t c = 0; c < C; ++c) t.s2[c] = t.gram[c * t.ld + c];
}

template <DType D>
void gram_inner(Tile& t, std::int64_t kn, const NextTile<D>* next) {
  switch (t.kp) {
    case 1024 + 16: return gram_inner_kp<1024 + 16, D>(t, kn, next);
    case 512 + 16: return gram_inner_kp<512 + 16, D>(t, kn, next);
    case 256 + 16: return gram_inner_kp<256 + 16, D>(t, kn, next);
    case 128 + 16: return gram_inner_kp<128 + 16, D>(t, kn, next);
  }
  throw std::logic_error("fastprune: unexpected panel stride");
}

// Running per-image (n, mean, m2) for msd.
struct ImageAcc {
  double n = 0;
  std::vector<double> mean, m2;
  void reset() {
    n = 0;
    std::fill(mean.begin(), mean.end(), 0.0);
    std::fill(m2.begin(), m2.end(), 0.0);
  }
};

// Channel c of a packed tile of k samples into the totals, which held n samples before it, and the
// image accumulator (if any), which held ni: mean, m2 (without cov; merge_tile adds the
// co-moments), |x|, zeros, non-finite count, min, max. The counts themselves are the caller's.
template <class TileT>
void merge_channel(const TileT& t, std::int64_t c, double k, double n, Acc& acc, ImageAcc* img, double ni) {
  const double tm = moments::tile_mean(t.shift[c], t.s1[c], k);
  const double d = tm - acc.mean[c];
  if (!acc.cov) acc.m2[c] += moments::tile_m2(t.s2[c], t.s1[c], k) + d * d * moments::chan_weight(n, k);
  acc.mean[c] = n > 0 ? acc.mean[c] + d * (k / (n + k)) : acc.mean[c] + d;
  acc.abs_sum[c] += t.abs[c];
  acc.zeros[c] += t.zeros[c];
  acc.nonfinite[c] += t.nonfin[c];
  acc.min[c] = std::min<double>(acc.min[c], t.mn[c]);
  acc.max[c] = std::max<double>(acc.max[c], t.mx[c]);
  if (img != nullptr) {
    const double di = tm - img->mean[c];
    img->m2[c] += moments::tile_m2(t.s2[c], t.s1[c], k) + di * di * moments::chan_weight(ni, k);
    img->mean[c] = moments::chan_mean(img->mean[c], ni, tm, k);
  }
}

// Merges the packed tile (kn samples) into the thread totals and the image accumulator.
// d and o: scratch of C doubles each.
// TileT: Tile (fp32 sums of fp32/fp16/bf16 input) or Tile64 (fp64 sums of fp64 input).
template <class TileT>
void merge_tile(const TileT& t, std::int64_t kn, Acc& acc, ImageAcc* img, std::vector<double>& dv,
                std::vector<double>& ov) {
  const std::int64_t C = t.C;
  const double k = static_cast<double>(kn);
  if (acc.cov) {
    const double w = moments::chan_weight(acc.n, k);
    double* __restrict d = dv.data();
    double* __restrict o = ov.data();
    for (std::int64_t c = 0; c < C; ++c) {
      d[c] = moments::tile_mean(t.shift[c], t.s1[c], k) - acc.mean[c];
      o[c] = t.s1[c] / k;
    }
    for (std::int64_t i = 0; i < C; ++i) {
      double* __restrict mrow = acc.m2.data() + i * C;
      const auto* __restrict grow = t.gram + i * t.ld;
      const double si = t.s1[i];
      const double di = d[i] * w;
      mrow[i] += moments::tile_m2(t.s2[i], si, k) + d[i] * di;
      for (std::int64_t j = i + 1; j < C; ++j)
        mrow[j] += moments::tile_comoment(grow[j], si, o[j]) + di * d[j];
    }
  }
  for (std::int64_t c = 0; c < C; ++c) merge_channel(t, c, k, acc.n, acc, img, img != nullptr ? img->n : 0.0);
  acc.n += k;
  if (img != nullptr) img->n += k;
}

// A tile: kn samples from pixel p of `image`, whose samples in this range end at p_end. `first`:
// the image's first tile in the range (it resets the image accumulator and is shifted by its
// own mean); `whole`: the range holds the whole image.
struct TileRef {
  bool valid = false, first = false, whole = false;
  std::int64_t image = 0, p = 0, kn = 0, p_end = 0;
  bool last() const { return p + kn == p_end; }
};

TileRef first_tile(const Batch& b, std::int64_t m, std::int64_t m1, std::int64_t K) {
  TileRef r;
  if (m >= m1) return r;
  r.valid = r.first = true;
  r.image = m / b.P;
  r.p = m % b.P;
  r.p_end = std::min(b.P, r.p + (m1 - m));
  r.kn = std::min(K, r.p_end - r.p);
  r.whole = r.p == 0 && r.p_end == b.P;
  return r;
}

TileRef next_tile(const Batch& b, const TileRef& c, std::int64_t m1, std::int64_t K) {
  if (!c.last()) {
    TileRef r = c;
    r.first = false;
    r.p += c.kn;
    r.kn = std::min(K, r.p_end - r.p);
    return r;
  }
  return first_tile(b, c.image * b.P + c.p_end, m1, K);
}

// After a tile that ends its image's samples in this range: the image's spatial std into msd_sum,
// or, for an image cut by the range, its partial (n, mean, m2) for finish_segments.
void finish_image(const Batch& b, const TileRef& cur, const ImageAcc& img, Acc& acc) {
  if (!cur.last() || !b.per_image) return;
  if (cur.whole) {
    for (std::int64_t c = 0; c < b.C; ++c) acc.msd_sum[c] += moments::image_std(img.m2[c], img.n);
    acc.images += 1;
  } else {
    acc.segments.push_back(Acc::Segment{cur.image, img.n, img.mean, img.m2});
  }
}

// Shift (an image's first tile: its own mean; else the image's running mean) and pack of a tile.
template <DType D>
void pack_tile(const Batch& b, const typename Elem<D>::T* data, const TileRef& r, const ImageAcc& img, Tile& t) {
  const typename Elem<D>::T* x = data + r.image * b.sI + r.p * b.sP;
  for (std::int64_t c = 0; c < b.C; ++c)
    t.shift[c] = r.first ? channel_mean<D>(x + c * b.sC, r.kn, b.sP) : static_cast<float>(img.mean[c]);
  if (b.planar && b.cov) {
    for (std::int64_t c = 0; c < b.C; ++c) pack_planar_channel<D, true>(x + c * b.sC, r.kn, c, t);
  } else {
    if (b.cov) pack_interleaved<D, true>(x, b.sP, r.kn, t);
    else pack_interleaved<D, false>(x, b.sP, r.kn, t);
  }
}

// Statistics only of planar input, samples [m0, m1): each image's samples in the range are
// walked channel by channel, i.e. one contiguous run per channel that streams like a plain
// reduction (tile-major order would hop a channel stride every K samples and restart the
// hardware prefetcher each time). Along a run, a channel sees the same tiles, shifts and merges,
// in the same order, as in the tile-major walk.
template <DType D>
void run_planar_statistics(const Batch& b, const typename Elem<D>::T* data, std::int64_t m0, std::int64_t m1,
                           Acc& acc) {
  Tile t(b.C, false, true);
  ImageAcc img;
  img.mean.assign(b.C, 0.0);
  img.m2.assign(b.C, 0.0);
  for (TileRef seg = first_tile(b, m0, m1, t.K); seg.valid;) {
    const auto* image = data + seg.image * b.sI;
    img.reset();
    double n = acc.n, ni = 0;
    TileRef cur = seg;
    for (std::int64_t c = 0; c < b.C; ++c) {
      const auto* run = image + c * b.sC;
      n = acc.n;
      ni = 0;
      for (cur = seg;; cur = next_tile(b, cur, m1, t.K)) {
        const auto* x = run + cur.p;
        t.shift[c] = cur.first ? channel_mean<D>(x, cur.kn, 1) : static_cast<float>(img.mean[c]);
        pack_planar_channel<D, false>(x, cur.kn, c, t);
        merge_channel(t, c, static_cast<double>(cur.kn), n, acc, &img, ni);
        n += static_cast<double>(cur.kn);
        ni += static_cast<double>(cur.kn);
        if (cur.last()) break;
      }
    }
    acc.n = n;
    img.n = ni;
    finish_image(b, cur, img, acc);
    seg = next_tile(b, cur, m1, t.K);
  }
}

// Samples [m0, m1) tile by tile: pack, Gram, merge. Planar input with cov is pipelined over two
// tiles: the next tile is packed during the current one's Gram (gram_inner).
template <DType D>
void run_range(const Batch& b, std::int64_t m0, std::int64_t m1, Acc& acc) {
  using T = typename Elem<D>::T;
  const T* data = reinterpret_cast<const T*>(b.data);
  if (b.planar && !b.cov) return run_planar_statistics<D>(b, data, m0, m1, acc);
  const bool pipelined = b.planar && b.cov;
  Tile t0(b.C, b.cov, b.planar);
  std::unique_ptr<Tile> t1 = pipelined ? std::make_unique<Tile>(b.C, true, true, t0.gram) : nullptr;
  Tile* tiles[2] = {&t0, pipelined ? t1.get() : &t0};
  std::vector<double> d(b.C), o(b.C);
  ImageAcc img;
  img.mean.assign(b.C, 0.0);
  img.m2.assign(b.C, 0.0);
  TileRef cur = first_tile(b, m0, m1, t0.K);
  if (cur.valid) pack_tile<D>(b, data, cur, img, t0);
  for (int ci = 0; cur.valid;) {
    Tile& t = *tiles[ci];
    const TileRef nxt = next_tile(b, cur, m1, t0.K);
    if (pipelined) {
      NextTile<D> next;
      if (nxt.valid) {
        next.base = data + nxt.image * b.sI + nxt.p;
        next.stride = b.sC;
        next.kn = nxt.kn;
        next.own_shift = nxt.first;
        next.t = tiles[ci ^ 1];
        if (!nxt.first)  // the running mean of the image's tiles before this one, or this one's shift
          for (std::int64_t c = 0; c < b.C; ++c) next.t->shift[c] = cur.first ? t.shift[c] : static_cast<float>(img.mean[c]);
      }
      gram_inner<D>(t, cur.kn, nxt.valid ? &next : nullptr);
      ci ^= 1;
    } else if (b.cov) {
      gram_inner<D>(t, cur.kn, nullptr);
    }
    if (cur.first) img.reset();
    merge_tile(t, cur.kn, acc, &img, d, o);
    finish_image(b, cur, img, acc);
    if (!pipelined && nxt.valid) pack_tile<D>(b, data, nxt, img, t);
    cur = nxt;
  }
}

// float64 input is accumulated in fp64 throughout (never rounded to fp32): a tile of K samples
// of one image is shifted per channel by a value near its mean (the tile's own mean for an
// image's first tile, else the image's running mean), written to a channel-major fp64 panel,
// and its shifted sums, sums of squares and Gram (fp64 lanes) are merged by the same Chan update
// as the fp32 tiles. Exact for offsets of 1e8 x std and magnitudes up to ~1e150 (squares stay
// finite); larger finite values overflow to inf, which the Python side reports.
struct Tile64 {
  static constexpr std::int64_t K = 256;
  std::int64_t C, ld;
  scratch::Buffer<double> panel, gram_store, shift, s1, s2, abs, mn, mx;  // as Tile's
  scratch::Buffer<std::int64_t> zeros, nonfin;
  double* gram = nullptr;
  bool cov;

  Tile64(std::int64_t channels, bool covariance) : C(channels), ld(channels), cov(covariance) {
    panel = scratch::buffer<double>(static_cast<std::size_t>(C * K));
    if (cov) gram_store = scratch::buffer<double>(static_cast<std::size_t>(C * C));
    gram = gram_store.get();
    for (auto* p : {&shift, &s1, &s2, &abs, &mn, &mx}) *p = scratch::zeros<double>(static_cast<std::size_t>(C));
    zeros = scratch::zeros<std::int64_t>(static_cast<std::size_t>(C));
    nonfin = scratch::zeros<std::int64_t>(static_cast<std::size_t>(C));
  }
};

inline double dot64(const double* a, const double* b, std::int64_t kv) {
  vd acc{};
  for (std::int64_t k = 0; k < kv; k += W) {
    vd x, y;
    std::memcpy(&x, a + k, sizeof x);
    std::memcpy(&y, b + k, sizeof y);
    acc += x * y;
  }
  double s = 0;
  for (int l = 0; l < W; ++l) s += acc[l];
  return s;
}

// Pack (shift, per-channel statistics) and Gram of kn samples at x (channel stride sC, sample
// stride sP); `first`: the image's first tile in this range, shifted by its own mean.
void tile64(const double* x, std::int64_t sC, std::int64_t sP, std::int64_t kn, bool first,
            const ImageAcc& img, Tile64& t) {
  const std::int64_t kv = (kn + W - 1) / W * W;
  for (std::int64_t c = 0; c < t.C; ++c) {
    const double* xc = x + c * sC;
    double* row = t.panel.get() + c * Tile64::K;
    double sh = img.mean[c];
    if (first) {
      double sum = 0;
      for (std::int64_t k = 0; k < kn; ++k) sum += xc[k * sP];
      sh = sum / static_cast<double>(kn);
    }
    double s1 = 0, s2 = 0, ab = 0, mn = std::numeric_limits<double>::infinity(), mx = -mn;
    std::int64_t z = 0, nf = 0;
    for (std::int64_t k = 0; k < kn; ++k) {
      const double v = xc[k * sP], d = v - sh;
      row[k] = d;
      s1 += d;
      s2 += d * d;
      ab += v < 0 ? -v : v;
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
      z += v == 0.0;
      nf += !(v - v == 0.0);
    }
    for (std::int64_t k = kn; k < kv; ++k) row[k] = 0.0;
    t.shift[c] = sh; t.s1[c] = s1; t.s2[c] = s2; t.abs[c] = ab; t.mn[c] = mn; t.mx[c] = mx;
    t.zeros[c] = z; t.nonfin[c] = nf;
  }
  if (t.cov)
    for (std::int64_t i = 0; i < t.C; ++i)
      for (std::int64_t j = i + 1; j < t.C; ++j)
        t.gram[i * t.ld + j] = dot64(t.panel.get() + i * Tile64::K, t.panel.get() + j * Tile64::K, kv);
}

void run_range_f64(const Batch& b, std::int64_t m0, std::int64_t m1, Acc& acc) {
  const double* data = reinterpret_cast<const double*>(b.data);
  Tile64 t(b.C, b.cov);
  std::vector<double> d(b.C), o(b.C);
  ImageAcc img;
  img.mean.assign(b.C, 0.0);
  img.m2.assign(b.C, 0.0);
  for (TileRef cur = first_tile(b, m0, m1, Tile64::K); cur.valid; cur = next_tile(b, cur, m1, Tile64::K)) {
    tile64(data + cur.image * b.sI + cur.p * b.sP, b.sC, b.sP, cur.kn, cur.first, img, t);
    if (cur.first) img.reset();
    merge_tile(t, cur.kn, acc, &img, d, o);
    finish_image(b, cur, img, acc);
  }
}

}  // namespace

void moments_range(const Batch& b, std::int64_t m0, std::int64_t m1, Acc& acc) {
  switch (b.dtype) {
    case DType::f32: return run_range<DType::f32>(b, m0, m1, acc);
    case DType::f16: return run_range<DType::f16>(b, m0, m1, acc);
    case DType::bf16: return run_range<DType::bf16>(b, m0, m1, acc);
    case DType::f64: return run_range_f64(b, m0, m1, acc);
  }
}

}  // namespace fastprune::cpu::FASTPRUNE_ISA
