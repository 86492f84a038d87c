// Tile arithmetic of the moments engine, shared by the CPU and CUDA back-ends.
//
// Numerics: a tile of K samples is shifted per channel by a value s_c close to the
// channel's mean, its shifted sums S1_c = sum(x_c - s_c) and co-moments G_ij = sum((x_i - s_i)
// (x_j - s_j)) are accumulated in fp32 over the bounded tile, and the tile is merged into fp64
// totals with Chan et al.'s pairwise update:
//   n = n_a + n_b,  d = mu_b - mu_a,  mu = mu_a + d n_b / n,  M = M_a + M_b + d_i d_j n_a n_b / n.
// E[xx^T] - mu mu^T is never formed: the tile's centring S1_i S1_j / K involves shifted sums only,
// which are small when the shift is near the mean.
#pragma once
#include <cmath>
#include <cstdint>

#include "fastprune/convert.h"

namespace fastprune::moments {

// Layout of the output buffer (float64, written by both back-ends):
//   [0] samples, [1] complete images seen (for msd),
//   then C-vectors: mean, abs_sum, zeros, min, max, nonfinite, msd_sum, and m2 (C*C with
//   covariance, else C: the diagonal). Counts are exact in fp64 up to 2^53.
struct OutLayout {
  std::int64_t C;
  bool cov;
  FP_HD std::int64_t mean() const { return 2; }
  FP_HD std::int64_t abs_sum() const { return 2 + C; }
  FP_HD std::int64_t zeros() const { return 2 + 2 * C; }
  FP_HD std::int64_t min() const { return 2 + 3 * C; }
  FP_HD std::int64_t max() const { return 2 + 4 * C; }
  FP_HD std::int64_t nonfinite() const { return 2 + 5 * C; }
  FP_HD std::int64_t msd_sum() const { return 2 + 6 * C; }
  FP_HD std::int64_t m2() const { return 2 + 7 * C; }
  FP_HD std::int64_t size() const { return m2() + (cov ? C * C : C); }
};

// Mean of a tile of k samples from its shift and fp32 shifted sum.
// (fp32 tile sums promote exactly to double; the CUDA back-end passes fp64 sums of fp32 chunks.)
FP_HD double tile_mean(double shift, double s1, double k) { return shift + s1 / k; }

// Centred sum of squares of a tile, clamped at 0 against fp32 rounding.
FP_HD double tile_m2(double s2, double s1, double k) {
  const double m = s2 - s1 * s1 / k;
  return m > 0 ? m : 0.0;
}

// Centred co-moment of a tile from the fp32 shifted co-moment g, the shifted sum s1_i and the
// offset o_j = s1_j / k of channel j's tile mean from its shift (one division per channel).
FP_HD double tile_comoment(double g, double s1_i, double o_j) { return g - s1_i * o_j; }

// Chan's merge weight n_a n_b / (n_a + n_b); 0 when either side is empty.
FP_HD double chan_weight(double na, double nb) {
  const double n = na + nb;
  return n > 0 ? na * nb / n : 0.0;
}

// Merged mean of (na, mean_a) and (nb, mean_b).
FP_HD double chan_mean(double mean_a, double na, double mean_b, double nb) {
  const double n = na + nb;
  if (n <= 0) return mean_a;
  if (na <= 0) return mean_b;
  return mean_a + (mean_b - mean_a) * (nb / n);
}

// Merged co-moment: M_a + M_b + d_i d_j w, with d = mean_b - mean_a and w = chan_weight.
FP_HD double chan_comoment(double m_a, double m_b, double d_i, double d_j, double w) {
  return m_a + m_b + d_i * d_j * w;
}

// Sample standard deviation (n-1 denominator, as torch.std) of a finished image; NaN when n < 2.
FP_HD double image_std(double m2, double n) {
  const double v = m2 / (n - 1.0);
  if (v != v) return v;  // 0/0 for a single pixel: NaN, as torch.std
  return v > 0 ? sqrt(v) : 0.0;
}

// A value is non-finite (NaN or +-Inf) iff x - x is not zero.
FP_HD bool nonfinite(float x) { return !(x - x == 0.0f); }

}  // namespace fastprune::moments
