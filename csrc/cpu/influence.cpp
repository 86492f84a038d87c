// Front-end of the CPU influence kernels: argument checks and the OpenMP split (the device
// back-end's front-end is csrc/influence_device.cpp). Work is cut into units (image, band of
// rows) or chunks of positions, handed out with a static schedule; each thread sums into a
// private fp64 buffer and the buffers are added in thread order, so results are bitwise
// reproducible for a given thread count.
#include "fastprune/influence.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastprune/influence_checks.h"
#include "fastprune/isa.h"

namespace fastprune {
namespace {

using namespace influence_checks;

int lanes() { FP_ISA_DISPATCH(influence_lanes); }

std::int64_t unit(const View& x, const ShiftPlanArgs& p, std::int64_t n, std::int64_t r0,
                  std::int64_t r1, scratch::Vector<float>& s, double* out) {
  FP_ISA_DISPATCH(influence_unit, x, p, n, r0, r1, s, out);
}

std::int64_t gunit(const View& x, const ShiftPlanArgs& p, std::int64_t n, std::int64_t r0,
                   std::int64_t r1, scratch::Vector<float>& s, double* out, std::int64_t cpad) {
  FP_ISA_DISPATCH(gram_unit, x, p, n, r0, r1, s, out, cpad);
}

void gchunk(const View& x, const PatchGeom& g, const std::int64_t* pos, std::int64_t count,
            scratch::Vector<float>& s, double* out, std::int64_t dpad) {
  FP_ISA_DISPATCH(gram_gather_chunk, x, g, pos, count, s, out, dpad);
}

// Row bands so that one unit's packed rows stay near 1 MiB (L2-resident).
std::int64_t band_rows(const View& x, std::int64_t max_dy, std::int64_t pad_x, std::int64_t cpad) {
  const std::int64_t row_bytes = cpad * (x.shape[3] + 2 * pad_x) * 4;
  const std::int64_t fit = (std::int64_t{1} << 20) / std::max<std::int64_t>(1, row_bytes);
  return std::max<std::int64_t>(std::max<std::int64_t>(1, fit - max_dy), std::min<std::int64_t>(8, x.shape[2]));
}

// Threads for `work` multiply-adds: one per ~4M (about 1 ms of work), so small maps do not pay
// for waking threads (on a shared, loaded machine a barrier can cost a whole time slice). The
// count depends only on the input's size and OMP's limit, so results stay reproducible.
int threads_for(double work) {
  const int most = std::max(1, omp_get_max_threads());
  const double want = work / 4.0e6;
  return want >= most ? most : std::max(1, static_cast<int>(want));
}

// Runs body(unit index, thread buffer) over units with a static schedule on nt threads, then
// adds the thread buffers (each `size` doubles) into out in thread order. Returns the summed
// counts (out untouched when it is not 0).
template <class Body>
std::int64_t run_units(int nt, std::int64_t nunits, std::size_t size, double* out, Body body) {
  nt = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(nt, nunits)));
  // reserved on this thread, which frees them (their blocks return to its scratch cache), and
  // zeroed by the threads that fill them
  std::vector<scratch::Vector<double>> bufs(static_cast<std::size_t>(nt));
  for (auto& buf : bufs) buf.reserve(size);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(nt), 0);
  auto work = [&](int tid, int used) {
    scratch::Vector<double>& buf = bufs[static_cast<std::size_t>(tid)];
    buf.assign(size, 0.0);
    scratch::Vector<float> scratch;  // this thread's, back to its scratch cache
    // the static schedule by hand: thread tid takes units [tid*n/used, (tid+1)*n/used)
    const std::int64_t lo = nunits * tid / used, hi = nunits * (tid + 1) / used;
    for (std::int64_t u = lo; u < hi; ++u) counts[static_cast<std::size_t>(tid)] += body(u, buf.data(), scratch);
  };
  int used = 1;
  if (nt == 1) {
    work(0, 1);
  } else {
#pragma omp parallel num_threads(nt)
    {
      const int got = omp_get_num_threads();
      if (omp_get_thread_num() == 0) used = got;
      work(omp_get_thread_num(), got);
    }
  }
  std::int64_t bad = 0;
  for (int t = 0; t < used; ++t) bad += counts[static_cast<std::size_t>(t)];
  if (bad == 0) {
    for (int t = 0; t < used; ++t) {
      const double* b = bufs[static_cast<std::size_t>(t)].data();
      for (std::size_t i = 0; i < size; ++i) out[i] += b[i];
    }
  }
  return bad;
}

}  // namespace

