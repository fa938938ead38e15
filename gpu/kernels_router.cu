// The router on the device: scores (softmax or sigmoid), selection with an optional bias, top-k,
// gate weights; expert capacity; the router's backward pass and the balancing losses. The
// semantics are core/router.hpp's, step by step; its CPU reference (router_cpu in router.cpp) is
// what these kernels mirror, making the same choices bit for bit where the inputs are equal: one thread
// per token adds in the same order, and selection order is "score + bias, highest first, ties to
// the lower expert index" (std::partial_sort with the Eigen backend's comparator).
#include "cuda_check.hpp"
#include "cuda_common.cuh"
#include "kernels.hpp"

namespace moelab::cuda {
namespace {

// Selection order: a before b when its (biased) score is higher, or equal with a lower index.
__device__ inline bool ranks_before(float sa, int64_t a, float sb, int64_t b) { return sa > sb || (sa == sb && a < b); }

__device__ inline float selection_score(const float* p, const float* bias, int64_t e) {
  return bias ? p[e] + bias[e] : p[e];
}

// The expert right after `prev` in selection order (prev = -1: the first); -1 when none is left.
// Repeated, this walks the experts best first without sorting or a mask: O(E) per step.
__device__ int64_t next_in_order(const float* p, const float* bias, int64_t E, int64_t prev, float prev_s,
                                 float* out_s) {
  int64_t best = -1;
  float bs = 0.0f;
  for (int64_t e = 0; e < E; ++e) {
    const float se = selection_score(p, bias, e);
    if (prev >= 0 && !ranks_before(prev_s, prev, se, e)) continue;
    if (best < 0 || ranks_before(se, e, bs, best)) {
      best = e;
      bs = se;
    }
  }
  *out_s = bs;
  return best;
}

// Final gate weights of a token's valid slots: the chosen scores, renormalised if asked.
__device__ void gate_weights_of(const float* p, const int32_t* ids, int64_t K, bool renorm, float* w) {
  float sum = 0.0f;
  for (int64_t k = 0; k < K; ++k)
    if (ids[k] >= 0) sum += p[ids[k]];
  for (int64_t k = 0; k < K; ++k) w[k] = ids[k] < 0 ? 0.0f : renorm ? p[ids[k]] / sum : p[ids[k]];
}

// Softmax as the Eigen backend computes it: exp(l − max), summed in order, then divided.
__device__ void softmax_row(const float* l, int64_t E, float* p) {
  float m = l[0];
  for (int64_t e = 1; e < E; ++e) m = fmaxf(m, l[e]);
  float sum = 0.0f;
  for (int64_t e = 0; e < E; ++e) sum += (p[e] = expf(l[e] - m));
  for (int64_t e = 0; e < E; ++e) p[e] /= sum;
}

__global__ void route_kernel(const float* logits, int64_t T, int64_t E, int64_t K, bool sig, bool renorm,
                             const float* bias, float* probs, int32_t* ids, float* weights) {
  MOELAB_GRID_STRIDE(t, T) {
    const float* l = logits + t * E;
    float* p = probs + t * E;
    if (sig) {
      for (int64_t e = 0; e < E; ++e) p[e] = sigmoidf_(l[e]);
    } else {
      softmax_row(l, E, p);
    }
    int64_t prev = -1;
    float prev_s = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      float s = 0.0f;
      prev = next_in_order(p, bias, E, prev, prev_s, &s);
      prev_s = s;
      ids[t * K + k] = int32_t(prev);
    }
    gate_weights_of(p, ids + t * K, K, renorm, weights + t * K);
  }
}

// Capacity is first come, first served in choice-rank order, then token order: slot (t, k)
// depends on every earlier slot, so one thread walks them all (a parallel version would rank the
// slots of each expert with a prefix sum; re-routing makes that a loop of rounds).
__global__ void capacity_kernel(const float* probs, int64_t T, int64_t E, int64_t K, const float* bias, int64_t cap,
                                bool reroute, int32_t* ids, float* dropped, int32_t* load) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  for (int64_t e = 0; e < E; ++e) load[e] = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t t = 0; t < T; ++t) {
      int32_t* slot = ids + t * K + k;
      const int32_t wanted = *slot;
      if (wanted < 0 || wanted >= E) continue;  // already empty (not produced by route)
      if (load[wanted] < cap) {
        ++load[wanted];
        continue;
      }
      dropped[t * K + k] = 1.0f;
      *slot = -1;
      if (!reroute) continue;
      const float* p = probs + t * E;
      int64_t cand = -1;
      float cand_s = 0.0f;
      while ((cand = next_in_order(p, bias, E, cand, cand_s, &cand_s)) >= 0) {
        if (cand_s == -INFINITY) break;  // a banned expert (bias -inf), and every one after it
        bool taken = cand == wanted;
        for (int64_t j = 0; j < K; ++j) taken = taken || ids[t * K + j] == cand;
        if (!taken && load[cand] < cap) {
          *slot = int32_t(cand);
          ++load[cand];
          dropped[t * K + k] = 2.0f;
          break;
        }
      }
    }
}

