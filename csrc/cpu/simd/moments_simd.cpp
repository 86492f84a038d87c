// Hot loop of the CPU moments engine, compiled once per ISA (baseline, avx2, avx512) from this
// one source: GCC vector extensions of the ISA's width, FMA where the ISA has it.
//
// A thread walks its sample range tile by tile (K samples of one image). Packing a tile converts
// it to fp32, shifts it by a per-channel value near the mean and writes a sample-major K x ld
// panel; the same loads fold the per-channel statistics. The upper triangle of the fp32 Gram of
// the panel is then computed with 6 x (2 vectors) register micro-tiles, and the tile is merged
// into the thread's fp64 totals with Chan's update (moments_tile.h).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "fastprune/convert.h"
#include "fastprune/moments.h"
#include "fastprune/moments_tile.h"

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
constexpr int MR = 6;       // micro-tile rows (broadcast)
constexpr int NR = 2 * W;   // micro-tile columns (two vectors)

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
inline vf vload(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// Element loads by storage dtype: a vector of W consecutive elements, and one element.
template <DType D> struct Elem;
template <> struct Elem<DType::f32> {
  using T = float;
  static float one(const T* p) { return *p; }
  static vf vec(const T* p) { return vload(p); }
};
template <> struct Elem<DType::f64> {
  using T = double;
  static float one(const T* p) { return static_cast<float>(*p); }
  static vf vec(const T* p) { vd d; std::memcpy(&d, p, sizeof d); return __builtin_convertvector(d, vf); }
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

struct AlignedFree { void operator()(void* p) const { std::free(p); } };
template <class T>
std::unique_ptr<T[], AlignedFree> aligned_zeros(std::size_t n) {
  std::size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
  T* p = static_cast<T*>(std::aligned_alloc(64, bytes));
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return std::unique_ptr<T[], AlignedFree>(p);
}

// Per-thread scratch of one tile: the shifted panel, its fp32 Gram and the per-channel sums.
struct Tile {
  std::int64_t C, ld, K;
  std::unique_ptr<float[], AlignedFree> panel, gram, shift, s1, s2, abs, mn, mx;
  std::unique_ptr<std::int32_t[], AlignedFree> zeros, nonfin;

  Tile(std::int64_t channels, bool cov, bool planar) : C(channels) {
    const std::int64_t a = NR > 16 ? NR : 16;
    ld = ((C + a - 1) / a) * a;
    // panel <= 128 KiB (L2), between 64 and 512 samples: bounded fp32 accumulation
    K = std::min<std::int64_t>(512, std::max<std::int64_t>(64, (32768 / ld) / 16 * 16));
    // no panel: planar tiles are long runs per channel (fewer merges; sums are blocked), an
    // interleaved tile stays in L1 (the pack walks it once per vector of channels)
    if (!cov) K = planar ? 2048 : std::min<std::int64_t>(2048, std::max<std::int64_t>(16, (8192 / ld) / 16 * 16));
    if (cov) {
      panel = aligned_zeros<float>(static_cast<std::size_t>(K * ld + 64));
      gram = aligned_zeros<float>(static_cast<std::size_t>((ld + MR) * ld));
    }
    for (auto* p : {&shift, &s1, &s2, &abs, &mn, &mx}) *p = aligned_zeros<float>(ld);
    zeros = aligned_zeros<std::int32_t>(ld);
    nonfin = aligned_zeros<std::int32_t>(ld);
  }
};

#if defined(__AVX2__)
constexpr bool kTransposeBlocks = true;
// 8 consecutive elements as fp32 (AVX2 width, also used by the AVX-512 build).
template <DType D> inline __m256 load8(const typename Elem<D>::T* p);
template <> inline __m256 load8<DType::f32>(const float* p) { return _mm256_loadu_ps(p); }
template <> inline __m256 load8<DType::f64>(const double* p) {
  return _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(p + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(p)));
}
template <> inline __m256 load8<DType::f16>(const std::uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <> inline __m256 load8<DType::bf16>(const std::uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// Panel rows k0..k0+8, columns c0..c0+8 <- shifted x[c][k]: an 8 x 8 register transpose.
template <DType D>
inline void transpose8(const typename Elem<D>::T* x, std::int64_t sc, const float* shift, float* dst,
                       std::int64_t ld) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_sub_ps(load8<D>(x + i * sc), _mm256_set1_ps(shift[i]));
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * ld, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// The shifted panel of a planar tile (channels c in [0, C), samples [0, kn)): 8 x 8 blocks,
// scalar edges. Reads the tile again, from cache (the statistics pass just loaded it).
template <DType D>
void transpose_planar(const typename Elem<D>::T* x, std::int64_t sc, std::int64_t kn, Tile& t) {
  const std::int64_t C8 = t.C / 8 * 8, K8 = kn / 8 * 8;
  for (std::int64_t c0 = 0; c0 < C8; c0 += 8)
    for (std::int64_t k0 = 0; k0 < K8; k0 += 8)
      transpose8<D>(x + c0 * sc + k0, sc, t.shift.get() + c0, t.panel.get() + k0 * t.ld + c0, t.ld);
  for (std::int64_t c = 0; c < t.C; ++c) {
    const float sh = t.shift[c];
    for (std::int64_t k = c < C8 ? K8 : 0; k < kn; ++k)
      t.panel[k * t.ld + c] = Elem<D>::one(x + c * sc + k) - sh;
  }
}
#else
constexpr bool kTransposeBlocks = false;
#endif

// Statistics of one channel over k planar (contiguous) samples; panel column c when cov.
template <DType D, bool COV>
void pack_planar_channel(const typename Elem<D>::T* x, std::int64_t kn, std::int64_t c, Tile& t) {
  const float sh = t.shift[c];
  const vf vsh = splat(sh);
  vf s1{}, s2{}, ab{}, mn = splat(std::numeric_limits<float>::infinity()), mx = -mn;
  vi z{}, nf{};
  float* col = COV ? t.panel.get() + c : nullptr;
  std::int64_t k = 0;
  for (; k + W <= kn; k += W) {
    __builtin_prefetch(x + k + t.K, 0, 2);  // the next tile of this channel, into L2
    const vf v = Elem<D>::vec(x + k);
    const vf d = v - vsh;
    s1 += d;
    s2 = fmadd(d, d, s2);
    ab += vabs(v);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    z -= (v == 0.0f);
    nf -= ((v - v) != 0.0f);
  }
  float fs1 = 0, fs2 = 0, fab = 0, fmn = mn[0], fmx = mx[0];
  std::int32_t fz = 0, fnf = 0;
  for (int l = 0; l < W; ++l) {
    fs1 += s1[l]; fs2 += s2[l]; fab += ab[l];
    fmn = mn[l] < fmn ? mn[l] : fmn;
    fmx = mx[l] > fmx ? mx[l] : fmx;
    fz += z[l]; fnf += nf[l];
  }
  for (; k < kn; ++k) {
    const float v = Elem<D>::one(x + k);
    const float d = v - sh;
    fs1 += d; fs2 += d * d; fab += v < 0 ? -v : v;
    fmn = v < fmn ? v : fmn;
    fmx = v > fmx ? v : fmx;
    fz += v == 0.0f;
    fnf += moments::nonfinite(v);
  }
  if constexpr (COV) {
    if (!kTransposeBlocks) {
      for (k = 0; k < kn; ++k) col[k * t.ld] = Elem<D>::one(x + k) - sh;
    }
  }
  t.s1[c] = fs1; t.s2[c] = fs2; t.abs[c] = fab; t.mn[c] = fmn; t.mx[c] = fmx;
  t.zeros[c] = fz; t.nonfin[c] = fnf;
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
    vf s1{}, s2{}, ab{}, mn = splat(std::numeric_limits<float>::infinity()), mx = -mn;
    vi z{}, nf{};
    // sums in blocks of 32 samples, then added: keeps the fp32 rounding of long tiles small
    for (std::int64_t kb = 0; kb < kn; kb += 32) {
      vf b1{}, b2{}, bab{};
      const std::int64_t ke = std::min<std::int64_t>(kn, kb + 32);
      for (std::int64_t k = kb; k < ke; ++k) {
        const vf v = Elem<D>::vec(x + k * sp + c0);
        const vf d = v - vsh;
        b1 += d;
        b2 = fmadd(d, d, b2);
        bab += vabs(v);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        z -= (v == 0.0f);
        nf -= ((v - v) != 0.0f);
        if constexpr (COV) vstore(t.panel.get() + k * t.ld + c0, d);
      }
      s1 += b1; s2 += b2; ab += bab;
    }
    vstore(t.s1.get() + c0, s1); vstore(t.s2.get() + c0, s2); vstore(t.abs.get() + c0, ab);
    vstore(t.mn.get() + c0, mn); vstore(t.mx.get() + c0, mx);
    std::memcpy(t.zeros.get() + c0, &z, sizeof z);
    std::memcpy(t.nonfin.get() + c0, &nf, sizeof nf);
  }
  for (std::int64_t c = cv; c < C; ++c) {
    const float sh = t.shift[c];
    float fs1 = 0, fs2 = 0, fab = 0, fmn = std::numeric_limits<float>::infinity(), fmx = -fmn;
    std::int32_t fz = 0, fnf = 0;
    for (std::int64_t k = 0; k < kn; ++k) {
      const float v = Elem<D>::one(x + k * sp + c);
      const float d = v - sh;
      fs1 += d; fs2 += d * d; fab += v < 0 ? -v : v;
      fmn = v < fmn ? v : fmn;
      fmx = v > fmx ? v : fmx;
      fz += v == 0.0f;
      fnf += moments::nonfinite(v);
      if constexpr (COV) t.panel[k * t.ld + c] = d;
    }
    t.s1[c] = fs1; t.s2[c] = fs2; t.abs[c] = fab; t.mn[c] = fmn; t.mx[c] = fmx;
    t.zeros[c] = fz; t.nonfin[c] = fnf;
  }
}

// g[i0 + r][j0 + 0..NR) = sum_k panel[k][i0 + r] * panel[k][j0 + 0..NR), r < MR.
inline void micro_tile(const float* panel, std::int64_t ld, std::int64_t kn, std::int64_t i0,
                       std::int64_t j0, float* g) {
  vf c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{}, c40{}, c41{}, c50{}, c51{};
  const float* row = panel;
  for (std::int64_t k = 0; k < kn; ++k, row += ld) {
    const vf b0 = vload(row + j0), b1 = vload(row + j0 + W);
    const float* a = row + i0;
    const vf s0 = splat(a[0]), s1 = splat(a[1]), s2 = splat(a[2]);
    const vf s3 = splat(a[3]), s4 = splat(a[4]), s5 = splat(a[5]);
    c00 = fmadd(s0, b0, c00); c01 = fmadd(s0, b1, c01);
    c10 = fmadd(s1, b0, c10); c11 = fmadd(s1, b1, c11);
    c20 = fmadd(s2, b0, c20); c21 = fmadd(s2, b1, c21);
    c30 = fmadd(s3, b0, c30); c31 = fmadd(s3, b1, c31);
    c40 = fmadd(s4, b0, c40); c41 = fmadd(s4, b1, c41);
    c50 = fmadd(s5, b0, c50); c51 = fmadd(s5, b1, c51);
  }
  float* o = g + i0 * ld + j0;
  vstore(o, c00); vstore(o + W, c01); o += ld;
  vstore(o, c10); vstore(o + W, c11); o += ld;
  vstore(o, c20); vstore(o + W, c21); o += ld;
  vstore(o, c30); vstore(o + W, c31); o += ld;
  vstore(o, c40); vstore(o + W, c41); o += ld;
  vstore(o, c50); vstore(o + W, c51);
}

// Upper triangle (plus the few entries the micro-tiles straddle) of the panel's Gram.
void gram_upper(const Tile& t, std::int64_t kn) {
  for (std::int64_t i0 = 0; i0 < t.C; i0 += MR)
    for (std::int64_t j0 = (i0 / NR) * NR; j0 < t.C; j0 += NR)
      micro_tile(t.panel.get(), t.ld, kn, i0, j0, t.gram.get());
}

// Running per-image (n, mean, m2) for msd.
struct ImageAcc {
  double n = 0;
  std::vector<double> mean, m2;
};

// Merges the packed tile (kn samples) into the thread totals and the image accumulator.
void merge_tile(const Tile& t, std::int64_t kn, Acc& acc, ImageAcc* img, std::vector<double>& d) {
  const std::int64_t C = t.C;
  const double k = static_cast<double>(kn);
  const double w = moments::chan_weight(acc.n, k);
  for (std::int64_t c = 0; c < C; ++c) {
    const double tm = moments::tile_mean(t.shift[c], t.s1[c], k);
    d[c] = tm - acc.mean[c];
  }
  if (acc.cov) {
    for (std::int64_t i = 0; i < C; ++i) {
      double* mrow = acc.m2.data() + i * C;
      const float* grow = t.gram.get() + i * t.ld;
      const float si = t.s1[i];
      const double di = d[i] * w;
      mrow[i] += moments::tile_m2(t.s2[i], si, k) + d[i] * di;
      for (std::int64_t j = i + 1; j < C; ++j)
        mrow[j] += moments::tile_comoment(grow[j], si, t.s1[j], k) + di * d[j];
    }
  } else {
    for (std::int64_t c = 0; c < C; ++c)
      acc.m2[c] += moments::tile_m2(t.s2[c], t.s1[c], k) + d[c] * d[c] * w;
  }
  for (std::int64_t c = 0; c < C; ++c) {
    acc.mean[c] = acc.n > 0 ? acc.mean[c] + d[c] * (k / (acc.n + k)) : acc.mean[c] + d[c];
    acc.abs_sum[c] += t.abs[c];
    acc.zeros[c] += t.zeros[c];
    acc.nonfinite[c] += t.nonfin[c];
    acc.min[c] = std::min<double>(acc.min[c], t.mn[c]);
    acc.max[c] = std::max<double>(acc.max[c], t.mx[c]);
  }
  acc.n += k;
  if (img != nullptr) {
    const double wi = moments::chan_weight(img->n, k);
    for (std::int64_t c = 0; c < C; ++c) {
      const double tm = moments::tile_mean(t.shift[c], t.s1[c], k);
      const double di = tm - img->mean[c];
      img->m2[c] += moments::tile_m2(t.s2[c], t.s1[c], k) + di * di * wi;
      img->mean[c] = moments::chan_mean(img->mean[c], img->n, tm, k);
    }
    img->n += k;
  }
}

template <DType D>
void run_range(const Batch& b, std::int64_t m0, std::int64_t m1, Acc& acc) {
  using T = typename Elem<D>::T;
  const T* data = reinterpret_cast<const T*>(b.data);
  Tile t(b.C, b.cov, b.planar);
  std::vector<double> d(b.C);
  ImageAcc img;
  img.mean.assign(b.C, 0.0);
  img.m2.assign(b.C, 0.0);
  std::int64_t m = m0;
  while (m < m1) {
    const std::int64_t image = m / b.P, p_begin = m % b.P;
    const std::int64_t p_end = std::min(b.P, p_begin + (m1 - m));
    const T* base = data + image * b.sI;
    img.n = 0;
    std::fill(img.mean.begin(), img.mean.end(), 0.0);
    std::fill(img.m2.begin(), img.m2.end(), 0.0);
    for (std::int64_t p = p_begin; p < p_end; p += t.K) {
      const std::int64_t kn = std::min(t.K, p_end - p);
      // shift: the running mean of this image (so that the per-image spatial variance of msd
      // does not cancel), or for an image's first tile its mean (an extra read from cache)
      for (std::int64_t c = 0; c < b.C; ++c) {
        if (img.n > 0) {
          t.shift[c] = static_cast<float>(img.mean[c]);
        } else {
          double sum = 0;
          for (std::int64_t k = 0; k < kn; ++k) sum += Elem<D>::one(base + c * b.sC + (p + k) * b.sP);
          t.shift[c] = static_cast<float>(sum / static_cast<double>(kn));
        }
      }
      if (b.planar) {
        for (std::int64_t c = 0; c < b.C; ++c) {
          if (b.cov) pack_planar_channel<D, true>(base + c * b.sC + p, kn, c, t);
          else pack_planar_channel<D, false>(base + c * b.sC + p, kn, c, t);
        }
#if defined(__AVX2__)
        if (b.cov) transpose_planar<D>(base + p, b.sC, kn, t);
#endif
      } else {
        if (b.cov) pack_interleaved<D, true>(base + p * b.sP, b.sP, kn, t);
        else pack_interleaved<D, false>(base + p * b.sP, b.sP, kn, t);
      }
      if (b.cov) gram_upper(t, kn);
      merge_tile(t, kn, acc, &img, d);
    }
    if (b.per_image) {
      if (p_begin == 0 && p_end == b.P) {
        for (std::int64_t c = 0; c < b.C; ++c) acc.msd_sum[c] += moments::image_std(img.m2[c], img.n);
        acc.images += 1;
      } else {
        acc.segments.push_back(Acc::Segment{image, img.n, img.mean, img.m2});
      }
    }
    m += p_end - p_begin;
  }
}

}  // namespace

void moments_range(const Batch& b, std::int64_t m0, std::int64_t m1, Acc& acc) {
  switch (b.dtype) {
    case DType::f32: return run_range<DType::f32>(b, m0, m1, acc);
    case DType::f16: return run_range<DType::f16>(b, m0, m1, acc);
    case DType::bf16: return run_range<DType::bf16>(b, m0, m1, acc);
    case DType::f64: return run_range<DType::f64>(b, m0, m1, acc);
  }
}

}  // namespace fastprune::cpu::FASTPRUNE_ISA
