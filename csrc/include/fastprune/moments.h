// The moments engine: one pass over a batch computes, per channel, count, mean, centred sum of
// squares (or the full C x C centred co-moment matrix), sum |x|, zero count, min, max, the count
// of non-finite values and the per-image spatial std summed over images (msd).
// Front-end: csrc/moments.cpp. Back-ends: csrc/cpu/moments_cpu.cpp (+ csrc/cpu/simd/) and
// csrc/cuda/moments_cuda.cu. Tile arithmetic: moments_tile.h.
#pragma once
#include <cstdint>
#include <vector>

#include "fastprune/scratch.h"
#include "fastprune/view.h"

namespace fastprune::moments {

// A batch as images x channels x pixels with element strides; either the pixels (planar: NCHW,
// or an (N, C) matrix stored column-major) or the channels (interleaved: channels_last, or a
// row-major (N, C) matrix) are contiguous.
struct Batch {
  std::uintptr_t data = 0;
  DType dtype = DType::f32;
  std::int64_t I = 0, C = 0, P = 0;     // images, channels, pixels per image
  std::int64_t sI = 0, sC = 0, sP = 0;  // strides in elements
  bool planar = true;                   // sP == 1 (else sC == 1)
  bool per_image = false;               // accumulate msd (4-D input)
  bool cov = true;                      // full co-moment matrix, else its diagonal
  Device device = Device::cpu;
  int device_index = 0;
  std::uintptr_t stream = 0;
};

// Per-thread (CPU) totals in fp64; merged in a fixed order. m2 (C x C with cov) comes from the
// scratch cache of the thread that calls init.
struct Acc {
  std::int64_t C = 0;
  bool cov = true;
  double n = 0, images = 0;
  std::vector<double> mean, abs_sum, zeros, min, max, nonfinite, msd_sum;
  scratch::Vector<double> m2;
  // Images cut by a thread boundary: their partial per-channel (n, mean, m2), in sample order.
  struct Segment {
    std::int64_t image = 0;
    double n = 0;
    std::vector<double> mean, m2;
  };
  std::vector<Segment> segments;

  void init(std::int64_t channels, bool covariance);
};

// Front-end (csrc/moments.cpp). `update` checks x, runs on x's device and writes the OutLayout
// (moments_tile.h) of the batch into `out`, a float64 buffer of out_len on the same device. A
// CUDA input needs a workspace of workspace_size(x, cov) bytes on its device (16-byte aligned,
// allocated by the caller: Python takes it from torch's caching allocator); the CPU needs none.
std::int64_t out_size(std::int64_t channels, bool cov);
Batch make_batch(const View& x, bool cov);
std::int64_t workspace_size(const View& x, bool cov);
void update(const View& x, std::uintptr_t out, std::int64_t out_len, bool cov, std::uintptr_t workspace,
            std::int64_t workspace_bytes);
// The CUDA back-end's algorithm run on the host (csrc/cpu/moments_emulate.cpp) for a CPU x: the
// device partition, shifts, lane sums, trees and merges (fastprune/moments_plan.h), with the
// tensor-core operand rounding. Slow; for tests.
// The plan's block targets default to the launch's (tests lower them to reach long splits).
void emulate_device(const View& x, std::uintptr_t out, std::int64_t out_len, bool cov,
                    std::int64_t stat_blocks, std::int64_t gram_blocks);

namespace cpu {
void run(const Batch& b, double* out);
}
#if defined(FASTPRUNE_WITH_CUDA)
namespace cuda {
void run(const Batch& b, double* out, double* workspace, std::int64_t workspace_bytes);
}
#endif

}  // namespace fastprune::moments

// The per-ISA hot loop (csrc/cpu/simd/moments_simd.cpp): accumulates samples
// [m0, m1) (global sample index image * P + pixel) into `acc`.
namespace fastprune::cpu {
#define FP_DECLARE_MOMENTS_ISA(isa) \
  namespace isa { void moments_range(const ::fastprune::moments::Batch& b, std::int64_t m0, std::int64_t m1, ::fastprune::moments::Acc& acc); }
FP_DECLARE_MOMENTS_ISA(baseline)
FP_DECLARE_MOMENTS_ISA(avx2)
FP_DECLARE_MOMENTS_ISA(avx512)
#undef FP_DECLARE_MOMENTS_ISA
}  // namespace fastprune::cpu
