// Loading fp16 / bf16 / fp32 elements as fp32, identical on host and device.
// Accumulation is never in half precision (moments_tile.h: shifted float32/float64 sums).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FP_HD __host__ __device__ __forceinline__
#else
#define FP_HD inline
#endif

// `#pragma unroll` for the device pass of shared code (the host compiler keeps its own choice).
#if defined(__CUDA_ARCH__)
#define FP_DEVICE_UNROLL _Pragma("unroll")
#else
#define FP_DEVICE_UNROLL
#endif

namespace fastprune {

FP_HD float bits_to_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// IEEE binary16 -> binary32, exact for every input (subnormals, inf, nan included).
FP_HD float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);  // signed zero
    // subnormal: normalise
    int e = -1;
    do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
    man &= 0x3ffu;
    return bits_to_float(sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | (man << 13));
  }
  return bits_to_float(sign | ((exp + (127 - 15)) << 23) | (man << 13));
}

// bfloat16 -> binary32: the top half of the fp32 bit pattern.
FP_HD float bf16_to_float(std::uint16_t b) { return bits_to_float(static_cast<std::uint32_t>(b) << 16); }

// Element loader by storage type, for templated kernels.
template <class T> struct Load;
template <> struct Load<float> { static FP_HD float get(const float* p, std::int64_t i) { return p[i]; } };
struct f16_t { std::uint16_t bits; };
struct bf16_t { std::uint16_t bits; };
template <> struct Load<f16_t> { static FP_HD float get(const f16_t* p, std::int64_t i) { return half_to_float(p[i].bits); } };
template <> struct Load<bf16_t> { static FP_HD float get(const bf16_t* p, std::int64_t i) { return bf16_to_float(p[i].bits); } };

}  // namespace fastprune
