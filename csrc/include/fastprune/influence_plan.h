// The device algorithm of the influence kernels, written once for the CUDA kernels
// (csrc/cuda/influence_cuda.cu) and their CPU emulation (csrc/cpu/influence_emulate.cpp), which
// runs every partition, staging, lane, tree and merge decision below on the host so that the CPU
// tests check the device's logic.
//
// Shifted auto-moments (influence_shift). The shift plan (influence_geometry.py) cuts the first-tap
// positions into cells, each with its jobs (deltas). Every cell is cut into tiles of at most
// tr x tc positions (cell rows x cell columns; tc a power of two); a cell that fits in one tile
// takes several images per tile (small maps). A tile step is one tile of one image group; a unit
// is a run of consecutive tile steps of one cell (across images) for one group of cg channels: a
// block. Per step it stages the input the tile reads (its rows plus max_dy below, its columns plus
// pad_x either side; zero outside the image) once into shared memory as fp32, then each thread
// (lane l = tid / cg of channel tid % cg) walks groups of kV consecutive positions of a tile row
// (groups l, l + 256/cg, ...) and, kJobs jobs at a time, adds v(p) * v(p + delta) for all of them
// to fp32 registers: one load of v(p) serves every delta of the cell, and jobs are sorted by
// (dy, dx) so that the next delta's partners mostly are the previous one's moved on by a position
// (one new load instead of kV); a cell with the 13 deltas of a whole 3 x 3 window (dilation 1,
// column step 1: the interior of a 3 x 3 consumer) loads its three partner row segments once for
// all 13 (lane_sums_full3: the same products in the same order). A fixed tree (per job: the 8
// warps' values in order, then an xor butterfly over the lanes) sums the lanes of a channel in
// fp32: a unit's partial covers about kPlanarUnit (planar) or kInterUnit (per channel) products.
// Partials go to the workspace in fp64; the second pass sums, per (job, channel), the units in
// order in fp64.
// Planar input (x contiguous): cg = 1, threads over columns. Channels innermost (channels_last):
// cg = up to 32 channels, threads over channels. Tiles shrink (then cg) until the staged tile
// fits kStageFloats.
//
// Patch Gram over explicit positions (gram_gather). The (D, D) Gram is cut into 64 x 64 blocks,
// upper-triangle block pairs only; positions into chunks of kGChunk, chunks into groups (split-K)
// so that pairs x groups fills the device. A block (pair, group) stages each chunk's two 64-row
// patch panels (zero in the padding) in shared memory; each thread owns 4 x 4 entries, fp32 FMAs
// over kGFlush chunks, then fp64 registers. The second pass sums the groups per entry in order.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "fastprune/convert.h"
#include "fastprune/dev_util.h"
#include "fastprune/influence_tile.h"
#include "fastprune/view.h"

