// The Backend: whole-tensor operations on flat buffers, the only place that touches numbers.
// Model code builds a forward pass from these calls and never reads elements one by one, so a
// CUDA backend (gpu/) can run the same model on device buffers. The Eigen backend (eigen_backend)
// is the CPU reference; each op documents its shapes with the letters of config.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moelab {

enum class TType { F32, I32 };

// A buffer owned by a backend plus its shape (row-major). Copying a Tensor shares the buffer.
class Tensor {
 public:
  std::vector<int64_t> shape;
  TType type = TType::F32;
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
  float* f32() const { return static_cast<float*>(ptr); }
  int32_t* i32() const { return static_cast<int32_t*>(ptr); }
};

// Routed experts of one MoE layer, stacked: gate [E,F,H], up [E,F,H], down [E,H,F].
struct ExpertWeights {
  Tensor gate, up, down;
};

struct RouterSpec {
  int64_t top_k = 2;
  bool renormalize = true;  // divide the K chosen weights by their sum
  bool sigmoid = false;     // scores = sigmoid(logits) instead of softmax (DeepSeek-V3 style)
  // [E] added to the scores for choosing only; the weights stay the unbiased scores
  // (DeepSeek-V3's auxiliary-loss-free balancing; also bans/forces experts with -inf/+inf).
  const Tensor* selection_bias = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory ----
  virtual Tensor alloc(std::vector<int64_t> shape, TType type = TType::F32) = 0;  // zero-filled
  // Copy `count` elements (default: all) between host memory and the tensor, starting at
  // element `offset` of the tensor.
  virtual void upload(Tensor& dst, const void* host, int64_t offset = 0, int64_t count = -1) = 0;
  virtual void download(const Tensor& src, void* host, int64_t offset = 0, int64_t count = -1) = 0;
  // True when Tensor::ptr is ordinary host memory (loaders then convert straight into it).
  virtual bool host_accessible() const = 0;
  virtual void synchronize() {}

  // ---- ops ----
  // out [T,H] = table [V,H] rows ids [T] (I32). Ids are validated by the caller.
  virtual void embedding(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // out [T,N] = x [T,K] · w[N,K]ᵀ (+ bias [N]); accumulate adds to out instead of overwriting.
  virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate = false) = 0;
  // RMSNorm over groups of C = w.numel() consecutive values: out = x / sqrt(mean(x²) + eps) · w.
  // x holds R·C values ([T,H] rows, or [T, NH·D] per head when C = D). out may alias x.
  virtual void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  virtual void clamp(Tensor& x, float lo, float hi) = 0;
  // Rotary embedding, rotate-half convention, in place on x [T, n·D]; row t is position pos0+t.
  virtual void rope(Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, double theta) = 0;
  // dst rows [row0, row0 + src.rows) = src (KV-cache append).
  virtual void copy_rows(const Tensor& src, Tensor& dst, int64_t row0) = 0;
  // Causal attention. q [T, NH·D] at positions past..past+T-1; k_cache, v_cache [S_max, NKV·D]
  // hold positions 0..past+T-1. Head h reads kv head h / (NH/NKV). out [T, NH·D].
  virtual void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t past,
                         int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& out) = 0;
  // Router: logits [T,E] → probs [T,E] (softmax or sigmoid), ids [T,K] (I32, best first),
  // weights [T,K] (the chosen probs, renormalised if asked).
  virtual void route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) = 0;
  // Routed experts: out [T,H] += Σ_k weights[t,k] · down_e(silu(gate_e x_t) ⊙ up_e x_t), e = ids[t,k].
  // Grouped by expert inside the backend (tokens sorted by expert, one GEMM per expert group).
  // An id < 0 means the slot was dropped and contributes nothing.
  virtual void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                           Tensor& out) = 0;
  // out = silu(gate) ⊙ up, all [T,F].
  virtual void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // y += x (same shape).
  virtual void add(Tensor& y, const Tensor& x) = 0;
  // y [T,H] += sigmoid(g [T,1]) · x [T,H]  (Qwen2-MoE shared-expert gate).
  virtual void add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) = 0;
};

// The CPU reference backend (Eigen); always available.
std::shared_ptr<Backend> make_eigen_backend();

}  // namespace moelab
