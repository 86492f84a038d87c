// Hot loops of the influence kernels, compiled once per ISA (namespace fastprune::cpu::<isa>).
//
// A "unit" is one image n and a band of first-tap rows [r0, r1). Its input rows
// [r0, r1 + max_dy) are packed once into an fp32 buffer Z laid out [channel block][row][x][lane]
// (lane = channel within a block of L), with pad_x zero columns on both sides and zero rows
// below the image, so that A(p + delta) is a plain load for every job. Channels are the SIMD
// lanes: one vector FMA per (position, delta, block of L channels).
//
// MACs per input element, 3x3 consumer, stride 1: 13 (one per delta of the upper half-plane:
// 3 with dy = 0, 2 x 5 with dy > 0) for the auto-moments, 13*C for the cross-moments; the
// consumer convolution itself costs 9*C_out. Products are summed in fp32 over at most
// kTile positions and then added to the fp64 totals.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fastprune/influence.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#if !defined(FASTPRUNE_ISA)
#error "FASTPRUNE_ISA must be defined"
#endif

// Vector types cross only internal (anonymous-namespace) functions: no ABI is exposed.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastprune::cpu::FASTPRUNE_ISA {
namespace {

#if defined(__AVX512F__)
constexpr int L = 16;     // fp32 lanes per vector
constexpr int GMAX = 16;  // deltas kept in registers at once (32 vector registers)
#elif defined(__FMA__)
constexpr int L = 8;
// 16 vector registers: 14 sums and the unshifted vector (the shifted ones are FMA memory
// operands), so a 3 x 3 consumer's 13 deltas are one pass over the positions, not 8 + 5 (the
// 5-delta pass was FMA-latency-bound). 32 x 512 x 512, one thread, AVX2 EPYC: 5.44 -> 5.09 ms.
constexpr int GMAX = 14;
#else
constexpr int L = 8;
constexpr int GMAX = 8;   // 16 vector registers, a product and a sum each (no FMA)
#endif
constexpr int MR = L / 2;            // rows of the cross-moment register tile
constexpr std::int64_t kTile = 512;  // positions summed in fp32 before the fp64 flush
constexpr std::int64_t kGramCols = 128;  // cross-moment column chunk: both panels stay in L1

typedef float vf __attribute__((vector_size(L * sizeof(float)), aligned(sizeof(float))));

// Unaligned, aliasing-safe vector load (a plain vmovups; memcpy made GCC split it in halves).
typedef float vf_load __attribute__((vector_size(L * sizeof(float)), aligned(sizeof(float)), may_alias));
inline vf loadv(const float* p) { return *reinterpret_cast<const vf_load*>(p); }

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// First y >= lo with y = y0 (mod s).
std::int64_t first_at_or_after(std::int64_t lo, std::int64_t y0, std::int64_t s) {
  if (lo <= y0) return y0;
  return y0 + ceil_div(lo - y0, s) * s;
}

// Element loader by storage type (fp64 input is narrowed to fp32 like the others).
template <class T> struct Ld { static float get(const T* p, std::int64_t i) { return Load<T>::get(p, i); } };
template <> struct Ld<double> { static float get(const double* p, std::int64_t i) { return static_cast<float>(p[i]); } };

struct Packed {
  float* z = nullptr;
  std::int64_t nb = 0, rows = 0, wp = 0, block = 0;  // block = rows * wp * L floats
  std::int64_t nonfinite = 0;
};

#if defined(__AVX2__)
// Non-finite lanes of v, by the exponent bits.
inline int count_nonfinite8(__m256 v) {
  const __m256i e = _mm256_set1_epi32(0x7f800000);
  const __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), e), e);
  return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(m))));
}