namespace fastprune::influence::dev {

using dev_util::block_pair;
using dev_util::ceil_div;
using dev_util::FastDiv;
using dev_util::load;
using dev_util::max64;
using dev_util::min64;

constexpr int kThreads = 256;  // every kernel's block (stage_tile assumes 256 = 1 << 8)
constexpr int kWarp = 32;
constexpr int kWarps = kThreads / kWarp;
constexpr int kJobs = 16;      // jobs (deltas) held in registers at once (a 3x3 consumer's 13)
constexpr int kV = 4;          // consecutive positions of a row per lane step
constexpr int kPlanarRows = 48, kPlanarCols = 128;  // default tile, planar input
constexpr int kInterRows = 8, kInterCols = 16;      // default tile, channels innermost
// positions a tile step / a unit should cover (per channel): planar blocks hold one channel,
// channels-innermost blocks 32
constexpr std::int64_t kPlanarUnit = kPlanarRows * kPlanarCols, kInterUnit = 1024;
constexpr int kMaxGroup = 32;  // channels per block, channels innermost
constexpr std::int64_t kStageFloats = 8000;  // staged tile: 31.25 KiB (with the kernel's 16.1 KiB, <= 48 KiB)
// The table: per cell kCellFields (its entries are [e0, e1)), then per entry kEntryFields (the
// cell's jobs sorted by (dy, dx)), then per job kJobFields (its workspace rows).
constexpr int kCellFields = 19;  // y0 sy x0 sx nrows ncols e0 e1 unit0 tiles_x tpi ni steps run sr_m sr_l nr_m nr_l full3
constexpr int kEntryFields = 4;  // dy dx job slide (slide: same dy as the previous entry, dx larger by sx)
constexpr int kJobFields = 2;    // row0 units

// Tile-size overrides (0: the launch's defaults): tile rows / columns, tile steps per unit and
// images per tile of one-tile cells; full3 = false sends whole 3 x 3 cells through the general lane
// loop (tests: both give the same bits); and the probe: merge64 = false sums the unit partials in
// fp32 (emulation only; the kernels always merge in fp64), to show that the tests see it.
struct Targets {
  int tile_rows = 0, tile_cols = 0, run = 0, images = 0;
  bool full3 = true, merge64 = true;
};

// The sorted entries of a whole 3 x 3 window with dilation 1: (0, 0..2), (1, -2..2), (2, -2..2).
constexpr int kFull3Jobs = 13;
FP_HD bool full3_delta(int e, std::int64_t dy, std::int64_t dx) {
  return e < 3 ? dy == 0 && dx == e : dy == 1 + (e - 3) / 5 && dx == (e - 3) % 5 - 2;
}

struct Plan {
  std::int64_t N = 0, C = 0, H = 0, W = 0, sC = 0, sH = 0, sW = 0;  // shape, strides after N
  int elem = 4;       // bytes per input element
  int vec = 1;        // elements per 16-byte staging load (1: element loads)
  int planar = 1;     // 1: threads over columns; 0: channels innermost, threads over channels
  int cg = 1;         // channels per block (a power of two, at most 32)
  int cg_log2 = 0;
  int tr = 0, tc = 0;   // tile: cell rows x cell columns (tc a power of two)
  int gc_log2 = 0;      // log2 of the kV-position groups per tile row (max(1, tc / kV))
  std::int64_t max_dy = 0, pad_x = 0;
  std::int64_t ncell = 0, njobs = 0;
  std::int64_t units = 0;    // units of all cells (per channel group)
  std::int64_t rows = 0;     // workspace rows (C doubles each)
  std::int64_t cgroups = 0;  // channel groups
  std::int64_t stage = 0;    // shared floats per block (the largest staged tile step)
  std::int64_t table_len = 0;
  bool merge64 = true;
};

// Staged rows / columns of a tile of nr x nc positions with cell steps sy, sx. Columns: nc
// rounded up to whole kV groups (every lane reads inside the staged tile), the halo, and with
// vector staging up to vec - 1 on either side (the staged row starts and ends on 16 bytes); the
// exact count of a tile is tile_at's.
FP_HD std::int64_t staged_rows(const Plan& p, std::int64_t nr, std::int64_t sy) { return (nr - 1) * sy + 1 + p.max_dy; }
FP_HD std::int64_t staged_cols(const Plan& p, std::int64_t nc, std::int64_t sx) {
  return (ceil_div(nc, kV) * kV - 1) * sx + 1 + 2 * p.pad_x + 2 * (p.vec - 1);
}

// The plan of input x (N, C, H, W; its shape and strides) for the host shift plan hp (host
// pointers); fills `table` (table_len int64) when given: per cell kCellFields, then per entry
// kEntryFields, then per job kJobFields.
inline Plan make_plan(const View& x, const ShiftPlanArgs& hp, const Targets& tg, std::int64_t* table) {
  Plan p;
  p.N = x.shape[0]; p.C = x.shape[1]; p.H = x.shape[2]; p.W = x.shape[3];
  p.sC = x.stride[1]; p.sH = x.stride[2]; p.sW = x.stride[3];
  p.planar = !(x.stride[1] == 1 && p.C > 1);
  p.elem = static_cast<int>(dtype_size(x.dtype));
  // 16-byte staging loads: planar rows of unit stride, every row start on 16 bytes
  const std::int64_t V = 16 / p.elem;
  if (p.planar && p.sW == 1 && x.data % 16 == 0 && x.stride[0] % V == 0 && p.sC % V == 0 && p.sH % V == 0)
    p.vec = static_cast<int>(V);
  FP_CHECK(p.W * (p.sW < 0 ? -p.sW : p.sW) < (std::int64_t{1} << 31),
           "influence device plan: input rows longer than 2^31 elements");
  p.max_dy = hp.max_dy; p.pad_x = hp.pad_x;
  p.ncell = hp.ncell; p.njobs = hp.njobs;
  p.merge64 = tg.merge64;
  int cg = 1;
  if (!p.planar)
    while (cg < kMaxGroup && cg < p.C) cg *= 2;
  std::int64_t tr = tg.tile_rows > 0 ? tg.tile_rows : (p.planar ? kPlanarRows : kInterRows);
  std::int64_t tc = tg.tile_cols > 0 ? tg.tile_cols : (p.planar ? kPlanarCols : kInterCols);
  FP_CHECK((tc & (tc - 1)) == 0, "influence device plan: tile columns must be a power of two");
  const std::int64_t unit_target = p.planar ? kPlanarUnit : kInterUnit;
  auto dims = [&](const std::int64_t* c, std::int64_t rows, std::int64_t cols, std::int64_t& nr, std::int64_t& nc) {
    nr = min64(rows, ceil_div(c[1] - c[0], c[2]));
    nc = min64(cols, ceil_div(c[4] - c[3], c[5]));
  };
  auto stage = [&](std::int64_t rows, std::int64_t cols, std::int64_t ch) {  // one image a tile
    std::int64_t most = 0;
    for (std::int64_t ci = 0; ci < hp.ncell; ++ci) {
      std::int64_t nr, nc;
      dims(hp.cells + 6 * ci, rows, cols, nr, nc);
      most = max64(most, ch * staged_rows(p, nr, hp.cells[6 * ci + 2]) * staged_cols(p, nc, hp.cells[6 * ci + 5]));
    }
    return most;
  };
  while (stage(tr, tc, cg) > kStageFloats) {
    if (tr > 1) tr = (tr + 1) / 2;
    else if (tc > 1) tc /= 2;
    else if (cg > 1) cg /= 2;
    else FP_CHECK(false, "the consumer's window is too large for the CUDA influence kernel");
  }
  p.cg = cg;
  while ((1 << p.cg_log2) < cg) ++p.cg_log2;
  p.tr = static_cast<int>(tr);
  p.tc = static_cast<int>(tc);
  while ((std::int64_t{kV} << p.gc_log2) < tc) ++p.gc_log2;
  p.cgroups = ceil_div(p.C, cg);
  std::int64_t unit = 0, row = 0;
  for (std::int64_t ci = 0; ci < hp.ncell; ++ci) {
    const std::int64_t* c = hp.cells + 6 * ci;
    const std::int64_t nrows = ceil_div(c[1] - c[0], c[2]), ncols = ceil_div(c[4] - c[3], c[5]);
    const std::int64_t tiles_x = ceil_div(ncols, tc), tpi = ceil_div(nrows, tr) * tiles_x;
    std::int64_t nr, nc;
    dims(c, tr, tc, nr, nc);
    const std::int64_t sr = staged_rows(p, nr, c[2]), per_image = cg * sr * staged_cols(p, nc, c[5]);
    // images per tile: cells of one tile take several, up to the stage and the positions target
    std::int64_t ni = 1;
    if (tpi == 1)
      ni = tg.images > 0 ? tg.images : min64(p.N, max64(1, min64(kStageFloats / per_image, ceil_div(unit_target, nr * nc))));
    ni = min64(ni, p.N);
    p.stage = max64(p.stage, ni * per_image);
    const std::int64_t steps = tpi * ceil_div(p.N, ni);
    const std::int64_t run = tg.run > 0 ? tg.run : max64(1, unit_target / (ni * nr * nc));
    const std::int64_t units = ceil_div(steps, run);
    const std::int64_t j0 = hp.cell_ptr[ci], j1 = hp.cell_ptr[ci + 1];
    if (table) {
      std::int64_t* t = table + kCellFields * ci;
      const FastDiv by_sr(static_cast<std::uint32_t>(sr)), by_nr(static_cast<std::uint32_t>(nr));
      const std::int64_t f[kCellFields - 1] = {c[0], c[2], c[3], c[5], nrows, ncols, j0, j1, unit, tiles_x,
                                               tpi, ni, steps, run, by_sr.m, by_sr.l, by_nr.m, by_nr.l};
      for (int k = 0; k < kCellFields - 1; ++k) t[k] = f[k];
      std::vector<std::int64_t> order;
      for (std::int64_t j = j0; j < j1; ++j) order.push_back(j);
      auto delta = [&](std::int64_t j) { return hp.deltas + 2 * hp.job_delta[j]; };
      std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
        return delta(a)[0] != delta(b)[0] ? delta(a)[0] < delta(b)[0] : delta(a)[1] < delta(b)[1];
      });
      for (std::int64_t e = j0; e < j1; ++e) {
        const std::int64_t j = order[static_cast<std::size_t>(e - j0)];
        std::int64_t* te = table + kCellFields * hp.ncell + kEntryFields * e;
        te[0] = delta(j)[0]; te[1] = delta(j)[1]; te[2] = j;
        te[3] = e > j0 && te[0] == te[-kEntryFields] && te[1] == te[1 - kEntryFields] + c[5];
        std::int64_t* tj = table + kCellFields * hp.ncell + kEntryFields * hp.njobs + kJobFields * j;
        tj[0] = row + (j - j0) * units; tj[1] = units;
      }
      bool full3 = tg.full3 && c[5] == 1 && p.pad_x == 2 && p.max_dy == 2 && j1 - j0 == kFull3Jobs;
      for (std::int64_t e = j0; full3 && e < j1; ++e) {
        const std::int64_t* te = table + kCellFields * hp.ncell + kEntryFields * e;
        full3 = full3_delta(static_cast<int>(e - j0), te[0], te[1]);
      }
      t[kCellFields - 1] = full3;
    }
    unit += units;
    row += (j1 - j0) * units;
  }
  FP_CHECK(p.stage <= kStageFloats, "influence device plan: too many images per tile for shared memory");
  p.units = unit;
  p.rows = row;
  p.table_len = kCellFields * hp.ncell + (kEntryFields + kJobFields) * hp.njobs;
  return p;
}

