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

inline vf splat(float x) { return vf{} + x; }
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

  Tile(std::int64_t channels, bool cov) : C(channels) {
    const std::int64_t a = NR > 16 ? NR : 16;
    ld = ((C + a - 1) / a) * a;
    // panel <= 128 KiB (L2), between 64 and 512 samples: bounded fp32 accumulation
    K = std::min<std::int64_t>(512, std::max<std::int64_t>(64, (32768 / ld) / 16 * 16));
    if (cov) {
      panel = aligned_zeros<float>(static_cast<std::size_t>(K * ld + 64));
      gram = aligned_zeros<float>(static_cast<std::size_t>((ld + MR) * ld));
    }
    for (auto* p : {&shift, &s1, &s2, &abs, &mn, &mx}) *p = aligned_zeros<float>(ld);
    zeros = aligned_zeros<std::int32_t>(ld);
    nonfin = aligned_zeros<std::int32_t>(ld);
  }
};

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
    const vf v = Elem<D>::vec(x + k);
    const vf d = v - vsh;
    s1 += d;
    s2 = fmadd(d, d, s2);
    ab += vabs(v);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    z -= (v == 0.0f);
    nf -= ((v - v) != 0.0f);
    if constexpr (COV) {
      for (int l = 0; l < W; ++l) col[(k + l) * t.ld] = d[l];
    }
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
    if constexpr (COV) col[k * t.ld] = d;
  }
  t.s1[c] = fs1; t.s2[c] = fs2; t.abs[c] = fab; t.mn[c] = fmn; t.mx[c] = fmx;
  t.zeros[c] = fz; t.nonfin[c] = fnf;
}

// Statistics of k interleaved samples (channels contiguous, sample stride sp); panel rows when cov.
template <DType D, bool COV>
void pack_interleaved(const typename Elem<D>::T* x, std::int64_t sp, std::int64_t kn, Tile& t) {
  const std::int64_t C = t.C, cv = C / W * W;
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
    vf s;
    s = splat(a[0]); c00 = fmadd(s, b0, c00); c01 = fmadd(s, b1, c01);
    s = splat(a[1]); c10 = fmadd(s, b0, c10); c11 = fmadd(s, b1, c11);
    s = splat(a[2]); c20 = fmadd(s, b0, c20); c21 = fmadd(s, b1, c21);
    s = splat(a[3]); c30 = fmadd(s, b0, c30); c31 = fmadd(s, b1, c31);
    s = splat(a[4]); c40 = fmadd(s, b0, c40); c41 = fmadd(s, b1, c41);
    s = splat(a[5]); c50 = fmadd(s, b0, c50); c51 = fmadd(s, b1, c51);
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
  Tile t(b.C, b.cov);
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
      // shift: the running mean, or the mean of a thread's first tile (an extra read of it)
      for (std::int64_t c = 0; c < b.C; ++c) {
        if (acc.n > 0) {
          t.shift[c] = static_cast<float>(acc.mean[c]);
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
      } else {
        if (b.cov) pack_interleaved<D, true>(base + p * b.sP, b.sP, kn, t);
        else pack_interleaved<D, false>(base + p * b.sP, b.sP, kn, t);
      }
      if (b.cov) gram_upper(t, kn);
      merge_tile(t, kn, acc, b.per_image ? &img : nullptr, d);
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
