// The CUDA backend's operations (see cuda_backend.cu for the backend as a whole): forward and
// training ops as kernels of kernels_*.cu enqueued on the backend's stream, dense products as
// cuBLAS calls, the MoE expert FFN as grouped GEMMs over slots sorted by expert.
//
// The semantics are the Eigen backend's (core/eigen_backend.cpp), op for op, including top-k tie
// breaking, capacity order, -1 for dropped slots and the accumulate flags; tests/test_gpu_parity
// compares the two.
#include <algorithm>
#include <climits>
#include <cmath>
#include <vector>

#include "cuda_backend_impl.cuh"

namespace moelab {
namespace {

int as_int(int64_t v, const char* what) {
  MOELAB_ASSERT(v >= 0 && v <= INT_MAX, std::string(what) + " exceeds cuBLAS's int range");
  return int(v);
}

}  // namespace

void CudaBackend::do_fill(Tensor& t, float value) {
  copies_->touched(t.ptr, size_t(t.numel()) * 4);
  cuda::fill(f32(t), t.numel(), value, set_device_get_stream());
}

void CudaBackend::do_copy(const Tensor& src, Tensor& dst) {
  if (src.numel() == 0 || src.ptr == dst.ptr) return;
  copies_->touched(dst.ptr, size_t(dst.numel()) * 4);
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, src.ptr, size_t(src.numel()) * elem_bytes(src.type), cudaMemcpyDeviceToDevice,
                                    set_device_get_stream()));
}

void CudaBackend::do_embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  if (is_stored_lowp(table.type)) {
    cuda::stored_embedding(stored_matrix(table), s32(ids), ids.numel(), table.cols(), f32(out), set_device_get_stream());
    return;
  }
  cuda::embedding(f32(table), s32(ids), ids.numel(), table.cols(), f32(out), set_device_get_stream());
}

// out [T,N] = x [T,K] · w [N,K]ᵀ. cuBLAS is column-major: there out is [N,T] = wᵀ(as [K,N])ᵀ · x(as [K,T]).
void CudaBackend::do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) {
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

void CudaBackend::do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  const int64_t C = w.numel(), R = C ? x.numel() / C : 0;
  cuda::rmsnorm(f32(x), f32(w), R, C, eps, f32(out), set_device_get_stream());
}

void CudaBackend::do_clamp(Tensor& x, float lo, float hi) {
  copies_->touched(x.ptr, size_t(x.numel()) * 4);
  cuda::clamp(f32(x), x.numel(), lo, hi, set_device_get_stream());
}

void CudaBackend::do_rope(Tensor& x, int64_t n_heads, int64_t D, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
                          bool inverse) {
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

void CudaBackend::do_copy_rows(const Tensor& src, Tensor& dst, int64_t row0) {
  if (src.numel() == 0) return;
  copies_->touched(dst.ptr, size_t(dst.numel()) * 4);
  if (recorder_.active()) {  // the row comes from the device at replay
    cuda::copy_rows_at(f32(src), src.rows(), src.cols(), recorder_.position(), f32(dst), set_device_get_stream());
    return;
  }
  MOELAB_CUDA_CHECK(cudaMemcpyAsync(f32(dst) + row0 * dst.cols(), f32(src), size_t(src.numel()) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, set_device_get_stream()));
}

void CudaBackend::do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t past, int64_t NH,
                               int64_t NKV, int64_t D, Tensor& out) {
  const int64_t T = q.rows() / B, S = k.rows() / B;
  cuda::attention(f32(q), f32(k), f32(v), B, T, S, past, recorder_.position(), NH, NKV, D, f32(out),
                  set_device_get_stream());
}

void CudaBackend::do_route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) {
  const int64_t T = logits.rows(), E = logits.cols(), K = spec.top_k;
  cuda::route(f32(logits), T, E, K, spec.sigmoid, spec.renormalize, bias_of(spec, E), f32(probs), s32(ids), f32(weights),
              set_device_get_stream());
}

void CudaBackend::do_limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids,
                                    Tensor& weights, Tensor& dropped) {
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
void CudaBackend::do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                                 Tensor& out) {
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

void CudaBackend::do_swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  cuda::swiglu(f32(gate), f32(up), gate.numel(), f32(out), set_device_get_stream());
}

void CudaBackend::do_add(Tensor& y, const Tensor& x) {
  cuda::add(f32(y), f32(x), y.numel(), set_device_get_stream());
}

void CudaBackend::do_row_norms(const Tensor& x, Tensor& out) {
  cuda::row_norms(f32(x), x.rows(), x.cols(), f32(out), set_device_get_stream());
}

void CudaBackend::do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) {
  cuda::add_sigmoid_gated(f32(y), f32(x), f32(g), y.rows(), y.cols(), set_device_get_stream());
}

void CudaBackend::do_noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) {
  cuda::noisy_logits(f32(clean), f32(raw), f32(noise), clean.numel(), f32(out), set_device_get_stream());
}