// Workspace doubles.
FP_HD std::int64_t workspace_doubles(const Plan& p) { return p.rows * p.C; }

struct Cell {
  std::int64_t y0, sy, x0, sx, nrows, ncols, e0, e1, unit0, tiles_x, tpi, ni, steps, run;
  FastDiv by_sr, by_nr;  // staged rows and position rows of the cell's full tile, per image
  bool full3;            // its entries are a whole 3 x 3 window (full3_delta)
};
FP_HD Cell cell_at(const std::int64_t* table, std::int64_t ci) {
  const std::int64_t* t = table + kCellFields * ci;
  Cell c{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13], {}, {}, t[18] != 0};
  c.by_sr.m = static_cast<std::uint32_t>(t[14]); c.by_sr.l = static_cast<std::uint32_t>(t[15]);
  c.by_nr.m = static_cast<std::uint32_t>(t[16]); c.by_nr.l = static_cast<std::uint32_t>(t[17]);
  return c;
}

// Unit u (0 <= u < units): its cell (the last whose unit0 <= u: a binary search, once a block),
// its index within the cell and its tile steps [s0, s1).
struct Unit {
  Cell cell;
  std::int64_t l, s0, s1;
};
FP_HD Unit unit_of(const Plan& p, const std::int64_t* table, std::int64_t u) {
  std::int64_t lo = 0, hi = p.ncell - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (table[kCellFields * mid + 8] <= u) lo = mid; else hi = mid - 1;
  }
  Unit un;
  un.cell = cell_at(table, lo);
  un.l = u - un.cell.unit0;
  un.s0 = un.l * un.cell.run;
  un.s1 = min64(un.cell.steps, un.s0 + un.cell.run);
  return un;
}

