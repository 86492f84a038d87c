// The CUDA moments back-end run on the host, step for step: the same plan, split and tile
// ranges, probe shifts, lane-to-sample assignment, lane trees, Chan merges, Gram groups,
// tensor-core operand rounding (hi + lo, three products, fp32 chunks flushed into fp64 every
// kFlush chunks, staged as hi + lo floats) and second-pass lanes (fastprune/moments_plan.h).
// What it cannot reproduce is the order of the additions inside one MMA instruction. For tests:
// a CPU machine checks the device's partition and numerics against float64 with it.
#include <algorithm>
#include <vector>

#include "fastprune/moments.h"
#include "fastprune/moments_plan.h"

namespace fastprune::moments {
namespace {

using namespace dev;

template <DType D>
void stats(const Batch& b, const Plan& p, double* ws) {
  const RecordStore rs{ws + p.off_split, p.splits, p.C};
  const int L = stat_lanes(p);
  const bool whole = p.spi == 0 && p.per_image;
  for (std::int64_t k = 0; k < p.splits; ++k) {
    std::int64_t g0, g1;
    split_tiles(p, k, g0, g1);
    const TileSpan first = tile_span(p, g0);
    const std::int64_t pn = probe_n(first.n);
    for (std::int64_t c = 0; c < p.C; ++c) {
      Sum probe[kWarp];
      for (int l = 0; l < L; ++l) {
        probe[l] = Sum{};
        for (std::int64_t s = l; s < pn; s += L) probe[l].v += load<D>(b.data, elem(b, first.image, c, first.p0 + s));
      }
      const float shift = Operand<D>::shift(host_lane_tree(p, probe).v / static_cast<float>(pn));
      Record rec;
      for (std::int64_t g = g0; g < g1; ++g) {
        const TileSpan t = tile_span(p, g);
        Lane lanes[kWarp];
        for (int l = 0; l < L; ++l)
          lane_samples(p, l, t.n, [&](std::int64_t s) { lanes[l].add(load<D>(b.data, elem(b, t.image, c, t.p0 + s)), shift); });
        rec.absorb(host_lane_tree(p, lanes), shift, static_cast<double>(t.n), whole);
      }
      rs.put(k, c, rec);
      ws[p.off_shift + k * p.C + c] = shift;
    }
  }
}

void group_stats(const Plan& p, double* ws) {
  for (std::int64_t g = 0; g < p.groups; ++g)
    for (std::int64_t c = 0; c < p.C; ++c) group_stat(p, ws, g, c);
}

// One operand block's chunk: hi and lo planes [row][k], zero past the tile or the channels.
template <DType D>
void chunk_planes(const Batch& b, const Plan& p, const TileSpan& t, std::int64_t s0, std::int64_t cb,
                  const float* shift, float* hi, float* lo) {
  for (int row = 0; row < kBlock; ++row)
    for (int k = 0; k < kChunk; ++k) {
      const std::int64_t c = cb + row;
      const float d = c < p.C && s0 + k < t.n ? load<D>(b.data, elem(b, t.image, c, t.p0 + s0 + k)) - shift[row] : 0.0f;
      hi[row * kChunk + k] = Operand<D>::hi(d);
      lo[row * kChunk + k] = Operand<D>::lo(d);
    }
}

template <DType D>
void gram(const Batch& b, const Plan& p, double* ws) {
  std::vector<float> ah(kBlock * kChunk), al(ah.size()), bh(ah.size()), bl(ah.size());
  std::vector<float> acc(kBlock * kBlock);
  std::vector<double> acc64(kBlock * kBlock);
  float sh_i[kBlock], sh_j[kBlock];
  for (std::int64_t g = 0; g < p.groups; ++g) {
    std::int64_t k0, k1;
    group_splits(p, g, k0, k1);
    for (std::int64_t pair = 0; pair < p.pairs; ++pair) {
      std::int64_t bi, bj;
      block_pair(p.nblk, pair, bi, bj);
      const bool diag = bi == bj;
      const std::int64_t ci0 = bi * kBlock, cj0 = bj * kBlock;
      for (int r = 0; r < kBlock; ++r) {
        sh_i[r] = ci0 + r < p.C ? static_cast<float>(ws[p.off_shift + k0 * p.C + ci0 + r]) : 0.0f;
        sh_j[r] = cj0 + r < p.C ? static_cast<float>(ws[p.off_shift + k0 * p.C + cj0 + r]) : 0.0f;
      }
      // the fragments the kernel forms
      bool active[kFrags][kFrags] = {};
      for (int f = 0; f < block_fragments(diag); ++f) {
        int fr, fc;
        fragment_rc(diag, f, fr, fc);
        active[fr][fc] = true;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(acc64.begin(), acc64.end(), 0.0);
      auto flush = [&] {
        for (std::size_t e = 0; e < acc.size(); ++e) { acc64[e] += acc[e]; acc[e] = 0.0f; }
      };
      group_chunks(p, g, [&](const TileSpan& t, std::int64_t s0) {
        chunk_planes<D>(b, p, t, s0, ci0, sh_i, ah.data(), al.data());
        chunk_planes<D>(b, p, t, s0, cj0, sh_j, bh.data(), bl.data());
        for (int r = 0; r < kBlock; ++r)
          for (int cc = 0; cc < kBlock; ++cc) {
            if (!active[r / kFrag][cc / kFrag]) continue;
            float s = acc[r * kBlock + cc];
            for (int q = 0; q < kChunk; ++q)
              s += mma3(ah[r * kChunk + q], al[r * kChunk + q], bh[cc * kChunk + q], bl[cc * kChunk + q]);
            acc[r * kBlock + cc] = s;
          }
      }, flush);
      const double n = ws[p.off_gn + g];
      const double* gmean = ws + p.off_gmean + g * p.C;
      double* out = ws + p.off_gpart + (g * p.pairs + pair) * kBlock * kBlock;
      for (int r = 0; r < kBlock; ++r)
        for (int cc = 0; cc < kBlock; ++cc) {
          const std::int64_t i = ci0 + r, j = cj0 + cc;
          if (!active[r / kFrag][cc / kFrag] || i >= p.C || j >= p.C) continue;
          const double a = acc64[r * kBlock + cc];
          const float hi = static_cast<float>(a), lo = static_cast<float>(a - static_cast<double>(hi));
          const double G = static_cast<double>(hi) + static_cast<double>(lo);
          out[r * kBlock + cc] = group_comoment(G, n, gmean[i], sh_i[r], gmean[j], sh_j[cc]);
        }
    }
  }
}

void image_records(const Plan& p, double* ws) {
  const RecordStore rs{ws + p.off_split, p.splits, p.C};
  for (std::int64_t image = 0; image < p.I; ++image)
    for (std::int64_t c = 0; c < p.C; ++c) {
      Record lanes[kLanes];
      for (int y = 0; y < kLanes; ++y)
        lanes[y] = lane_walk<Record>(y, p.spi, [&](std::int64_t j) { return rs.get(image * p.spi + j, c); });
      Record whole = host_lane_reduce(lanes);
      if (p.per_image) whole.msd = image_std(whole.m2, whole.n);
      RecordStore{ws + p.off_image, p.I, p.C}.put(image, c, whole);
    }
}

void finish_stats(const Plan& p, double* ws, double* out) {
  const RecordStore rs{ws + (p.spi > 0 ? p.off_image : p.off_split), p.records, p.C};
  for (std::int64_t c = 0; c < p.C; ++c) {
    Record lanes[kLanes];
    for (int y = 0; y < kLanes; ++y) lanes[y] = lane_walk<Record>(y, p.records, [&](std::int64_t k) { return rs.get(k, c); });
    write_totals(p, c, host_lane_reduce(lanes), out);
  }
}

void finish_gram(const Plan& p, const double* ws, double* out) {
  const std::int64_t m2 = OutLayout{p.C, true}.m2();
  for (std::int64_t pair = 0; pair < p.pairs; ++pair) {
    std::int64_t bi, bj;
    block_pair(p.nblk, pair, bi, bj);
    for (std::int64_t r = 0; r < kBlock; ++r)
      for (std::int64_t cc = 0; cc < kBlock; ++cc) {
        const std::int64_t i = bi * kBlock + r, j = bj * kBlock + cc;
        if (i >= p.C || j >= p.C || j < i) continue;
        Co lanes[kLanes];
        for (int y = 0; y < kLanes; ++y)
          lanes[y] = lane_walk<Co>(y, p.groups, [&](std::int64_t g) { return group_entry(p, ws, g, pair, r, cc, i, j); });
        const double m = host_lane_reduce(lanes).m;
        out[m2 + i * p.C + j] = m;
        out[m2 + j * p.C + i] = m;
      }
  }
}

template <DType D>
void emulate(const Batch& b, const Plan& p, double* out) {
  std::vector<double> ws(static_cast<std::size_t>(p.size));
  if (p.splits > 0) stats<D>(b, p, ws.data());
  if (p.groups > 0) {
    group_stats(p, ws.data());
    gram<D>(b, p, ws.data());
    finish_gram(p, ws.data(), out);
  } else if (p.cov) {
    std::fill(out + OutLayout{p.C, true}.m2(), out + OutLayout{p.C, true}.size(), 0.0);
  }
  if (p.spi > 0) image_records(p, ws.data());
  finish_stats(p, ws.data(), out);
}

}  // namespace

void emulate_device(const View& x, std::uintptr_t out, std::int64_t out_len, bool cov,
                    std::int64_t stat_blocks, std::int64_t gram_blocks) {
  const Batch b = make_batch(x, cov);
  FP_CHECK(b.device == Device::cpu, "the device emulation reads CPU input");
  FP_CHECK(out_len == out_size(b.C, cov), "moments output buffer has the wrong size");
  FP_CHECK(stat_blocks >= 1 && gram_blocks >= 1, "block targets must be positive");
  const Plan p = dev::plan_of(x, cov, dev::Targets{stat_blocks, gram_blocks});
  double* o = reinterpret_cast<double*>(out);
  switch (b.dtype) {
    case DType::f32: emulate<DType::f32>(b, p, o); break;
    case DType::f16: emulate<DType::f16>(b, p, o); break;
    case DType::bf16: emulate<DType::bf16>(b, p, o); break;
    case DType::f64: emulate<DType::f64>(b, p, o); break;
  }
}

}  // namespace fastprune::moments
