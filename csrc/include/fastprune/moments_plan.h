// The device moments algorithm, written once for the CUDA kernels (csrc/cuda/moments_cuda.cu) and
// their CPU emulation (csrc/cpu/moments_emulate.cpp), which runs every partition, shift, lane,
// tree and merge decision below on the host so that the CPU tests check the device's logic.
//
// Partition (Plan). Samples are cut into tiles of at most kTile samples that never cross an
// image; a split is a run of consecutive tiles: part of one image (large maps: `spi` splits per
// image) or whole images (maps of at most kTile pixels: `ips` images per split, one tile each).
// Each split's shift is the mean of its first min(kProbe, n) samples (a tile mean, as on the
// CPU: one outlier at the split's start moves it by 1/kProbe of its distance).
//
// Pass 1, statistics (stats kernel, grid splits x channel groups): per tile, lanes accumulate
// shifted fp32 sums (Lane); a fixed tree combines the lanes; the tile is merged into the split's
// fp64 Record with Chan's update. A whole-image tile also adds its spatial std (msd).
// Pass 1, Gram (gram kernel, grid upper-triangle 64 x 64 block pairs x Gram groups): a Gram
// group is `R` consecutive splits, shifted by the shift of its first split; chunks of kChunk
// samples are shifted in fp32, split into hi + lo operands (3xTF32 for fp32/fp64 input, 3xBF16
// for fp16/bf16: hi*hi + hi*lo + lo*hi on tensor cores, fp32 accumulation over kFlush chunks,
// then fp64), and centred with the group's exact mean (group_stats).
// Pass 2 (reduce kernels): records and Gram groups merge by kLanes lanes, each walking every
// kLanes-th record in order, then a fixed tree over the lanes (deterministic, parallel).
// With covariance, the diagonal of m2 comes from the Gram, like the off-diagonals (|corr| <= 1
// up to rounding of one sum); without, from the records.
#pragma once
#include <cmath>
#include <cstdint>

#include "fastprune/convert.h"
#include "fastprune/dev_util.h"
#include "fastprune/moments.h"
#include "fastprune/moments_tile.h"