// Tile step s of a cell: images [n0, n0 + ni), the tile's first position and extent.
struct Tile {
  Cell cell;
  std::int64_t n0;    // first image
  int ni;             // images
  std::int64_t y, x;  // input row and column of the tile's first position
  std::int64_t xa;    // input column of staged column 0 (x - pad_x, rounded down to vec)
  int px;             // staged column of the first position (x - xa)
  int nr, nc;         // positions per image: cell rows x cell columns
  int sr, sc;         // staged rows (per image) x columns (a multiple of vec)
};
FP_HD Tile tile_at(const Plan& p, const Cell& cell, std::int64_t s) {
  Tile t;
  t.cell = cell;
  // tile steps < 2^31 (units are the grid's x dimension): 32-bit divisions, once a step
  const std::uint32_t ig = static_cast<std::uint32_t>(s) / static_cast<std::uint32_t>(cell.tpi);
  const std::int64_t l = s - static_cast<std::int64_t>(ig) * cell.tpi;
  const std::int64_t ty = static_cast<std::uint32_t>(l) / static_cast<std::uint32_t>(cell.tiles_x);
  const std::int64_t tx = l - ty * cell.tiles_x;
  const std::int64_t r0 = ty * p.tr, c0 = tx * p.tc;
  t.n0 = ig * cell.ni;
  t.ni = static_cast<int>(min64(cell.ni, p.N - t.n0));
  t.y = cell.y0 + r0 * cell.sy;
  t.x = cell.x0 + c0 * cell.sx;
  t.nr = static_cast<int>(min64(p.tr, cell.nrows - r0));
  t.nc = static_cast<int>(min64(p.tc, cell.ncols - c0));
  t.sr = static_cast<int>(staged_rows(p, t.nr, cell.sy));
  const std::int64_t round = ~static_cast<std::int64_t>(p.vec - 1);  // vec: a power of two
  t.xa = (t.x - p.pad_x) & round;                                      // floor, also below 0
  t.px = static_cast<int>(t.x - t.xa);
  const std::int64_t need = t.px + (ceil_div(t.nc, kV) * kV - 1) * cell.sx + 1 + p.pad_x;
  t.sc = static_cast<int>((need + p.vec - 1) & round);
  return t;
}

