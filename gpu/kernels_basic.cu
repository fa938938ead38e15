// Element-wise and row-wise kernels: embedding, bias, RMSNorm, RoPE, SwiGLU, gates, the loss and
// the optimizer. Each mirrors the Eigen backend's formula and rounding (fp32 math, fp64 where the
// Eigen backend accumulates in double); reductions that feed weights run in a fixed order so
// results do not change from run to run.
#include "cuda_check.hpp"
#include "cuda_common.cuh"
#include "kernels.hpp"

namespace moelab::cuda {
namespace {

// One block per row for row-wise kernels (grid-stride over rows beyond the grid cap).
unsigned row_blocks(int64_t R) { return unsigned(std::max<int64_t>(1, std::min<int64_t>(R, int64_t(1) << 16))); }

__global__ void fill_kernel(float* p, int64_t n, float v) {
  MOELAB_GRID_STRIDE(i, n) p[i] = v;
}

__global__ void embedding_kernel(const float* table, const int32_t* ids, int64_t T, int64_t H, float* out) {
  MOELAB_GRID_STRIDE(i, T * H) out[i] = table[int64_t(ids[i / H]) * H + i % H];
}

// One thread per column walks the tokens in order: repeated ids add up without atomics, in the
// Eigen backend's order.
__global__ void embedding_backward_kernel(const int32_t* ids, const float* dout, int64_t T, int64_t H, float* dtable) {
  MOELAB_GRID_STRIDE(c, H) {
    for (int64_t t = 0; t < T; ++t) dtable[int64_t(ids[t]) * H + c] += dout[t * H + c];
  }
}

__global__ void add_bias_rows_kernel(float* y, const float* bias, int64_t R, int64_t N) {
  MOELAB_GRID_STRIDE(i, R * N) y[i] += bias[i % N];
}

__global__ void add_column_sums_kernel(const float* dy, int64_t R, int64_t N, float* db) {
  MOELAB_GRID_STRIDE(n, N) {
    float s = 0.0f;
    for (int64_t r = 0; r < R; ++r) s += dy[r * N + n];
    db[n] += s;
  }
}

__global__ void rmsnorm_kernel(const float* x, const float* w, int64_t R, int64_t C, float eps, float* out) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;
    double ss = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += double(xr[c]) * double(xr[c]);
    ss = block_sum(ss, red);
    const float inv = float(1.0 / sqrt(ss / double(C) + double(eps)));
    // Each thread writes only the elements it read: out may alias x.
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = xr[c] * inv * w[c];
  }
}

// y = x·r·w with r = (mean(x²)+eps)^-1/2:  dx = r·(dy⊙w) − x·r³·mean(dy⊙w⊙x).
__global__ void rmsnorm_backward_rows_kernel(const float* x, const float* w, const float* dy, int64_t R, int64_t C,
                                             float eps, float* dx, bool acc, double* rr_out) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;
    const float* g = dy + r * C;
    double ss = 0.0, dot = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      ss += double(xr[c]) * double(xr[c]);
      dot += double(g[c]) * double(w[c]) * double(xr[c]);
    }
    ss = block_sum(ss, red);
    dot = block_sum(dot, red);
    const double rr = 1.0 / sqrt(ss / double(C) + double(eps));
    const double k = rr * rr * rr * dot / double(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = float(rr * double(g[c]) * double(w[c]) - double(xr[c]) * k);
      dx[r * C + c] = acc ? dx[r * C + c] + v : v;
    }
    if (threadIdx.x == 0) rr_out[r] = rr;
  }
}

// dw [C] += Σ_r dy ⊙ x · r, rows in order (as the Eigen backend adds them).
__global__ void rmsnorm_backward_weight_kernel(const float* x, const float* dy, const double* rr, int64_t R, int64_t C,
                                               float* dw) {
  MOELAB_GRID_STRIDE(c, C) {
    float acc = dw[c];
    for (int64_t r = 0; r < R; ++r) acc += float(double(dy[r * C + c]) * double(x[r * C + c]) * rr[r]);
    dw[c] = acc;
  }
}

__global__ void clamp_kernel(float* x, int64_t n, float lo, float hi) {
  MOELAB_GRID_STRIDE(i, n) x[i] = fminf(hi, fmaxf(lo, x[i]));
}

// Rotate-half RoPE: pairs (i, i + D/2) of every head of every row.
__global__ void rope_kernel(float* x, int64_t R, int64_t NH, int64_t D, int64_t pos0, const int32_t* pos_dev,
                            int64_t seq_len, const float* cos_t, const float* sin_t, float sign) {
  const int64_t half = D / 2;
  if (pos_dev) pos0 = *pos_dev;
  MOELAB_GRID_STRIDE(j, R * NH * half) {
    const int64_t i = j % half, h = (j / half) % NH, r = j / (half * NH);
    const int64_t pos = pos0 + r % seq_len;
    const float c = cos_t[pos * half + i], sn = sign * sin_t[pos * half + i];
    float* v = x + r * NH * D + h * D;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * sn;
    v[i + half] = b * c + a * sn;
  }
}

