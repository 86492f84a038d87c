// CPU back-end of the moments engine: OpenMP over contiguous sample ranges with private fp64
// accumulators, merged in range order (bitwise reproducible for a given thread count). The hot
// loop is csrc/cpu/simd/moments_simd.cpp, compiled per ISA and chosen by FP_ISA_DISPATCH.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "fastprune/isa.h"
#include "fastprune/moments.h"
#include "fastprune/moments_tile.h"

namespace fastprune::moments {

void Acc::init(std::int64_t channels, bool covariance) {
  C = channels;
  cov = covariance;
  n = images = 0;
  const auto c = static_cast<std::size_t>(C);
  mean.assign(c, 0.0);
  m2.assign(cov ? c * c : c, 0.0);
  abs_sum.assign(c, 0.0);
  zeros.assign(c, 0.0);
  nonfinite.assign(c, 0.0);
  msd_sum.assign(c, 0.0);
  min.assign(c, std::numeric_limits<double>::infinity());
  max.assign(c, -std::numeric_limits<double>::infinity());
  segments.clear();
}

namespace {

void range(const Batch& b, std::int64_t m0, std::int64_t m1, Acc& acc) {
  FP_ISA_DISPATCH(moments_range, b, m0, m1, acc);
}

// a <- a (+) b with Chan's update; b's partial image segments are appended.
void merge(Acc& a, Acc& b) {
  const std::int64_t C = a.C;
  const double w = chan_weight(a.n, b.n);
  std::vector<double> d(static_cast<std::size_t>(C));
  for (std::int64_t c = 0; c < C; ++c) d[c] = b.mean[c] - a.mean[c];
  if (a.cov) {
    for (std::int64_t i = 0; i < C; ++i)
      for (std::int64_t j = i; j < C; ++j)
        a.m2[i * C + j] = chan_comoment(a.m2[i * C + j], b.m2[i * C + j], d[i], d[j], w);
  } else {
    for (std::int64_t c = 0; c < C; ++c) a.m2[c] = chan_comoment(a.m2[c], b.m2[c], d[c], d[c], w);
  }
  for (std::int64_t c = 0; c < C; ++c) {
    a.mean[c] = chan_mean(a.mean[c], a.n, b.mean[c], b.n);
    a.abs_sum[c] += b.abs_sum[c];
    a.zeros[c] += b.zeros[c];
    a.nonfinite[c] += b.nonfinite[c];
    a.msd_sum[c] += b.msd_sum[c];
    a.min[c] = std::min(a.min[c], b.min[c]);
    a.max[c] = std::max(a.max[c], b.max[c]);
  }
  a.n += b.n;
  a.images += b.images;
  for (auto& s : b.segments) a.segments.push_back(std::move(s));
}

// Joins the pieces of images cut by range boundaries (consecutive, in sample order) and adds
// their spatial std to msd_sum.
void finish_segments(Acc& a) {
  const std::int64_t C = a.C;
  std::size_t i = 0;
  while (i < a.segments.size()) {
    Acc::Segment whole = a.segments[i];
    std::size_t j = i + 1;
    for (; j < a.segments.size() && a.segments[j].image == whole.image; ++j) {
      const Acc::Segment& s = a.segments[j];
      const double w = chan_weight(whole.n, s.n);
      for (std::int64_t c = 0; c < C; ++c) {
        const double dc = s.mean[c] - whole.mean[c];
        whole.m2[c] = chan_comoment(whole.m2[c], s.m2[c], dc, dc, w);
        whole.mean[c] = chan_mean(whole.mean[c], whole.n, s.mean[c], s.n);
      }
      whole.n += s.n;
    }
    for (std::int64_t c = 0; c < C; ++c) a.msd_sum[c] += image_std(whole.m2[c], whole.n);
    a.images += 1;
    i = j;
  }
  a.segments.clear();
}

}  // namespace

namespace cpu {

void run(const Batch& b, double* out) {
  const std::int64_t M = b.I * b.P, C = b.C;
  // a thread per 2^22 element-operations of work (the Gram's C(C+1)/2 per sample with cov, a
  // few per value without), on ranges of at least 1024 samples without cov and 256 with: small
  // maps with many channels (a U-Net's deepest layers) are worth both cores, small cheap ones are
  // not worth waking one. (A 512 x 32 x 32 map with cov, 2-core AVX2 EPYC, best of 9: 4.6 ms on
  // one thread, 3.2 ms on two ranges of 512 samples.) The count depends only on the shape and the
  // OpenMP thread count (bitwise reproducible).
  const std::int64_t work = M * C * (b.cov ? (C + 1) / 2 : 4);
  const std::int64_t T = std::max<std::int64_t>(
      1, std::min<std::int64_t>({static_cast<std::int64_t>(omp_get_max_threads()), M / (b.cov ? 256 : 1024), work >> 22}));
  // initialised on this thread, which frees them: their blocks return to its scratch cache
  std::vector<Acc> accs(static_cast<std::size_t>(T));
  for (Acc& a : accs) a.init(C, b.cov);
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(T))
  for (std::int64_t t = 0; t < T; ++t) range(b, M * t / T, M * (t + 1) / T, accs[t]);
  Acc& a = accs[0];
  for (std::int64_t t = 1; t < T; ++t) merge(a, accs[t]);
  finish_segments(a);

  const OutLayout L{C, b.cov};
  out[0] = a.n;
  out[1] = a.images;
  std::copy(a.mean.begin(), a.mean.end(), out + L.mean());
  std::copy(a.abs_sum.begin(), a.abs_sum.end(), out + L.abs_sum());
  std::copy(a.zeros.begin(), a.zeros.end(), out + L.zeros());
  std::copy(a.min.begin(), a.min.end(), out + L.min());
  std::copy(a.max.begin(), a.max.end(), out + L.max());
  std::copy(a.nonfinite.begin(), a.nonfinite.end(), out + L.nonfinite());
  std::copy(a.msd_sum.begin(), a.msd_sum.end(), out + L.msd_sum());
  double* m2 = out + L.m2();
  if (b.cov) {  // the upper triangle and its mirror, in square blocks (the mirror's writes stride C)
    constexpr std::int64_t B = 32;
    for (std::int64_t i0 = 0; i0 < C; i0 += B)
      for (std::int64_t j0 = i0; j0 < C; j0 += B)
        for (std::int64_t i = i0; i < std::min(C, i0 + B); ++i)
          for (std::int64_t j = std::max(i, j0); j < std::min(C, j0 + B); ++j)
            m2[i * C + j] = m2[j * C + i] = a.m2[i * C + j];
  } else {
    std::copy(a.m2.begin(), a.m2.end(), m2);
  }
}

}  // namespace cpu
}  // namespace fastprune::moments
