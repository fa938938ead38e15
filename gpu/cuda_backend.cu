// The CUDA backend: every Backend operation on device buffers, enqueued on one stream of the
// backend's own. Dense products go to cuBLAS (fp32, no TF32: the default math mode; TF32 tensor
// cores or bf16 operands with fp32 sums when set_precision asks), the rest to the kernels of
// kernels_*.cu. Memory comes from a cache of cudaMalloc buffers keyed by size, so
// a training step that allocates the same activations every step does not call cudaMalloc.
// Only downloads wait for the device (and the ops that return a number: cross_entropy,
// router_losses, sum_squares, one small copy each). Recording the decode step as a CUDA graph is
// cuda_graph.{cuh,cu}; the device query behind make_cuda_backend is cuda_device.{hpp,cu}.
//
// The semantics are the Eigen backend's (core/eigen_backend.cpp), op for op, including top-k tie
// breaking, capacity order, -1 for dropped slots and the accumulate flags; tests/test_gpu_parity
// compares the two.
#include <climits>
#include <cmath>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_backend.hpp"
#include "cuda_check.hpp"
#include "cuda_device.hpp"
#include "cuda_graph.cuh"
#include "device_memory.cuh"
#include "error.hpp"
#include "kernels.hpp"
#include "lowp.hpp"
#include "router.hpp"

namespace moelab {
namespace {

int as_int(int64_t v, const char* what) {
  MOELAB_ASSERT(v >= 0 && v <= INT_MAX, std::string(what) + " exceeds cuBLAS's int range");
  return int(v);
}

float* f32(const Tensor& t) { return static_cast<float*>(t.ptr); }
int32_t* s32(const Tensor& t) { return static_cast<int32_t*>(t.ptr); }
cuda::bf16* b16(const Tensor& t) { return static_cast<cuda::bf16*>(t.ptr); }
// Bytes of one element: 2 for bf16/f16 weights kept as stored, else 4 (fp32 and int32).
size_t elem_bytes(Elem e) { return is_stored_lowp(e) ? 2 : 4; }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    try {
      setup();
    } catch (...) {  // out of memory for the workspace, say: give back what was made so far
      release();
      throw;
    }
  }

  ~CudaBackend() override {
    (void)cudaSetDevice(device_);
    (void)cudaStreamSynchronize(stream_);
    recorder_.abort(stream_);
    release();
  }

