// Stand-alone probe (issue 16): the upper-triangle Gram of C = 64 shifted fp32 channels on AMX-BF16,
// fp32 split into bf16 hi + lo, G ~ H H^T + L H^T + (L H^T)^T (H H^T on the upper 16 x 16 tiles,
// L H^T on all), against the float64 Gram. Not part of the build; see benchmarks/README.md,
// "Outer-product (GEMM-style) Gram ...: tried, not landed".
//   g++ -O2 -mamx-tile -mamx-bf16 benchmarks/amx_gram_probe.cpp -o /tmp/amx_gram_probe
//   /tmp/amx_gram_probe [samples=1024] [repeats=800]
// Prints thread CPU time per sample and the relative Frobenius error. Operand buffers must be
// 64-byte aligned: from 16-byte aligned std::vector storage every tile row splits two cache lines
// and the same loop ran 2x slower.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

namespace {

constexpr int C = 64;

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

struct TileConfig {
  std::uint8_t palette, start;
  std::uint8_t reserved[14];
  std::uint16_t colsb[16];
  std::uint8_t rows[16];
};

std::uint16_t to_bf16(float x) {  // round to nearest even
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<std::uint16_t>(u >> 16);
}

float from_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

template <class T>
T* aligned(std::size_t n) {
  return static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
}

}  // namespace

int main(int argc, char** argv) {
  const long M = argc > 1 ? std::atol(argv[1]) : 1024;  // a multiple of 32
  const int reps = argc > 2 ? std::atoi(argv[2]) : 800;
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
    std::perror("arch_prctl");
    return 1;
  }
  // correlated post-ReLU-like channels, shifted by a value near the mean (as the kernel's tiles)
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(C * M);
  for (long k = 0; k < M; ++k) {
    const float base = normal(gen);
    for (int c = 0; c < C; ++c) {
      const float v = 0.5f * base + normal(gen) * (1 + c * 0.05f) + 0.3f;
      x[c * M + k] = v > 0 ? v : 0;
    }
  }
  for (int c = 0; c < C; ++c) {
    double s = 0;
    for (long k = 0; k < M; ++k) s += x[c * M + k];
    const float shift = static_cast<float>(s / M * 1.01);
    for (long k = 0; k < M; ++k) x[c * M + k] -= shift;
  }
  // A operands: 1 KiB tiles of 16 channels x 32 samples (hi and lo); B operand: the hi values by
  // sample pairs (row r: channels' (x[2r], x[2r + 1])), 4 C bytes a row
  std::uint16_t* ah = aligned<std::uint16_t>(C * M);
  std::uint16_t* al = aligned<std::uint16_t>(C * M);
  std::uint16_t* bh = aligned<std::uint16_t>(C * M);
  for (int c = 0; c < C; ++c)
    for (long k = 0; k < M; ++k) {
      const float v = x[c * M + k];
      const std::uint16_t h = to_bf16(v), l = to_bf16(v - from_bf16(h));
      const long a = (static_cast<long>(c / 16) * (M / 32) + k / 32) * 512 + (c % 16) * 32 + k % 32;
      ah[a] = h;
      al[a] = l;
      bh[(k / 2) * (2 * C) + c * 2 + (k & 1)] = h;
    }
  TileConfig cfg{};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  float* hh = aligned<float>(C * C);
  float* lh = aligned<float>(C * C);
  std::vector<float> g(C * C);
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const double t0 = thread_seconds();
    for (int rep = 0; rep < reps; ++rep) {
      for (int bi = 0; bi < C; bi += 16)
        for (int bj = 0; bj < C; bj += 32) {  // tiles (bi, bj) and (bi, bj + 16)
          const bool up0 = bj >= bi, up1 = bj + 16 >= bi;
          _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
          for (long k = 0; k < M; k += 32) {
            const long a = (static_cast<long>(bi / 16) * (M / 32) + k / 32) * 512;
            _tile_loadd(4, ah + a, 64);
            _tile_loadd(6, bh + (k / 2) * (2 * C) + bj * 2, 4 * C);
            if (up0) _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, bh + (k / 2) * (2 * C) + (bj + 16) * 2, 4 * C);
            if (up1) _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, al + a, 64);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
          _tile_stored(0, hh + bi * C + bj, C * 4);
          _tile_stored(1, hh + bi * C + bj + 16, C * 4);
          _tile_stored(2, lh + bi * C + bj, C * 4);
          _tile_stored(3, lh + bi * C + bj + 16, C * 4);
        }
      for (int i = 0; i < C; ++i)
        for (int j = i; j < C; ++j) g[i * C + j] = hh[i * C + j] + lh[i * C + j] + lh[j * C + i];
    }
    best = std::min(best, thread_seconds() - t0);
  }
  _tile_release();
  double num = 0, den = 0;
  for (int i = 0; i < C; ++i)
    for (int j = i; j < C; ++j) {
      double s = 0;
      for (long k = 0; k < M; ++k) s += static_cast<double>(x[i * M + k]) * x[j * M + k];
      num += (g[i * C + j] - s) * (g[i * C + j] - s);
      den += s * s;
    }
  std::printf("C=%d M=%ld: %.1f ns a sample (thread CPU time, best of 5 x %d), relative Frobenius error %.2e\n", C, M,
              best / reps / M * 1e9, reps, std::sqrt(num / den));
  return 0;
}
