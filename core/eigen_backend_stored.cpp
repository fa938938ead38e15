// The CPU backend's paths for weights kept as stored: bf16/f16 tensors that are views of a
// checkpoint's memory map (Backend::maps_stored_weights), read 2 bytes an element and summed in
// fp32 (lowp.hpp), never widened whole. Inference only: training needs fp32 weights.
#include <cmath>
#include <cstring>

#include "eigen_backend_internal.hpp"
#include "lowp.hpp"
#include "safetensors.hpp"

namespace moelab::eigen_cpu {
namespace {

using MapM = Eigen::Map<Mat<float>>;
using CMapM = Eigen::Map<const Mat<float>>;

const uint16_t* lowp(const Tensor& t) { return static_cast<const uint16_t*>(t.ptr); }
LowpType lowp_type(const Tensor& t) { return t.type == Elem::BF16 ? LowpType::BF16 : LowpType::F16; }
float silu(float x) { return x / (1.0f + std::exp(-x)); }
void round_all(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = bf16_round(p[i]);
}

// Decode (a token or two per active expert): the weights' bytes are the whole cost, so every
// active expert's gate and up rows are spread over the threads in one parallel region, then
// every down row in a second one (two barriers per layer instead of three per expert, and both
// threads stream equal shares of the bytes).
void experts_stored_decode(const float* x, int64_t H, const Groups& g, int64_t K, const ExpertWeights& w, int64_t F,
                           StoredScratch& scratch, float* slot_out) {
  const int64_t A = int64_t(g.active.size()), used = g.begin.back();
  constexpr int64_t kRows = 32;  // rows per work item
  // Per slot (expert order): its input row [used, H], gate and up outputs [used, F].
  std::vector<float>& xs = scratch.x;
  std::vector<float>& gu = scratch.gu;
  xs.resize(size_t(used * H));
  gu.resize(size_t(2 * used * F));
  for (int64_t s = 0; s < used; ++s)
    std::memcpy(xs.data() + s * H, x + (g.order[size_t(s)] / K) * H, size_t(H) * sizeof(float));
  const int64_t fb = (F + kRows - 1) / kRows, hb = (H + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < A * 2 * fb; ++item) {
    const int64_t ai = item / (2 * fb), which = (item / fb) % 2, blk = item % fb;
    const int64_t e = g.active[size_t(ai)], b = g.begin[size_t(e)], n = g.begin[size_t(e + 1)] - b;
    const Tensor& W = which == 0 ? w.gate_e[size_t(e)] : w.up_e[size_t(e)];
    linear_lowp_rows(xs.data() + b * H, n, H, lowp(W), lowp_type(W), blk * kRows, std::min(F, (blk + 1) * kRows),
                     gu.data() + (which * used + b) * F, F, false);
  }
  for (int64_t i = 0; i < used * F; ++i) gu[size_t(i)] = silu(gu[size_t(i)]) * gu[size_t(used * F + i)];
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < A * hb; ++item) {
    const int64_t ai = item / hb, blk = item % hb;
    const int64_t e = g.active[size_t(ai)], b = g.begin[size_t(e)], n = g.begin[size_t(e + 1)] - b;
    const Tensor& W = w.down_e[size_t(e)];
    linear_lowp_rows(gu.data() + b * F, n, F, lowp(W), lowp_type(W), blk * kRows, std::min(H, (blk + 1) * kRows),
                     slot_out + b * H, H, false);
  }
}

}  // namespace

void linear_stored(const float* x, int64_t T, int64_t K, const Tensor& w, int64_t N, float* y, bool accumulate,
                   bool bf16) {
  // In bf16 mode the activations are rounded too, as every product's operands are.
  std::vector<float> xb;
  const float* X = x;
  if (bf16) {
    xb.assign(x, x + T * K);
    round_all(xb.data(), T * K);
    X = xb.data();
  }
  if (bf16 && w.type == Elem::F16) {  // bf16 mode rounds f16 weights to bf16 too: widen, round
    std::vector<float> wb(size_t(N * K));
    lowp_to_f32(lowp(w), LowpType::F16, wb.data(), N * K);
    round_all(wb.data(), N * K);
    if (T == 1) gemv(wb.data(), X, y, N, K, accumulate);
    else if (accumulate) MapM(y, T, N).noalias() += CMapM(X, T, K) * CMapM(wb.data(), N, K).transpose();
    else MapM(y, T, N).noalias() = CMapM(X, T, K) * CMapM(wb.data(), N, K).transpose();
    return;
  }
  linear_lowp(X, T, K, lowp(w), lowp_type(w), N, y, N, accumulate);
}

void embedding_stored(const Tensor& table, const int32_t* ids, int64_t T, float* out) {
  const int64_t H = table.cols();
  for (int64_t t = 0; t < T; ++t) lowp_to_f32(lowp(table) + int64_t(ids[t]) * H, lowp_type(table), out + t * H, H);
}

template <class H>
void widen_stored(const Tensor& src, int64_t offset, int64_t count, H* host) {
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t v = lowp(src)[offset + i];
    host[i] = H(src.type == Elem::BF16 ? bf16_to_float(v) : half_to_float(v));
  }
}
template void widen_stored<float>(const Tensor&, int64_t, int64_t, float*);
template void widen_stored<double>(const Tensor&, int64_t, int64_t, double*);

// Each active expert's tokens through its own views; few tokens per expert (decode) parallelise
// inside each product, many across experts.
void experts_stored(const float* x, int64_t H, const Groups& g, int64_t K, const ExpertWeights& w, int64_t F,
                    bool bf16, StoredScratch& scratch, float* slot_out) {
  const auto run = [&](size_t ai) {
    const int64_t e = g.active[ai], b = g.begin[size_t(e)], n = g.begin[size_t(e + 1)] - b;
    Mat<float> Xe(n, H);
    for (int64_t i = 0; i < n; ++i) Xe.row(i) = CMapM(x + (g.order[size_t(b + i)] / K) * H, 1, H);
    if (bf16) round_all(Xe.data(), Xe.size());
    Mat<float> A(n, F), U(n, F);
    // Xe and A are rounded already in bf16 mode; linear_stored's own rounding is then a no-op.
    linear_stored(Xe.data(), n, H, w.gate_e[size_t(e)], F, A.data(), false, bf16);
    linear_stored(Xe.data(), n, H, w.up_e[size_t(e)], F, U.data(), false, bf16);
    for (int64_t i = 0; i < n * F; ++i) A.data()[i] = silu(A.data()[i]) * U.data()[i];
    if (bf16) round_all(A.data(), A.size());
    linear_stored(A.data(), n, F, w.down_e[size_t(e)], H, slot_out + b * H, false, bf16);
  };
  const int64_t used = g.begin.back();
  if (used <= int64_t(2 * g.active.size()) && !bf16) {
    experts_stored_decode(x, H, g, K, w, F, scratch, slot_out);
  } else if (used <= int64_t(2 * g.active.size())) {  // a token or two per expert: threads inside
    for (size_t ai = 0; ai < g.active.size(); ++ai) run(ai);
  } else {
#pragma omp parallel for schedule(dynamic) if (g.active.size() > 1)
    for (size_t ai = 0; ai < g.active.size(); ++ai) run(ai);
  }
}

}  // namespace moelab::eigen_cpu
