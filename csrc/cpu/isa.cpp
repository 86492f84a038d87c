#include "fastprune/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace fastprune {
namespace {

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::baseline: return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == Isa::baseline;
#endif
}

bool compiled(Isa isa) {
  switch (isa) {
    case Isa::baseline: return true;
#if defined(FASTPRUNE_HAVE_AVX2)
    case Isa::avx2: return true;
#endif
#if defined(FASTPRUNE_HAVE_AVX512)
    case Isa::avx512: return true;
#endif
    default: return false;
  }
}

Isa parse(const std::string& name) {
  if (name == "baseline") return Isa::baseline;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw std::invalid_argument("fastprune: unknown CPU ISA '" + name +
                              "' (expected baseline, avx2 or avx512)");
}

Isa initial_isa() {
  Isa best = best_supported_isa();
  if (const char* env = std::getenv("FASTPRUNE_CPU_ISA")) {
    std::string s(env);
    if (!s.empty() && s != "auto") {
      Isa want = parse(s);
      return static_cast<int>(want) < static_cast<int>(best) ? want : best;
    }
  }
  return best;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa best_supported_isa() {
  for (Isa isa : {Isa::avx512, Isa::avx2})
    if (compiled(isa) && cpu_supports(isa)) return isa;
  return Isa::baseline;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

void set_active_isa(const std::string& name) {
  Isa want = name == "auto" ? best_supported_isa() : parse(name);
  if (!compiled(want))
    throw std::invalid_argument("fastprune: CPU ISA '" + name + "' was not compiled into this build");
  if (!cpu_supports(want))
    throw std::invalid_argument("fastprune: this CPU does not support ISA '" + name + "'");
  active_slot().store(static_cast<int>(want));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::baseline: return "baseline";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

std::string compiled_isas() {
  std::string out = "baseline";
  if (compiled(Isa::avx2)) out += ",avx2";
  if (compiled(Isa::avx512)) out += ",avx512";
  return out;
}

}  // namespace fastprune
