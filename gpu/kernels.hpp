// The CUDA kernels behind CudaBackend, as host functions on raw device pointers and a stream.
// Each enqueues its kernels on `s` and returns at once (no host round trip), except where noted.
// Shapes use the letters of core/config.hpp; every pointer is device memory, fp32 unless typed.
// Grouped by file: kernels_basic.cu, kernels_attention.cu, kernels_router.cu, kernels_experts.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moelab::cuda {

using bf16 = __nv_bfloat16;  // Precision::BF16 operands: weights held in bf16, activations rounded
using f16 = __half;          // f16 weights kept as a checkpoint stores them

// ---- kernels_basic.cu: element-wise and row-wise ops ----
void fill(float* p, int64_t n, float value, cudaStream_t s);
// out [n] = x rounded to bf16, round to nearest even (__float2bfloat16_rn).
void to_bf16(const float* x, int64_t n, bf16* out, cudaStream_t s);
// out [T,H] = table [V,H] rows ids [T]
void embedding(const float* table, const int32_t* ids, int64_t T, int64_t H, float* out, cudaStream_t s);
// dtable [V,H] += dout [T,H] scattered by ids (token order, no atomics: deterministic)
void embedding_backward(const int32_t* ids, const float* dout, int64_t T, int64_t H, float* dtable, cudaStream_t s);
// y [R,N] += bias [N] on every row
void add_bias_rows(float* y, const float* bias, int64_t R, int64_t N, cudaStream_t s);
// db [N] += Σ_rows dy [R,N]
void add_column_sums(const float* dy, int64_t R, int64_t N, float* db, cudaStream_t s);
// RMSNorm over groups of C: x, out [R,C] (out may alias x); w [C]
void rmsnorm(const float* x, const float* w, int64_t R, int64_t C, float eps, float* out, cudaStream_t s);
// dx [R,C] (+)=, dw [C] +=; rr [R] (double) is scratch
void rmsnorm_backward(const float* x, const float* w, const float* dy, int64_t R, int64_t C, float eps, float* dx,
                      bool accumulate_dx, float* dw, double* rr, cudaStream_t s);
void clamp(float* x, int64_t n, float lo, float hi, cudaStream_t s);
// Rotary embedding in place on x [R, NH·D]; cos, sin [positions, D/2] from the host table.
// pos_dev (device, may be null) replaces pos0 when given: recorded decode reads it at replay.
void rope(float* x, int64_t R, int64_t n_heads, int64_t D, int64_t pos0, const int32_t* pos_dev, int64_t seq_len,
          const float* cos, const float* sin, bool inverse, cudaStream_t s);
// dst rows [*row0, *row0 + rows) = src [rows, cols], the row read on the device (KV-cache append
// inside a recorded decode step).
void copy_rows_at(const float* src, int64_t rows, int64_t cols, const int32_t* row0, float* dst, cudaStream_t s);
void swiglu(const float* gate, const float* up, int64_t n, float* out, cudaStream_t s);  // out may alias gate
void swiglu_backward(const float* gate, const float* up, const float* dout, int64_t n, float* dgate, float* dup,
                     cudaStream_t s);
void add(float* y, const float* x, int64_t n, cudaStream_t s);
// out [R] = ‖x [R,C] row‖₂
void row_norms(const float* x, int64_t R, int64_t C, float* out, cudaStream_t s);
// y [T,H] += sigmoid(g [T]) · x [T,H]
void add_sigmoid_gated(float* y, const float* x, const float* g, int64_t T, int64_t H, cudaStream_t s);
void sigmoid_gated_backward(const float* x, const float* g, const float* dy, int64_t T, int64_t H, float* dx,
                            float* dg, cudaStream_t s);
void noisy_logits(const float* clean, const float* raw, const float* noise, int64_t n, float* out, cudaStream_t s);
void noisy_logits_backward(const float* raw, const float* noise, const float* dout, int64_t n, float* draw,
                           cudaStream_t s);