std::int64_t influence_shift(const View& x, const ShiftPlanArgs& plan, const View& out) {
  check_input(x);
  check_out(out, x, 2, plan.njobs, x.shape[1], 1);
  FP_CHECK(x.device == Device::cpu, "influence_shift reads CPU input (CUDA input: influence_shift_device)");
  check_plan(x, plan);
  const std::int64_t N = x.shape[0], H = x.shape[2], C = x.shape[1];
  const std::int64_t L = lanes();
  const std::int64_t rb = band_rows(x, plan.max_dy, plan.pad_x, (C + L - 1) / L * L);
  const std::int64_t per = (H + rb - 1) / rb;
  double* o = reinterpret_cast<double*>(out.data);
  const double macs = static_cast<double>(x.numel()) * static_cast<double>(plan.nd);
  return run_units(threads_for(macs), N * per, static_cast<std::size_t>(plan.njobs * C), o,
                   [&](std::int64_t u, double* buf, scratch::Vector<float>& s) {
                     const std::int64_t n = u / per, r0 = (u % per) * rb;
                     return unit(x, plan, n, r0, std::min(H, r0 + rb), s, buf);
                   });
}

std::int64_t gram_shift(const View& x, const ShiftPlanArgs& plan, const View& out) {
  check_input(x);
  const std::int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2];
  check_out(out, x, 3, plan.njobs, C, C);
  FP_CHECK(x.device == Device::cpu, "the shifted patch Gram runs on the CPU; CUDA uses gram_gather_device");
  check_plan(x, plan);
  const std::int64_t L = lanes();
  const std::int64_t cpad = (C + L - 1) / L * L;
  const std::int64_t rb = band_rows(x, plan.max_dy, plan.pad_x, cpad);
  const std::int64_t per = (H + rb - 1) / rb;
  const std::size_t size = static_cast<std::size_t>(plan.njobs * cpad * cpad);
  scratch::Vector<double> padded(size, 0.0);
  const double macs = static_cast<double>(x.numel()) * static_cast<double>(plan.nd * C);
  const std::int64_t bad = run_units(threads_for(macs), N * per, size, padded.data(),
                                     [&](std::int64_t u, double* buf, scratch::Vector<float>& s) {
                                       const std::int64_t n = u / per, r0 = (u % per) * rb;
                                       return gunit(x, plan, n, r0, std::min(H, r0 + rb), s, buf, cpad);
                                     });
  if (bad != 0) return bad;
  double* o = reinterpret_cast<double*>(out.data);
  for (std::int64_t j = 0; j < plan.njobs; ++j)
    for (std::int64_t a = 0; a < C; ++a)
      for (std::int64_t b = 0; b < C; ++b) o[(j * C + a) * C + b] += padded[static_cast<std::size_t>((j * cpad + a) * cpad + b)];
  return 0;
}

std::int64_t count_nonfinite(const View& x) {
  const std::int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  std::int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) schedule(static)
  for (std::int64_t nc = 0; nc < N * C; ++nc) {
    const std::int64_t n = nc / C, c = nc % C;
    for (std::int64_t y = 0; y < H; ++y)
      for (std::int64_t xx = 0; xx < W; ++xx)
        bad += is_nonfinite(load_as_float(x.data, x.dtype,
                                          n * x.stride[0] + c * x.stride[1] + y * x.stride[2] + xx * x.stride[3]));
  }
  return bad;
}

std::int64_t gram_gather(const View& x, const PatchGeom& g, const std::int64_t* positions,
                         std::int64_t npos, const View& out) {
  check_input(x);
  const std::int64_t N = x.shape[0], D = x.shape[1] * g.kh * g.kw;
  check_out(out, x, 2, D, D, 1);
  check_geom(g);
  FP_CHECK(x.device == Device::cpu, "gram_gather reads CPU input (CUDA input: gram_gather_device)");
  for (std::int64_t k = 0; k < npos; ++k)
    FP_CHECK(positions[2 * k] >= 0 && positions[2 * k] < N && positions[2 * k + 1] >= 0 &&
                 positions[2 * k + 1] < g.ho * g.wo, "sampled position out of range");
  const std::int64_t bad = count_nonfinite(x);
  if (bad != 0) return bad;
  const std::int64_t L = lanes();
  const std::int64_t dpad = (D + 2 * L - 1) / (2 * L) * (2 * L);
  constexpr std::int64_t kChunk = 256;  // positions per fp32 tile
  const std::int64_t nchunks = (npos + kChunk - 1) / kChunk;
  const std::size_t size = static_cast<std::size_t>(dpad * dpad);
  scratch::Vector<double> padded(size, 0.0);
  const double macs = static_cast<double>(npos) * static_cast<double>(D) * static_cast<double>(D) / 2;
  run_units(threads_for(macs), nchunks, size, padded.data(), [&](std::int64_t u, double* buf, scratch::Vector<float>& s) {
    const std::int64_t k0 = u * kChunk, cnt = std::min(kChunk, npos - k0);
    gchunk(x, g, positions + 2 * k0, cnt, s, buf, dpad);
    return std::int64_t{0};
  });
  double* o = reinterpret_cast<double*>(out.data);
  for (std::int64_t a = 0; a < D; ++a)
    for (std::int64_t b = a; b < D; ++b) o[a * D + b] += padded[static_cast<std::size_t>(a * dpad + b)];
  return 0;
}

}  // namespace fastprune