__global__ void gate_weights_kernel(const float* probs, const int32_t* ids, int64_t T, int64_t E, int64_t K,
                                    bool renorm, float* weights) {
  MOELAB_GRID_STRIDE(t, T) gate_weights_of(probs + t * E, ids + t * K, K, renorm, weights + t * K);
}

// w_k = p_{i_k} / Σ_j p_{i_j} (renormalised) or p_{i_k}:
//   ∂L/∂p_{i_k} = (dw_k − Σ_j dw_j w_j) / Σ  or  dw_k; then through softmax or sigmoid.
__global__ void route_backward_kernel(const float* probs, const int32_t* ids, const float* dweights, int64_t T,
                                      int64_t E, int64_t K, bool sig, bool renorm, float* dlogits, bool acc) {
  MOELAB_GRID_STRIDE(t, T) {
    const float* p = probs + t * E;
    const int32_t* id = ids + t * K;
    const float* dw = dweights + t * K;
    float sum = 0.0f, dot = 0.0f;
    for (int64_t j = 0; j < K; ++j)
      if (id[j] >= 0) sum += p[id[j]];
    for (int64_t j = 0; j < K; ++j)
      if (id[j] >= 0) dot += dw[j] * p[id[j]] / sum;
    // ∂L/∂p_e: the slots that chose e, added in slot order (as the Eigen backend's dp[e] +=).
    auto dp_of = [&](int64_t e) {
      float v = 0.0f;
      for (int64_t j = 0; j < K; ++j)
        if (id[j] == e) v += renorm ? (dw[j] - dot) / sum : dw[j];
      return v;
    };
    float* d = dlogits + t * E;
    if (sig) {  // s = σ(z): ∂s/∂z = s(1−s)
      for (int64_t e = 0; e < E; ++e) {
        const float v = dp_of(e) * p[e] * (1.0f - p[e]);
        d[e] = acc ? d[e] + v : v;
      }
    } else {  // softmax: dz = p ⊙ (dp − p·dp)
      float pdp = 0.0f;
      for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp_of(e);
      for (int64_t e = 0; e < E; ++e) {
        const float v = p[e] * (dp_of(e) - pdp);
        d[e] = acc ? d[e] + v : v;
      }
    }
  }
}

__global__ void count_choices_kernel(const int32_t* ids, int64_t n, int64_t E, int32_t* counts) {
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < n; s += blockDim.x)
    if (ids[s] >= 0 && ids[s] < E) atomicAdd(&counts[ids[s]], 1);
}

// Per token: z-loss term and both gradients. aux = E · Σ_i f_i · P_i (Switch Transformer eq. 4),
// ∂aux/∂p[t,i] = E·f_i / N, through softmax: p ⊙ (g − p·g); z = mean lse², ∂(lse²)/∂z = 2·lse·p.
__global__ void router_losses_rows_kernel(const float* logits, const int32_t* counts, int64_t N, int64_t E, int64_t K,
                                          float aux_coef, float z_coef, float* dlogits, float* probs, double* z_rows) {
  const double NK = double(N * K > 1 ? N * K : 1);
  MOELAB_GRID_STRIDE(t, N) {
    const float* l = logits + t * E;
    float* p = probs + t * E;
    softmax_row(l, E, p);
    float m = l[0];
    for (int64_t e = 1; e < E; ++e) m = fmaxf(m, l[e]);
    double se = 0.0;
    for (int64_t e = 0; e < E; ++e) se += exp(double(l[e] - m));
    const double lse = double(m) + log(se);
    z_rows[t] = lse * lse;
    double pg = 0.0;
    for (int64_t e = 0; e < E; ++e) pg += double(p[e]) * double(E) * (double(counts[e]) / NK) / double(N);
    float* d = dlogits + t * E;
    for (int64_t e = 0; e < E; ++e) {
      const double ga = double(p[e]) * (double(E) * (double(counts[e]) / NK) / double(N) - pg);
      const double gz = 2.0 * lse * double(p[e]) / double(N);
      d[e] += float(double(aux_coef) * ga + double(z_coef) * gz);
    }
  }
}

