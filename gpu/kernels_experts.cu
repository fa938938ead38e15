// Routed experts on the device without host round trips: the T·K slots are sorted by expert
// (a stable counting sort in one block), each expert's rows are cut into tiles of up to 64 rows,
// and one launch of a tiled grouped GEMM computes every expert's product. Grids are sized by
// upper bounds known on the host (slots / 64 + E tiles); blocks past the real tile count return
// at once. The weight gradients use one block per (expert, output tile), summing the expert's
// rows in sorted order, so every result is deterministic.
//
// In bf16 mode (Precision::BF16) the products read the experts' bf16 weight copy (half the bytes)
// and round their other operand to bf16 as they load it; the sums stay fp32, as on the CPU.
// Weights kept as the checkpoint stores them (bf16 or f16, one stack per layer on the device) are
// read the same way, their activations rounded only in bf16 mode.
#include <type_traits>

#include "cuda_check.hpp"
#include "cuda_common.cuh"
#include "kernels.hpp"

namespace moelab::cuda {
namespace {

constexpr int BM = kExpertTileRows, BN = 64, BK = 16;  // 256 threads, 4×4 outputs each
constexpr int kGemmThreads = 256;

// The other operand of a product whose weights are TW: rounded to bf16 when they are bf16.
template <class TW>
__device__ inline float operand(float v) {
  if constexpr (std::is_same_v<TW, bf16>)
    return round_bf16(v);
  else
    return v;
}

// One block of 1024 threads. Counts per expert in shared memory (global scratch past
// kGroupSharedExperts experts), then warp 0 prefix-sums counts and tile counts 32 experts at a
// time with shuffles and writes the tile list, then a stable scatter: one warp per expert walks
// the slots 32 at a time and places its matches with a ballot, keeping slot order.
constexpr int64_t kGroupSharedExperts = 1024;

__global__ void group_by_expert_kernel(const int32_t* ids, int64_t n, int64_t E, int32_t* begin, int32_t* order,
                                       int32_t* pos, int32_t* tile_expert, int32_t* tile_row0, int32_t* num_tiles,
                                       int32_t* counts) {
  __shared__ int32_t s_counts[kGroupSharedExperts], s_begin[kGroupSharedExperts];
  const bool in_shared = E <= kGroupSharedExperts;
  int32_t* cnt = in_shared ? s_counts : counts;
  int32_t* beg = in_shared ? s_begin : begin;  // begin[E] is written to global memory below
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  for (int64_t s = threadIdx.x; s < n; s += blockDim.x) pos[s] = -1;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < n; s += blockDim.x)
    if (ids[s] >= 0 && ids[s] < E) atomicAdd(&cnt[ids[s]], 1);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (warp == 0) {
    int32_t row_carry = 0, tile_carry = 0;
    for (int64_t e0 = 0; e0 < E; e0 += 32) {
      const int64_t e = e0 + lane;
      const int32_t c = e < E ? cnt[e] : 0, t = (c + BM - 1) / BM;
      int32_t rows = c, tiles = t;  // inclusive scans across the warp
      for (int o = 1; o < 32; o <<= 1) {
        const int32_t r = __shfl_up_sync(0xffffffffu, rows, o), q = __shfl_up_sync(0xffffffffu, tiles, o);
        if (lane >= o) {
          rows += r;
          tiles += q;
        }
      }
      const int32_t row0 = row_carry + rows - c, tile0 = tile_carry + tiles - t;
      if (e < E) {
        beg[e] = row0;
        for (int32_t j = 0; j < t; ++j) {
          tile_expert[tile0 + j] = int32_t(e);
          tile_row0[tile0 + j] = row0 + j * BM;
        }
      }
      row_carry += __shfl_sync(0xffffffffu, rows, 31);
      tile_carry += __shfl_sync(0xffffffffu, tiles, 31);
    }
    if (lane == 0) {
      begin[E] = row_carry;
      *num_tiles = tile_carry;
    }
  }
  __syncthreads();
  if (in_shared)
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) begin[e] = beg[e];
  const unsigned below = (1u << lane) - 1u;
  for (int64_t e = warp; e < E; e += warps) {
    if (cnt[e] == 0) continue;
    int32_t r = beg[e];
    for (int64_t s0 = 0; s0 < n; s0 += 32) {
      const int64_t s = s0 + lane;
      const bool mine = s < n && ids[s] == e;
      const unsigned mask = __ballot_sync(0xffffffffu, mine);
      if (mine) {
        const int32_t row = r + __popc(mask & below);
        order[row] = int32_t(s);
        pos[s] = row;
      }
      r += __popc(mask);
    }
  }
}