void scale(float* x, int64_t n, float factor, cudaStream_t s);
// Fused AdamW; step_size = lr / (1 − b1^t), inv_sqrt_c2 = 1 / sqrt(1 − b2^t), decay = 1 − lr·wd.
// p_bf16 (may be null): the bf16 copy of p, rewritten from the updated p in the same pass.
void adamw(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2, float step_size,
           float inv_sqrt_c2, float decay, float eps, bf16* p_bf16, cudaStream_t s);
// *result (double, device) = Σ x²; partials holds kSumBlocks doubles of scratch.
constexpr int kSumBlocks = 256;
void sum_squares(const float* x, int64_t n, double* partials, double* result, cudaStream_t s);
// Mean cross-entropy of logits [N,V] against targets [N] (-1 = ignored) into *result (device);
// dlogits [N,V] = ∂(mean loss)/∂logits · scale. row_loss [N] (double) and count (int) are scratch.
void cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float scale, float* dlogits,
                   double* row_loss, int32_t* count, double* result, cudaStream_t s);

// ---- kernels_attention.cu ----
// Raise the kernels' dynamic shared-memory limit to what the device allows; returns that limit.
size_t attention_setup(int device);
// Shared memory one block needs for a context of S positions and head dim D.
size_t attention_forward_smem(int64_t S, int64_t D);
size_t attention_backward_smem(int64_t T, int64_t D);
// Causal GQA attention, see Backend::attention. q, out [B·T, NH·D]; k, v [B·S, NKV·D].
// past_dev (device, may be null) replaces past when given; shared memory is then sized for S.
void attention(const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t S, int64_t past,
               const int32_t* past_dev, int64_t NH, int64_t NKV, int64_t D, float* out, cudaStream_t s);
// Backward with past = 0 (S = T); stats [B·T·NH, 3] is scratch. dq, dk, dv overwritten.
void attention_backward(const float* q, const float* k, const float* v, const float* dout, int64_t B, int64_t T,
                        int64_t NH, int64_t NKV, int64_t D, float* stats, float* dq, float* dk, float* dv,
                        cudaStream_t s);

// ---- kernels_router.cu ----
// logits [T,E] → probs [T,E], ids [T,K], weights [T,K]; bias [E] or null. One thread per token.
void route(const float* logits, int64_t T, int64_t E, int64_t K, bool sigmoid, bool renormalize, const float* bias,
           float* probs, int32_t* ids, float* weights, cudaStream_t s);
// Capacity in choice-rank-then-token order (one thread: the order matters), then the gate
// weights again. ids [T,K] rewritten; dropped [T,K] must be zero on entry; load [E] is scratch.
void limit_capacity(const float* probs, int64_t T, int64_t E, int64_t K, bool renormalize, const float* bias,
                    int64_t capacity, bool reroute, int32_t* ids, float* weights, float* dropped, int32_t* load,
                    cudaStream_t s);
void route_backward(const float* probs, const int32_t* ids, const float* dweights, int64_t T, int64_t E, int64_t K,
                    bool sigmoid, bool renormalize, float* dlogits, bool accumulate, cudaStream_t s);
// Balancing losses (see Backend::router_losses): result[0] = aux, result[1] = z (device doubles),
// also added to add_to[0..1] when add_to is given. counts [E] (int), probs [N,E] and z_rows [N]
// (double) are scratch.
void router_losses(const float* logits, const int32_t* ids, int64_t N, int64_t E, int64_t K, float aux_coef,
                   float z_coef, float* dlogits, int32_t* counts, float* probs, double* z_rows, double* result,
                   float* add_to, cudaStream_t s);

