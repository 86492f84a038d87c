// Runtime choice of the CPU instruction set (faiss-style per-ISA builds).
// Hot files under csrc/cpu/simd/ are compiled once per ISA into namespace
// fastprune::cpu::<isa>; the front-end picks one at import. FASTPRUNE_CPU_ISA
// (baseline | avx2 | avx512) overrides the choice, clamped to what this CPU runs.
#pragma once
#include <string>

namespace fastprune {

enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };

Isa active_isa();                  // the ISA the kernels use now
Isa best_supported_isa();          // the best ISA both compiled in and supported by this CPU
void set_active_isa(const std::string& name);  // throws std::invalid_argument
const char* isa_name(Isa isa);
std::string compiled_isas();       // comma-separated list of the variants built

}  // namespace fastprune

// Call fastprune::cpu::<active isa>::fn(args...).
#if defined(FASTPRUNE_HAVE_AVX512)
#define FP_ISA_CASE_AVX512(fn, ...) case ::fastprune::Isa::avx512: return ::fastprune::cpu::avx512::fn(__VA_ARGS__);
#else
#define FP_ISA_CASE_AVX512(fn, ...)
#endif
#if defined(FASTPRUNE_HAVE_AVX2)
#define FP_ISA_CASE_AVX2(fn, ...) case ::fastprune::Isa::avx2: return ::fastprune::cpu::avx2::fn(__VA_ARGS__);
#else
#define FP_ISA_CASE_AVX2(fn, ...)
#endif
#define FP_ISA_DISPATCH(fn, ...)                                  \
  do {                                                            \
    switch (::fastprune::active_isa()) {                          \
      FP_ISA_CASE_AVX512(fn, __VA_ARGS__)                         \
      FP_ISA_CASE_AVX2(fn, __VA_ARGS__)                           \
      default: return ::fastprune::cpu::baseline::fn(__VA_ARGS__); \
    }                                                             \
  } while (0)