__global__ void gather_rows_kernel(const float* x, const int32_t* order, const int32_t* used_rows, int64_t n,
                                   int64_t K, int64_t H, const float* scale, float* out) {
  const int64_t used = *used_rows;
  MOELAB_GRID_STRIDE(i, n * H) {
    const int64_t r = i / H, c = i % H;
    if (r >= used) continue;
    const int64_t slot = order[r];
    const float v = x[(slot / K) * H + c];
    out[i] = scale ? v * scale[slot] : v;
  }
}

// C [rows, N] (+)= A [rows, Kd] · B_e where B_e(k, n) = W_e[n, k] (OutIn) or W_e[k, n] (InOut).
// Block = (row tile of one expert, column tile). Thread (ty, tx) owns rows ty + 16i, cols tx + 16j.
template <bool kInOut, class TW, bool kRound>
__global__ void __launch_bounds__(kGemmThreads)
    grouped_gemm_kernel(const float* __restrict__ A, int64_t Kd, const TW* __restrict__ W, int64_t N,
                        const int32_t* begin, const int32_t* tile_expert, const int32_t* tile_row0,
                        const int32_t* num_tiles, float* __restrict__ C, bool acc) {
  const int64_t tile = blockIdx.x;
  if (tile >= *num_tiles) return;
  const int64_t e = tile_expert[tile], r0 = tile_row0[tile];
  const int64_t r1 = min(int64_t(r0 + BM), int64_t(begin[e + 1]));
  const int64_t n0 = int64_t(blockIdx.y) * BN;
  const TW* We = W + e * N * Kd;
  __shared__ float As[BK][BM + 1];  // As[k][i] = A[r0 + i, k0 + k]
  __shared__ float Bs[BK][BN + 1];  // Bs[k][j] = B_e(k0 + k, n0 + j)
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float sum[4][4] = {};
  for (int64_t k0 = 0; k0 < Kd; k0 += BK) {
    for (int l = tid; l < BM * BK; l += kGemmThreads) {
      const int i = l / BK, kk = l % BK;
      const int64_t r = r0 + i, k = k0 + kk;
      As[kk][i] = (r < r1 && k < Kd) ? operand_r<kRound>(A[r * Kd + k]) : 0.0f;
    }
    for (int l = tid; l < BN * BK; l += kGemmThreads) {
      const int j = kInOut ? l % BN : l / BK, kk = kInOut ? l / BN : l % BK;
      const int64_t n = n0 + j, k = k0 + kk;
      float v = 0.0f;
      if (n < N && k < Kd) v = load_w<kRound>(kInOut ? We + k * N + n : We + n * Kd + k);
      Bs[kk][j] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) sum[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t r = r0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (r < r1 && n < N) {
        float* c = C + r * N + n;
        *c = acc ? *c + sum[i][j] : sum[i][j];
      }
    }
}

// dW_e [M,N] += Σ_{r in rows of e} P[r, m] · Q[r, n]. Block = (column tile, row tile, expert).
// TW = bf16: P and Q are rounded to bf16 as they are loaded.
template <class TW>
__global__ void __launch_bounds__(kGemmThreads)
    grouped_weight_grad_kernel(const float* __restrict__ P, int64_t M, const float* __restrict__ Q, int64_t N,
                               const int32_t* begin, float* __restrict__ dW) {
  const int64_t e = blockIdx.z, rb = begin[e], re = begin[e + 1];
  if (rb == re) return;
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  __shared__ float Ps[BK][BM + 1];
  __shared__ float Qs[BK][BN + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float sum[4][4] = {};
  for (int64_t k0 = rb; k0 < re; k0 += BK) {
    for (int l = tid; l < BM * BK; l += kGemmThreads) {
      const int kk = l / BM, i = l % BM;
      const int64_t r = k0 + kk, m = m0 + i;
      Ps[kk][i] = (r < re && m < M) ? operand<TW>(P[r * M + m]) : 0.0f;
    }
    for (int l = tid; l < BN * BK; l += kGemmThreads) {
      const int kk = l / BN, j = l % BN;
      const int64_t r = k0 + kk, n = n0 + j;
      Qs[kk][j] = (r < re && n < N) ? operand<TW>(Q[r * N + n]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = Ps[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Qs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) sum[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  float* dWe = dW + e * M * N;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) dWe[m * N + n] += sum[i][j];
    }
}

// out[t] += Σ_k w[t,k] · Y[pos[t,k]], k in order (the Eigen backend's combine_slots).
__global__ void combine_slots_kernel(const float* Y, const int32_t* pos, const float* weights, int64_t T, int64_t K,
                                     int64_t H, float* out) {
  MOELAB_GRID_STRIDE(i, T * H) {
    const int64_t t = i / H, c = i % H;
    float o = out[i];
    for (int64_t k = 0; k < K; ++k) {
      const int32_t r = pos[t * K + k];
      if (r < 0) continue;
      const float gw = weights ? weights[t * K + k] : 1.0f;
      o += gw * Y[int64_t(r) * H + c];
    }
    out[i] = o;
  }
}

// One warp per slot: dweights[slot] = dout[t] · Y[row]; 0 for dropped slots.
__global__ void slot_dots_kernel(const float* dout, const float* Y, const int32_t* pos, int64_t n, int64_t K,
                                 int64_t H, float* dweights) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t slot = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); slot < n; slot += warps) {
    const int32_t r = pos[slot];
    float dot = 0.0f;
    if (r >= 0) {
      const float* d = dout + (slot / K) * H;
      const float* y = Y + int64_t(r) * H;
      for (int64_t c = lane; c < H; c += 32) dot += d[c] * y[c];
    }
    dot = warp_sum(dot);
    if (lane == 0) dweights[slot] = dot;
  }
}

unsigned col_tiles(int64_t N, int tile) { return unsigned((N + tile - 1) / tile); }


// Few rows (decode: T·K slots of one token): the tiled kernel would compute 64-row tiles for one
// row each, one k-step at a time. Here one warp per (sorted row, output column) reads the
// expert's weight row W_e[n, :] contiguously, with every load in flight at once.
constexpr int64_t kGemvMaxSlots = 32;
constexpr int kGemvWarps = 8;  // output columns per block

template <class TW, bool kRound>
__global__ void grouped_gemv_outin_kernel(const float* __restrict__ A, int64_t Kd, const TW* __restrict__ W,
                                          int64_t N, const int32_t* __restrict__ begin, int64_t E,
                                          float* __restrict__ C, bool accumulate) {
  const int64_t r = blockIdx.y, n = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (r >= begin[E] || n >= N) return;  // uniform across the warp: r and n are per warp
  // The expert of sorted row r: the last e with begin[e] <= r (empty experts have begin[e] ==
  // begin[e + 1], so the last such e is the non-empty one that holds r).
  int64_t lo = 0, hi = E - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (begin[mid] <= r)
      lo = mid;
    else
      hi = mid - 1;
  }
  const TW* w = W + (lo * N + n) * Kd;
  const float* a = A + r * Kd;
  float acc = 0.0f;
  const int lane = threadIdx.x & 31;
  if constexpr (sizeof(TW) == 2) {
    // 2-byte weights (bf16 copies, weights kept as stored): 16 bytes a load when rows allow it.
    if (Kd % 8 == 0 && (reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(a)) % 16 == 0) {
      for (int64_t k = int64_t(lane) * 8; k < Kd; k += 256) {
        float wf[8];
        unpack8<kRound, TW>(*reinterpret_cast<const uint4*>(w + k), wf);
        const float4 a0 = *reinterpret_cast<const float4*>(a + k), a1 = *reinterpret_cast<const float4*>(a + k + 4);
        acc += operand_r<kRound>(a0.x) * wf[0] + operand_r<kRound>(a0.y) * wf[1] + operand_r<kRound>(a0.z) * wf[2] +
               operand_r<kRound>(a0.w) * wf[3] + operand_r<kRound>(a1.x) * wf[4] + operand_r<kRound>(a1.y) * wf[5] +
               operand_r<kRound>(a1.z) * wf[6] + operand_r<kRound>(a1.w) * wf[7];
      }
      acc = warp_sum(acc);
      if (lane == 0) {
        float* c = C + r * N + n;
        *c = accumulate ? *c + acc : acc;
      }
      return;
    }
  }
  for (int64_t k = lane; k < Kd; k += 32) acc += operand_r<kRound>(a[k]) * load_w<kRound>(w + k);
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) {
    float* c = C + r * N + n;
    *c = accumulate ? *c + acc : acc;
  }
}

}  // namespace

