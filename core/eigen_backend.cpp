// The CPU reference backend: Eigen for matrix products, plain loops for the rest. Host memory,
// 64-byte aligned. Parallel over heads / experts / rows with OpenMP where there is enough work.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include <Eigen/Dense>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.hpp"
#include "error.hpp"

namespace moelab {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapMat = Eigen::Map<RowMat, Eigen::Aligned64>;
using MapMatU = Eigen::Map<RowMat>;
using CMapMatU = Eigen::Map<const RowMat>;
using StridedC = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Strided = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

class EigenBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  Tensor alloc(std::vector<int64_t> shape, TType type) override {
    Tensor t;
    t.shape = std::move(shape);
    t.type = type;
    const size_t bytes = std::max<size_t>(64, (size_t(t.numel()) * 4 + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw Error("out of memory allocating " + human_bytes(double(bytes)));
    std::memset(p, 0, bytes);
    t.storage = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
    t.ptr = p;
    return t;
  }
  void upload(Tensor& dst, const void* host, int64_t offset, int64_t count) override {
    if (count < 0) count = dst.numel() - offset;
    MOELAB_ASSERT(offset >= 0 && offset + count <= dst.numel(), "upload range");
    std::memcpy(static_cast<char*>(dst.ptr) + offset * 4, host, size_t(count) * 4);
  }
  void download(const Tensor& src, void* host, int64_t offset, int64_t count) override {
    if (count < 0) count = src.numel() - offset;
    MOELAB_ASSERT(offset >= 0 && offset + count <= src.numel(), "download range");
    std::memcpy(host, static_cast<const char*>(src.ptr) + offset * 4, size_t(count) * 4);
  }
  bool host_accessible() const override { return true; }

  void embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    const int64_t T = ids.numel(), H = table.cols();
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(out.f32() + t * H, table.f32() + int64_t(ids.i32()[t]) * H, size_t(H) * 4);
  }

  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) override {
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    MOELAB_ASSERT(w.cols() == K && out.rows() == T && out.cols() == N, "linear shapes");
    CMapMatU X(x.f32(), T, K), W(w.f32(), N, K);
    MapMatU Y(out.f32(), T, N);
    if (T == 1) {
      // Decode: one row, a matrix-vector product; split output rows across threads.
      gemv(w.f32(), x.f32(), out.f32(), N, K, accumulate);
    } else if (accumulate) {
      Y.noalias() += X * W.transpose();
    } else {
      Y.noalias() = X * W.transpose();
    }
    if (bias) Y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias->f32(), N);
  }

  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t C = w.numel(), R = x.numel() / C;
    const float* wp = w.f32();
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = x.f32() + r * C;
      float* yr = out.f32() + r * C;
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * xr[c];
      const float inv = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv * wp[c];
    }
  }

  void clamp(Tensor& x, float lo, float hi) override {
    float* p = x.f32();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) p[i] = std::min(hi, std::max(lo, p[i]));
  }

  void rope(Tensor& x, int64_t n_heads, int64_t D, int64_t pos0, double theta) override {
    const int64_t T = x.rows(), half = D / 2, stride = n_heads * D;
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        // inv_freq_i = theta^(-2i/D), computed in fp32 like the reference implementations.
        const float inv_freq = 1.0f / float(std::pow(theta, double(2 * i) / double(D)));
        const float ang = float(pos0 + t) * inv_freq;
        cs[size_t(i)] = std::cos(ang);
        sn[size_t(i)] = std::sin(ang);
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x.f32() + t * stride + h * D;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[size_t(i)] - b * sn[size_t(i)];
          v[i + half] = b * cs[size_t(i)] + a * sn[size_t(i)];
        }
      }
    }
  }

  void copy_rows(const Tensor& src, Tensor& dst, int64_t row0) override {
    MOELAB_ASSERT(src.cols() == dst.cols() && row0 + src.rows() <= dst.rows(), "copy_rows shapes");
    std::memcpy(dst.f32() + row0 * dst.cols(), src.f32(), size_t(src.numel()) * 4);
  }

  void attention(const Tensor& q, const Tensor& kc, const Tensor& vc, int64_t past, int64_t NH, int64_t NKV,
                 int64_t D, Tensor& out) override {
    const int64_t T = q.rows(), S = past + T, group = NH / NKV;
    const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel for schedule(static) if (T * S * NH > 32768)
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t g = h / group;
      StridedC Q(q.f32() + h * D, T, D, Eigen::OuterStride<>(NH * D));
      StridedC Kh(kc.f32() + g * D, S, D, Eigen::OuterStride<>(NKV * D));
      StridedC Vh(vc.f32() + g * D, S, D, Eigen::OuterStride<>(NKV * D));
      RowMat P = (Q * Kh.transpose()) * scale;  // [T,S]
      for (int64_t t = 0; t < T; ++t) {
        const int64_t visible = past + t + 1;  // causal: keys 0..past+t
        float m = -INFINITY;
        for (int64_t s = 0; s < visible; ++s) m = std::max(m, P(t, s));
        float sum = 0.0f;
        for (int64_t s = 0; s < visible; ++s) sum += (P(t, s) = std::exp(P(t, s) - m));
        const float inv = 1.0f / sum;
        for (int64_t s = 0; s < visible; ++s) P(t, s) *= inv;
        for (int64_t s = visible; s < S; ++s) P(t, s) = 0.0f;
      }
      Strided O(out.f32() + h * D, T, D, Eigen::OuterStride<>(NH * D));
      O.noalias() = P * Vh;
    }
  }

  void route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) override {
    const int64_t T = logits.rows(), E = logits.cols(), K = spec.top_k;
    std::vector<int32_t> order(static_cast<size_t>(E));
    std::vector<float> sel(static_cast<size_t>(E));
    const float* bias = spec.selection_bias ? spec.selection_bias->f32() : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      const float* l = logits.f32() + t * E;
      float* p = probs.f32() + t * E;
      if (spec.sigmoid) {
        for (int64_t e = 0; e < E; ++e) p[e] = 1.0f / (1.0f + std::exp(-l[e]));
      } else {
        const float m = *std::max_element(l, l + E);
        float sum = 0.0f;
        for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(l[e] - m));
        for (int64_t e = 0; e < E; ++e) p[e] /= sum;
      }
      // Choose by score (+ selection bias); highest first, equal scores keep the lower index.
      for (int64_t e = 0; e < E; ++e) sel[size_t(e)] = bias ? p[e] + bias[e] : p[e];
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(), [&sel](int32_t a, int32_t b) {
        return sel[size_t(a)] > sel[size_t(b)] || (sel[size_t(a)] == sel[size_t(b)] && a < b);
      });
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += p[order[size_t(k)]];
      for (int64_t k = 0; k < K; ++k) {
        ids.i32()[t * K + k] = order[size_t(k)];
        weights.f32()[t * K + k] = spec.renormalize ? p[order[size_t(k)]] / sum : p[order[size_t(k)]];
      }
    }
  }

  void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                   Tensor& out) override {
    const int64_t T = x.rows(), H = x.cols(), K = ids.cols(), E = w.gate.shape[0], F = w.gate.shape[1];
    // Counting sort of the T·K slots by expert: slots of expert e are order[begin[e]..begin[e+1]).
    std::vector<int64_t> begin(size_t(E + 1), 0), order(size_t(T * K));
    for (int64_t s = 0; s < T * K; ++s)
      if (ids.i32()[s] >= 0) ++begin[size_t(ids.i32()[s]) + 1];
    for (int64_t e = 0; e < E; ++e) begin[size_t(e + 1)] += begin[size_t(e)];
    std::vector<int64_t> fill(begin.begin(), begin.end() - 1);
    for (int64_t s = 0; s < T * K; ++s)
      if (ids.i32()[s] >= 0) order[size_t(fill[size_t(ids.i32()[s])]++)] = s;
    const int64_t used = begin[size_t(E)];
    slot_out_.resize(size_t(used * H));
    std::vector<int64_t> active;
    for (int64_t e = 0; e < E; ++e)
      if (begin[size_t(e + 1)] > begin[size_t(e)]) active.push_back(e);
    // Each active expert: gather its tokens, three GEMMs, write its slots' outputs.
#pragma omp parallel for schedule(dynamic) if (active.size() > 1)
    for (size_t ai = 0; ai < active.size(); ++ai) {
      const int64_t e = active[ai], b = begin[size_t(e)], n = begin[size_t(e + 1)] - b;
      RowMat Xe(n, H);
      for (int64_t i = 0; i < n; ++i) Xe.row(i) = CMapMatU(x.f32() + (order[size_t(b + i)] / K) * H, 1, H);
      CMapMatU Wg(w.gate.f32() + e * F * H, F, H), Wu(w.up.f32() + e * F * H, F, H), Wd(w.down.f32() + e * H * F, H, F);
      RowMat A(n, F), U(n, F);
      if (n == 1) {
        gemv_serial(Wg.data(), Xe.data(), A.data(), F, H);
        gemv_serial(Wu.data(), Xe.data(), U.data(), F, H);
      } else {
        A.noalias() = Xe * Wg.transpose();
        U.noalias() = Xe * Wu.transpose();
      }
      for (int64_t i = 0; i < n * F; ++i) A.data()[i] = silu(A.data()[i]) * U.data()[i];
      MapMatU Ye(slot_out_.data() + b * H, n, H);
      if (n == 1)
        gemv_serial(Wd.data(), A.data(), Ye.data(), H, F);
      else
        Ye.noalias() = A * Wd.transpose();
    }
    // Combine in slot order per token (deterministic): out[t] += w[t,k] · y[slot].
    std::vector<int64_t> pos_of_slot(size_t(T * K), -1);
    for (int64_t i = 0; i < used; ++i) pos_of_slot[size_t(order[size_t(i)])] = i;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = pos_of_slot[size_t(t * K + k)];
        if (i < 0) continue;
        const float g = weights.f32()[t * K + k];
        float* o = out.f32() + t * H;
        const float* y = slot_out_.data() + i * H;
        for (int64_t c = 0; c < H; ++c) o[c] += g * y[c];
      }
  }

  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    for (int64_t i = 0, n = gate.numel(); i < n; ++i) out.f32()[i] = silu(gate.f32()[i]) * up.f32()[i];
  }

  void add(Tensor& y, const Tensor& x) override {
    for (int64_t i = 0, n = y.numel(); i < n; ++i) y.f32()[i] += x.f32()[i];
  }

  void add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) override {
    const int64_t T = y.rows(), H = y.cols();
    for (int64_t t = 0; t < T; ++t) {
      const float s = 1.0f / (1.0f + std::exp(-g.f32()[t]));
      for (int64_t c = 0; c < H; ++c) y.f32()[t * H + c] += s * x.f32()[t * H + c];
    }
  }

 private:
  // y[N] = W[N,K] · x[K], rows split across threads (decode is memory-bound: both cores stream).
  static void gemv(const float* W, const float* x, float* y, int64_t N, int64_t K, bool accumulate) {
    Eigen::Map<const Eigen::VectorXf> xv(x, K);
#pragma omp parallel if (N * K >= 65536)
    {
      int64_t nt = 1, id = 0;
#ifdef _OPENMP
      nt = omp_get_num_threads();
      id = omp_get_thread_num();
#endif
      const int64_t chunk = (N + nt - 1) / nt, r0 = std::min(N, id * chunk), r1 = std::min(N, r0 + chunk);
      if (r1 > r0) {
        CMapMatU Wp(W + r0 * K, r1 - r0, K);
        Eigen::Map<Eigen::VectorXf> yv(y + r0, r1 - r0);
        if (accumulate)
          yv.noalias() += Wp * xv;
        else
          yv.noalias() = Wp * xv;
      }
    }
  }
  static void gemv_serial(const float* W, const float* x, float* y, int64_t N, int64_t K) {
    Eigen::Map<Eigen::VectorXf>(y, N).noalias() = CMapMatU(W, N, K) * Eigen::Map<const Eigen::VectorXf>(x, K);
  }

  std::vector<float> slot_out_;  // [used slots, H] expert outputs before weighting
};

}  // namespace

std::shared_ptr<Backend> make_eigen_backend() { return std::make_shared<EigenBackend>(); }

}  // namespace moelab