// aux = E · Σ_i f_i · P_i with P_i the mean probability, z = mean of the rows' lse².
__global__ void router_losses_total_kernel(const float* probs, const int32_t* counts, const double* z_rows, int64_t N,
                                           int64_t E, int64_t K, double* result, float* add_to) {
  __shared__ double red[32];
  const double NK = double(N * K > 1 ? N * K : 1);
  double aux = 0.0;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    double P = 0.0;
    for (int64_t t = 0; t < N; ++t) P += double(probs[t * E + e]);
    aux += (double(counts[e]) / NK) * P / double(N);
  }
  aux = block_sum(aux, red);
  double z = 0.0;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x) z += z_rows[t];
  z = block_sum(z, red);
  if (threadIdx.x == 0) {
    result[0] = double(E) * aux;
    result[1] = N > 0 ? z / double(N) : 0.0;
    if (add_to) {
      add_to[0] += float(result[0]);
      add_to[1] += float(result[1]);
    }
  }
}

unsigned token_blocks(int64_t T) { return blocks_for(T, 64); }

}  // namespace

void route(const float* logits, int64_t T, int64_t E, int64_t K, bool sigmoid, bool renormalize, const float* bias,
           float* probs, int32_t* ids, float* weights, cudaStream_t s) {
  if (T <= 0) return;
  route_kernel<<<token_blocks(T), 64, 0, s>>>(logits, T, E, K, sigmoid, renormalize, bias, probs, ids, weights);
  MOELAB_CUDA_LAUNCHED("route_kernel");
}

void limit_capacity(const float* probs, int64_t T, int64_t E, int64_t K, bool renormalize, const float* bias,
                    int64_t capacity, bool reroute, int32_t* ids, float* weights, float* dropped, int32_t* load,
                    cudaStream_t s) {
  if (T <= 0) return;
  capacity_kernel<<<1, 32, 0, s>>>(probs, T, E, K, bias, capacity, reroute, ids, dropped, load);
  MOELAB_CUDA_LAUNCHED("capacity_kernel");
  gate_weights_kernel<<<token_blocks(T), 64, 0, s>>>(probs, ids, T, E, K, renormalize, weights);
  MOELAB_CUDA_LAUNCHED("gate_weights_kernel");
}

void route_backward(const float* probs, const int32_t* ids, const float* dweights, int64_t T, int64_t E, int64_t K,
                    bool sigmoid, bool renormalize, float* dlogits, bool accumulate, cudaStream_t s) {
  if (T <= 0) return;
  route_backward_kernel<<<token_blocks(T), 64, 0, s>>>(probs, ids, dweights, T, E, K, sigmoid, renormalize, dlogits,
                                                       accumulate);
  MOELAB_CUDA_LAUNCHED("route_backward_kernel");
}

void router_losses(const float* logits, const int32_t* ids, int64_t N, int64_t E, int64_t K, float aux_coef,
                   float z_coef, float* dlogits, int32_t* counts, float* probs, double* z_rows, double* result,
                   float* add_to, cudaStream_t s) {
  count_choices_kernel<<<1, 1024, 0, s>>>(ids, N * K, E, counts);
  MOELAB_CUDA_LAUNCHED("count_choices_kernel");
  if (N > 0) {
    router_losses_rows_kernel<<<token_blocks(N), 64, 0, s>>>(logits, counts, N, E, K, aux_coef, z_coef, dlogits, probs,
                                                             z_rows);
    MOELAB_CUDA_LAUNCHED("router_losses_rows_kernel");
  }
  router_losses_total_kernel<<<1, kThreads, 0, s>>>(probs, counts, z_rows, N, E, K, result, add_to);
  MOELAB_CUDA_LAUNCHED("router_losses_total_kernel");
}

}  // namespace moelab::cuda
