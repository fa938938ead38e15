// Device helpers shared by the kernels of gpu/: grid sizing for grid-stride loops, block-wide
// reductions, and the scalar functions written exactly as the Eigen backend writes them (so the
// two backends round the same way wherever the order of operations allows).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace moelab::cuda {

constexpr int kThreads = 256;  // default block size (a multiple of 32: the reductions need whole warps)

// Blocks for a grid-stride loop over n items (capped: the loop covers the rest).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 16)));
}

#define MOELAB_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// x rounded to bfloat16 and back (round to nearest even, as Eigen::bfloat16 on the CPU).
__device__ inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
__device__ inline float load_f(const float* p) { return *p; }
__device__ inline float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ inline float load_f(const __half* p) { return __half2float(*p); }

// A product's operands under a rounding flag (kRound: Precision::BF16, whose products round both
// operands to bf16 as they load them). An activation: rounded or not. A weight: bf16 and fp32
// weights as they are (a bf16 weight is its own rounding); an f16 weight rounded to bf16 in that
// mode, as the CPU backend rounds it.
template <bool kRound>
__device__ inline float operand_r(float v) {
  if constexpr (kRound)
    return round_bf16(v);
  else
    return v;
}
template <bool kRound, class TW>
__device__ inline float load_w(const TW* p) {
  return operand_r<kRound && std::is_same_v<TW, __half>>(load_f(p));
}

// Eight 2-byte weights from one 16-byte load, widened (as load_w would widen each).
template <bool kRound, class TW>
__device__ inline void unpack8(const uint4& raw, float* f) {
  const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<TW, __half>) {
      f[2 * i] = operand_r<kRound>(__half2float(__ushort_as_half((unsigned short)(u[i] & 0xffffu))));
      f[2 * i + 1] = operand_r<kRound>(__half2float(__ushort_as_half((unsigned short)(u[i] >> 16))));
    } else {
      f[2 * i] = __uint_as_float(u[i] << 16);  // bf16 is the top half of an fp32
      f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
  }
}

__device__ inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ inline float siluf_(float x) { return x / (1.0f + expf(-x)); }
__device__ inline float softplusf_(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of v over the block; every thread gets the result. `shared` holds 32 values. Safe to call
// repeatedly with the same `shared` (the leading barrier protects the previous result).
template <class T>
__device__ inline T block_sum(T v, T* shared) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? shared[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  return shared[0];
}

__device__ inline float block_max(float v, float* shared) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? shared[lane] : -INFINITY;
    w = warp_max(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  return shared[0];
}

}  // namespace moelab::cuda
