// The Backend: whole-tensor operations on flat buffers, the only place that touches numbers.
// Model code builds a forward pass from these calls and never reads elements one by one, so a
// CUDA backend (gpu/) can run the same model on device buffers. The Eigen backend (eigen_backend)
// is the CPU reference; each op documents its shapes with the letters of config.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rope.hpp"

namespace moelab {

// A tensor's element type. Real: the backend's compute scalar (fp32 on the normal backends, fp64
// on the gradient-check backend). Int32: token ids and expert ids.
// BF16, F16: weights kept as a checkpoint stores them (read-only): in its memory map on the CPU
// (Backend::maps_stored_weights), or copied once, still 2 bytes an element, into a device's
// memory (Backend::keeps_stored_weights, the CUDA backend). They are the weight operand of
// linear, embedding and moe_experts only (inference; training needs fp32 weights).
enum class Elem { Real, Int32, BF16, F16 };
inline bool is_stored_lowp(Elem e) { return e == Elem::BF16 || e == Elem::F16; }

// A buffer owned by a backend plus its shape (row-major). Copying a Tensor shares the buffer.
class Tensor {
 public:
  std::vector<int64_t> shape;
  Elem type = Elem::Real;
  std::shared_ptr<void> storage;  // keeps the buffer alive; freed by the backend's deleter
  void* ptr = nullptr;            // host pointer (CPU) or device pointer (CUDA)

  bool empty() const { return ptr == nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 0 : numel() / shape[0]; }
  template <class S>
  S* as() const { return static_cast<S*>(ptr); }
  int32_t* i32() const { return static_cast<int32_t*>(ptr); }
};

// Routed experts of one MoE layer, stacked: gate [E,F,H], up [E,F,H], down [E,H,F].
struct ExpertWeights {
  // Stacked [E,F,H] [E,F,H] [E,H,F] (Real); or, for weights kept as stored (BF16/F16), these carry
  // the stacked shapes and the element type while each expert's matrices are the views below
  // (a checkpoint holds every expert as its own tensor, anywhere in its files).
  Tensor gate, up, down;
  std::vector<Tensor> gate_e, up_e, down_e;  // per expert [F,H] [F,H] [H,F], when stored
  bool per_expert() const { return !gate_e.empty(); }
};

// Training: what the routed experts' forward pass keeps for their backward pass, one row per
// slot that ran, in the backend's own slot order (grouped by expert): gate and up products
// G, U [S,F] and the unweighted expert outputs Y [S,H] (S = slots not dropped). Without them the
// backward pass recomputes G, U and Y from x and the weights (three of its nine products).
struct ExpertActivations {
  Tensor gate, up, out;
  bool empty() const { return gate.empty(); }
};

// What the router is asked to do (top-k, scores, renormalisation, selection bias, capacity):
// core/router.hpp, the router's one home.
struct RouterSpec;

// How matrix products compute; every other op (norms, softmax, router top-k, attention, the
// residual stream, losses, AdamW) is fp32 in every mode.
//   FP32  fp32 operands, fp32 accumulation: the default, and the reference.
//   TF32  cuBLAS's dense products on tensor cores with operands rounded to TF32 (10-bit mantissa),
//         fp32 accumulation; the grouped expert products stay fp32. GPU only.
//   BF16  the operands of every matrix product (linear and its backward, the routed experts'
//         products and their backward) are rounded to bfloat16, round to nearest even, and
//         accumulated in fp32; results are fp32. Weights are held in bf16 for the products next to
//         the fp32 master copy the optimizer updates. On the CPU this is an emulation (the same
//         numbers, no speed-up), the reference the GPU's bf16 path is tested against.
enum class Precision { FP32, TF32, BF16 };
const char* precision_name(Precision p);  // "fp32", "tf32", "bf16"
// "fp32" | "tf32" | "bf16" (case-insensitive); anything else throws Error naming the choices.
Precision parse_precision(const std::string& text);

// A recorded sequence of operations (see Backend::begin_recording), replayed on the same buffers.
class OpGraph {
 public:
  virtual ~OpGraph() = default;
  virtual void replay() = 0;             // enqueue the whole sequence once, asynchronously like any op
  virtual int64_t nodes() const = 0;     // kernels, copies and fills per replay
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory ----
  virtual Tensor alloc(std::vector<int64_t> shape, Elem type = Elem::Real) = 0;  // zero-filled
  // The same with undefined contents, for a tensor the next op overwrites entirely (it saves a
  // fill per tensor where filling is a launch of its own, as on a GPU).
  virtual Tensor alloc_uninit(std::vector<int64_t> shape, Elem type = Elem::Real) {
    return alloc(std::move(shape), type);
  }
  // Copy `count` elements (default: all from `offset`) between host memory and the tensor,
  // converting between float/double and the backend's scalar.
  virtual void upload(Tensor& dst, const float* host, int64_t offset = 0, int64_t count = -1) = 0;
  virtual void download(const Tensor& src, float* host, int64_t offset = 0, int64_t count = -1) = 0;
  virtual void upload(Tensor& dst, const double* host, int64_t offset = 0, int64_t count = -1) = 0;
  virtual void download(const Tensor& src, double* host, int64_t offset = 0, int64_t count = -1) = 0;
  virtual void upload(Tensor& dst, const int32_t* host) = 0;  // Int32 tensors
  virtual void download(const Tensor& src, int32_t* host) = 0;
  // Where a loader may write fp32 values directly (host memory, fp32 scalar), else nullptr.
  virtual float* host_f32(Tensor& t) = 0;
  virtual void synchronize() {}
  // Bytes of one Real element: 4, or 8 on the fp64 check backend.
  virtual int64_t real_bytes() const { return 4; }
  void fill(Tensor& t, float value);
  void copy(const Tensor& src, Tensor& dst);  // same numel and type (Real or Int32)
  // The precision of matrix products (see Precision). A backend refuses a mode it lacks with an
  // Error saying so; the default supports FP32 only.
  virtual Precision precision() const { return Precision::FP32; }
  // Whether linear/embedding/moe_experts take BF16/F16 weights in place (the CPU backend: views
  // of the checkpoint's memory map).
  virtual bool maps_stored_weights() const { return false; }
  // Whether the backend keeps BF16/F16 weights in its own memory in their dtype (a GPU: each
  // uploaded once, half the bytes of fp32; products read them and sum in fp32). Model::load then
  // makes them with alloc_stored and fills them with upload_stored. A backend that does neither
  // gets fp32 weights.
  virtual bool keeps_stored_weights() const { return false; }
  // An uninitialised BF16/F16 tensor of `shape` in the backend's memory, 2 bytes an element.
  // Refused (Error) by a backend that does not keep stored weights.
  virtual Tensor alloc_stored(std::vector<int64_t> shape, Elem type);
  // Copy `count` raw 2-byte values (bf16 or f16 bit patterns, the tensor's type) from host memory
  // into elements [offset, offset + count) of a tensor made by alloc_stored.
  virtual void upload_stored(Tensor& dst, const void* values, int64_t offset, int64_t count);
  // The bytes of memory the backend's tensors live in when that is not the host's (a GPU's
  // total), else 0: Model::load and new_cache check what they need against it.
  virtual int64_t device_memory_bytes() const { return 0; }
  virtual void set_precision(Precision p);