// Element offset of image n, channel c (c < C) in x.
FP_HD std::int64_t plane(const Plan& p, std::int64_t sN, std::int64_t n, std::int64_t c) { return n * sN + c * p.sC; }

// Stages one channel's tile step: the input at (image t.n0 + i, row t.y + row, column t.xa + col)
// for staged row rr = i * sr + row (images stacked) and column col, zero outside the image or past
// the channels (`on` false); store(rr, col, value) per item. lanes = 256 / cg threads share a
// channel; lc = min(lanes, 32) of them walk a row (consecutive lanes, consecutive columns or
// 16-byte vectors: coalesced along x when planar) and lanes / lc rows go at once. Per row one
// multiply-high and the row's address; per item (or vector of vec items inside the image) a
// bounds test, a 32-bit column offset (the plan checks W |sW| < 2^31), the load. `base` is plane()
// of the step's first image.
template <DType D, class Store>
FP_HD void stage_tile(const Plan& p, const Tile& t, std::uintptr_t data, std::int64_t sN, std::int64_t base, bool on,
                      int lane, Store&& store) {
  using T = typename dev_util::Elem<D>::T;
  const int lanes_log2 = 8 - p.cg_log2, lc_log2 = lanes_log2 < 5 ? lanes_log2 : 5;
  const int rstep = 1 << (lanes_log2 - lc_log2), lc = 1 << lc_log2;
  const int xs = static_cast<int>(t.xa), W = static_cast<int>(p.W), sw = static_cast<int>(p.sW);
  constexpr int V = static_cast<int>(16 / sizeof(T));  // the plan's vec when it is not 1
  for (int rr = lane >> lc_log2; rr < t.ni * t.sr; rr += rstep) {
    const int i = static_cast<int>(t.cell.by_sr.div(static_cast<std::uint32_t>(rr)));
    const std::int64_t y = t.y + (rr - i * t.sr);
    const bool rin = on && y < p.H;
    const T* row = reinterpret_cast<const T*>(data) + (rin ? base + i * sN + y * p.sH : 0);
    if (p.vec > 1) {
      for (int col = (lane & (lc - 1)) * V; col < t.sc; col += lc * V) {
        const int xx = xs + col;
        float v[V];
        if (rin && xx >= 0 && xx + V <= W) {  // a whole aligned vector inside the image
          dev_util::load16<D>(row + xx, v);
        } else {
FP_DEVICE_UNROLL
          for (int e = 0; e < V; ++e) v[e] = rin && xx + e >= 0 && xx + e < W ? dev_util::Elem<D>::f(row[xx + e]) : 0.0f;
        }
FP_DEVICE_UNROLL
        for (int e = 0; e < V; ++e) store(rr, col + e, v[e]);
      }
    } else {
      for (int col = lane & (lc - 1); col < t.sc; col += lc) {
        const int xx = xs + col;
        store(rr, col, rin && xx >= 0 && xx < W ? dev_util::Elem<D>::f(row[xx * sw]) : 0.0f);
      }
    }
  }
}

// Entry e of the table: its delta and job.
FP_HD const std::int64_t* entry(const std::int64_t* table, const Plan& p, std::int64_t e) {
  return table + kCellFields * p.ncell + kEntryFields * e;
}

// Up to kJobs entries starting at eb: shared-memory offsets dy * sc + dx (the rest 0), and the
// slide mask: bit g set when entry g's partners are entry g - 1's moved on by one position (same
// dy, dx larger by the cell's column step), so a lane keeps kV - 1 of them and loads one.
struct Chunk {
  int n = 0;
  int off[kJobs];
  unsigned slide = 0;
  bool full3 = false;  // the cell's whole 3 x 3 window (all its entries are in this chunk)
};
// Entry g of the chunk starting at eb (g < chunk_size): its offset and slide flag.
FP_HD int chunk_size(const Cell& cell, std::int64_t eb) { return static_cast<int>(min64(kJobs, cell.e1 - eb)); }
FP_HD void chunk_entry(const std::int64_t* table, const Plan& p, const Tile& t, std::int64_t eb, int g, int& off,
                       bool& slide) {
  const std::int64_t* te = entry(table, p, eb + g);
  off = static_cast<int>(te[0] * t.sc + te[1]);
  slide = g > 0 && te[3] != 0;
}
// The whole chunk, host form (the kernel builds it with one thread per entry in shared memory).
inline Chunk job_chunk(const std::int64_t* table, const Plan& p, const Tile& t, std::int64_t eb) {
  Chunk k;
  k.n = chunk_size(t.cell, eb);
  k.full3 = t.cell.full3;
  for (int g = 0; g < kJobs; ++g) {
    bool slide = false;
    k.off[g] = 0;
    if (g < k.n) chunk_entry(table, p, t, eb, g, k.off[g], slide);
    if (slide) k.slide |= 1u << g;
  }
  return k;
}

