// What the CPU backend's two files share (eigen_backend.cpp: the backend; eigen_backend_stored.cpp:
// its paths for weights kept as stored). Not a public header: only those two include it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <Eigen/Dense>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.hpp"

namespace moelab::eigen_cpu {

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// v rounded to bfloat16 (to nearest even, as the GPU's __float2bfloat16_rn): bf16 emulation.
template <class S>
S bf16_round(S v) {
  return S(static_cast<float>(Eigen::bfloat16(static_cast<float>(v))));
}

// y[N] (+)= W[N,K] · x[K], rows split across threads (decode is memory-bound: both cores stream).
template <class S>
void gemv(const S* W, const S* x, S* y, int64_t N, int64_t K, bool accumulate) {
  using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  Eigen::Map<const Vec> xv(x, K);
#pragma omp parallel if (N * K >= 65536)
  {
    int64_t nt = 1, id = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    id = omp_get_thread_num();
#endif
    const int64_t chunk = (N + nt - 1) / nt, r0 = std::min(N, id * chunk), r1 = std::min(N, r0 + chunk);
    if (r1 > r0) {
      Eigen::Map<const Mat<S>> Wp(W + r0 * K, r1 - r0, K);
      Eigen::Map<Vec> yv(y + r0, r1 - r0);
      if (accumulate)
        yv.noalias() += Wp * xv;
      else
        yv.noalias() = Wp * xv;
    }
  }
}

// The routed experts' slots grouped by expert (a counting sort of the T·K slots by expert id,
// id < 0 skipped): expert e's slots are order[begin[e] .. begin[e+1]); active lists the experts
// with at least one. Per-slot rows ([used, ·], used = begin[E]) follow this order.
struct Groups {
  std::vector<int64_t> begin, order, active;
};

// ---- the routed experts of stacked fp32/fp64 weights (eigen_backend_experts.cpp) ----

// Slot s = t·K + k of ids [T·K] grouped by expert.
Groups group_by_expert(const int32_t* ids, int64_t n, int64_t E);
// out [T,H] += the per-slot rows [used,H], token by token in slot order (deterministic, no write
// races), each scaled by its gate weight weights [T,K] when given.
template <class S>
void combine_slots(const Groups& g, int64_t T, int64_t K, int64_t H, const S* weights, const S* rows, S* out);
// out = silu(g) ⊙ u over n values; out may be g or u.
template <class S>
void swiglu_n(const S* g, const S* u, S* out, int64_t n);
// Its backward given d = ∂L/∂out: du = d·silu(g), dg = d·u·silu'(g); vectorised (Eigen's exp).
template <class S>
void swiglu_backward_n(const S* g, const S* u, const S* d, S* dg, S* du, int64_t n);

// Stacked expert matrices gate [E,F,H], up [E,F,H], down [E,H,F].
template <class S>
struct StackedExperts {
  const S *gate, *up, *down;
  int64_t E, F;
};
// Each slot's G, U [used,F] (into G_keep, U_keep when given, else scratch) and its unweighted
// output Y [used,H]; x [T,H], K slots per token. In bf16 mode (bf16) the weights come rounded and
// the activations are rounded here.
template <class S>
void experts_forward(const S* x, int64_t H, const Groups& g, int64_t K, const StackedExperts<S>& w, bool bf16,
                     S* G_keep, S* U_keep, S* Y);
// The backward: dweights [T,K] (its used slots written), dgate, dup, ddown (stacked like w) +=,
// slot_dx [used,H] = each slot's ∂L/∂x. G_kept, U_kept, Y_kept: experts_forward's, or all null to
// recompute them.
template <class S>
void experts_backward(const S* x, const S* dout, const S* weights, int64_t H, const Groups& g, int64_t K,
                      const StackedExperts<S>& w, bool bf16, const S* G_kept, const S* U_kept, const S* Y_kept,
                      S* dweights, S* dgate, S* dup, S* ddown, S* slot_dx);

// ---- weights kept as stored (bf16/f16 views of a checkpoint's memory map; inference, fp32
// activations). bf16: the backend's bf16 mode, whose products round their operands to bfloat16.

// y [T,N] (+)= x [T,K] · wᵀ, fp32 sums.
void linear_stored(const float* x, int64_t T, int64_t K, const Tensor& w, int64_t N, float* y, bool accumulate,
                   bool bf16);
// out [T,H] = rows ids [T] of table [V,H], widened.
void embedding_stored(const Tensor& table, const int32_t* ids, int64_t T, float* out);
// host[0, count) = elements [offset, offset + count) of src, widened (H: float or double).
template <class H>
void widen_stored(const Tensor& src, int64_t offset, int64_t count, H* host);

// Buffers the decode path keeps between calls (a token's slots: inputs, gate and up outputs).
struct StoredScratch {
  std::vector<float> x, gu;
};
// Each slot's unweighted expert output into slot_out [used,H] (slot order of g), for the
// experts' per-expert views w.gate_e, w.up_e, w.down_e; x [T,H], K slots per token.
void experts_stored(const float* x, int64_t H, const Groups& g, int64_t K, const ExpertWeights& w, int64_t F,
                    bool bf16, StoredScratch& scratch, float* slot_out);

}  // namespace moelab::eigen_cpu
