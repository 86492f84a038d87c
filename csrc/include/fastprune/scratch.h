// Scratch memory of the CPU kernels, kept between calls on each thread.
//
// A kernel's large buffers (a moments tile's panels and Gram, its fp64 totals, the influence
// kernel's packed rows) were allocated and freed on every call. Above glibc's mmap threshold each
// such block is mapped, faulted in page by page and unmapped again: in a stream of updates of a
// 512 x 32 x 32 map (one thread, AVX2 EPYC) a third of the time went to the kernel's page-fault
// path, and an update took 8.4 ms (4.6 ms now; inside collect, torch's own large frees often
// raise glibc's threshold first, and the faults were rarer). Blocks of at least kCachedFrom bytes
// now go back to the freeing thread's cache instead, and the next request of that size (rounded
// to kAlign) on that thread takes one from there. OpenMP's worker threads persist, so their
// caches do too. A thread keeps at most kKeep bytes (older blocks are freed first); smaller
// blocks use the heap directly, which reuses them without faults.
//
// The cache is per thread (thread_local), so calls from several Python threads need no lock; a
// block freed on another thread than the one that took it joins that other thread's cache.
// Memory from the cache is not zeroed.
#pragma once
#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

namespace fastprune::scratch {

constexpr std::size_t kAlign = 64;
constexpr std::size_t kCachedFrom = std::size_t{64} << 10;
constexpr std::size_t kKeep = std::size_t{32} << 20;

// At least `bytes` bytes, kAlign-aligned (throws std::bad_alloc); back with give(p, bytes).
void* take(std::size_t bytes);
void give(void* p, std::size_t bytes) noexcept;
// Bytes the calling thread's cache holds now (tests).
std::size_t held() noexcept;
// Tests: while on, every block take() hands out (new or kept) is filled with 0xff bytes, a NaN
// in every float and double, so a kernel that read scratch it had not written would return NaN.
void set_poison(bool on) noexcept;

template <class T>
struct Allocator {
  using value_type = T;
  Allocator() = default;
  template <class U>
  Allocator(const Allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(take(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { give(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const Allocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const Allocator<U>&) const noexcept { return false; }
};

template <class T>
using Vector = std::vector<T, Allocator<T>>;

template <class T>
struct Give {
  std::size_t bytes = 0;
  void operator()(T* p) const noexcept { give(p, bytes); }
};
template <class T>
using Buffer = std::unique_ptr<T[], Give<T>>;

// n uninitialised elements (trivial types).
template <class T>
Buffer<T> buffer(std::size_t n) {
  const std::size_t bytes = n * sizeof(T);
  return Buffer<T>(static_cast<T*>(take(bytes)), Give<T>{bytes});
}

// n zeroed elements (trivial types).
template <class T>
Buffer<T> zeros(std::size_t n) {
  Buffer<T> b = buffer<T>(n);
  std::memset(b.get(), 0, n * sizeof(T));
  return b;
}

}  // namespace fastprune::scratch