// One lane's fp32 sums of v(p) * v(p + delta_g), g < k.n, over its positions of the tile: groups
// q = lane, lane + lanes, ... of kV positions (row q >> gc_log2 of the step's ni x nr rows, first
// column kV * (q & mask); groups past the tile's columns skipped, positions past them masked). Per
// group and job the kV products are added in order. `s` is the channel's staged step. SX: the cell's
// column step when known at compile time (1: stride-1 consumers, every load at an immediate
// offset), 0 when read from the cell.
template <int SX>
FP_HD void lane_sums_step(const Plan& p, const Tile& t, int lane, int lanes, const float* s, const Chunk& k, float* acc) {
  const int n = (t.ni * t.nr) << p.gc_log2, mask = (1 << p.gc_log2) - 1;
  const int sy = static_cast<int>(t.cell.sy), sx = SX > 0 ? SX : static_cast<int>(t.cell.sx), px = t.px;
  for (int q = lane; q < n; q += lanes) {
    const int c0 = (q & mask) * kV;
    if (c0 >= t.nc) continue;
    const int rr = q >> p.gc_log2, i = static_cast<int>(t.cell.by_nr.div(static_cast<std::uint32_t>(rr)));
    const float* a = s + (i * t.sr + (rr - i * t.nr) * sy) * t.sc + c0 * sx + px;
    float av[kV], b[kV];
    bool live[kV];
FP_DEVICE_UNROLL
    for (int v = 0; v < kV; ++v) {
      live[v] = c0 + v < t.nc;
      av[v] = a[v * sx];
      b[v] = 0.0f;
    }
FP_DEVICE_UNROLL
    for (int g = 0; g < kJobs; ++g) {
      if (g >= k.n) break;
      const float* pb = a + k.off[g];
      if (k.slide >> g & 1u) {
FP_DEVICE_UNROLL
        for (int v = 0; v < kV - 1; ++v) b[v] = b[v + 1];
        b[kV - 1] = pb[(kV - 1) * sx];
      } else {
FP_DEVICE_UNROLL
        for (int v = 0; v < kV; ++v) b[v] = pb[v * sx];
      }
FP_DEVICE_UNROLL
      for (int v = 0; v < kV; ++v)
        if (live[v]) acc[g] = fmaf(av[v], b[v], acc[g]);
    }
  }
}

// lane_sums_step for a whole 3 x 3 window (column step 1, pad_x 2): per group the partner row
// segments of dy = 0 (kV + 2 values) and dy = 1, 2 (kV + 4 each) are loaded once and serve all 13
// jobs (entry g: dy = 0, dx = g for g < 3; dy = 1 + (g - 3) / 5, dx = (g - 3) % 5 - 2). The products
// and their order per job are lane_sums_step's.
FP_HD void lane_sums_full3(const Plan& p, const Tile& t, int lane, int lanes, const float* s, float* acc) {
  const int n = (t.ni * t.nr) << p.gc_log2, mask = (1 << p.gc_log2) - 1;
  const int sy = static_cast<int>(t.cell.sy);
  for (int q = lane; q < n; q += lanes) {
    const int c0 = (q & mask) * kV;
    if (c0 >= t.nc) continue;
    const int rr = q >> p.gc_log2, i = static_cast<int>(t.cell.by_nr.div(static_cast<std::uint32_t>(rr)));
    const float* a = s + (i * t.sr + (rr - i * t.nr) * sy) * t.sc + c0 + t.px;
    float av[kV], r[kV + 4];
    bool live[kV];
FP_DEVICE_UNROLL
    for (int v = 0; v < kV; ++v) {
      live[v] = c0 + v < t.nc;
      av[v] = a[v];
    }
FP_DEVICE_UNROLL
    for (int u = 0; u < kV + 2; ++u) r[u] = a[u];
FP_DEVICE_UNROLL
    for (int g = 0; g < 3; ++g)
FP_DEVICE_UNROLL
      for (int v = 0; v < kV; ++v)
        if (live[v]) acc[g] = fmaf(av[v], r[g + v], acc[g]);
FP_DEVICE_UNROLL
    for (int dy = 1; dy <= 2; ++dy) {
      const float* pr = a + dy * t.sc - 2;
FP_DEVICE_UNROLL
      for (int u = 0; u < kV + 4; ++u) r[u] = pr[u];
FP_DEVICE_UNROLL
      for (int d = 0; d < 5; ++d)
FP_DEVICE_UNROLL
        for (int v = 0; v < kV; ++v)
          if (live[v]) acc[3 + 5 * (dy - 1) + d] = fmaf(av[v], r[d + v], acc[3 + 5 * (dy - 1) + d]);
    }
  }
}