int64_t expert_max_tiles(int64_t slots, int64_t experts) {
  // Σ_e ceil(n_e / BM) <= slots / BM + (number of non-empty experts) <= slots / BM + min(E, slots).
  return slots / BM + std::min(experts, slots) + 1;
}

int64_t expert_groups_ints(int64_t slots, int64_t experts) {
  return (experts + 1) + 2 * slots + 2 * expert_max_tiles(slots, experts) + 1 + experts;
}

ExpertGroups expert_groups_in(int32_t* buffer, int64_t slots, int64_t experts) {
  ExpertGroups g;
  g.slots = slots;
  g.experts = experts;
  g.max_tiles = expert_max_tiles(slots, experts);
  g.begin = buffer;
  g.order = g.begin + (experts + 1);
  g.pos = g.order + slots;
  g.tile_expert = g.pos + slots;
  g.tile_row0 = g.tile_expert + g.max_tiles;
  g.num_tiles = g.tile_row0 + g.max_tiles;
  g.counts = g.num_tiles + 1;
  return g;
}

void group_by_expert(const int32_t* ids, const ExpertGroups& g, cudaStream_t s) {
  group_by_expert_kernel<<<1, 1024, 0, s>>>(ids, g.slots, g.experts, g.begin, g.order, g.pos, g.tile_expert,
                                            g.tile_row0, g.num_tiles, g.counts);
  MOELAB_CUDA_LAUNCHED("group_by_expert_kernel");
}

