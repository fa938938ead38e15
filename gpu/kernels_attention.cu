// Causal grouped-query attention, forward and backward: the plain version, one block per
// (query row, head), scores in shared memory. Not FlashAttention: it keeps the whole row of
// scores (S floats) in shared memory, which caps the context at ~50k positions on an H100, and
// reads K and V once per query row. It mirrors the Eigen backend's arithmetic: P = softmax(q·kᵀ ·
// scale) over the visible keys, O = P·V; backward dV = Pᵀ·dO, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
// dQ = dS·K·scale, dK = dSᵀ·Q·scale.
#include "cuda_check.hpp"
#include "cuda_common.cuh"
#include "kernels.hpp"

namespace moelab::cuda {
namespace {

constexpr int kAttnThreads = 128;

// One query row's scores against keys 0..visible-1 (k rows kv_stride apart), exponentiated:
// p[s] = exp(q·k_s·scale − max). Returns Σ p and the max in *row_max; every thread of the block
// sees p[] once it returns (block_sum's barriers publish it).
__device__ float softmax_row(const float* qs, const float* kb, int64_t kv_stride, int64_t D, int64_t visible,
                             float scale, float* p, float* red, float* row_max) {
  float m = -INFINITY;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) {
    const float* ks = kb + s * kv_stride;
    float acc = 0.0f;
    for (int64_t d = 0; d < D; ++d) acc += qs[d] * ks[d];
    acc *= scale;
    p[s] = acc;
    m = fmaxf(m, acc);
  }
  m = block_max(m, red);
  float sum = 0.0f;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) sum += (p[s] = expf(p[s] - m));
  *row_max = m;
  return block_sum(sum, red);
}

// q [B·T, NH·D], k/v [B·S, NKV·D], out [B·T, NH·D]. Block = (b, t, h), row = (b·T + t)·NH + h.
// Shared: q row [D], scores [past + T].
__global__ void attention_forward_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                         const float* __restrict__ v, int64_t T, int64_t S, int64_t past,
                                         const int32_t* __restrict__ past_dev, int64_t NH, int64_t NKV, int64_t D,
                                         float scale, float* __restrict__ out) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  float* qs = smem;
  float* p = smem + D;
  const int64_t row = blockIdx.x, h = row % NH, bt = row / NH, t = bt % T, b = bt / T;
  const int64_t g = h / (NH / NKV), kv_stride = NKV * D;
  const float* qr = q + bt * NH * D + h * D;
  const float* kb = k + b * S * kv_stride + g * D;
  const float* vb = v + b * S * kv_stride + g * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qr[d];
  __syncthreads();
  if (past_dev) past = *past_dev;
  const int64_t visible = past + t + 1 < S ? past + t + 1 : S;  // causal: keys 0..past+t
  float m = 0.0f;
  const float sum = softmax_row(qs, kb, kv_stride, D, visible, scale, p, red, &m);  // publishes p[]
  const float inv = 1.0f / sum;
  float* o = out + bt * NH * D + h * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < visible; ++s) acc += (p[s] * inv) * vb[s * kv_stride + d];
    o[d] = acc;
  }
}

// Backward, part 1: one block per (b, t, h). Recomputes P's row, writes dQ's row and keeps the
// row's softmax statistics (max, 1/sum, rowsum(dP ⊙ P)) for part 2.
// Shared: q row [D], dO row [D], P row [T], dP then dS row [T].
__global__ void attention_backward_query_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                const float* __restrict__ v, const float* __restrict__ dout, int64_t T,
                                                int64_t NH, int64_t NKV, int64_t D, float scale,
                                                float* __restrict__ stats, float* __restrict__ dq) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  float* qs = smem;
  float* dos = smem + D;
  float* p = smem + 2 * D;
  float* ds = p + T;
  const int64_t row = blockIdx.x, h = row % NH, bt = row / NH, t = bt % T, b = bt / T;
  const int64_t g = h / (NH / NKV), kv_stride = NKV * D;
  const float* kb = k + b * T * kv_stride + g * D;
  const float* vb = v + b * T * kv_stride + g * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    qs[d] = q[bt * NH * D + h * D + d];
    dos[d] = dout[bt * NH * D + h * D + d];
  }
  __syncthreads();
  const int64_t visible = t + 1;
  float m = 0.0f;
  const float sum = softmax_row(qs, kb, kv_stride, D, visible, scale, p, red, &m);
  const float inv = 1.0f / sum;
  float rowdot = 0.0f;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) {
    const float* vs = vb + s * kv_stride;
    float dp = 0.0f;
    for (int64_t d = 0; d < D; ++d) dp += dos[d] * vs[d];
    p[s] *= inv;
    ds[s] = dp;
    rowdot += dp * p[s];
  }
  rowdot = block_sum(rowdot, red);
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) ds[s] = p[s] * (ds[s] - rowdot);
  __syncthreads();
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < visible; ++s) acc += ds[s] * kb[s * kv_stride + d];
    dq[bt * NH * D + h * D + d] = acc * scale;
  }
  if (threadIdx.x == 0) {
    stats[row * 3 + 0] = m;
    stats[row * 3 + 1] = inv;
    stats[row * 3 + 2] = rowdot;
  }
}