// ---- kernels_experts.cu: token permutation by expert and the grouped expert GEMMs ----
// The N = T·K slots sorted by expert (stable: slot order inside an expert, as the Eigen backend),
// and the row tiles of the grouped GEMMs (each tile: one expert, up to kExpertTileRows rows).
// Everything stays on the device: kernels size their grids by the upper bounds below and skip
// the tiles and rows that do not exist.
constexpr int kExpertTileRows = 64;
struct ExpertGroups {
  int32_t* begin = nullptr;        // [E+1] first sorted row of each expert; begin[E] = rows used
  int32_t* order = nullptr;        // [N] slot of each sorted row
  int32_t* pos = nullptr;          // [N] sorted row of each slot, −1 when dropped
  int32_t* tile_expert = nullptr;  // [max_tiles]
  int32_t* tile_row0 = nullptr;    // [max_tiles]
  int32_t* num_tiles = nullptr;    // [1]
  int32_t* counts = nullptr;       // [E] scratch
  int64_t slots = 0, experts = 0, max_tiles = 0;
};
int64_t expert_max_tiles(int64_t slots, int64_t experts);
// The int32 values the groups of `slots` over `experts` take in one buffer, and the groups laid out
// in such a buffer (its contents are written by group_by_expert).
int64_t expert_groups_ints(int64_t slots, int64_t experts);
ExpertGroups expert_groups_in(int32_t* buffer, int64_t slots, int64_t experts);
void group_by_expert(const int32_t* ids, const ExpertGroups& g, cudaStream_t s);
// out [N,H] row r = x [T,H] row (order[r] / K), times scale[order[r]] when scale is given.
void gather_rows(const float* x, const ExpertGroups& g, int64_t K, int64_t H, const float* scale, float* out,
                 cudaStream_t s);
// Weight layout of one expert: OutIn = [N, Kd] (nn.Linear, C = A·Wᵀ), InOut = [Kd, N] (C = A·W).
enum class WeightLayout { OutIn, InOut };
// Stacked expert weights [E, ...]: fp32, their bf16 copy (Precision::BF16), or bf16/f16 weights
// kept as the checkpoint stores them. round_bf16 (Precision::BF16): the products round their
// other operand, and f16 weights, to bf16 as they load them. Sums are fp32 in every case.
struct ExpertMatrix {
  const float* f32 = nullptr;
  const bf16* b16 = nullptr;  // used instead of f32 when set
  const f16* h16 = nullptr;   // used instead of both when set
  bool round_bf16 = false;
};
// C [N_rows, N] (+)= A [N_rows, Kd] · W_e for the rows of each expert e; W stacked [E, ...].
void grouped_gemm(const float* A, int64_t Kd, ExpertMatrix W, WeightLayout layout, int64_t N, const ExpertGroups& g,
                  float* C, bool accumulate, cudaStream_t s);
// dW_e [M,N] += Σ_{rows r of e} P[r,:]ᵀ · Q[r,:] for every expert e; dW stacked [E,M,N]. round_bf16:
// P and Q are rounded to bf16 as they are loaded (Precision::BF16).
void grouped_weight_grad(const float* P, int64_t M, const float* Q, int64_t N, const ExpertGroups& g, float* dW,
                         bool round_bf16, cudaStream_t s);
// out [T,H] += Σ_k w[t,k] · Y[pos[t·K+k]] (w = 1 when null), k in order, dropped slots skipped.
void combine_slots(const float* Y, const ExpertGroups& g, const float* weights, int64_t T, int64_t K, int64_t H,
                   float* out, cudaStream_t s);
// dweights [T·K] = dout[t] · Y[pos[slot]] (0 for dropped slots).
void slot_dots(const float* dout, const float* Y, const ExpertGroups& g, int64_t K, int64_t H, float* dweights,
               cudaStream_t s);

// ---- kernels_stored.cu: products with weights kept as stored (bf16/f16, read as they are) ----
// A [N,K] weight matrix of 2-byte values, and whether the product rounds as Precision::BF16 does
// (activations, and f16 weights, to bf16 as they are loaded; bf16 weights are their own rounding).
struct StoredMatrix {
  const void* p = nullptr;
  bool f16 = false;  // else bf16
  bool round_bf16 = false;
};
// Y [T,N] (+)= X [T,K] · Wᵀ with fp32 sums. Up to kStoredGemvRows tokens (decode): one warp per
// output column reads its weight row once, 16 bytes a load, for every token; more: 64×64 tiles.
constexpr int64_t kStoredGemvRows = 32;
void stored_linear(const float* X, int64_t T, int64_t K, StoredMatrix W, int64_t N, float* Y, bool accumulate,
                   cudaStream_t s);
// out [T,H] = table [V,H] rows ids [T], widened to fp32 (exact).
void stored_embedding(StoredMatrix table, const int32_t* ids, int64_t T, int64_t H, float* out, cudaStream_t s);

}  // namespace moelab::cuda