void gather_rows(const float* x, const ExpertGroups& g, int64_t K, int64_t H, const float* scale, float* out,
                 cudaStream_t s) {
  if (g.slots * H <= 0) return;
  gather_rows_kernel<<<blocks_for(g.slots * H), kThreads, 0, s>>>(x, g.order, g.begin + g.experts, g.slots, K, H,
                                                                  scale, out);
  MOELAB_CUDA_LAUNCHED("gather_rows_kernel");
}

template <class TW, bool kRound>
void launch_grouped_gemm(const float* A, int64_t Kd, const TW* W, WeightLayout layout, int64_t N,
                         const ExpertGroups& g, float* C, bool accumulate, cudaStream_t s) {
  if (layout == WeightLayout::OutIn && g.slots <= kGemvMaxSlots) {
    const dim3 rows(unsigned((N + kGemvWarps - 1) / kGemvWarps), unsigned(g.slots));
    MOELAB_ASSERT((N + kGemvWarps - 1) / kGemvWarps < (int64_t(1) << 31), "grouped GEMV grid");
    grouped_gemv_outin_kernel<TW, kRound>
        <<<rows, kGemvWarps * 32, 0, s>>>(A, Kd, W, N, g.begin, g.experts, C, accumulate);
    MOELAB_CUDA_LAUNCHED("grouped_gemv_outin_kernel");
    return;
  }
  const dim3 grid(unsigned(g.max_tiles), col_tiles(N, BN));
  if (layout == WeightLayout::InOut) {
    grouped_gemm_kernel<true, TW, kRound><<<grid, kGemmThreads, 0, s>>>(A, Kd, W, N, g.begin, g.tile_expert,
                                                                        g.tile_row0, g.num_tiles, C, accumulate);
  } else {
    grouped_gemm_kernel<false, TW, kRound><<<grid, kGemmThreads, 0, s>>>(A, Kd, W, N, g.begin, g.tile_expert,
                                                                         g.tile_row0, g.num_tiles, C, accumulate);
  }
  MOELAB_CUDA_LAUNCHED("grouped_gemm_kernel");
}