// Backward, part 2: one block per (b, key position s, kv head g). Sums over the heads of the
// group and the queries t >= s that see key s: dV_s = Σ P_ts·dO_t, dK_s = Σ dS_ts·q_t·scale.
// Shared: k row [D], v row [D], P column [T], dS column [T], dK and dV accumulators [D] each.
__global__ void attention_backward_key_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                              const float* __restrict__ v, const float* __restrict__ dout, int64_t T,
                                              int64_t NH, int64_t NKV, int64_t D, float scale,
                                              const float* __restrict__ stats, float* __restrict__ dk,
                                              float* __restrict__ dv) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = smem + D;
  float* pc = smem + 2 * D;
  float* dsc = pc + T;
  float* acc_k = dsc + T;
  float* acc_v = acc_k + D;
  const int64_t blk = blockIdx.x, g = blk % NKV, bs = blk / NKV, s = bs % T, b = bs / T;
  const int64_t kv_stride = NKV * D, group = NH / NKV;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    ks[d] = k[bs * kv_stride + g * D + d];
    vs[d] = v[bs * kv_stride + g * D + d];
    acc_k[d] = 0.0f;
    acc_v[d] = 0.0f;
  }
  __syncthreads();
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    for (int64_t t = s + threadIdx.x; t < T; t += blockDim.x) {
      const int64_t row = (b * T + t) * NH + h;
      const float* qt = q + (b * T + t) * NH * D + h * D;
      const float* dor = dout + (b * T + t) * NH * D + h * D;
      float sc = 0.0f, dp = 0.0f;
      for (int64_t d = 0; d < D; ++d) sc += qt[d] * ks[d];
      for (int64_t d = 0; d < D; ++d) dp += dor[d] * vs[d];
      const float pv = expf(sc * scale - stats[row * 3 + 0]) * stats[row * 3 + 1];
      pc[t] = pv;
      dsc[t] = pv * (dp - stats[row * 3 + 2]);
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float ak = 0.0f, av = 0.0f;
      for (int64_t t = s; t < T; ++t) {
        const int64_t off = (b * T + t) * NH * D + h * D + d;
        av += pc[t] * dout[off];
        ak += dsc[t] * q[off];
      }
      acc_v[d] += av;
      acc_k[d] += ak * scale;
    }
    __syncthreads();
  }
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    dk[bs * kv_stride + g * D + d] = acc_k[d];
    dv[bs * kv_stride + g * D + d] = acc_v[d];
  }
}

size_t g_max_smem = 48 * 1024;

// One block per (row, head): the grid's x dimension holds at most 2³¹ − 1 blocks, and the cast
// to unsigned would silently drop the rest beyond 2³².
void check_grid(int64_t blocks, const char* what) {
  if (blocks > int64_t(INT32_MAX))
    fail("attention", std::string(what) + " needs " + std::to_string(blocks) +
                          " blocks (rows × heads), more than a CUDA grid holds (2147483647)");
}

void check_smem(size_t need, const char* what, int64_t positions) {
  if (need > g_max_smem)
    fail("attention", std::string(what) + " over " + std::to_string(positions) + " positions needs " +
                          std::to_string(need / 1024) + " KiB of shared memory per block, more than this GPU's " +
                          std::to_string(g_max_smem / 1024) + " KiB (the plain CUDA attention kernel's limit)");
}

}  // namespace

size_t attention_setup(int device) {
  int optin = 0;
  MOELAB_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  // Leave room for the kernels' static shared memory (the 32-float reduction buffer).
  const size_t limit = size_t(std::max(optin, 48 * 1024)) - 1024;
  MOELAB_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(limit)));
  MOELAB_CUDA_CHECK(
      cudaFuncSetAttribute(attention_backward_query_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(limit)));
  MOELAB_CUDA_CHECK(
      cudaFuncSetAttribute(attention_backward_key_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(limit)));
  g_max_smem = limit;
  return limit;
}

size_t attention_forward_smem(int64_t S, int64_t D) { return size_t(D + S) * sizeof(float); }
size_t attention_backward_smem(int64_t T, int64_t D) { return size_t(4 * D + 2 * T) * sizeof(float); }

void attention(const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t S, int64_t past,
               const int32_t* past_dev, int64_t NH, int64_t NKV, int64_t D, float* out, cudaStream_t s) {
  const int64_t rows = B * T * NH;
  if (rows <= 0) return;
  const int64_t positions = past_dev ? S : past + T;  // a device position may reach the whole cache
  const size_t smem = attention_forward_smem(positions, D);
  check_smem(smem, "attention", positions);
  check_grid(rows, "attention");
  const float scale = 1.0f / sqrtf(float(D));
  attention_forward_kernel<<<unsigned(rows), kAttnThreads, smem, s>>>(q, k, v, T, S, past, past_dev, NH, NKV, D, scale,
                                                                      out);
  MOELAB_CUDA_LAUNCHED("attention_forward_kernel");
}

void attention_backward(const float* q, const float* k, const float* v, const float* dout, int64_t B, int64_t T,
                        int64_t NH, int64_t NKV, int64_t D, float* stats, float* dq, float* dk, float* dv,
                        cudaStream_t s) {
  if (B * T <= 0) return;
  const size_t smem = attention_backward_smem(T, D);
  check_smem(smem, "attention backward", T);
  check_grid(B * T * NH, "attention backward");
  const float scale = 1.0f / sqrtf(float(D));
  attention_backward_query_kernel<<<unsigned(B * T * NH), kAttnThreads, smem, s>>>(q, k, v, dout, T, NH, NKV, D, scale,
                                                                                 stats, dq);
  MOELAB_CUDA_LAUNCHED("attention_backward_query_kernel");
  attention_backward_key_kernel<<<unsigned(B * T * NKV), kAttnThreads, smem, s>>>(q, k, v, dout, T, NH, NKV, D, scale,
                                                                                stats, dk, dv);
  MOELAB_CUDA_LAUNCHED("attention_backward_key_kernel");
}

}  // namespace moelab::cuda
