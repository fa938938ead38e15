// The CUDA backend's class, shared by the two files that define it: cuda_backend.cu (setup, device
// memory, uploads and downloads, weights kept as stored and the bf16 copies of Precision::BF16,
// recording) and cuda_backend_ops.cu (the Backend operations, forward and training, and the
// cuBLAS products). Included by those two only; the rest of the program sees cuda_backend.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda_backend.hpp"
#include "cuda_check.hpp"
#include "cuda_graph.cuh"
#include "device_memory.cuh"
#include "error.hpp"
#include "kernels.hpp"
#include "lowp.hpp"
#include "router.hpp"

namespace moelab {

inline float* f32(const Tensor& t) { return static_cast<float*>(t.ptr); }
inline int32_t* s32(const Tensor& t) { return static_cast<int32_t*>(t.ptr); }
inline cuda::bf16* b16(const Tensor& t) { return static_cast<cuda::bf16*>(t.ptr); }
// Bytes of one element: 2 for bf16/f16 weights kept as stored, else 4 (fp32 and int32).
inline size_t elem_bytes(Elem e) { return is_stored_lowp(e) ? 2 : 4; }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;

 private:
  void setup();
  void release();

 public:
  std::string name() const override { return "cuda"; }

  Precision precision() const override { return precision_; }
  void set_precision(Precision p) override;

  // ---- memory ----
  Tensor alloc(std::vector<int64_t> shape, Elem type) override { return make_tensor(std::move(shape), type, true); }

  // Weights kept as stored: bf16/f16 device buffers, uploaded once in their dtype.
  bool keeps_stored_weights() const override { return true; }
  Tensor alloc_stored(std::vector<int64_t> shape, Elem type) override;
  void upload_stored(Tensor& dst, const void* values, int64_t offset, int64_t count) override;
  int64_t device_memory_bytes() const override { return memory_bytes_; }
  Tensor alloc_uninit(std::vector<int64_t> shape, Elem type) override;

  void upload(Tensor& dst, const float* host, int64_t offset, int64_t count) override;
  void download(const Tensor& src, float* host, int64_t offset, int64_t count) override;
  void upload(Tensor& dst, const double* host, int64_t offset, int64_t count) override;
  void download(const Tensor& src, double* host, int64_t offset, int64_t count) override;
  void upload(Tensor& dst, const int32_t* host) override;
  void download(const Tensor& src, int32_t* host) override;
  float* host_f32(Tensor&) override { return nullptr; }  // device memory: loaders go through upload
  void synchronize() override;
  void do_fill(Tensor& t, float value) override;
  void do_copy(const Tensor& src, Tensor& dst) override;