__global__ void copy_rows_at_kernel(const float* src, int64_t n, int64_t cols, const int32_t* row0, float* dst) {
  float* d = dst + int64_t(*row0) * cols;
  MOELAB_GRID_STRIDE(i, n) d[i] = src[i];
}

__global__ void swiglu_kernel(const float* g, const float* u, int64_t n, float* out) {
  MOELAB_GRID_STRIDE(i, n) out[i] = siluf_(g[i]) * u[i];
}

__global__ void swiglu_backward_kernel(const float* gate, const float* up, const float* dout, int64_t n, float* dgate,
                                       float* dup) {
  MOELAB_GRID_STRIDE(i, n) {
    const float g = gate[i], s = sigmoidf_(g), d = dout[i];
    const float u = up[i];
    dup[i] = d * g * s;
    dgate[i] = d * u * s * (1.0f + g * (1.0f - s));  // silu'(g) = s(1 + g(1-s))
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  MOELAB_GRID_STRIDE(i, n) y[i] += x[i];
}

__global__ void row_norms_kernel(const float* x, int64_t R, int64_t C, float* out) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    double ss = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += double(x[r * C + c]) * double(x[r * C + c]);
    ss = block_sum(ss, red);
    if (threadIdx.x == 0) out[r] = float(sqrt(ss));
  }
}

__global__ void add_sigmoid_gated_kernel(float* y, const float* x, const float* g, int64_t T, int64_t H) {
  MOELAB_GRID_STRIDE(i, T * H) y[i] += sigmoidf_(g[i / H]) * x[i];
}

__global__ void sigmoid_gated_backward_kernel(const float* x, const float* g, const float* dy, int64_t T, int64_t H,
                                              float* dx, float* dg) {
  __shared__ float red[32];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float s = sigmoidf_(g[t]);
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < H; c += blockDim.x) {
      dx[t * H + c] = s * dy[t * H + c];
      dot += dy[t * H + c] * x[t * H + c];
    }
    dot = block_sum(dot, red);
    if (threadIdx.x == 0) dg[t] = dot * s * (1.0f - s);
  }
}

__global__ void noisy_logits_kernel(const float* clean, const float* raw, const float* noise, int64_t n, float* out) {
  MOELAB_GRID_STRIDE(i, n) out[i] = clean[i] + noise[i] * softplusf_(raw[i]);
}

__global__ void noisy_logits_backward_kernel(const float* raw, const float* noise, const float* dout, int64_t n,
                                             float* draw) {
  MOELAB_GRID_STRIDE(i, n) draw[i] = dout[i] * noise[i] * sigmoidf_(raw[i]);  // softplus' = sigmoid
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  MOELAB_GRID_STRIDE(i, n) x[i] *= s;
}

// torch.optim.AdamW: p *= 1 − lr·wd, then p −= lr/c1 · m / (sqrt(v)/sqrt(c2) + eps).
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2,
                             float step_size, float inv_sqrt_c2, float decay, float eps, bf16* p_bf16) {
  MOELAB_GRID_STRIDE(i, n) {
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_c2 + eps);
    p[i] = pi;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
  }
}

__global__ void to_bf16_kernel(const float* x, int64_t n, bf16* out) {
  MOELAB_GRID_STRIDE(i, n) out[i] = __float2bfloat16_rn(x[i]);
}

// Fixed grid, fixed per-thread ranges, then one block adds the partials: the same sum every run.
__global__ void sum_squares_partial_kernel(const float* x, int64_t n, double* partials) {
  __shared__ double red[32];
  double s = 0.0;
  MOELAB_GRID_STRIDE(i, n) s += double(x[i]) * double(x[i]);
  s = block_sum(s, red);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(const double* partials, int n, double* result) {
  __shared__ double red[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *result = s;
}

__global__ void count_targets_kernel(const int32_t* targets, int64_t N, int32_t* count) {
  __shared__ int red[32];
  int c = 0;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x) c += targets[t] >= 0;
  c = block_sum(c, red);
  if (threadIdx.x == 0) *count = c;
}

// One block per row: softmax · scale / count, minus scale / count at the target.
__global__ void cross_entropy_rows_kernel(const float* logits, const int32_t* targets, int64_t N, int64_t V,
                                          float scale, const int32_t* count, float* dlogits, double* row_loss) {
  __shared__ float red[32];
  const int32_t cnt = *count;
  const float inv = cnt ? scale / float(cnt) : 0.0f;
  for (int64_t t = blockIdx.x; t < N; t += gridDim.x) {
    const float* l = logits + t * V;
    float* d = dlogits + t * V;
    const int32_t y = targets[t];
    if (y < 0) {
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = 0.0f;
      if (threadIdx.x == 0) row_loss[t] = 0.0;
      continue;
    }
    float m = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, l[v]);
    m = block_max(m, red);
    float sum = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(l[v] - m);
    sum = block_sum(sum, red);
    const float k = inv / sum;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = expf(l[v] - m) * k;
    __syncthreads();  // d[y] written above by some thread of this block
    if (threadIdx.x == 0) {
      d[y] -= inv;
      row_loss[t] = double(m) + log(double(sum)) - double(l[y]);
    }
    __syncthreads();
  }
}