  // ---- forward ops ----
  // out [T,H] = table [V,H] rows ids [T] (Int32). Ids are validated by the caller.
  void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
  // out [T,N] = x [T,K] · w[N,K]ᵀ (+ bias [N]); accumulate adds to out instead of overwriting.
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate = false);
  // RMSNorm over groups of C = w.numel() consecutive values: out = x / sqrt(mean(x²) + eps) · w.
  // x holds R·C values ([T,H] rows, or [T, NH·D] per head when C = D). out may alias x.
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out);
  void clamp(Tensor& x, float lo, float hi);
  // Rotary embedding, rotate-half convention, in place on x [R, n·D]: row r is position
  // pos0 + r % seq_len; the frequencies from rope (theta and a static scaling, rope.hpp). inverse
  // rotates back (the backward pass of rope).
  void rope(Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
            bool inverse = false);
  // dst rows [row0, row0 + src.rows) = src (KV-cache append).
  void copy_rows(const Tensor& src, Tensor& dst, int64_t row0);
  // Causal attention over `batch` independent sequences. q [B·T, NH·D], sequence b's queries are
  // rows b·T.. at positions past..past+T-1; k, v [B·S, NKV·D], sequence b's keys start at row
  // b·S and hold positions 0..past+T-1. Head h reads kv head h / (NH/NKV). out [B·T, NH·D].
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t batch, int64_t past,
                 int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& out);
  // Router: logits [T,E] → probs [T,E] (softmax or sigmoid), ids [T,K] (Int32, best first),
  // weights [T,K] (the chosen probs, renormalised if asked).
  void route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights);
  // Expert capacity: each expert takes at most `capacity` of the T·K slots (0 = no limit; the
  // caller resolves spec.capacity for its batch with RouterSpec::capacity_for), first come first
  // served in order of choice rank, then token order. Overflow is dropped (id -1: the token passes
  // through the residual only) or, when spec.capacity.reroute, re-routed to its next-best expert
  // with room by score + selection bias; an expert whose bias is -inf (banned) is never a target.
  // ids/weights are rewritten (weights recomputed from probs over the slots that remain).
  // dropped [T,K] (Real) = 1 where a slot was dropped, 2 where re-routed, 0 otherwise.
  void limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids,
                      Tensor& weights, Tensor& dropped);
  // Routed experts: out [T,H] += Σ_k weights[t,k] · down_e(silu(gate_e x_t) ⊙ up_e x_t), e = ids[t,k].
  // Grouped by expert inside the backend (tokens sorted by expert, one GEMM per expert group).
  // An id < 0 means the slot was dropped and contributes nothing.
  // With keep, a backend that can (the CPU's) also fills *keep for moe_experts_backward; others
  // leave it empty.
  void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                   Tensor& out, ExpertActivations* keep = nullptr);
  // out = silu(gate) ⊙ up, all [T,F].
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);
  // y += x (same shape).
  void add(Tensor& y, const Tensor& x);
  // out [R] = the L2 norm of each row of x [R,C] (for the routing trace: the router's input).
  void row_norms(const Tensor& x, Tensor& out);
  // y [T,H] += sigmoid(g [T,1]) · x [T,H]  (Qwen2-MoE shared-expert gate).
  void add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g);
  // Noisy top-k gating (Shazeer et al. 2017): out = clean + noise ⊙ softplus(raw), all [T,E];
  // noise is standard normal, drawn by the caller.
  void noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out);

  // ---- training ----
  // Mean cross-entropy of logits [N,V] against targets [N] (Int32, -1 = ignore); writes
  // dlogits = d(mean loss)/dlogits · scale. Returns the mean loss (summed in double).
  double cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale);
  // Backward of linear: dx (+)= dy · w (skipped when dx is null), dw += dyᵀ · x, db += Σ_rows dy.
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool accumulate_dx,
                       Tensor& dw, Tensor* db);
  // Backward of rmsnorm: dx (+)= ∂/∂x, dw += ∂/∂w.
  void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx,
                        bool accumulate_dx, Tensor& dw);
  // dtable [V,H] += scatter of dout [T,H] rows by ids.
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable);
  // Backward of attention (past = 0): dq, dk, dv overwritten.
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                          int64_t batch, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& dq,
                          Tensor& dk, Tensor& dv);
  // dgate, dup from dout for out = silu(gate) ⊙ up.
  void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                       Tensor& dup);
  // Backward of route through the final gate weights: dlogits (+)= ∂L/∂logits given dweights
  // [T,K]; slots with id < 0 carry nothing. Selection itself has no gradient.
  void route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                      Tensor& dlogits, bool accumulate);
  // Balancing losses of one MoE layer from its logits [N,E] and choices ids [N,K] (Switch
  // auxiliary loss and ST-MoE z-loss, defined at router_cpu::router_losses in router.hpp).
  // dlogits += aux_coef · ∂aux + z_coef · ∂z. Returns {aux, z}.
  std::pair<double, double> router_losses(const Tensor& logits, const Tensor& ids, float aux_coef,
                                          float z_coef, Tensor& dlogits);
  // The same, adding {aux, z} to sums (Real [2]) instead of returning them, so a backward pass
  // over many MoE layers reads its balancing losses back once (a GPU need not wait per layer).
  void router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                         Tensor& dlogits, Tensor& sums);
  // Backward of moe_experts: dx += ∂/∂x, dweights [T,K] = ∂/∂weights, expert weight grads +=.
  // kept: what moe_experts kept for the same x, ids, weights and w (or null / empty: recompute).
  void moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights,
                            const ExpertWeights& w, const Tensor& dout, Tensor& dx, Tensor& dweights,
                            ExpertWeights& dw, const ExpertActivations* kept = nullptr);
  // Backward of y += sigmoid(g) · x: dx = sigmoid(g) · dy, dg = Σ_c dy · x · σ'(g).
  void sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg);
  // Backward of noisy_logits with respect to raw (the clean part passes dout through).
  void noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw);
  // Σ x² (in double), and x *= s — for the global gradient norm and clipping.
  double sum_squares(const Tensor& x);
  // Σ over the tensors of Σ x², summed in this order (one wait for the device, not one per tensor).
  double sum_squares_all(const std::vector<const Tensor*>& xs);
  void scale(Tensor& x, float s);
  // AdamW (Loshchilov & Hutter 2019), bias-corrected, decoupled weight decay:
  //   m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²; p -= lr·(m̂/(sqrt(v̂)+eps) + wd·p), step >= 1.
  void adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps,
             float wd, int64_t step);

  // ---- recording (optional; CUDA graphs) ----
  // Between begin_recording and end_recording, ops are recorded instead of run: their results do
  // not exist yet, so uploads, downloads and the ops that return a number are refused. While
  // recording, rope, copy_rows and attention take the position from the device scalar `position`
  // (Int32 [1], read at replay) instead of their pos0 / row0 / past arguments, so one recorded
  // decode step serves every position below `max_positions`; the caller writes the position
  // before each replay. Tensors allocated while recording belong to the graph (they are zero
  // again at the start of each replay, as alloc promises). A backend that cannot record says so
  // in can_record() and refuses begin_recording.
  virtual bool can_record() const { return false; }
  virtual void begin_recording(const Tensor& position, int64_t max_positions);
  virtual std::unique_ptr<OpGraph> end_recording();
  // Drop a recording after an error; the backend runs ops again.
  virtual void abort_recording() {}

 protected:
  // The implementations of the ops above. The public functions check every shape and element
  // type once, here for every backend (backend.cpp), then call these: a backend may assume its
  // arguments are consistent.
  virtual void do_fill(Tensor& t, float value) = 0;
  virtual void do_copy(const Tensor& src, Tensor& dst) = 0;
  virtual void do_embedding(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  virtual void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) = 0;
  virtual void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  virtual void do_clamp(Tensor& x, float lo, float hi) = 0;
  virtual void do_rope(Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
                       bool inverse) = 0;
  virtual void do_copy_rows(const Tensor& src, Tensor& dst, int64_t row0) = 0;
  virtual void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t batch, int64_t past,
                            int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& out) = 0;
  virtual void do_route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) = 0;
  virtual void do_limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids,
                                 Tensor& weights, Tensor& dropped) = 0;
  virtual void do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                              Tensor& out) = 0;
  // moe_experts keeping its activations: by default it keeps none.
  virtual void do_moe_experts_keep(const Tensor& x, const Tensor& ids, const Tensor& weights,
                                   const ExpertWeights& w, Tensor& out, ExpertActivations& keep) {
    (void)keep;
    do_moe_experts(x, ids, weights, w, out);
  }
  virtual void do_swiglu(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual void do_add(Tensor& y, const Tensor& x) = 0;
  virtual void do_row_norms(const Tensor& x, Tensor& out) = 0;
  virtual void do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) = 0;
  virtual void do_noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) = 0;
  virtual double do_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) = 0;
  virtual void do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool accumulate_dx,
                                  Tensor& dw, Tensor* db) = 0;
  virtual void do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx,
                                   bool accumulate_dx, Tensor& dw) = 0;
  virtual void do_embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) = 0;
  virtual void do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                                     int64_t batch, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& dq,
                                     Tensor& dk, Tensor& dv) = 0;
  virtual void do_swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                  Tensor& dup) = 0;
  virtual void do_route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                                 Tensor& dlogits, bool accumulate) = 0;
  virtual std::pair<double, double> do_router_losses(const Tensor& logits, const Tensor& ids, float aux_coef,
                                                     float z_coef, Tensor& dlogits) = 0;
  virtual void do_router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                    Tensor& dlogits, Tensor& sums);
  virtual void do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights,
                                       const ExpertWeights& w, const Tensor& dout, Tensor& dx, Tensor& dweights,
                                       ExpertWeights& dw) = 0;
  // moe_experts_backward given non-empty kept activations: by default they are not used.
  virtual void do_moe_experts_backward_kept(const Tensor& x, const Tensor& ids, const Tensor& weights,
                                            const ExpertWeights& w, const Tensor& dout, Tensor& dx,
                                            Tensor& dweights, ExpertWeights& dw, const ExpertActivations& kept) {
    (void)kept;
    do_moe_experts_backward(x, ids, weights, w, dout, dx, dweights, dw);
  }
  virtual void do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx,
                                         Tensor& dg) = 0;
  virtual void do_noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) = 0;
  virtual double do_sum_squares(const Tensor& x) = 0;
  virtual double do_sum_squares_all(const std::vector<const Tensor*>& xs) {
    double total = 0;
    for (const Tensor* x : xs) total += sum_squares(*x);
    return total;
  }
  virtual void do_scale(Tensor& x, float s) = 0;
  virtual void do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps,
                        float wd, int64_t step) = 0;
};

// A view of elements [offset, offset + Π shape) of t, sharing its buffer (Real, Int32 or stored BF16/F16
// tensors of backend b).
Tensor slice(const Backend& b, const Tensor& t, int64_t offset, std::vector<int64_t> shape);

// The CPU reference backend (Eigen, fp32); always available.
std::shared_ptr<Backend> make_eigen_backend();
// The same in double precision: for finite-difference gradient checks.
std::shared_ptr<Backend> make_eigen_backend_f64();

}  // namespace moelab