namespace fastprune::moments::dev {

constexpr int kWarp = 32;
constexpr int kThreads = 256;          // every kernel's block
constexpr std::int64_t kTile = 2048;   // samples per fp32 accumulation tile (one image)
constexpr std::int64_t kProbe = 256;   // samples whose mean is a split's shift
constexpr int kPlanarChannels = kThreads / kWarp;  // planar stats: one warp per channel
constexpr int kInterChannels = kWarp;              // interleaved stats: 32 channels x 8 lanes
constexpr int kInterLanes = kThreads / kWarp;
constexpr std::int64_t kStatBlocks = 8192;         // target stats blocks (split count follows)
constexpr int kBlock = 64;             // Gram block edge (channels)
constexpr int kFrag = 16;              // MMA fragment edge
constexpr int kChunk = 32;             // Gram samples per shared-memory chunk
constexpr int kFlush = 8;              // Gram chunks per fp32 accumulation (256 samples)
constexpr std::int64_t kGramBlocks = 512;          // target Gram blocks (about 4 per SM)
constexpr std::int64_t kGramCapBytes = std::int64_t(64) << 20;  // Gram partials at most
constexpr int kLanes = 8;              // second-pass lanes per output entry
constexpr int kRecordFields = 9;       // Record: n mean m2 abs zeros nonfin msd min max

using dev_util::block_pair;
using dev_util::ceil_div;
using dev_util::max64;
using dev_util::min64;

// ---------------------------------------------------------------- partition
struct Plan {
  std::int64_t I = 0, C = 0, P = 0;
  bool planar = true, cov = true, per_image = false;
  int vec = 1;                // elements per vector load (1: scalar loads)
  std::int64_t tile = 0;      // samples per tile (the last tile of an image may be shorter)
  std::int64_t tpi = 0;       // tiles per image
  std::int64_t tps = 0;       // tiles per split (within-image splits)
  std::int64_t spi = 0;       // splits per image (>= 1) when tpi > 1, else 0
  std::int64_t ips = 0;       // images per split when tpi == 1, else 0
  std::int64_t splits = 0;
  std::int64_t cgroups = 0;   // stats channel groups
  std::int64_t nblk = 0, pairs = 0;  // Gram blocks per edge, upper-triangle block pairs
  std::int64_t R = 0, groups = 0;    // splits per Gram group, Gram groups
  std::int64_t records = 0;   // second-pass records: images (tpi > 1) or splits
  // workspace layout, in doubles
  std::int64_t off_split = 0, off_shift = 0, off_image = 0, off_gmean = 0, off_gn = 0, off_gpart = 0, size = 0;
};

// Block-count targets the split and Gram-group counts follow. The CUDA launch always uses the
// defaults; tests of the emulation lower them to reach long splits and large groups on small data.
struct Targets {
  std::int64_t stat_blocks = kStatBlocks, gram_blocks = kGramBlocks;
};

// The plan of a batch; `elem_bytes` is the input's element size. Depends only on the shape,
// strides, dtype and data alignment (never on the device), so the emulation sees the same one.
inline Plan make_plan(const Batch& b, std::int64_t elem_bytes, const Targets& tg = Targets{}) {
  Plan p;
  p.I = b.I; p.C = b.C; p.P = b.P;
  p.planar = b.planar; p.cov = b.cov; p.per_image = b.per_image;
  const std::int64_t M = b.I * b.P;
  p.cgroups = ceil_div(b.C, b.planar ? kPlanarChannels : kInterChannels);
  if (M > 0) {
    const std::int64_t V = 16 / elem_bytes;
    const bool aligned = b.data % 16 == 0 && b.sI % V == 0 && (b.planar ? b.sC % V == 0 : b.sP % V == 0 && b.C % V == 0);
    p.tile = min64(kTile, b.P);
    p.tpi = ceil_div(b.P, p.tile);
    p.vec = aligned && (!b.planar || p.tile % V == 0) ? static_cast<int>(V) : 1;
    const std::int64_t want = max64(1, ceil_div(tg.stat_blocks, p.cgroups));
    if (p.tpi == 1) {
      p.ips = max64(1, ceil_div(b.I, want));
      p.splits = ceil_div(b.I, p.ips);
      p.records = p.splits;
    } else {
      p.tps = min64(p.tpi, max64(1, ceil_div(b.I * p.tpi, want)));
      p.spi = ceil_div(p.tpi, p.tps);
      p.splits = b.I * p.spi;
      p.records = b.I;
    }
    if (b.cov) {
      p.nblk = ceil_div(b.C, kBlock);
      p.pairs = p.nblk * (p.nblk + 1) / 2;
      const std::int64_t cap = max64(1, kGramCapBytes / (8 * kBlock * kBlock * p.pairs));
      const std::int64_t target = min64(min64(p.splits, max64(1, ceil_div(tg.gram_blocks, p.pairs))), cap);
      p.R = ceil_div(p.splits, target);
      p.groups = ceil_div(p.splits, p.R);
    }
  }
  const std::int64_t S = p.splits, C = b.C;
  p.off_split = 0;
  p.off_shift = p.off_split + kRecordFields * S * C;
  p.off_image = p.off_shift + S * C;
  p.off_gmean = p.off_image + (p.spi > 0 ? kRecordFields * p.I * C : 0);
  p.off_gn = p.off_gmean + p.groups * C;
  p.off_gpart = p.off_gn + p.groups;
  p.size = p.off_gpart + p.groups * p.pairs * kBlock * kBlock;
  return p;
}

// The plan of input x (csrc/moments.cpp).
Plan plan_of(const View& x, bool cov, const Targets& tg = Targets{});

// Tiles [first, last) of split k, as global tile indices image * tpi + tile.
FP_HD void split_tiles(const Plan& p, std::int64_t k, std::int64_t& first, std::int64_t& last) {
  if (p.spi == 0) {
    first = k * p.ips;
    last = min64(p.I, first + p.ips);
  } else {
    const std::int64_t image = k / p.spi, j = k - image * p.spi;
    first = image * p.tpi + j * p.tps;
    last = image * p.tpi + min64(p.tpi, (j + 1) * p.tps);
  }
}

// Global tile g: its image, first pixel and sample count.
struct TileSpan {
  std::int64_t image, p0, n;
};
FP_HD TileSpan tile_span(const Plan& p, std::int64_t g) {
  const std::int64_t image = g / p.tpi, t = g - image * p.tpi;
  const std::int64_t p0 = t * p.tile;
  return {image, p0, min64(p.tile, p.P - p0)};
}

// Element offset of (image, channel c, pixel q).
FP_HD std::int64_t elem(const Batch& b, std::int64_t image, std::int64_t c, std::int64_t q) {
  return image * b.sI + c * b.sC + q * b.sP;
}

// Fragment f of a Gram block: (row, column) among 4 x 4; diagonal blocks use only the 10 on or
// above the diagonal (the lower ones are their transposes).
constexpr int kFrags = kBlock / kFrag;
FP_HD int block_fragments(bool diagonal) { return diagonal ? kFrags * (kFrags + 1) / 2 : kFrags * kFrags; }
FP_HD void fragment_rc(bool diagonal, int f, int& r, int& c) {
  if (!diagonal) { r = f / kFrags; c = f % kFrags; return; }
  r = 0;
  while (f >= kFrags - r) { f -= kFrags - r; ++r; }
  c = r + f;
}

// ---------------------------------------------------------------- element loads
using dev_util::Elem;
using dev_util::load;

// ---------------------------------------------------------------- pass 1: statistics
// One lane's fp32 sums over part of a tile, shifted by the split's shift.
struct Lane {
  float s1 = 0, s2 = 0, ab = 0, mn = INFINITY, mx = -INFINITY, z = 0, nf = 0;
  FP_HD void add(float v, float shift) {
    const float d = v - shift;
    s1 += d;
    s2 = fmaf(d, d, s2);
    ab += fabsf(v);
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
    z += v == 0.0f ? 1.0f : 0.0f;
    nf += nonfinite(v) ? 1.0f : 0.0f;
  }
  FP_HD void combine(const Lane& o) {
    s1 += o.s1; s2 += o.s2; ab += o.ab; z += o.z; nf += o.nf;
    mn = fminf(mn, o.mn);
    mx = fmaxf(mx, o.mx);
  }
};

// fp64 statistics of a split, an image or a run of records.
struct Record {
  double n = 0, mean = 0, m2 = 0, abs = 0, zeros = 0, nonfin = 0, msd = 0, mn = INFINITY, mx = -INFINITY;
  FP_HD void combine(const Record& b) { merge(b); }
  FP_HD void merge(const Record& b) {
    const double d = b.mean - mean;
    m2 = chan_comoment(m2, b.m2, d, d, chan_weight(n, b.n));
    mean = chan_mean(mean, n, b.mean, b.n);
    n += b.n;
    abs += b.abs; zeros += b.zeros; nonfin += b.nonfin; msd += b.msd;
    mn = fmin(mn, b.mn);
    mx = fmax(mx, b.mx);
  }
  // A finished tile of n samples (the lanes combined); a whole image also adds its std.
  FP_HD void absorb(const Lane& t, float shift, double n_tile, bool whole_image) {
    Record r;
    r.n = n_tile;
    r.mean = tile_mean(shift, t.s1, n_tile);
    r.m2 = tile_m2(t.s2, t.s1, n_tile);
    r.abs = t.ab; r.zeros = t.z; r.nonfin = t.nf;
    r.mn = t.mn; r.mx = t.mx;
    if (whole_image) r.msd = image_std(r.m2, n_tile);
    merge(r);
  }
};

// Records stored field-major: field f of record k, channel c at base[(f * count + k) * C + c].
struct RecordStore {
  double* base;
  std::int64_t count, C;
  FP_HD double& at(int f, std::int64_t k, std::int64_t c) const { return base[(f * count + k) * C + c]; }
  FP_HD Record get(std::int64_t k, std::int64_t c) const {
    Record r;
    r.n = at(0, k, c); r.mean = at(1, k, c); r.m2 = at(2, k, c); r.abs = at(3, k, c); r.zeros = at(4, k, c);
    r.nonfin = at(5, k, c); r.msd = at(6, k, c); r.mn = at(7, k, c); r.mx = at(8, k, c);
    return r;
  }
  FP_HD void put(std::int64_t k, std::int64_t c, const Record& r) const {
    at(0, k, c) = r.n; at(1, k, c) = r.mean; at(2, k, c) = r.m2; at(3, k, c) = r.abs; at(4, k, c) = r.zeros;
    at(5, k, c) = r.nonfin; at(6, k, c) = r.msd; at(7, k, c) = r.mn; at(8, k, c) = r.mx;
  }
};

// Which samples of a tile lane l of L reads: planar warps read vectors of `vec` samples
// (vector q of the tile goes to lane q % 32, then the tail sample by sample), interleaved blocks
// read sample s with lane s % 8. `fn(s)` is called per sample, in the lane's order.
template <class F>
FP_HD void lane_samples(const Plan& p, int lane, std::int64_t n, F&& fn) {
  if (p.planar) {
    const std::int64_t nv = n / p.vec;
    for (std::int64_t q = lane; q < nv; q += kWarp)
      for (int e = 0; e < p.vec; ++e) fn(q * p.vec + e);
    for (std::int64_t s = nv * p.vec + lane; s < n; s += kWarp) fn(s);
  } else {
    for (std::int64_t s = lane; s < n; s += kInterLanes) fn(s);
  }
}
FP_HD int stat_lanes(const Plan& p) { return p.planar ? kWarp : kInterLanes; }
// probe samples [0, probe_n) of a split's first tile, sample s read by lane s % lanes
FP_HD std::int64_t probe_n(std::int64_t n_first) { return min64(kProbe, n_first); }

// The tree that combines the lanes: planar warps use the xor butterfly (lane l takes
// combine(l, l ^ o) for o = 16 .. 1, lane 0's result is kept), interleaved blocks a halving tree
// in shared memory (lane l < o takes combine(l, l + o) for o = 4, 2, 1). Host form; the kernels
// run the same steps with shuffles / shared memory.
template <class T>
inline T host_lane_tree(const Plan& p, T* lanes) {
  const int L = stat_lanes(p);
  if (p.planar) {
    T tmp[kWarp];
    for (int o = kWarp / 2; o > 0; o /= 2) {
      for (int l = 0; l < L; ++l) { tmp[l] = lanes[l]; tmp[l].combine(lanes[l ^ o]); }
      for (int l = 0; l < L; ++l) lanes[l] = tmp[l];
    }
  } else {
    for (int o = L / 2; o > 0; o /= 2)
      for (int l = 0; l < o; ++l) lanes[l].combine(lanes[l + o]);
  }
  return lanes[0];
}

// A float sum as a combinable lane (the probe).
struct Sum {
  float v = 0;
  FP_HD void combine(const Sum& o) { v += o.v; }
};

// ---------------------------------------------------------------- pass 1: Gram
// Gram group g: splits [g R, min(S, (g + 1) R)).
FP_HD void group_splits(const Plan& p, std::int64_t g, std::int64_t& k0, std::int64_t& k1) {
  k0 = g * p.R;
  k1 = min64(p.splits, k0 + p.R);
}

// Count and exact mean of channel c over Gram group g (Chan merges of its splits' records, in
// order), stored in the workspace for the Gram's centring and second pass.
FP_HD void group_stat(const Plan& p, double* ws, std::int64_t g, std::int64_t c) {
  const RecordStore rs{ws + p.off_split, p.splits, p.C};
  std::int64_t k0, k1;
  group_splits(p, g, k0, k1);
  double n = 0, mean = 0;
  for (std::int64_t k = k0; k < k1; ++k) {
    const double nb = rs.at(0, k, c);
    mean = chan_mean(mean, n, rs.at(1, k, c), nb);
    n += nb;
  }
  ws[p.off_gmean + g * p.C + c] = mean;
  if (c == 0) ws[p.off_gn + g] = n;
}

// The chunk schedule of Gram group g: its splits' tiles in order, each cut into kChunk-sample
// chunks (the last one short); `chunk(tile, s0)` per chunk, `flush()` after every kFlush chunks
// (fp32 accumulators into fp64) and once at the end.
template <class Chunk, class Flush>
FP_HD void group_chunks(const Plan& p, std::int64_t g, Chunk&& chunk, Flush&& flush) {
  std::int64_t k0, k1;
  group_splits(p, g, k0, k1);
  int chunks = 0;
  for (std::int64_t k = k0; k < k1; ++k) {
    std::int64_t t0, t1;
    split_tiles(p, k, t0, t1);
    for (std::int64_t gt = t0; gt < t1; ++gt) {
      const TileSpan t = tile_span(p, gt);
      for (std::int64_t s0 = 0; s0 < t.n; s0 += kChunk) {
        chunk(t, s0);
        if (++chunks == kFlush) {
          chunks = 0;
          flush();
        }
      }
    }
  }
  flush();
}

// Operand rounding for the tensor cores: TF32 keeps 10 mantissa bits (round to nearest, ties
// away, as cvt.rna.tf32.f32), BF16 7 (round to nearest even). A value v is fed as hi + lo with
// hi = round(v), lo = round(v - hi): hi*hi + hi*lo + lo*hi carries ~21 (TF32) or ~16 (BF16)
// significant bits of each product, and every product is exact in the fp32 accumulator.
FP_HD float float_of_bits(std::uint32_t u) { return bits_to_float(u); }
FP_HD std::uint32_t bits_of_float(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
FP_HD float round_tf32(float v) {
  const std::uint32_t u = bits_of_float(v);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;  // inf / nan unchanged
  return float_of_bits((u + 0x1000u) & 0xffffe000u);
}
FP_HD std::uint16_t bf16_bits(float v) {
  const std::uint32_t u = bits_of_float(v);
  if ((u & 0x7f800000u) == 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | ((u & 0xffffu) ? 0x40u : 0u));
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
FP_HD float round_bf16(float v) { return bf16_to_float(bf16_bits(v)); }
// A split's shift: the probe mean, for half input rounded to BF16 (on the fp16 grid too, within
// fp16's range), so that x - shift of half input x keeps few significant bits and hi + lo
// carries it exactly (a shift off the input's grid would put its low bits into every value).
template <DType D> struct Operand {  // fp32 and fp64 input: 3xTF32
  static constexpr bool tf32 = true;
  static FP_HD float shift(float mean) { return mean; }
  static FP_HD float hi(float v) { return round_tf32(v); }
  static FP_HD float lo(float v) { return round_tf32(v - round_tf32(v)); }
};
template <> struct Operand<DType::f16> {  // half input: 3xBF16
  static constexpr bool tf32 = false;
  static FP_HD float shift(float mean) { return round_bf16(mean); }
  static FP_HD float hi(float v) { return round_bf16(v); }
  static FP_HD float lo(float v) { return round_bf16(v - round_bf16(v)); }
};
template <> struct Operand<DType::bf16> : Operand<DType::f16> {};

// The three tensor-core products of one operand pair, small terms first (the kernels issue the
// MMAs in this order; the emulation sums them so per sample).
FP_HD float mma3(float ahi, float alo, float bhi, float blo) { return alo * bhi + ahi * blo + ahi * bhi; }

// A Gram group's centred co-moment from its fp64 shifted sum g (shifts s_i, s_j; the group's
// exact mean mu and count n): sum (x_i - s_i)(x_j - s_j) - n (mu_i - s_i)(mu_j - s_j).
FP_HD double group_comoment(double g, double n, double mu_i, double s_i, double mu_j, double s_j) {
  return tile_comoment(g, n * (mu_i - s_i), mu_j - s_j);
}

// ---------------------------------------------------------------- pass 2
// One co-moment entry's merge state over Gram groups.
struct Co {
  double n = 0, mi = 0, mj = 0, m = 0;
  FP_HD void combine(const Co& b) {
    m = chan_comoment(m, b.m, b.mi - mi, b.mj - mj, chan_weight(n, b.n));
    mi = chan_mean(mi, n, b.mi, b.n);
    mj = chan_mean(mj, n, b.mj, b.n);
    n += b.n;
  }
};
// Gram group g's part of entry (i, j) = row r, column cc of block pair `pair`.
FP_HD Co group_entry(const Plan& p, const double* ws, std::int64_t g, std::int64_t pair, std::int64_t r,
                     std::int64_t cc, std::int64_t i, std::int64_t j) {
  Co e;
  e.n = ws[p.off_gn + g];
  e.mi = ws[p.off_gmean + g * p.C + i];
  e.mj = ws[p.off_gmean + g * p.C + j];
  e.m = ws[p.off_gpart + ((g * p.pairs + pair) * kBlock + r) * kBlock + cc];
  return e;
}

// Channel c's totals into the output layout (the m2 diagonal only without covariance: with it,
// the Gram's second pass writes the whole matrix).
FP_HD void write_totals(const Plan& p, std::int64_t c, const Record& r, double* out) {
  const OutLayout L{p.C, p.cov};
  if (c == 0) {
    out[0] = r.n;
    out[1] = p.per_image && p.records > 0 ? static_cast<double>(p.I) : 0.0;
  }
  out[L.mean() + c] = r.mean;
  out[L.abs_sum() + c] = r.abs;
  out[L.zeros() + c] = r.zeros;
  out[L.min() + c] = r.mn;
  out[L.max() + c] = r.mx;
  out[L.nonfinite() + c] = r.nonfin;
  out[L.msd_sum() + c] = r.msd;
  if (!p.cov) out[L.m2() + c] = r.m2;
}

// Lane l of kLanes takes items l, l + kLanes, ... of [0, count); lanes combine in a halving
// tree (l < o takes l + o, o = kLanes / 2 .. 1).
template <class T, class Get>
FP_HD T lane_walk(int l, std::int64_t count, Get&& get) {
  T acc;
  for (std::int64_t k = l; k < count; k += kLanes) acc.combine(get(k));
  return acc;
}
template <class T>
inline T host_lane_reduce(T* lanes) {
  for (int o = kLanes / 2; o > 0; o /= 2)
    for (int l = 0; l < o; ++l) lanes[l].combine(lanes[l + o]);
  return lanes[0];
}

}  // namespace fastprune::moments::dev
