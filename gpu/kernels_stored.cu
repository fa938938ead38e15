// Products with weights kept as a checkpoint stores them (bf16 or f16, 2 bytes an element, read
// as they are: half the bytes per token of fp32 weights) times fp32 activations, summed in fp32.
// Each weight widens exactly to fp32, so in fp32 mode the result is the fp32 product of the
// widened weights up to the order of the sums, as on the CPU (core/lowp.hpp). In bf16 mode
// (Precision::BF16) the activations, and f16 weights, are rounded to bf16 as they are loaded, as
// the CPU's emulation rounds them.
//
//   decode (T <= kStoredGemvRows): one warp per output column n reads W[n, :] once, 16 bytes a
//     load where rows are 16-byte aligned and K is a multiple of 8 (else 2 bytes a lane), and
//     sums it against up to 8 tokens at a time; the activations come through L1/L2.
//   prefill (more tokens): 64×64 output tiles, 16-deep k steps through shared memory, 4×4 outputs
//     per thread (the layout of kernels_experts.cu's grouped GEMM), fp32 FMA (no tensor cores: the
//     activations are not rounded in fp32 mode).
#include "cuda_check.hpp"
#include "cuda_common.cuh"
#include "kernels.hpp"

namespace moelab::cuda {
namespace {

constexpr int kWarps = 8;          // output columns per GEMV block
constexpr int kRowsPerPass = 8;    // tokens a warp sums against each weight load
constexpr int BM = 64, BN = 64, BK = 16, kTileThreads = 256;

template <class TW, bool kRound, bool kVec>
__global__ void __launch_bounds__(kWarps * 32)
    stored_gemv_kernel(const float* __restrict__ X, int64_t T, int64_t K, const TW* __restrict__ W, int64_t N,
                       float* __restrict__ Y, bool accumulate) {
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;  // uniform across the warp
  const int lane = threadIdx.x & 31;
  const TW* w = W + n * K;
  for (int64_t t0 = 0; t0 < T; t0 += kRowsPerPass) {
    const int rows = int(min(int64_t(kRowsPerPass), T - t0));
    float sum[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) sum[r] = 0.0f;
    if constexpr (kVec) {  // K % 8 == 0, 16-byte aligned rows of X and W
      for (int64_t k = int64_t(lane) * 8; k < K; k += 256) {
        float wf[8];
        unpack8<kRound, TW>(*reinterpret_cast<const uint4*>(w + k), wf);
#pragma unroll
        for (int r = 0; r < kRowsPerPass; ++r) {
          if (r < rows) {
            const float* x = X + (t0 + r) * K + k;
            const float4 a0 = *reinterpret_cast<const float4*>(x), a1 = *reinterpret_cast<const float4*>(x + 4);
            sum[r] += operand_r<kRound>(a0.x) * wf[0] + operand_r<kRound>(a0.y) * wf[1] +
                      operand_r<kRound>(a0.z) * wf[2] + operand_r<kRound>(a0.w) * wf[3] +
                      operand_r<kRound>(a1.x) * wf[4] + operand_r<kRound>(a1.y) * wf[5] +
                      operand_r<kRound>(a1.z) * wf[6] + operand_r<kRound>(a1.w) * wf[7];
          }
        }
      }
    } else {
      for (int64_t k = lane; k < K; k += 32) {
        const float wv = load_w<kRound>(w + k);
#pragma unroll
        for (int r = 0; r < kRowsPerPass; ++r)
          if (r < rows) sum[r] += operand_r<kRound>(X[(t0 + r) * K + k]) * wv;
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) {
      const float v = warp_sum(sum[r]);  // every lane takes part, rows or not
      if (lane == 0 && r < rows) {
        float* y = Y + (t0 + r) * N + n;
        *y = accumulate ? *y + v : v;
      }
    }
  }
}

// Y [T,N] (+)= X [T,K] · Wᵀ in 64×64 tiles. Thread (ty, tx) owns rows ty + 16i, columns tx + 16j.
template <class TW, bool kRound>
__global__ void __launch_bounds__(kTileThreads)
    stored_gemm_kernel(const float* __restrict__ X, int64_t T, int64_t K, const TW* __restrict__ W, int64_t N,
                       float* __restrict__ Y, bool accumulate) {
  const int64_t n0 = int64_t(blockIdx.x) * BN, r0 = int64_t(blockIdx.y) * BM;
  __shared__ float As[BK][BM + 1];  // As[k][i] = X[r0 + i, k0 + k]
  __shared__ float Bs[BK][BN + 1];  // Bs[k][j] = W[n0 + j, k0 + k]
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float sum[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    for (int l = tid; l < BM * BK; l += kTileThreads) {
      const int i = l / BK, kk = l % BK;
      const int64_t r = r0 + i, k = k0 + kk;
      As[kk][i] = (r < T && k < K) ? operand_r<kRound>(X[r * K + k]) : 0.0f;
    }
    for (int l = tid; l < BN * BK; l += kTileThreads) {
      const int j = l / BK, kk = l % BK;
      const int64_t n = n0 + j, k = k0 + kk;
      Bs[kk][j] = (n < N && k < K) ? load_w<kRound>(W + n * K + k) : 0.0f;
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
      if (r < T && n < N) {
        float* y = Y + r * N + n;
        *y = accumulate ? *y + sum[i][j] : sum[i][j];
      }
    }
}

template <class TW>
__global__ void stored_embedding_kernel(const TW* table, const int32_t* ids, int64_t T, int64_t H, float* out) {
  MOELAB_GRID_STRIDE(i, T * H) { out[i] = load_f(table + int64_t(ids[i / H]) * H + i % H); }
}

template <class TW, bool kRound>
void launch_stored_linear(const float* X, int64_t T, int64_t K, const TW* W, int64_t N, float* Y, bool accumulate,
                          cudaStream_t s) {
  if (T <= kStoredGemvRows) {
    const int64_t blocks = (N + kWarps - 1) / kWarps;
    MOELAB_ASSERT(blocks < (int64_t(1) << 31), "stored GEMV grid");
    const bool vec = K % 8 == 0 && (reinterpret_cast<uintptr_t>(X) | reinterpret_cast<uintptr_t>(W)) % 16 == 0;
    if (vec)
      stored_gemv_kernel<TW, kRound, true><<<unsigned(blocks), kWarps * 32, 0, s>>>(X, T, K, W, N, Y, accumulate);
    else
      stored_gemv_kernel<TW, kRound, false><<<unsigned(blocks), kWarps * 32, 0, s>>>(X, T, K, W, N, Y, accumulate);
    MOELAB_CUDA_LAUNCHED("stored_gemv_kernel");
    return;
  }
  const int64_t col_blocks = (N + BN - 1) / BN, row_blocks = (T + BM - 1) / BM;
  MOELAB_ASSERT(col_blocks < (int64_t(1) << 31) && row_blocks <= 65535, "stored GEMM grid");
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
  stored_gemm_kernel<TW, kRound><<<grid, kTileThreads, 0, s>>>(X, T, K, W, N, Y, accumulate);
  MOELAB_CUDA_LAUNCHED("stored_gemm_kernel");
}

}  // namespace

void stored_linear(const float* X, int64_t T, int64_t K, StoredMatrix W, int64_t N, float* Y, bool accumulate,
                   cudaStream_t s) {
  if (T <= 0 || N <= 0) return;
  if (K <= 0) {  // an empty sum
    if (!accumulate) fill(Y, T * N, 0.0f, s);
    return;
  }
  if (W.f16) {
    const f16* w = static_cast<const f16*>(W.p);
    if (W.round_bf16)
      launch_stored_linear<f16, true>(X, T, K, w, N, Y, accumulate, s);
    else
      launch_stored_linear<f16, false>(X, T, K, w, N, Y, accumulate, s);
  } else {
    const bf16* w = static_cast<const bf16*>(W.p);
    if (W.round_bf16)
      launch_stored_linear<bf16, true>(X, T, K, w, N, Y, accumulate, s);
    else
      launch_stored_linear<bf16, false>(X, T, K, w, N, Y, accumulate, s);
  }
}

void stored_embedding(StoredMatrix table, const int32_t* ids, int64_t T, int64_t H, float* out, cudaStream_t s) {
  if (T * H <= 0) return;
  if (table.f16)
    stored_embedding_kernel<<<blocks_for(T * H), kThreads, 0, s>>>(static_cast<const f16*>(table.p), ids, T, H, out);
  else
    stored_embedding_kernel<<<blocks_for(T * H), kThreads, 0, s>>>(static_cast<const bf16*>(table.p), ids, T, H, out);
  MOELAB_CUDA_LAUNCHED("stored_embedding_kernel");
}

}  // namespace moelab::cuda