FP_HD void lane_sums(const Plan& p, const Tile& t, int lane, int lanes, const float* s, const Chunk& k, float* acc) {
  if (k.full3) lane_sums_full3(p, t, lane, lanes, s, acc);
  else if (t.cell.sx == 1) lane_sums_step<1>(p, t, lane, lanes, s, k, acc);
  else lane_sums_step<0>(p, t, lane, lanes, s, k, acc);
}

// The lane tree, host form (the kernel runs the same additions through shared memory and
// shuffles): v holds one value per thread of the block; channel ch's values are at threads
// ch + cg * l. Lane i of a warp (i % cg = the channel) sums v[i], v[32 + i], .., v[224 + i] in
// order; then an xor butterfly over lanes, offsets 16, 8, .., cg (lane i takes s[i] + s[i ^ o]);
// lane ch holds the channel's sum.
inline float host_lane_tree(const Plan& p, const float* v, int ch) {
  float sum[kWarp], tmp[kWarp];
  for (int i = 0; i < kWarp; ++i) {
    sum[i] = v[i];
    for (int w = 1; w < kWarps; ++w) sum[i] += v[w * kWarp + i];
  }
  for (int o = kWarp / 2; o >= p.cg; o /= 2) {
    for (int i = 0; i < kWarp; ++i) tmp[i] = sum[i] + sum[i ^ o];
    for (int i = 0; i < kWarp; ++i) sum[i] = tmp[i];
  }
  return sum[ch];
}

// Job j's workspace fields (row0, units).
FP_HD const std::int64_t* job_rows(const std::int64_t* table, const Plan& p, std::int64_t j) {
  return table + kCellFields * p.ncell + kEntryFields * p.njobs + kJobFields * j;
}
// Workspace row of job j's partial of unit l (index within its cell).
FP_HD std::int64_t ws_row(const Plan& p, const std::int64_t* table, std::int64_t j, std::int64_t l) {
  return job_rows(table, p, j)[0] + l;
}

// Second pass: kFinishLanes lanes per (job, channel); lane l sums the job's units l, l + kFinishLanes,
// ... in order in fp64 (fp32 under the probe merge64 = false), then the lanes merge in a halving
// tree (lane i < o takes i + o, o = kFinishLanes / 2 .. 1): parallel and deterministic.
constexpr int kFinishLanes = kThreads / kWarp;  // a finish block: 32 channels x kFinishLanes lanes
FP_HD double job_lane(const Plan& p, const std::int64_t* table, const double* ws, std::int64_t j, std::int64_t c,
                      int l) {
  const std::int64_t* tj = job_rows(table, p, j);
  const double* w = ws + tj[0] * p.C + c;
  double s = 0.0;
  float s32 = 0.0f;
  for (std::int64_t u = l; u < tj[1]; u += kFinishLanes) {
    if (p.merge64) s += w[u * p.C];
    else s32 += static_cast<float>(w[u * p.C]);
  }
  return p.merge64 ? s : static_cast<double>(s32);
}
FP_HD double lane_merge(const Plan& p, double a, double b) {
  return p.merge64 ? a + b : static_cast<double>(static_cast<float>(a) + static_cast<float>(b));
}
// The same, host form: job j's total for channel c.
inline double host_job_total(const Plan& p, const std::int64_t* table, const double* ws, std::int64_t j,
                             std::int64_t c) {
  double v[kFinishLanes];
  for (int l = 0; l < kFinishLanes; ++l) v[l] = job_lane(p, table, ws, j, c, l);
  for (int o = kFinishLanes / 2; o > 0; o /= 2)
    for (int l = 0; l < o; ++l) v[l] = lane_merge(p, v[l], v[l + o]);
  return v[0];
}

// ---------------------------------------------------------------- patch Gram (gather)
constexpr int kGBlock = 64;    // Gram block edge (patch rows)
constexpr int kGChunk = 32;    // positions per staged chunk
constexpr int kGFlush = 8;     // chunks per fp32 accumulation (256 positions, as on the CPU)
constexpr int kGTile = 4;      // entries per thread and axis (16 x 16 threads x 4 x 4)
constexpr std::int64_t kGramBlocks = 528;              // target blocks (4 per SM on 132 SMs)
constexpr std::int64_t kGramCapBytes = std::int64_t(64) << 20;  // partials at most