  // ---- forward ----
  void do_embedding(const Tensor& table, const Tensor& ids, Tensor& out) override;
  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) override;
  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void do_clamp(Tensor& x, float lo, float hi) override;
  void do_rope(Tensor& x, int64_t n_heads, int64_t D, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
               bool inverse) override;
  void do_copy_rows(const Tensor& src, Tensor& dst, int64_t row0) override;
  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t past, int64_t NH, int64_t NKV,
                    int64_t D, Tensor& out) override;
  void do_route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) override;
  void do_limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids, Tensor& weights,
                         Tensor& dropped) override;
  void do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                      Tensor& out) override;
  void do_swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void do_add(Tensor& y, const Tensor& x) override;
  void do_row_norms(const Tensor& x, Tensor& out) override;
  void do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) override;
  void do_noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) override;

  // ---- training ----
  double do_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) override;
  void do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool acc, Tensor& dw,
                          Tensor* db) override;
  void do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx, bool acc,
                           Tensor& dw) override;
  void do_embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override;
  void do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, int64_t B, int64_t NH,
                             int64_t NKV, int64_t D, Tensor& dq, Tensor& dk, Tensor& dv) override;
  void do_swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) override;
  void do_route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                         Tensor& dlogits, bool acc) override;
  std::pair<double, double> do_router_losses(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                             Tensor& dlogits) override;
  void do_router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef, Tensor& dlogits,
                            Tensor& sums) override;
  void do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                               const Tensor& dout, Tensor& dx, Tensor& dweights, ExpertWeights& dw) override;
  void do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg) override;
  void do_noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) override;
  double do_sum_squares(const Tensor& x) override { return sum_squares_all({&x}); }  // 0 + r: r exactly
  double do_sum_squares_all(const std::vector<const Tensor*>& xs) override;
  void do_scale(Tensor& x, float s) override;
  void do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, float wd,
                int64_t step) override;

  // ---- recording: CUDA graphs (cuda_graph.cuh) ----
  bool can_record() const override { return true; }
  void begin_recording(const Tensor& position, int64_t max_positions) override;
  std::unique_ptr<OpGraph> end_recording() override { return recorder_.end(stream_, copies_); }
  void abort_recording() override { recorder_.abort(stream_); }

 private:
  static constexpr size_t kBlasWorkspace = size_t(32) << 20;

  void not_recording(const char* what) const;

  // Makes this backend's device current for the calling thread and returns the stream of every
  // operation (always: the thread may have used another backend's device since; a host-side call).
  cudaStream_t set_device_get_stream() const;

  // ---- Precision::BF16 ----
  // The bf16 copy of weight w (made or refreshed on the stream when stale).
  const cuda::bf16* bf16_weight(const Tensor& w);

  // ---- dense products: cuBLAS ----
  // An operand of a product: its fp32 values and, in Precision::BF16, their bf16 rounding (a
  // weight's cached copy, or an activation rounded into `rounded`, which keeps it alive).
  struct Operand {
    const float* f32 = nullptr;
    const cuda::bf16* b16 = nullptr;
    Tensor rounded;
  };
  Operand weight_operand(const Tensor& w);
  cuda::ExpertMatrix expert_matrix(const Tensor& w);  // the same for the grouped expert kernels
  // One stacked matrix of a layer's experts: fp32 as above, or kept as stored. Stored experts are
  // one device stack per matrix, each expert a view of it (Model::load on a backend that keeps
  // stored weights makes them so); the grouped kernels index that stack by expert.
  cuda::ExpertMatrix expert_matrix(const ExpertWeights& w, const Tensor& stack, const std::vector<Tensor>& views);
  // A weight kept as stored, for kernels_stored.cu (rounding as the precision asks).
  cuda::StoredMatrix stored_matrix(const Tensor& w) const;
  Operand activation_operand(const Tensor& x);
  // C (+)= op(A) · op(B), column-major as cublasSgemm. fp32 (TF32 tensor cores when the handle's
  // math mode says so), or in Precision::BF16 bf16 A and B with fp32 C and sums.
  void gemm(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k, const Operand& A,
            int64_t lda, const Operand& B, int64_t ldb, bool accumulate, float* C, int64_t ldc);

  Tensor make_tensor(std::vector<int64_t> shape, Elem type, bool zero);
  // Uninitialised device memory for intermediates that are written before they are read.
  Tensor scratch(size_t bytes) { return make_tensor({int64_t((bytes + 3) / 4)}, Elem::Int32, false); }
  Tensor scratch_f(std::vector<int64_t> shape) { return make_tensor(std::move(shape), Elem::Real, false); }

  static int64_t checked_range(const Tensor& t, int64_t offset, int64_t count, const char* what);

  std::vector<double> download_doubles(const double* dev, size_t n);

  static const float* bias_of(const RouterSpec& spec, int64_t E);

  // Device buffers of one grouping of slots by expert (see cuda::ExpertGroups).
  struct Groups {
    Tensor storage;
    cuda::ExpertGroups g;
  };
  Groups make_groups(const Tensor& ids, int64_t E, cudaStream_t s);

  // cos/sin of position p and frequency i, built on the host exactly as the Eigen backend builds
  // its table (fp32 angle, std::cos/std::sin), so both backends rotate by the same numbers.
  struct RopeTable {
    int64_t D = 0, positions = 0;
    RopeSpec rope{0.0};
    std::vector<float> cos_host, sin_host;
    Tensor cos, sin;  // [positions, D/2]
  };
  void ensure_rope_table(int64_t D, const RopeSpec& rope, int64_t positions);

  int device_ = 0;
  int64_t memory_bytes_ = 0;  // the device's total memory
  cudaStream_t stream_ = nullptr, side_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* blas_workspace_ = nullptr;
  GraphRecorder recorder_;
  std::shared_ptr<DevicePool> pool_ = std::make_shared<DevicePool>();
  std::shared_ptr<Bf16Copies> copies_ = std::make_shared<Bf16Copies>();
  Precision precision_ = Precision::FP32;
  RopeTable rope_;
};

}  // namespace moelab
