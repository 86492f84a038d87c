// The per-thread cache behind fastprune/scratch.h. Compiled once (not per ISA), so one definition
// of the thread_local cache serves every ISA variant of the kernels.
#include "fastprune/scratch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

namespace fastprune::scratch {
namespace {

std::atomic<bool> poison{false};

std::size_t rounded(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

class Cache {
 public:
  ~Cache() {
    for (const Block& b : free_) std::free(b.p);
  }
  // A kept block of exactly `bytes` (the newest), or nullptr. Exact sizes suffice: a stream of
  // batches asks for the same sizes again, and the accounting stays exact.
  void* find(std::size_t bytes) {
    for (std::size_t i = free_.size(); i-- > 0;)
      if (free_[i].bytes == bytes) {
        void* p = free_[i].p;
        held_ -= bytes;
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
        return p;
      }
    return nullptr;
  }
  void keep(void* p, std::size_t bytes) noexcept {
    if (bytes > kKeep) {
      std::free(p);
      return;
    }
    while (held_ + bytes > kKeep) {  // the oldest first
      std::free(free_.front().p);
      held_ -= free_.front().bytes;
      free_.erase(free_.begin());
    }
    try {
      free_.push_back(Block{p, bytes});
      held_ += bytes;
    } catch (...) {  // no room to remember it: free it
      std::free(p);
    }
  }
  std::size_t held() const { return held_; }

 private:
  struct Block {
    void* p;
    std::size_t bytes;
  };
  std::vector<Block> free_;
  std::size_t held_ = 0;
};

Cache& cache() {
  thread_local Cache c;
  return c;
}

}  // namespace

void* take(std::size_t bytes) {
  const std::size_t n = rounded(bytes == 0 ? 1 : bytes);
  void* p = n >= kCachedFrom ? cache().find(n) : nullptr;
  if (p == nullptr) p = std::aligned_alloc(kAlign, n);
  if (p == nullptr) throw std::bad_alloc();
  if (poison.load(std::memory_order_relaxed)) std::memset(p, 0xff, n);
  return p;
}

void give(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  const std::size_t n = rounded(bytes == 0 ? 1 : bytes);
  if (n < kCachedFrom) {
    std::free(p);
    return;
  }
  cache().keep(p, n);
}

std::size_t held() noexcept { return cache().held(); }

void set_poison(bool on) noexcept { poison.store(on, std::memory_order_relaxed); }

}  // namespace fastprune::scratch