struct GatherPlan {
  std::int64_t D = 0, nblk = 0, pairs = 0;
  std::int64_t npos = 0, chunks = 0, cpg = 0, groups = 0;  // positions, chunks, chunks per group
  std::int64_t P = 0;        // output positions per image (implicit positions: all of them)
  std::int64_t wo = 1;       // output columns
  bool implicit = false;     // positions k = image * P + output index, in order (no array)
  FastDiv by_p, by_wo;       // k / P and q / wo without a division instruction
  std::int64_t size = 0;     // workspace doubles
};

constexpr std::int64_t kMaxPositions = 0x7fffffff;  // positions per call (32-bit position decode)

inline GatherPlan gather_plan(std::int64_t D, std::int64_t npos, std::int64_t P, std::int64_t wo, bool implicit,
                              std::int64_t target_blocks = kGramBlocks) {
  FP_CHECK(npos <= kMaxPositions && P <= kMaxPositions,
           "patch Gram: more than 2^31 - 1 positions in one batch; split the batch");
  GatherPlan g;
  g.D = D; g.npos = npos; g.P = P; g.wo = wo; g.implicit = implicit;
  g.by_p = FastDiv(static_cast<std::uint32_t>(P));
  g.by_wo = FastDiv(static_cast<std::uint32_t>(wo));
  g.nblk = ceil_div(D, kGBlock);
  g.pairs = g.nblk * (g.nblk + 1) / 2;
  g.chunks = ceil_div(npos, kGChunk);
  if (g.chunks > 0) {
    const std::int64_t cap = max64(1, kGramCapBytes / (8 * kGBlock * kGBlock * g.pairs));
    // groups: the most that keep pairs x groups within the target (whole waves), capped
    const std::int64_t want = min64(min64(g.chunks, max64(1, target_blocks / g.pairs)), cap);
    g.cpg = ceil_div(g.chunks, want);
    g.groups = ceil_div(g.chunks, g.cpg);
  }
  g.size = g.groups * g.pairs * kGBlock * kGBlock;
  return g;
}

// Position k: image n and the input coordinate (y, x) of its patch's tap (0, 0).
FP_HD void position(const GatherPlan& gp, const PatchGeom& g, const std::int64_t* pos, std::int64_t k, std::int64_t& n,
                    std::int64_t& y, std::int64_t& x) {
  std::uint32_t q;
  if (gp.implicit) {
    const std::uint32_t k32 = static_cast<std::uint32_t>(k), n32 = gp.by_p.div(k32);
    n = n32;
    q = k32 - n32 * static_cast<std::uint32_t>(gp.P);
  } else {
    n = pos[2 * k];
    q = static_cast<std::uint32_t>(pos[2 * k + 1]);
  }
  const std::uint32_t qy = gp.by_wo.div(q);
  const std::int64_t qx = q - qy * static_cast<std::uint32_t>(gp.wo);
  y = tap_coord(qy, g.sh, 0, g.dh, g.pt);
  x = tap_coord(qx, g.sw, 0, g.dw, g.pl);
}

// Patch row r (torch unfold's order: channel, then tap row, then tap column): its channel and
// tap offsets.
FP_HD void patch_row(const PatchGeom& g, std::int64_t r, std::int64_t& c, std::int64_t& dy, std::int64_t& dx) {
  const std::int64_t taps = g.kh * g.kw;
  c = r / taps;
  const std::int64_t t = r - c * taps, i = t / g.kw;
  dy = i * g.dh;
  dx = (t - i * g.kw) * g.dw;
}

// The value of patch row (channel offset coff, tap offsets dy, dx) at position (n base nb, y, x).
template <DType D>
FP_HD float patch_at(const View& x, std::int64_t nb, std::int64_t coff, std::int64_t y, std::int64_t xx, bool on) {
  if (!on || y < 0 || y >= x.shape[2] || xx < 0 || xx >= x.shape[3]) return 0.0f;
  return load<D>(x.data, nb + coff + y * x.stride[2] + xx * x.stride[3]);
}

// Chunks [first, last) of group g.
FP_HD void group_chunks(const GatherPlan& gp, std::int64_t g, std::int64_t& first, std::int64_t& last) {
  first = g * gp.cpg;
  last = min64(gp.chunks, first + gp.cpg);
}
// After chunk number `i` of a group (0-based), do the fp32 accumulators go into fp64?
FP_HD bool flush_after(std::int64_t i, std::int64_t count) { return (i + 1) % kGFlush == 0 || i + 1 == count; }

// Second pass: entry (r, cc) of block pair `pair` over the groups, in order.
FP_HD double gram_total(const GatherPlan& gp, const double* ws, std::int64_t pair, int r, int cc) {
  double s = 0.0;
  for (std::int64_t g = 0; g < gp.groups; ++g) s += ws[((g * gp.pairs + pair) * kGBlock + r) * kGBlock + cc];
  return s;
}

}  // namespace fastprune::influence::dev