// 8 channel rows (8 consecutive x each) -> 8 positions of 8 channels at dst + k*L.
inline void transpose8_store(const __m256 r[8], float* dst) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * L, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * L, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * L, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * L, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * L, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * L, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * L, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * L, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// 8 consecutive elements as fp32 (F16C for fp16, a shift for bf16).
template <class T> __m256 load8(const T* p);
template <> inline __m256 load8<float>(const float* p) { return _mm256_loadu_ps(p); }
template <> inline __m256 load8<f16_t>(const f16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <> inline __m256 load8<bf16_t>(const bf16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// NCHW row of nc channels (x contiguous) into zi[x*L + c]; returns the non-finite count
// (counted only when `owned`).
template <class T>
inline std::int64_t pack_row_avx(const T* row, std::int64_t s1, std::int64_t nc, std::int64_t W,
                                 bool owned, float* zi) {
  std::int64_t bad = 0, c0 = 0;
  for (; c0 + 8 <= nc; c0 += 8) {
    std::int64_t xx = 0;
    for (; xx + 8 <= W; xx += 8) {
      __m256 r[8];
      for (int c = 0; c < 8; ++c) r[c] = load8<T>(row + (c0 + c) * s1 + xx);
      if (owned)
        for (int c = 0; c < 8; ++c) bad += count_nonfinite8(r[c]);
      transpose8_store(r, zi + xx * L + c0);
    }
    for (; xx < W; ++xx)
      for (int c = 0; c < 8; ++c) {
        const float v = Ld<T>::get(row, (c0 + c) * s1 + xx);
        zi[xx * L + c0 + c] = v;
        if (owned) bad += is_nonfinite(v);
      }
  }
  for (; c0 < nc; ++c0)
    for (std::int64_t xx = 0; xx < W; ++xx) {
      const float v = Ld<T>::get(row, c0 * s1 + xx);
      zi[xx * L + c0] = v;
      if (owned) bad += is_nonfinite(v);
    }
  return bad;
}
#endif

template <class T>
void pack_typed(const View& x, std::int64_t n, std::int64_t r0, std::int64_t r1, Packed& pk) {
  const T* src = x.ptr<T>();
  const std::int64_t C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const std::int64_t s0 = x.stride[0], s1 = x.stride[1], s2 = x.stride[2], s3 = x.stride[3];
  const std::int64_t pad = (pk.wp - W) / 2;
  std::int64_t bad = 0;
  for (std::int64_t cb = 0; cb < pk.nb; ++cb) {
    const std::int64_t c0 = cb * L, nc = std::min<std::int64_t>(L, C - c0);
    for (std::int64_t r = 0; r < pk.rows; ++r) {
      float* zr = pk.z + cb * pk.block + r * pk.wp * L;
      const std::int64_t y = r0 + r;
      if (y >= H) { std::memset(zr, 0, sizeof(float) * pk.wp * L); continue; }
      std::memset(zr, 0, sizeof(float) * pad * L);
      std::memset(zr + (pad + W) * L, 0, sizeof(float) * pad * L);
      float* zi = zr + pad * L;
      if (nc < L) std::memset(zi, 0, sizeof(float) * W * L);
      const T* row = src + n * s0 + c0 * s1 + y * s2;
      const bool owned = y < r1;
#if defined(__AVX2__)
      if constexpr (!std::is_same_v<T, double>) {
        if (s3 == 1 && s1 != 1) {
          bad += pack_row_avx<T>(row, s1, nc, W, owned, zi);
          continue;
        }
        if (s1 == 1 && nc % 8 == 0) {  // channels_last: 8 channels per load, no transpose
          for (std::int64_t xx = 0; xx < W; ++xx) {
            const T* rx = row + xx * s3;
            for (std::int64_t c = 0; c < nc; c += 8) {
              const __m256 v = load8<T>(rx + c);
              if (owned) bad += count_nonfinite8(v);
              _mm256_storeu_ps(zi + xx * L + c, v);
            }
          }
          continue;
        }
      }
#endif
      if (s3 == 1 && s1 != 1) {  // NCHW: x contiguous
        for (std::int64_t c = 0; c < nc; ++c) {
          const T* rc = row + c * s1;
          for (std::int64_t xx = 0; xx < W; ++xx) {
            const float v = Ld<T>::get(rc, xx);
            zi[xx * L + c] = v;
            if (owned) bad += is_nonfinite(v);
          }
        }
      } else {  // channels_last or general strides: channels inner
        for (std::int64_t xx = 0; xx < W; ++xx) {
          const T* rx = row + xx * s3;
          float* zx = zi + xx * L;
          for (std::int64_t c = 0; c < nc; ++c) {
            const float v = Ld<T>::get(rx, c * s1);
            zx[c] = v;
            if (owned) bad += is_nonfinite(v);
          }
        }
      }
    }
  }
  pk.nonfinite = bad;
}

Packed pack(const View& x, std::int64_t n, std::int64_t r0, std::int64_t r1, std::int64_t max_dy,
            std::int64_t pad_x, std::int64_t nb, scratch::Vector<float>& scratch) {
  Packed pk;
  pk.nb = nb;
  pk.rows = (r1 - r0) + max_dy;
  pk.wp = x.shape[3] + 2 * pad_x;
  pk.block = pk.rows * pk.wp * L;
  const std::size_t need = static_cast<std::size_t>(nb * pk.block) + 64;
  if (scratch.size() < need) scratch.resize(need);
  // 64-byte aligned start
  auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
  pk.z = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
  switch (x.dtype) {
    case DType::f32: pack_typed<float>(x, n, r0, r1, pk); break;
    case DType::f16: pack_typed<f16_t>(x, n, r0, r1, pk); break;
    case DType::bf16: pack_typed<bf16_t>(x, n, r0, r1, pk); break;
    case DType::f64: pack_typed<double>(x, n, r0, r1, pk); break;
  }
  return pk;
}

// s[g] = sum over a rows x cols strided rectangle of a(p) * a(p + off[g]).
template <int G>
void shifted_dots(const float* a, std::ptrdiff_t row_step, std::ptrdiff_t col_step,
                  std::int64_t nrows, std::int64_t ncols, const std::ptrdiff_t* off, vf* out) {
  vf s[G];
  #pragma GCC unroll 16
  for (int g = 0; g < G; ++g) s[g] = vf{};
  for (std::int64_t r = 0; r < nrows; ++r) {
    const float* ar = a + r * row_step;
    for (std::int64_t k = 0; k < ncols; ++k) {
      const float* p = ar + k * col_step;
      const vf av = loadv(p);
      #pragma GCC unroll 16
      for (int g = 0; g < G; ++g) s[g] += av * loadv(p + off[g]);
    }
  }
  #pragma GCC unroll 16
  for (int g = 0; g < G; ++g) out[g] = s[g];
}

void shifted_dots_n(int g, const float* a, std::ptrdiff_t rs, std::ptrdiff_t cs, std::int64_t nr,
                    std::int64_t nc, const std::ptrdiff_t* off, vf* out) {
  switch (g) {
#define FP_CASE(k) case k: shifted_dots<k>(a, rs, cs, nr, nc, off, out); break;
    FP_CASE(1) FP_CASE(2) FP_CASE(3) FP_CASE(4) FP_CASE(5) FP_CASE(6) FP_CASE(7) FP_CASE(8)
#if defined(__FMA__)
    FP_CASE(9) FP_CASE(10) FP_CASE(11) FP_CASE(12) FP_CASE(13) FP_CASE(14)
#endif
#if defined(__AVX512F__)
    FP_CASE(15) FP_CASE(16)
#endif
    default: break;
#undef FP_CASE
  }
}

// acc[r][b] = sum over the rectangle of a(p)[r] (broadcast) * b_b(p) for MR rows and NBJ blocks.
template <int NBJ>
void cross_tile(const float* a, const float* b0, std::ptrdiff_t blk, std::ptrdiff_t row_step,
                std::ptrdiff_t col_step, std::int64_t nrows, std::int64_t ncols, vf (*acc)[2]) {
  vf s[MR][NBJ];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int b = 0; b < NBJ; ++b) s[r][b] = vf{};
  for (std::int64_t y = 0; y < nrows; ++y) {
    const float* ay = a + y * row_step;
    const float* by = b0 + y * row_step;
    for (std::int64_t k = 0; k < ncols; ++k) {
      const float* pa = ay + k * col_step;
      const float* pb = by + k * col_step;
      vf bv[NBJ];
#pragma GCC unroll 2
      for (int b = 0; b < NBJ; ++b) bv[b] = loadv(pb + b * blk);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const float av = pa[r];
#pragma GCC unroll 2
        for (int b = 0; b < NBJ; ++b) s[r][b] += av * bv[b];
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int b = 0; b < NBJ; ++b) acc[r][b] = s[r][b];
}

// Rows of a cell inside [r0, r1): the first row and how many.
struct RowSpan { std::int64_t first = 0, count = 0; };
RowSpan cell_rows(const std::int64_t* cell, std::int64_t r0, std::int64_t r1) {
  RowSpan s;
  const std::int64_t y0 = cell[0], y1 = std::min(cell[1], r1), sy = cell[2];
  s.first = first_at_or_after(r0, y0, sy);
  s.count = s.first < y1 ? ceil_div(y1 - s.first, sy) : 0;
  return s;
}

}  // namespace

int influence_lanes() { return L; }

std::int64_t influence_unit(const View& x, const ShiftPlanArgs& p, std::int64_t n, std::int64_t r0,
                            std::int64_t r1, scratch::Vector<float>& scratch, double* out) {
  const std::int64_t C = x.shape[1];
  const std::int64_t nb = ceil_div(C, L);
  Packed pk = pack(x, n, r0, r1, p.max_dy, p.pad_x, nb, scratch);
  std::ptrdiff_t off[GMAX];
  vf acc[GMAX];
  for (std::int64_t cb = 0; cb < nb; ++cb) {
    const float* zb = pk.z + cb * pk.block;
    const std::int64_t c0 = cb * L, nc = std::min<std::int64_t>(L, C - c0);
    for (std::int64_t ci = 0; ci < p.ncell; ++ci) {
      const std::int64_t* cell = p.cells + 6 * ci;
      const RowSpan rs = cell_rows(cell, r0, r1);
      if (rs.count == 0) continue;
      const std::int64_t x0 = cell[3], sx = cell[5], ncols = ceil_div(cell[4] - x0, sx);
      const std::int64_t rows_per_tile = std::max<std::int64_t>(1, kTile / ncols);
      const std::ptrdiff_t row_step = cell[2] * pk.wp * L, col_step = sx * L;
      for (std::int64_t jb = p.cell_ptr[ci]; jb < p.cell_ptr[ci + 1]; jb += GMAX) {
        const int g = static_cast<int>(std::min<std::int64_t>(GMAX, p.cell_ptr[ci + 1] - jb));
        for (int k = 0; k < g; ++k) {
          const std::int64_t* d = p.deltas + 2 * p.job_delta[jb + k];
          off[k] = (d[0] * pk.wp + d[1]) * L;
        }
        for (std::int64_t y = 0; y < rs.count; y += rows_per_tile) {
          const std::int64_t nr = std::min(rows_per_tile, rs.count - y);
          const float* a = zb + ((rs.first + y * cell[2] - r0) * pk.wp + p.pad_x + x0) * L;
          shifted_dots_n(g, a, row_step, col_step, nr, ncols, off, acc);
          for (int k = 0; k < g; ++k) {
            double* o = out + (jb + k) * C + c0;
            for (std::int64_t l = 0; l < nc; ++l) o[l] += static_cast<double>(acc[k][l]);
          }
        }
      }
    }
  }
  return pk.nonfinite;
}

std::int64_t gram_unit(const View& x, const ShiftPlanArgs& p, std::int64_t n, std::int64_t r0,
                       std::int64_t r1, scratch::Vector<float>& scratch, double* out, std::int64_t cpad) {
  const std::int64_t C = x.shape[1];
  const std::int64_t nb = ceil_div(C, L);
  Packed pk = pack(x, n, r0, r1, p.max_dy, p.pad_x, nb, scratch);
  vf acc[MR][2];
  for (std::int64_t ci = 0; ci < p.ncell; ++ci) {
    const std::int64_t* cell = p.cells + 6 * ci;
    const RowSpan rs = cell_rows(cell, r0, r1);
    if (rs.count == 0) continue;
    const std::int64_t x0 = cell[3], sx = cell[5], ncols = ceil_div(cell[4] - x0, sx);
    const std::int64_t wcols = std::min(ncols, kGramCols);
    const std::int64_t rows_per_tile = std::max<std::int64_t>(1, kGramCols / wcols);
    const std::ptrdiff_t row_step = cell[2] * pk.wp * L, col_step = sx * L;
    for (std::int64_t j = p.cell_ptr[ci]; j < p.cell_ptr[ci + 1]; ++j) {
      const std::int64_t* d = p.deltas + 2 * p.job_delta[j];
      const std::ptrdiff_t off = (d[0] * pk.wp + d[1]) * L;
      double* oj = out + j * cpad * cpad;
      for (std::int64_t y = 0; y < rs.count; y += rows_per_tile)
      for (std::int64_t xc = 0; xc < ncols; xc += wcols) {
        const std::int64_t nr = std::min(rows_per_tile, rs.count - y);
        const std::int64_t nx = std::min(wcols, ncols - xc);
        const std::ptrdiff_t base = ((rs.first + y * cell[2] - r0) * pk.wp + p.pad_x + x0 + xc * sx) * L;
        for (std::int64_t cbi = 0; cbi < nb; ++cbi) {
          for (int ri = 0; ri < L; ri += MR) {
            const float* a = pk.z + cbi * pk.block + base + ri;
            for (std::int64_t cbj = 0; cbj < nb; cbj += 2) {
              const float* b = pk.z + cbj * pk.block + base + off;
              const int nbj = cbj + 1 < nb ? 2 : 1;
              if (nbj == 2) cross_tile<2>(a, b, pk.block, row_step, col_step, nr, nx, acc);
              else cross_tile<1>(a, b, pk.block, row_step, col_step, nr, nx, acc);
              for (int r = 0; r < MR; ++r) {
                double* o = oj + (cbi * L + ri + r) * cpad + cbj * L;
                for (int b = 0; b < nbj; ++b)
                  for (int l = 0; l < L; ++l) o[b * L + l] += static_cast<double>(acc[r][b][l]);
              }
            }
          }
        }
      }
    }
  }
  return pk.nonfinite;
}

void gram_gather_chunk(const View& x, const PatchGeom& g, const std::int64_t* pos, std::int64_t count,
                       scratch::Vector<float>& scratch, double* out, std::int64_t dpad) {
  const std::int64_t D = x.shape[1] * g.kh * g.kw;
  const std::size_t need = static_cast<std::size_t>(count * dpad) + 64;
  if (scratch.size() < need) scratch.resize(need);
  auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
  float* B = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);
  for (std::int64_t k = 0; k < count; ++k) {
    const std::int64_t n = pos[2 * k], q = pos[2 * k + 1];
    const std::int64_t qy = q / g.wo, qx = q % g.wo;
    float* row = B + k * dpad;
    for (std::int64_t r = 0; r < D; ++r) row[r] = patch_value(x, g, n, r, qy, qx);
    for (std::int64_t r = D; r < dpad; ++r) row[r] = 0.0f;
  }
  constexpr std::int64_t NR = 2 * L;
  vf acc[MR][2];
  for (std::int64_t i = 0; i < dpad; i += MR) {
    for (std::int64_t j = (i / NR) * NR; j < dpad; j += NR) {
      cross_tile<2>(B + i, B + j, L, 0, dpad, 1, count, acc);
      for (int r = 0; r < MR; ++r) {
        double* o = out + (i + r) * dpad + j;
        for (int b = 0; b < 2; ++b)
          for (int l = 0; l < L; ++l) o[b * L + l] += static_cast<double>(acc[r][b][l]);
      }
    }
  }
}

}  // namespace fastprune::cpu::FASTPRUNE_ISA