__global__ void cross_entropy_mean_kernel(const double* row_loss, int64_t N, const int32_t* count, double* result) {
  __shared__ double red[32];
  double s = 0.0;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x) s += row_loss[t];
  s = block_sum(s, red);
  if (threadIdx.x == 0) *result = *count ? s / double(*count) : 0.0;
}

}  // namespace

void fill(float* p, int64_t n, float value, cudaStream_t s) {
  if (n <= 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, s>>>(p, n, value);
  MOELAB_CUDA_LAUNCHED("fill_kernel");
}

void embedding(const float* table, const int32_t* ids, int64_t T, int64_t H, float* out, cudaStream_t s) {
  if (T * H <= 0) return;
  embedding_kernel<<<blocks_for(T * H), kThreads, 0, s>>>(table, ids, T, H, out);
  MOELAB_CUDA_LAUNCHED("embedding_kernel");
}

void embedding_backward(const int32_t* ids, const float* dout, int64_t T, int64_t H, float* dtable, cudaStream_t s) {
  if (T * H <= 0) return;
  embedding_backward_kernel<<<blocks_for(H, 128), 128, 0, s>>>(ids, dout, T, H, dtable);
  MOELAB_CUDA_LAUNCHED("embedding_backward_kernel");
}

void add_bias_rows(float* y, const float* bias, int64_t R, int64_t N, cudaStream_t s) {
  if (R * N <= 0) return;
  add_bias_rows_kernel<<<blocks_for(R * N), kThreads, 0, s>>>(y, bias, R, N);
  MOELAB_CUDA_LAUNCHED("add_bias_rows_kernel");
}

void add_column_sums(const float* dy, int64_t R, int64_t N, float* db, cudaStream_t s) {
  if (N <= 0) return;
  add_column_sums_kernel<<<blocks_for(N, 128), 128, 0, s>>>(dy, R, N, db);
  MOELAB_CUDA_LAUNCHED("add_column_sums_kernel");
}

void rmsnorm(const float* x, const float* w, int64_t R, int64_t C, float eps, float* out, cudaStream_t s) {
  if (R * C <= 0) return;
  rmsnorm_kernel<<<row_blocks(R), kThreads, 0, s>>>(x, w, R, C, eps, out);
  MOELAB_CUDA_LAUNCHED("rmsnorm_kernel");
}

void rmsnorm_backward(const float* x, const float* w, const float* dy, int64_t R, int64_t C, float eps, float* dx,
                      bool accumulate_dx, float* dw, double* rr, cudaStream_t s) {
  if (R * C <= 0) return;
  rmsnorm_backward_rows_kernel<<<row_blocks(R), kThreads, 0, s>>>(x, w, dy, R, C, eps, dx, accumulate_dx, rr);
  MOELAB_CUDA_LAUNCHED("rmsnorm_backward_rows_kernel");
  rmsnorm_backward_weight_kernel<<<blocks_for(C, 128), 128, 0, s>>>(x, dy, rr, R, C, dw);
  MOELAB_CUDA_LAUNCHED("rmsnorm_backward_weight_kernel");
}

void clamp(float* x, int64_t n, float lo, float hi, cudaStream_t s) {
  if (n <= 0) return;
  clamp_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, lo, hi);
  MOELAB_CUDA_LAUNCHED("clamp_kernel");
}

void rope(float* x, int64_t R, int64_t n_heads, int64_t D, int64_t pos0, const int32_t* pos_dev, int64_t seq_len,
          const float* cos, const float* sin, bool inverse, cudaStream_t s) {
  const int64_t n = R * n_heads * (D / 2);
  if (n <= 0) return;
  rope_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, R, n_heads, D, pos0, pos_dev, seq_len, cos, sin,
                                                 inverse ? -1.0f : 1.0f);
  MOELAB_CUDA_LAUNCHED("rope_kernel");
}