double CudaBackend::do_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) {
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
void CudaBackend::do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool acc,
                                     Tensor& dw, Tensor* db) {
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

void CudaBackend::do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx,
                                      bool acc, Tensor& dw) {
  const int64_t C = w.numel(), R = C ? x.numel() / C : 0;
  Tensor rr = scratch(size_t(std::max<int64_t>(R, 1)) * 8);
  cuda::rmsnorm_backward(f32(x), f32(w), f32(dy), R, C, eps, f32(dx), acc, f32(dw), static_cast<double*>(rr.ptr),
                         set_device_get_stream());
}

void CudaBackend::do_embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  cuda::embedding_backward(s32(ids), f32(dout), ids.numel(), dtable.cols(), f32(dtable), set_device_get_stream());
}

void CudaBackend::do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                                        int64_t B, int64_t NH, int64_t NKV, int64_t D, Tensor& dq, Tensor& dk,
                                        Tensor& dv) {
  const int64_t T = q.rows() / B;
  Tensor stats = scratch(size_t(std::max<int64_t>(1, B * T * NH)) * 3 * 4);
  cuda::attention_backward(f32(q), f32(k), f32(v), f32(dout), B, T, NH, NKV, D, f32(stats), f32(dq), f32(dk), f32(dv),
                           set_device_get_stream());
}

void CudaBackend::do_swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                     Tensor& dup) {
  cuda::swiglu_backward(f32(gate), f32(up), f32(dout), gate.numel(), f32(dgate), f32(dup), set_device_get_stream());
}

void CudaBackend::do_route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights,
                                    const RouterSpec& spec, Tensor& dlogits, bool acc) {
  const int64_t T = probs.rows(), E = probs.cols(), K = ids.cols();
  cuda::route_backward(f32(probs), s32(ids), f32(dweights), T, E, K, spec.sigmoid, spec.renormalize, f32(dlogits), acc,
                       set_device_get_stream());
}

std::pair<double, double> CudaBackend::do_router_losses(const Tensor& logits, const Tensor& ids, float aux_coef,
                                                        float z_coef, Tensor& dlogits) {
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
void CudaBackend::do_router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                       Tensor& dlogits, Tensor& sums) {
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
void CudaBackend::do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights,
                                          const ExpertWeights& w, const Tensor& dout, Tensor& dx, Tensor& dweights,
                                          ExpertWeights& dw) {
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

void CudaBackend::do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx,
                                            Tensor& dg) {
  cuda::sigmoid_gated_backward(f32(x), f32(g), f32(dy), x.rows(), x.cols(), f32(dx), f32(dg), set_device_get_stream());
}

void CudaBackend::do_noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) {
  cuda::noisy_logits_backward(f32(raw), f32(noise), f32(dout), raw.numel(), f32(draw), set_device_get_stream());
}

// One result slot per tensor, one copy back; summed on the host in order, as the default does.
double CudaBackend::do_sum_squares_all(const std::vector<const Tensor*>& xs) {
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

void CudaBackend::do_scale(Tensor& x, float s) {
  copies_->touched(x.ptr, size_t(x.numel()) * 4);
  cuda::scale(f32(x), x.numel(), s, set_device_get_stream());
}

void CudaBackend::do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps,
                           float wd, int64_t step) {
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

void CudaBackend::gemm(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k,
                       const Operand& A, int64_t lda, const Operand& B, int64_t ldb, bool accumulate, float* C,
                       int64_t ldc) {
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int M = as_int(m, "gemm m"), N = as_int(n, "gemm n"), K = as_int(k, "gemm k");
  const int LDA = as_int(lda, "gemm lda"), LDB = as_int(ldb, "gemm ldb"), LDC = as_int(ldc, "gemm ldc");
  if (precision_ == Precision::BF16)
    MOELAB_CUBLAS_CHECK(cublasGemmEx(blas_, op_a, op_b, M, N, K, &one, A.b16, CUDA_R_16BF, LDA, B.b16, CUDA_R_16BF, LDB,
                                     &beta, C, CUDA_R_32F, LDC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  else
    MOELAB_CUBLAS_CHECK(cublasSgemm(blas_, op_a, op_b, M, N, K, &one, A.f32, LDA, B.f32, LDB, &beta, C, LDC));
}

const float* CudaBackend::bias_of(const RouterSpec& spec, int64_t E) {
  if (spec.selection_bias.empty()) return nullptr;
  MOELAB_ASSERT(spec.selection_bias.numel() == E, "selection bias shape");
  return f32(spec.selection_bias);
}

CudaBackend::Groups CudaBackend::make_groups(const Tensor& ids, int64_t E, cudaStream_t s) {
  MOELAB_ASSERT(ids.type == Elem::Int32 && E >= 1, "expert ids");
  const int64_t n = ids.numel();
  MOELAB_ASSERT(n < INT_MAX, "too many expert slots");
  Groups grp;
  grp.storage = scratch(size_t(cuda::expert_groups_ints(n, E)) * 4);
  grp.g = cuda::expert_groups_in(s32(grp.storage), n, E);
  cuda::group_by_expert(s32(ids), grp.g, s);
  return grp;
}

void CudaBackend::ensure_rope_table(int64_t D, const RopeSpec& rope, int64_t positions) {
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

}  // namespace moelab