void grouped_gemm(const float* A, int64_t Kd, ExpertMatrix W, WeightLayout layout, int64_t N, const ExpertGroups& g,
                  float* C, bool accumulate, cudaStream_t s) {
  if (g.slots <= 0 || N <= 0) return;
  MOELAB_ASSERT(g.max_tiles < (int64_t(1) << 31) && col_tiles(N, BN) <= 65535u, "grouped GEMM grid");
  if (W.h16 && W.round_bf16)  // f16 weights kept as stored
    launch_grouped_gemm<f16, true>(A, Kd, W.h16, layout, N, g, C, accumulate, s);
  else if (W.h16)
    launch_grouped_gemm<f16, false>(A, Kd, W.h16, layout, N, g, C, accumulate, s);
  else if (W.b16 && W.round_bf16)  // the bf16 copy of Precision::BF16, or bf16 kept as stored
    launch_grouped_gemm<bf16, true>(A, Kd, W.b16, layout, N, g, C, accumulate, s);
  else if (W.b16)  // bf16 kept as stored, fp32 activations
    launch_grouped_gemm<bf16, false>(A, Kd, W.b16, layout, N, g, C, accumulate, s);
  else
    launch_grouped_gemm<float, false>(A, Kd, W.f32, layout, N, g, C, accumulate, s);
}

void grouped_weight_grad(const float* P, int64_t M, const float* Q, int64_t N, const ExpertGroups& g, float* dW,
                         bool round_bf16, cudaStream_t s) {
  if (g.slots <= 0 || M <= 0 || N <= 0) return;
  MOELAB_ASSERT(col_tiles(M, BM) <= 65535u && g.experts <= 65535, "grouped weight-gradient grid");
  const dim3 grid(col_tiles(N, BN), col_tiles(M, BM), unsigned(g.experts));
  if (round_bf16)
    grouped_weight_grad_kernel<bf16><<<grid, kGemmThreads, 0, s>>>(P, M, Q, N, g.begin, dW);
  else
    grouped_weight_grad_kernel<float><<<grid, kGemmThreads, 0, s>>>(P, M, Q, N, g.begin, dW);
  MOELAB_CUDA_LAUNCHED("grouped_weight_grad_kernel");
}

void combine_slots(const float* Y, const ExpertGroups& g, const float* weights, int64_t T, int64_t K, int64_t H,
                   float* out, cudaStream_t s) {
  if (T * H <= 0) return;
  combine_slots_kernel<<<blocks_for(T * H), kThreads, 0, s>>>(Y, g.pos, weights, T, K, H, out);
  MOELAB_CUDA_LAUNCHED("combine_slots_kernel");
}

void slot_dots(const float* dout, const float* Y, const ExpertGroups& g, int64_t K, int64_t H, float* dweights,
               cudaStream_t s) {
  if (g.slots <= 0) return;
  slot_dots_kernel<<<blocks_for(g.slots * 32), kThreads, 0, s>>>(dout, Y, g.pos, g.slots, K, H, dweights);
  MOELAB_CUDA_LAUNCHED("slot_dots_kernel");
}

}  // namespace moelab::cuda
