// Integer helpers and the upper-triangle block enumeration shared by the device plans of the
// moments (moments_plan.h) and influence (influence_plan.h) kernels; host and device.
#pragma once
#include <cstdint>

#include "fastprune/convert.h"
#include "fastprune/view.h"

namespace fastprune::dev_util {

FP_HD std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
FP_HD std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
FP_HD std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

// Block pair k of the upper triangle (bi <= bj) of an nblk x nblk grid, row-major.
FP_HD void block_pair(std::int64_t nblk, std::int64_t k, std::int64_t& bi, std::int64_t& bj) {
  bi = 0;
  while (k >= nblk - bi) { k -= nblk - bi; ++bi; }
  bj = bi + k;
}

// Element loads by input dtype, as fp32 (templated kernels: no per-element dtype switch).
template <DType D> struct Elem;
template <> struct Elem<DType::f32> { using T = float; static FP_HD float f(T v) { return v; } };
template <> struct Elem<DType::f64> { using T = double; static FP_HD float f(T v) { return static_cast<float>(v); } };
template <> struct Elem<DType::f16> { using T = std::uint16_t; static FP_HD float f(T v) { return half_to_float(v); } };
template <> struct Elem<DType::bf16> { using T = std::uint16_t; static FP_HD float f(T v) { return bf16_to_float(v); } };

template <DType D> FP_HD float load(std::uintptr_t base, std::int64_t i) {
  return Elem<D>::f(reinterpret_cast<const typename Elem<D>::T*>(base)[i]);
}

// 16 bytes of elements (p 16-byte aligned) as fp32: one vector load on the device.
template <DType D>
FP_HD void load16(const typename Elem<D>::T* p, float* v) {
  using T = typename Elem<D>::T;
  constexpr int n = static_cast<int>(16 / sizeof(T));
#if defined(__CUDA_ARCH__)
  const uint4 r = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&r);
#pragma unroll
  for (int i = 0; i < n; ++i) v[i] = Elem<D>::f(e[i]);
#else
  for (int i = 0; i < n; ++i) v[i] = Elem<D>::f(p[i]);
#endif
}

// Unsigned 32-bit division by a divisor fixed per block (d >= 1, n < 2^31): a multiply-high and a
// shift instead of a division per element (Granlund-Montgomery).
struct FastDiv {
  std::uint32_t d = 1, m = 0, l = 0;
  FastDiv() = default;
  FP_HD explicit FastDiv(std::uint32_t div) : d(div) {
    while ((std::uint64_t{1} << l) < d) ++l;
    m = static_cast<std::uint32_t>(((std::uint64_t{1} << 32) * ((std::uint64_t{1} << l) - d)) / d + 1);
  }
  FP_HD std::uint32_t div(std::uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const std::uint32_t t = __umulhi(m, n);
#else
    const std::uint32_t t = static_cast<std::uint32_t>((static_cast<std::uint64_t>(m) * n) >> 32);
#endif
    return static_cast<std::uint32_t>((static_cast<std::uint64_t>(t) + n) >> l);
  }
};

}  // namespace fastprune::dev_util
