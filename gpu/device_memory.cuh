// Device memory of the CUDA backend: the cache of cudaMalloc buffers (DevicePool) and the bf16
// copies of weights kept for Precision::BF16 (Bf16Copies). Included by cuda_backend_impl.cuh and
// cuda_graph.cuh only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "error.hpp"

namespace moelab {

// Freed device buffers wait here, by size, for the next allocation of that size. A buffer goes
// back to the cache as soon as its last Tensor is gone on the host, while kernels that use it may
// still be queued: that is safe because every kernel of the backend runs on one stream, so the
// next user of the buffer runs after them. cudaFree (on release) synchronises the device.
class DevicePool {
 public:
  ~DevicePool() { release(); }

  // Sizes are rounded so that nearby sizes share cache entries.
  static size_t round_bytes(size_t n) {
    if (n <= (size_t(1) << 20)) return std::max<size_t>(512, (n + 511) / 512 * 512);
    const size_t step = size_t(128) << 10;
    return (n + step - 1) / step * step;
  }

  void* get(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back and try once more
      (void)cudaGetLastError();
      release();
      err = cudaMalloc(&p, bytes);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      fail("cuda", "cannot allocate " + human_bytes(double(bytes)) + " of GPU memory (" + cudaGetErrorString(err) +
                       "; " + human_bytes(double(free_b)) + " free of " + human_bytes(double(total_b)) + ")");
    }
    return p;
  }

  void put(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_[bytes].push_back(p);
  }

  // Errors are ignored: this also runs at exit, when the CUDA runtime may be shutting down.
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, list] : free_)
      for (void* p : list) (void)cudaFree(p);
    free_.clear();
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
};

// Precision::BF16 keeps a bf16 copy of every weight a product reads, made on first use, keyed by
// the fp32 tensor's device address. The ops that write memory a copy was made from (upload, fill,
// copy, scale, clamp, copy_rows) mark it stale, AdamW rewrites it in the same pass, and freeing
// the fp32 buffer drops it, so a copy never outlives or lags its weights. A recorded graph that
// reads a copy checks it before each replay and refreshes it when its weights were written since.
// The table belongs to one backend: a weight must be used on the backend that allocated it (the
// deleter that drops copies is that backend's).
class Bf16Copies {
 public:
  struct Entry {
    int64_t n = 0;                // elements
    std::shared_ptr<void> buf;    // n bf16 values of device memory
    bool fresh = false;           // equal to the fp32 values
  };

  // The entry for [p, p + n floats) into *out; false when there is none.
  bool find(const void* p, int64_t n, Entry* out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = at_.find(key(p));
    if (it == at_.end() || it->second.n != n) return false;
    *out = it->second;
    return true;
  }
  void set_fresh(const void* p, bool fresh) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = at_.find(key(p));
    if (it != at_.end()) it->second.fresh = fresh;
  }
  void put(const void* p, Entry e) {
    std::shared_ptr<void> old;  // released after the lock: its deleter calls forget()
    std::lock_guard<std::mutex> lock(mu_);
    // Copies are of whole live tensors, which never overlap (touched() relies on it).
    for (auto it = first_overlap(key(p)); it != at_.end() && it->first < key(p) + uintptr_t(e.n) * sizeof(float); ++it)
      MOELAB_ASSERT(it->first == key(p), "bf16 copies of overlapping weights");
    old = std::move(at_[key(p)].buf);
    at_[key(p)] = std::move(e);
  }
  // A write to [p, p + bytes): copies made from it are stale.
  void touched(const void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (at_.empty()) return;
    for (auto it = first_overlap(key(p)); it != at_.end() && it->first < key(p) + bytes; ++it) it->second.fresh = false;
  }
  // [p, p + bytes) was freed: copies made from it go.
  void forget(const void* p, size_t bytes) {
    std::vector<std::shared_ptr<void>> gone;  // released after the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (at_.empty()) return;
      auto it = first_overlap(key(p));
      while (it != at_.end() && it->first < key(p) + bytes) {
        gone.push_back(std::move(it->second.buf));
        it = at_.erase(it);
      }
    }
  }

 private:
  static uintptr_t key(const void* p) { return reinterpret_cast<uintptr_t>(p); }
  // The first entry whose range may reach lo: the one starting at or before lo, if it ends past lo.
  std::map<uintptr_t, Entry>::iterator first_overlap(uintptr_t lo) {
    auto it = at_.upper_bound(lo);
    if (it != at_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + uintptr_t(prev->second.n) * sizeof(float) > lo) return prev;
    }
    return it;
  }

  std::mutex mu_;
  std::map<uintptr_t, Entry> at_;  // by fp32 address; live fp32 buffers never overlap
};

// `bytes` of device memory from the pool, owned: when its last owner lets go it drops the bf16
// copies made from it and goes back to the pool (to cudaFree once the pool is gone).
inline std::shared_ptr<void> pooled_buffer(const std::shared_ptr<DevicePool>& pool,
                                           const std::shared_ptr<Bf16Copies>& copies, size_t bytes) {
  void* p = pool->get(bytes);
  std::weak_ptr<DevicePool> weak_pool = pool;
  std::weak_ptr<Bf16Copies> weak_copies = copies;
  return std::shared_ptr<void>(p, [weak_pool, weak_copies, bytes](void* q) {
    if (auto c = weak_copies.lock()) c->forget(q, bytes);
    if (auto pl = weak_pool.lock())
      pl->put(q, bytes);
    else
      (void)cudaFree(q);
  });
}

}  // namespace moelab