 private:
  void setup() {
    MOELAB_CUDA_CHECK(cudaSetDevice(device_));
    size_t free_b = 0, total_b = 0;
    MOELAB_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    memory_bytes_ = int64_t(total_b);
    MOELAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MOELAB_CUBLAS_CHECK(cublasCreate(&blas_));
    MOELAB_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    // fp32 products in fp32 (no TF32), so the results match the CPU backend to ~1e-6.
    MOELAB_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    // A workspace of our own, so cuBLAS never allocates inside a recorded graph (32 MiB is what
    // the cuBLAS documentation recommends for Hopper).
    MOELAB_CUDA_CHECK(cudaMalloc(&blas_workspace_, kBlasWorkspace));
    MOELAB_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_workspace_, kBlasWorkspace));
    // Table uploads while the main stream is being recorded go through this one.
    MOELAB_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
    cuda::attention_setup(device_);
  }
  void release() {
    if (blas_) (void)cublasDestroy(blas_);
    if (blas_workspace_) (void)cudaFree(blas_workspace_);
    if (side_) (void)cudaStreamDestroy(side_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    blas_ = nullptr, blas_workspace_ = nullptr, side_ = nullptr, stream_ = nullptr;
  }

 public:
  std::string name() const override { return "cuda"; }

  Precision precision() const override { return precision_; }
  void set_precision(Precision p) override {
    not_recording("changing the precision");
    MOELAB_CUBLAS_CHECK(cublasSetMathMode(blas_, p == Precision::TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    precision_ = p;
  }

  // ---- memory ----
  Tensor alloc(std::vector<int64_t> shape, Elem type) override { return make_tensor(std::move(shape), type, true); }

  // Weights kept as stored: bf16/f16 device buffers, uploaded once in their dtype.
  bool keeps_stored_weights() const override { return true; }
  Tensor alloc_stored(std::vector<int64_t> shape, Elem type) override {
    if (!is_stored_lowp(type)) fail("cuda", "alloc_stored takes bf16 or f16 tensors");
    not_recording("allocating stored weights");
    return make_tensor(std::move(shape), type, false);
  }
  void upload_stored(Tensor& dst, const void* values, int64_t offset, int64_t count) override {
    not_recording("upload");
    MOELAB_ASSERT(is_stored_lowp(dst.type), "upload_stored: a bf16/f16 tensor");
    count = checked_range(dst, offset, count, "upload range");
    if (count == 0) return;
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst.ptr) + offset * 2, values, size_t(count) * 2,
                                      cudaMemcpyHostToDevice, set_device_get_stream()));
  }
  int64_t device_memory_bytes() const override { return memory_bytes_; }
  Tensor alloc_uninit(std::vector<int64_t> shape, Elem type) override {
    return make_tensor(std::move(shape), type, false);
  }

  void upload(Tensor& dst, const float* host, int64_t offset, int64_t count) override {
    not_recording("upload");
    if (is_stored_lowp(dst.type)) fail("cuda", "weights kept as stored (bf16/f16) are read-only");
    count = checked_range(dst, offset, count, "upload range");
    if (count == 0) return;
    copies_->touched(f32(dst) + offset, size_t(count) * sizeof(float));
    // From pageable memory, cudaMemcpyAsync returns once the host data has been staged: the
    // caller may free `host` right away.
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(f32(dst) + offset, host, size_t(count) * sizeof(float), cudaMemcpyHostToDevice,
                                      set_device_get_stream()));
  }
  void download(const Tensor& src, float* host, int64_t offset, int64_t count) override {
    not_recording("download");
    count = checked_range(src, offset, count, "download range");
    if (count == 0) return;
    const cudaStream_t s = set_device_get_stream();
    if (is_stored_lowp(src.type)) {  // weights kept as stored: their 2-byte values, widened here
      std::vector<uint16_t> raw(static_cast<size_t>(count));
      MOELAB_CUDA_CHECK(cudaMemcpyAsync(raw.data(), static_cast<const char*>(src.ptr) + offset * 2, size_t(count) * 2,
                                        cudaMemcpyDeviceToHost, s));
      MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
      lowp_to_f32(raw.data(), src.type == Elem::BF16 ? LowpType::BF16 : LowpType::F16, host, count);
      return;
    }
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(host, f32(src) + offset, size_t(count) * sizeof(float), cudaMemcpyDeviceToHost, s));
    MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  void upload(Tensor& dst, const double* host, int64_t offset, int64_t count) override {
    count = checked_range(dst, offset, count, "upload range");
    std::vector<float> staging(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) staging[size_t(i)] = float(host[i]);
    upload(dst, staging.data(), offset, count);
  }
  void download(const Tensor& src, double* host, int64_t offset, int64_t count) override {
    count = checked_range(src, offset, count, "download range");
    std::vector<float> staging(static_cast<size_t>(count));
    download(src, staging.data(), offset, count);
    for (int64_t i = 0; i < count; ++i) host[i] = double(staging[size_t(i)]);
  }
  void upload(Tensor& dst, const int32_t* host) override {
    not_recording("upload");
    if (dst.numel() == 0) return;
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, host, size_t(dst.numel()) * 4, cudaMemcpyHostToDevice, set_device_get_stream()));
  }
  void download(const Tensor& src, int32_t* host) override {
    not_recording("download");
    if (src.numel() == 0) return;
    const cudaStream_t s = set_device_get_stream();
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(host, src.ptr, size_t(src.numel()) * 4, cudaMemcpyDeviceToHost, s));
    MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  float* host_f32(Tensor&) override { return nullptr; }  // device memory: loaders go through upload
  void synchronize() override {
    not_recording("synchronize");
    MOELAB_CUDA_CHECK(cudaStreamSynchronize(set_device_get_stream()));
  }
  void do_fill(Tensor& t, float value) override {
    copies_->touched(t.ptr, size_t(t.numel()) * 4);
    cuda::fill(f32(t), t.numel(), value, set_device_get_stream());
  }
  void do_copy(const Tensor& src, Tensor& dst) override {
    if (src.numel() == 0 || src.ptr == dst.ptr) return;
    copies_->touched(dst.ptr, size_t(dst.numel()) * 4);
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, src.ptr, size_t(src.numel()) * elem_bytes(src.type), cudaMemcpyDeviceToDevice,
                                      set_device_get_stream()));
  }

  // ---- forward ----
  void do_embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    if (is_stored_lowp(table.type)) {
      cuda::stored_embedding(stored_matrix(table), s32(ids), ids.numel(), table.cols(), f32(out), set_device_get_stream());
      return;
    }
    cuda::embedding(f32(table), s32(ids), ids.numel(), table.cols(), f32(out), set_device_get_stream());
  }

  // out [T,N] = x [T,K] · w [N,K]ᵀ. cuBLAS is column-major: there out is [N,T] = wᵀ(as [K,N])ᵀ · x(as [K,T]).
  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) override {
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    const cudaStream_t s = set_device_get_stream();
    if (T == 0 || N == 0) return;
    if (is_stored_lowp(w.type)) {  // bf16/f16 weights read as stored, fp32 sums (kernels_stored.cu)
      cuda::stored_linear(f32(x), T, K, stored_matrix(w), N, f32(out), accumulate, s);
    } else if (K == 0) {
      if (!accumulate) cuda::fill(f32(out), out.numel(), 0.0f, s);
    } else {
      const Operand xo = activation_operand(x);
      gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, weight_operand(w), K, xo, K, accumulate, f32(out), N);
    }
    if (bias) cuda::add_bias_rows(f32(out), f32(*bias), T, N, s);
  }

  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t C = w.numel(), R = C ? x.numel() / C : 0;
    cuda::rmsnorm(f32(x), f32(w), R, C, eps, f32(out), set_device_get_stream());
  }

  void do_clamp(Tensor& x, float lo, float hi) override {
    copies_->touched(x.ptr, size_t(x.numel()) * 4);
    cuda::clamp(f32(x), x.numel(), lo, hi, set_device_get_stream());
  }

  void do_rope(Tensor& x, int64_t n_heads, int64_t D, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
               bool inverse) override {
    const int64_t R = x.rows();
    if (R == 0) return;
    const cudaStream_t s = set_device_get_stream();
    if (recorder_.active()) {  // the position comes from the device; the table covers every one the graph may see
      ensure_rope_table(D, rope, recorder_.max_positions());
      recorder_.keep(rope_.cos.storage);
      recorder_.keep(rope_.sin.storage);
    } else {
      ensure_rope_table(D, rope, pos0 + std::min(seq_len, R));
    }
    cuda::rope(f32(x), R, n_heads, D, pos0, recorder_.position(), seq_len, f32(rope_.cos), f32(rope_.sin), inverse, s);
  }

  void do_copy_rows(const Tensor& src, Tensor& dst, int64_t row0) override {
    if (src.numel() == 0) return;
    copies_->touched(dst.ptr, size_t(dst.numel()) * 4);
    if (recorder_.active()) {  // the row comes from the device at replay
      cuda::copy_rows_at(f32(src), src.rows(), src.cols(), recorder_.position(), f32(dst), set_device_get_stream());
      return;
    }
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(f32(dst) + row0 * dst.cols(), f32(src), size_t(src.numel()) * sizeof(float),
                                      cudaMemcpyDeviceToDevice, set_device_get_stream()));
  }

  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t past, int64_t NH, int64_t NKV,
                    int64_t D, Tensor& out) override {
    const int64_t T = q.rows() / B, S = k.rows() / B;
    cuda::attention(f32(q), f32(k), f32(v), B, T, S, past, recorder_.position(), NH, NKV, D, f32(out),
                    set_device_get_stream());
  }

  void do_route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) override {
    const int64_t T = logits.rows(), E = logits.cols(), K = spec.top_k;
    cuda::route(f32(logits), T, E, K, spec.sigmoid, spec.renormalize, bias_of(spec, E), f32(probs), s32(ids), f32(weights),
                set_device_get_stream());
  }

  void do_limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids, Tensor& weights,
                         Tensor& dropped) override {
    const int64_t T = probs.rows(), E = probs.cols(), K = spec.top_k;
    const cudaStream_t s = set_device_get_stream();
    cuda::fill(f32(dropped), dropped.numel(), 0.0f, s);
    if (capacity <= 0) return;
    Tensor load = scratch(size_t(E) * 4);
    cuda::limit_capacity(f32(probs), T, E, K, spec.renormalize, bias_of(spec, E), capacity, spec.capacity.reroute, s32(ids),
                         f32(weights), f32(dropped), s32(load), s);
  }

  // Routed experts: sort the slots by expert, gather their rows, three grouped GEMMs, then each
  // token adds its K slots' outputs weighted, in slot order (deterministic, no atomics).
  void do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                      Tensor& out) override {
    const int64_t T = x.rows(), H = x.cols(), K = ids.cols(), E = w.gate.shape[0], F = w.gate.shape[1];
    const int64_t n = T * K;
    if (n == 0) return;
    const cudaStream_t s = set_device_get_stream();
    Groups grp = make_groups(ids, E, s);
    // g and u are zeroed: swiglu runs over all N rows, and rows past the used ones (dropped
    // slots) are never written by the GEMMs.
    Tensor xs = scratch_f({n, H}), g = alloc({n, F}, Elem::Real), u = alloc({n, F}, Elem::Real),
           y = scratch_f({n, H});
    using cuda::WeightLayout;
    const cuda::ExpertMatrix Wg = expert_matrix(w, w.gate, w.gate_e), Wu = expert_matrix(w, w.up, w.up_e),
                             Wd = expert_matrix(w, w.down, w.down_e);
    cuda::gather_rows(f32(x), grp.g, K, H, nullptr, f32(xs), s);                        // X [N,H] by expert
    cuda::grouped_gemm(f32(xs), H, Wg, WeightLayout::OutIn, F, grp.g, f32(g), false, s);  // G [N,F]
    cuda::grouped_gemm(f32(xs), H, Wu, WeightLayout::OutIn, F, grp.g, f32(u), false, s);  // U [N,F]
    cuda::swiglu(f32(g), f32(u), n * F, f32(g), s);                                      // A = silu(G)⊙U
    cuda::grouped_gemm(f32(g), F, Wd, WeightLayout::OutIn, H, grp.g, f32(y), false, s);   // Y [N,H]
    cuda::combine_slots(f32(y), grp.g, f32(weights), T, K, H, f32(out), s);  // out[t] += Σ_k w·Y
  }

  void do_swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cuda::swiglu(f32(gate), f32(up), gate.numel(), f32(out), set_device_get_stream());
  }
  void do_add(Tensor& y, const Tensor& x) override {
    cuda::add(f32(y), f32(x), y.numel(), set_device_get_stream());
  }
  void do_row_norms(const Tensor& x, Tensor& out) override {
    cuda::row_norms(f32(x), x.rows(), x.cols(), f32(out), set_device_get_stream());
  }
  void do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) override {
    cuda::add_sigmoid_gated(f32(y), f32(x), f32(g), y.rows(), y.cols(), set_device_get_stream());
  }
  void do_noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) override {
    cuda::noisy_logits(f32(clean), f32(raw), f32(noise), clean.numel(), f32(out), set_device_get_stream());
  }

  // ---- training ----
  double do_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) override {
    const int64_t N = logits.rows(), V = logits.cols();
    const cudaStream_t s = set_device_get_stream();
    Tensor rows = scratch(size_t(N) * 8 + 16);  // [N] double row losses, then the count and the result
    double* row_loss = static_cast<double*>(rows.ptr);
    double* result = row_loss + N;
    int32_t* count = reinterpret_cast<int32_t*>(result + 1);
    cuda::cross_entropy(f32(logits), s32(targets), N, V, scale, f32(dlogits), row_loss, count, result, s);
    return download_doubles(result, 1)[0];
  }

  // dx (+)= dy · w, dw += dyᵀ · x, db += Σ_rows dy (column-major views as in linear()).
  void do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool acc, Tensor& dw,
                          Tensor* db) override {
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    const cudaStream_t s = set_device_get_stream();
    const Operand dyo = activation_operand(dy);  // rounded once for both products in bf16
    if (dx && T > 0 && K > 0) {
      if (N == 0) {
        if (!acc) cuda::fill(f32(*dx), dx->numel(), 0.0f, s);
      } else {
        gemm(CUBLAS_OP_N, CUBLAS_OP_N, K, T, N, weight_operand(w), K, dyo, N, acc, f32(*dx), K);
      }
    }
    if (T > 0 && K > 0 && N > 0) gemm(CUBLAS_OP_N, CUBLAS_OP_T, K, N, T, activation_operand(x), K, dyo, N, true, f32(dw), K);
    if (db) cuda::add_column_sums(f32(dy), T, N, f32(*db), s);  // an fp32 sum in every precision
  }

  void do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx, bool acc,
                           Tensor& dw) override {
    const int64_t C = w.numel(), R = C ? x.numel() / C : 0;
    Tensor rr = scratch(size_t(std::max<int64_t>(R, 1)) * 8);
    cuda::rmsnorm_backward(f32(x), f32(w), f32(dy), R, C, eps, f32(dx), acc, f32(dw), static_cast<double*>(rr.ptr),
                           set_device_get_stream());
  }

  void do_embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override {
    cuda::embedding_backward(s32(ids), f32(dout), ids.numel(), dtable.cols(), f32(dtable), set_device_get_stream());
  }

  void do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, int64_t B, int64_t NH,
                             int64_t NKV, int64_t D, Tensor& dq, Tensor& dk, Tensor& dv) override {
    const int64_t T = q.rows() / B;
    Tensor stats = scratch(size_t(std::max<int64_t>(1, B * T * NH)) * 3 * 4);
    cuda::attention_backward(f32(q), f32(k), f32(v), f32(dout), B, T, NH, NKV, D, f32(stats), f32(dq), f32(dk), f32(dv),
                             set_device_get_stream());
  }

  void do_swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) override {
    cuda::swiglu_backward(f32(gate), f32(up), f32(dout), gate.numel(), f32(dgate), f32(dup), set_device_get_stream());
  }

  void do_route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                         Tensor& dlogits, bool acc) override {
    const int64_t T = probs.rows(), E = probs.cols(), K = ids.cols();
    cuda::route_backward(f32(probs), s32(ids), f32(dweights), T, E, K, spec.sigmoid, spec.renormalize, f32(dlogits), acc,
                         set_device_get_stream());
  }

  std::pair<double, double> do_router_losses(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                             Tensor& dlogits) override {
    const int64_t N = logits.rows(), E = logits.cols(), K = ids.cols();
    const cudaStream_t s = set_device_get_stream();
    Tensor probs = scratch_f({std::max<int64_t>(1, N), E});
    Tensor buf = scratch(size_t(N) * 8 + 16 + size_t(E) * 4);  // z rows [N], result [2], counts [E]
    double* z_rows = static_cast<double*>(buf.ptr);
    double* result = z_rows + N;
    int32_t* counts = reinterpret_cast<int32_t*>(result + 2);
    cuda::router_losses(f32(logits), s32(ids), N, E, K, aux_coef, z_coef, f32(dlogits), counts, f32(probs), z_rows, result,
                        nullptr, s);
    const std::vector<double> r = download_doubles(result, 2);
    return {r[0], r[1]};
  }

  // The same without a wait: {aux, z} are added to sums on the device.
  void do_router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef, Tensor& dlogits,
                            Tensor& sums) override {
    const int64_t N = logits.rows(), E = logits.cols(), K = ids.cols();
    const cudaStream_t s = set_device_get_stream();
    Tensor probs = scratch_f({std::max<int64_t>(1, N), E});
    Tensor buf = scratch(size_t(N) * 8 + 16 + size_t(E) * 4);
    double* z_rows = static_cast<double*>(buf.ptr);
    double* result = z_rows + N;
    int32_t* counts = reinterpret_cast<int32_t*>(result + 2);
    cuda::router_losses(f32(logits), s32(ids), N, E, K, aux_coef, z_coef, f32(dlogits), counts, f32(probs), z_rows, result,
                        f32(sums), s);
  }

  // Backward of moe_experts: the forward's products again (kept per sorted row), then the data
  // gradient through each expert, the gate-weight gradient (a dot per slot), and the expert
  // weight gradients as grouped Σ over each expert's rows.
  void do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                               const Tensor& dout, Tensor& dx, Tensor& dweights, ExpertWeights& dw) override {
    const int64_t T = x.rows(), H = x.cols(), K = ids.cols(), E = w.gate.shape[0], F = w.gate.shape[1];
    const int64_t n = T * K;
    if (n == 0) return;
    const cudaStream_t s = set_device_get_stream();
    Groups grp = make_groups(ids, E, s);
    using cuda::WeightLayout;
    // Zeroed where element-wise kernels run over all N rows (see moe_experts).
    Tensor xs = scratch_f({n, H}), dys = scratch_f({n, H}), g = alloc({n, F}, Elem::Real),
           u = alloc({n, F}, Elem::Real), a = scratch_f({n, F}), y = scratch_f({n, H});
    // In bf16 mode every product below rounds its activation operands as it loads them and reads
    // the bf16 weight copies (the Eigen backend rounds the same operands).
    const cuda::ExpertMatrix Wg = expert_matrix(w.gate), Wu = expert_matrix(w.up), Wd = expert_matrix(w.down);
    const bool rnd = precision_ == Precision::BF16;
    cuda::gather_rows(f32(x), grp.g, K, H, nullptr, f32(xs), s);        // X   [N,H]
    cuda::gather_rows(f32(dout), grp.g, K, H, f32(weights), f32(dys), s);  // dY = w · dout [N,H]
    cuda::grouped_gemm(f32(xs), H, Wg, WeightLayout::OutIn, F, grp.g, f32(g), false, s);
    cuda::grouped_gemm(f32(xs), H, Wu, WeightLayout::OutIn, F, grp.g, f32(u), false, s);
    cuda::swiglu(f32(g), f32(u), n * F, f32(a), s);                                        // A [N,F]
    cuda::grouped_gemm(f32(a), F, Wd, WeightLayout::OutIn, H, grp.g, f32(y), false, s);    // unweighted Y [N,H]
    cuda::slot_dots(f32(dout), f32(y), grp.g, K, H, f32(dweights), s);                     // dweights = dout·Y
    Tensor da = alloc({n, F}, Elem::Real);
    cuda::grouped_gemm(f32(dys), H, Wd, WeightLayout::InOut, F, grp.g, f32(da), false, s);  // dA = dY·Wd
    Tensor dg = scratch_f({n, F}), du = scratch_f({n, F});
    cuda::swiglu_backward(f32(g), f32(u), f32(da), n * F, f32(dg), f32(du), s);
    cuda::grouped_weight_grad(f32(dys), H, f32(a), F, grp.g, f32(dw.down), rnd, s);  // dWd_e [H,F] += dYᵀ·A
    cuda::grouped_weight_grad(f32(dg), F, f32(xs), H, grp.g, f32(dw.gate), rnd, s);  // dWg_e [F,H] += dGᵀ·X
    cuda::grouped_weight_grad(f32(du), F, f32(xs), H, grp.g, f32(dw.up), rnd, s);    // dWu_e [F,H] += dUᵀ·X
    Tensor dxs = scratch_f({n, H});
    cuda::grouped_gemm(f32(dg), F, Wg, WeightLayout::InOut, H, grp.g, f32(dxs), false, s);  // dG·Wg
    cuda::grouped_gemm(f32(du), F, Wu, WeightLayout::InOut, H, grp.g, f32(dxs), true, s);   // + dU·Wu
    cuda::combine_slots(f32(dxs), grp.g, nullptr, T, K, H, f32(dx), s);                               // dx[t] += Σ_k
  }

  void do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg) override {
    cuda::sigmoid_gated_backward(f32(x), f32(g), f32(dy), x.rows(), x.cols(), f32(dx), f32(dg), set_device_get_stream());
  }

  void do_noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) override {
    cuda::noisy_logits_backward(f32(raw), f32(noise), f32(dout), raw.numel(), f32(draw), set_device_get_stream());
  }

  double do_sum_squares(const Tensor& x) override { return sum_squares_all({&x}); }  // 0 + r: r exactly

  // One result slot per tensor, one copy back; summed on the host in order, as the default does.
  double do_sum_squares_all(const std::vector<const Tensor*>& xs) override {
    if (xs.empty()) return 0.0;
    Tensor buf = scratch(size_t(cuda::kSumBlocks + xs.size()) * 8);
    double* partials = static_cast<double*>(buf.ptr);
    double* results = partials + cuda::kSumBlocks;
    const cudaStream_t s = set_device_get_stream();
    for (size_t i = 0; i < xs.size(); ++i) cuda::sum_squares(f32(*xs[i]), xs[i]->numel(), partials, results + i, s);
    double total = 0;
    for (double r : download_doubles(results, xs.size())) total += r;
    return total;
  }

  void do_scale(Tensor& x, float s) override {
    copies_->touched(x.ptr, size_t(x.numel()) * 4);
    cuda::scale(f32(x), x.numel(), s, set_device_get_stream());
  }

  void do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, float wd,
                int64_t step) override {
    not_recording("adamw");
    // The same constants as the Eigen backend, computed in double on the host.
    const double c1 = 1.0 - std::pow(double(b1), double(step)), c2 = 1.0 - std::pow(double(b2), double(step));
    // A bf16 copy of p, if products made one, is rewritten in the same pass and stays fresh.
    Bf16Copies::Entry copy;
    const bool has_copy = copies_->find(p.ptr, p.numel(), &copy);
    copies_->touched(p.ptr, size_t(p.numel()) * 4);
    cuda::adamw(f32(p), f32(g), f32(m), f32(v), p.numel(), b1, b2, float(double(lr) / c1), float(1.0 / std::sqrt(c2)),
                float(1.0 - double(lr) * double(wd)), eps,
                has_copy ? static_cast<cuda::bf16*>(copy.buf.get()) : nullptr, set_device_get_stream());
    if (has_copy) copies_->set_fresh(p.ptr, true);
  }

  // ---- recording: CUDA graphs (cuda_graph.cuh) ----
  bool can_record() const override { return true; }
  void begin_recording(const Tensor& position, int64_t max_positions) override {
    recorder_.begin(set_device_get_stream(), position, max_positions);
  }
  std::unique_ptr<OpGraph> end_recording() override { return recorder_.end(stream_, copies_); }
  void abort_recording() override { recorder_.abort(stream_); }

 private:
  static constexpr size_t kBlasWorkspace = size_t(32) << 20;

  void not_recording(const char* what) const {
    if (recorder_.active()) fail("cuda", std::string(what) + " is not possible while a decode step is being recorded");
  }

  // Makes this backend's device current for the calling thread and returns the stream of every
  // operation (always: the thread may have used another backend's device since; a host-side call).
  cudaStream_t set_device_get_stream() const {
    MOELAB_CUDA_CHECK(cudaSetDevice(device_));
    return stream_;
  }

  // ---- Precision::BF16 ----
  // The bf16 copy of weight w (made or refreshed on the stream when stale).
  const cuda::bf16* bf16_weight(const Tensor& w) {
    const int64_t n = w.numel();
    Bf16Copies::Entry e;
    bool convert = false;
    if (!copies_->find(w.ptr, n, &e)) {
      e.n = n;
      e.buf = make_tensor({(n + 1) / 2}, Elem::Int32, false).storage;
      copies_->put(w.ptr, e);
      convert = true;
    } else {
      convert = !e.fresh;
    }
    if (convert) cuda::to_bf16(f32(w), n, static_cast<cuda::bf16*>(e.buf.get()), set_device_get_stream());
    // A conversion recorded into a graph has not run yet: the copy becomes fresh only eagerly
    // (a recorded step whose weights were stale converts them at every replay: right, if slower).
    if (convert && !recorder_.active()) copies_->set_fresh(w.ptr, true);
    recorder_.keep(e.buf);
    if (!convert && recorder_.active()) recorder_.keep_copy({f32(w), n, e.buf});  // replay() refreshes it when stale
    return static_cast<const cuda::bf16*>(e.buf.get());
  }

  // ---- dense products: cuBLAS ----
  // An operand of a product: its fp32 values and, in Precision::BF16, their bf16 rounding (a
  // weight's cached copy, or an activation rounded into `rounded`, which keeps it alive).
  struct Operand {
    const float* f32 = nullptr;
    const cuda::bf16* b16 = nullptr;
    Tensor rounded;
  };
  Operand weight_operand(const Tensor& w) {
    Operand o;
    o.f32 = f32(w);
    if (precision_ == Precision::BF16) o.b16 = bf16_weight(w);
    return o;
  }
  cuda::ExpertMatrix expert_matrix(const Tensor& w) {  // the same for the grouped expert kernels
    const Operand o = weight_operand(w);
    return {o.f32, o.b16, nullptr, o.b16 != nullptr};
  }
  // One stacked matrix of a layer's experts: fp32 as above, or kept as stored. Stored experts are
  // one device stack per matrix, each expert a view of it (Model::load on a backend that keeps
  // stored weights makes them so); the grouped kernels index that stack by expert.
  cuda::ExpertMatrix expert_matrix(const ExpertWeights& w, const Tensor& stack, const std::vector<Tensor>& views) {
    if (!w.per_expert()) return expert_matrix(stack);
    const int64_t per = stack.numel() / stack.shape[0];
    for (size_t e = 0; e < views.size(); ++e)
      if (views[e].ptr != static_cast<const char*>(stack.ptr) + int64_t(e) * per * 2)
        fail("cuda", "experts kept as stored must be one device stack per matrix (load the model on this backend)");
    cuda::ExpertMatrix m;
    if (stack.type == Elem::F16) m.h16 = static_cast<const cuda::f16*>(stack.ptr);
    else m.b16 = static_cast<const cuda::bf16*>(stack.ptr);
    m.round_bf16 = precision_ == Precision::BF16;
    return m;
  }
  // A weight kept as stored, for kernels_stored.cu (rounding as the precision asks).
  cuda::StoredMatrix stored_matrix(const Tensor& w) const {
    return {w.ptr, w.type == Elem::F16, precision_ == Precision::BF16};
  }
  Operand activation_operand(const Tensor& x) {
    Operand o;
    o.f32 = f32(x);
    if (precision_ == Precision::BF16) {
      o.rounded = make_tensor({(x.numel() + 1) / 2}, Elem::Int32, false);
      o.b16 = b16(o.rounded);
      cuda::to_bf16(f32(x), x.numel(), b16(o.rounded), set_device_get_stream());
    }
    return o;
  }
  // C (+)= op(A) · op(B), column-major as cublasSgemm. fp32 (TF32 tensor cores when the handle's
  // math mode says so), or in Precision::BF16 bf16 A and B with fp32 C and sums.
  void gemm(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k, const Operand& A,
            int64_t lda, const Operand& B, int64_t ldb, bool accumulate, float* C, int64_t ldc) {
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const int M = as_int(m, "gemm m"), N = as_int(n, "gemm n"), K = as_int(k, "gemm k");
    const int LDA = as_int(lda, "gemm lda"), LDB = as_int(ldb, "gemm ldb"), LDC = as_int(ldc, "gemm ldc");
    if (precision_ == Precision::BF16)
      MOELAB_CUBLAS_CHECK(cublasGemmEx(blas_, op_a, op_b, M, N, K, &one, A.b16, CUDA_R_16BF, LDA, B.b16, CUDA_R_16BF, LDB,
                                       &beta, C, CUDA_R_32F, LDC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    else
      MOELAB_CUBLAS_CHECK(cublasSgemm(blas_, op_a, op_b, M, N, K, &one, A.f32, LDA, B.f32, LDB, &beta, C, LDC));
  }

  Tensor make_tensor(std::vector<int64_t> shape, Elem type, bool zero) {
    Tensor t;
    t.shape = std::move(shape);
    t.type = type;
    for (int64_t d : t.shape) MOELAB_ASSERT(d >= 0, "negative tensor dimension");
    const size_t bytes = DevicePool::round_bytes(size_t(t.numel()) * elem_bytes(type));
    const cudaStream_t s = set_device_get_stream();
    t.storage = pooled_buffer(pool_, copies_, bytes);
    t.ptr = t.storage.get();
    if (zero) MOELAB_CUDA_CHECK(cudaMemsetAsync(t.ptr, 0, bytes, s));
    recorder_.keep(t.storage);
    return t;
  }
  // Uninitialised device memory for intermediates that are written before they are read.
  Tensor scratch(size_t bytes) { return make_tensor({int64_t((bytes + 3) / 4)}, Elem::Int32, false); }
  Tensor scratch_f(std::vector<int64_t> shape) { return make_tensor(std::move(shape), Elem::Real, false); }

  static int64_t checked_range(const Tensor& t, int64_t offset, int64_t count, const char* what) {
    if (count < 0) count = t.numel() - offset;
    MOELAB_ASSERT(offset >= 0 && count >= 0 && offset + count <= t.numel(), what);
    return count;
  }

  std::vector<double> download_doubles(const double* dev, size_t n) {
    not_recording("reading a result back");
    std::vector<double> host(n);
    const cudaStream_t s = set_device_get_stream();
    MOELAB_CUDA_CHECK(cudaMemcpyAsync(host.data(), dev, n * sizeof(double), cudaMemcpyDeviceToHost, s));
    MOELAB_CUDA_CHECK(cudaStreamSynchronize(s));
    return host;
  }

  static const float* bias_of(const RouterSpec& spec, int64_t E) {
    if (spec.selection_bias.empty()) return nullptr;
    MOELAB_ASSERT(spec.selection_bias.numel() == E, "selection bias shape");
    return f32(spec.selection_bias);
  }

  // Device buffers of one grouping of slots by expert (see cuda::ExpertGroups).
  struct Groups {
    Tensor storage;
    cuda::ExpertGroups g;
  };
  Groups make_groups(const Tensor& ids, int64_t E, cudaStream_t s) {
    MOELAB_ASSERT(ids.type == Elem::Int32 && E >= 1, "expert ids");
    const int64_t n = ids.numel();
    MOELAB_ASSERT(n < INT_MAX, "too many expert slots");
    Groups grp;
    grp.storage = scratch(size_t(cuda::expert_groups_ints(n, E)) * 4);
    grp.g = cuda::expert_groups_in(s32(grp.storage), n, E);
    cuda::group_by_expert(s32(ids), grp.g, s);
    return grp;
  }

  // cos/sin of position p and frequency i, built on the host exactly as the Eigen backend builds
  // its table (fp32 angle, std::cos/std::sin), so both backends rotate by the same numbers.
  struct RopeTable {
    int64_t D = 0, positions = 0;
    RopeSpec rope{0.0};
    std::vector<float> cos_host, sin_host;
    Tensor cos, sin;  // [positions, D/2]
  };
  void ensure_rope_table(int64_t D, const RopeSpec& rope, int64_t positions) {
    if (rope_.D == D && rope_.rope == rope && rope_.positions >= positions) return;
    const int64_t half = D / 2, n = std::max<int64_t>(positions, 256);
    rope_.cos_host.assign(size_t(n * half), 0.0f);
    rope_.sin_host.assign(size_t(n * half), 0.0f);
    for (int64_t i = 0; i < half; ++i) {
      const float inv_freq = rope_inv_freq(rope, i, D);
      for (int64_t p = 0; p < n; ++p) {
        const float ang = float(p) * inv_freq;
        rope_.cos_host[size_t(p * half + i)] = std::cos(ang);
        rope_.sin_host[size_t(p * half + i)] = std::sin(ang);
      }
    }
    rope_.cos = make_tensor({n, half}, Elem::Real, false);
    rope_.sin = make_tensor({n, half}, Elem::Real, false);
    if (recorder_.active()) {  // the main stream is being captured (and idle): upload beside it, now
      const size_t bytes = size_t(n * half) * sizeof(float);
      MOELAB_CUDA_CHECK(cudaMemcpyAsync(rope_.cos.ptr, rope_.cos_host.data(), bytes, cudaMemcpyHostToDevice, side_));
      MOELAB_CUDA_CHECK(cudaMemcpyAsync(rope_.sin.ptr, rope_.sin_host.data(), bytes, cudaMemcpyHostToDevice, side_));
      MOELAB_CUDA_CHECK(cudaStreamSynchronize(side_));
    } else {
      upload(rope_.cos, rope_.cos_host.data(), 0, -1);
      upload(rope_.sin, rope_.sin_host.data(), 0, -1);
    }
    rope_.D = D;
    rope_.rope = rope;
    rope_.positions = n;
  }

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

}  // namespace

std::shared_ptr<Backend> make_cuda_backend(int device) {
  std::string why;
  if (!cuda_device_available(&why, device)) fail("cuda", why);
  return std::make_shared<CudaBackend>(device);
}

}  // namespace moelab