void copy_rows_at(const float* src, int64_t rows, int64_t cols, const int32_t* row0, float* dst, cudaStream_t s) {
  const int64_t n = rows * cols;
  if (n <= 0) return;
  copy_rows_at_kernel<<<blocks_for(n), kThreads, 0, s>>>(src, n, cols, row0, dst);
  MOELAB_CUDA_LAUNCHED("copy_rows_at_kernel");
}

void swiglu(const float* gate, const float* up, int64_t n, float* out, cudaStream_t s) {
  if (n <= 0) return;
  swiglu_kernel<<<blocks_for(n), kThreads, 0, s>>>(gate, up, n, out);
  MOELAB_CUDA_LAUNCHED("swiglu_kernel");
}

void swiglu_backward(const float* gate, const float* up, const float* dout, int64_t n, float* dgate, float* dup,
                     cudaStream_t s) {
  if (n <= 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(gate, up, dout, n, dgate, dup);
  MOELAB_CUDA_LAUNCHED("swiglu_backward_kernel");
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, s>>>(y, x, n);
  MOELAB_CUDA_LAUNCHED("add_kernel");
}

void row_norms(const float* x, int64_t R, int64_t C, float* out, cudaStream_t s) {
  if (R <= 0) return;
  row_norms_kernel<<<row_blocks(R), kThreads, 0, s>>>(x, R, C, out);
  MOELAB_CUDA_LAUNCHED("row_norms_kernel");
}

void add_sigmoid_gated(float* y, const float* x, const float* g, int64_t T, int64_t H, cudaStream_t s) {
  if (T * H <= 0) return;
  add_sigmoid_gated_kernel<<<blocks_for(T * H), kThreads, 0, s>>>(y, x, g, T, H);
  MOELAB_CUDA_LAUNCHED("add_sigmoid_gated_kernel");
}

void sigmoid_gated_backward(const float* x, const float* g, const float* dy, int64_t T, int64_t H, float* dx,
                            float* dg, cudaStream_t s) {
  if (T <= 0) return;
  sigmoid_gated_backward_kernel<<<row_blocks(T), kThreads, 0, s>>>(x, g, dy, T, H, dx, dg);
  MOELAB_CUDA_LAUNCHED("sigmoid_gated_backward_kernel");
}

void noisy_logits(const float* clean, const float* raw, const float* noise, int64_t n, float* out, cudaStream_t s) {
  if (n <= 0) return;
  noisy_logits_kernel<<<blocks_for(n), kThreads, 0, s>>>(clean, raw, noise, n, out);
  MOELAB_CUDA_LAUNCHED("noisy_logits_kernel");
}

void noisy_logits_backward(const float* raw, const float* noise, const float* dout, int64_t n, float* draw,
                           cudaStream_t s) {
  if (n <= 0) return;
  noisy_logits_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(raw, noise, dout, n, draw);
  MOELAB_CUDA_LAUNCHED("noisy_logits_backward_kernel");
}

void scale(float* x, int64_t n, float factor, cudaStream_t s) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, factor);
  MOELAB_CUDA_LAUNCHED("scale_kernel");
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float step_size,
           float inv_sqrt_c2, float decay, float eps, bf16* p_bf16, cudaStream_t s) {
  if (n <= 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, s>>>(p, g, m, v, n, b1, b2, step_size, inv_sqrt_c2, decay, eps, p_bf16);
  MOELAB_CUDA_LAUNCHED("adamw_kernel");
}

void to_bf16(const float* x, int64_t n, bf16* out, cudaStream_t s) {
  if (n <= 0) return;
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n, out);
  MOELAB_CUDA_LAUNCHED("to_bf16_kernel");
}

void sum_squares(const float* x, int64_t n, double* partials, double* result, cudaStream_t s) {
  sum_squares_partial_kernel<<<kSumBlocks, kThreads, 0, s>>>(x, n, partials);
  MOELAB_CUDA_LAUNCHED("sum_squares_partial_kernel");
  sum_partials_kernel<<<1, kThreads, 0, s>>>(partials, kSumBlocks, result);
  MOELAB_CUDA_LAUNCHED("sum_partials_kernel");
}

void cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float scale, float* dlogits,
                   double* row_loss, int32_t* count, double* result, cudaStream_t s) {
  count_targets_kernel<<<1, kThreads, 0, s>>>(targets, N, count);
  MOELAB_CUDA_LAUNCHED("count_targets_kernel");
  if (N > 0) {
    cross_entropy_rows_kernel<<<row_blocks(N), kThreads, 0, s>>>(logits, targets, N, V, scale, count, dlogits, row_loss);
    MOELAB_CUDA_LAUNCHED("cross_entropy_rows_kernel");
  }
  cross_entropy_mean_kernel<<<1, kThreads, 0, s>>>(row_loss, N, count, result);
  MOELAB_CUDA_LAUNCHED("cross_entropy_mean_kernel");
}

}  // namespace moelab::cuda
