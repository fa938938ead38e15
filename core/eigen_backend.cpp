// The CPU reference backend: Eigen for matrix products, plain loops for the rest, host memory
// 64-byte aligned, parallel over heads / experts / rows with OpenMP where there is enough work,
// on as many threads as other programs leave cores free (adapt_cpu_threads, cpu_threads.hpp).
// Templated on the scalar: fp32 for use, fp64 for finite-difference gradient checks. Weights kept
// as stored (bf16/f16 views of a checkpoint) go through eigen_backend_stored.cpp.
#include <malloc.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <unordered_map>

#include "backend.hpp"
#include "cpu_threads.hpp"
#include "eigen_backend_internal.hpp"
#include "error.hpp"
#include "router.hpp"
#include "safetensors.hpp"

namespace moelab {
namespace {

using eigen_cpu::bf16_round;
using eigen_cpu::gemv;
using eigen_cpu::Groups;
using eigen_cpu::swiglu_backward_n;
using eigen_cpu::swiglu_n;

template <class S>
class EigenBackend final : public Backend {
  using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  using RowVec = Eigen::Matrix<S, 1, Eigen::Dynamic>;
  using MapM = Eigen::Map<Mat>;
  using CMapM = Eigen::Map<const Mat>;
  using Strided = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;
  using CStrided = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;

  static S* elems(const Tensor& t) { return static_cast<S*>(t.ptr); }  // a Real tensor's elements
  // y [T,N] (+)= x [T,K] · wᵀ for a weight kept as stored (bf16/f16); fp32 sums.
  void linear_stored(const S* x, int64_t T, int64_t K, const Tensor& w, int64_t N, S* y, bool accumulate) {
    if constexpr (sizeof(S) != 4)
      fail(name(), "the gradient-check backend takes fp32/fp64 weights only");
    else
      eigen_cpu::linear_stored(x, T, K, w, N, y, accumulate, bf16_);
  }

  static S sigmoid(S x) { return S(1) / (S(1) + std::exp(-x)); }
  static CMapM cmat(const Tensor& t, int64_t r, int64_t c) { return CMapM(elems(t), r, c); }
  static MapM mat(const Tensor& t, int64_t r, int64_t c) { return MapM(elems(t), r, c); }

 public:
  std::string name() const override { return sizeof(S) == 4 ? "cpu" : "cpu-f64"; }
  bool maps_stored_weights() const override { return sizeof(S) == 4; }
  int64_t real_bytes() const override { return int64_t(sizeof(S)); }

  // bf16 is emulated: each matrix product rounds its operands to bfloat16 (Eigen::bfloat16 rounds
  // to nearest even, as the GPU's __float2bfloat16_rn does) and multiplies them in fp32.
  Precision precision() const override { return bf16_ ? Precision::BF16 : Precision::FP32; }
  void set_precision(Precision p) override {
    if (p == Precision::FP32 || (p == Precision::BF16 && sizeof(S) == 4)) {
      bf16_ = p == Precision::BF16;
      return;
    }
    fail(name(), p == Precision::TF32 ? "tf32 is a GPU tensor-core mode (the CPU computes fp32, or emulates bf16)"
                                      : "the gradient-check backend computes in fp64 only");
  }

  // ---- memory ----
  // Buffers are recycled through a free list by size: a training step allocates the same
  // activations every step, and fresh pages would cost a page fault each.
  struct Pool {
    std::mutex mu;
    std::unordered_map<size_t, std::vector<void*>> free;
    ~Pool() {
      for (auto& [n, v] : free)
        for (void* p : v) std::free(p);
    }
  };
  std::shared_ptr<Pool> pool_ = std::make_shared<Pool>();

  Tensor alloc(std::vector<int64_t> shape, Elem type) override { return allocate(std::move(shape), type, true); }
  Tensor alloc_uninit(std::vector<int64_t> shape, Elem type) override {
    return allocate(std::move(shape), type, false);
  }
  Tensor allocate(std::vector<int64_t> shape, Elem type, bool zero) {
    Tensor t;
    t.shape = std::move(shape);
    t.type = type;
    const size_t elem = type == Elem::Int32 ? 4 : sizeof(S);
    const size_t bytes = std::max<size_t>(64, (size_t(t.numel()) * elem + 63) / 64 * 64);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(pool_->mu);
      auto it = pool_->free.find(bytes);
      if (it != pool_->free.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
      }
    }
    if (!p) p = std::aligned_alloc(64, bytes);
    if (!p) throw Error("out of memory allocating " + human_bytes(double(bytes)));
    if (zero) std::memset(p, 0, bytes);
    std::weak_ptr<Pool> pool = pool_;
    t.storage = std::shared_ptr<void>(p, [pool, bytes](void* q) {
      if (auto pl = pool.lock(); pl && bytes <= (size_t(64) << 20)) {
        std::lock_guard<std::mutex> lock(pl->mu);
        pl->free[bytes].push_back(q);
      } else {
        std::free(q);
      }
    });
    t.ptr = p;
    return t;
  }
  template <class H>
  void up(Tensor& dst, const H* host, int64_t offset, int64_t count) {
    if (count < 0) count = dst.numel() - offset;
    MOELAB_ASSERT(offset >= 0 && offset + count <= dst.numel(), "upload range");
    S* d = elems(dst) + offset;
    for (int64_t i = 0; i < count; ++i) d[i] = S(host[i]);
  }
  template <class H>
  void down(const Tensor& src, H* host, int64_t offset, int64_t count) {
    if (count < 0) count = src.numel() - offset;
    MOELAB_ASSERT(offset >= 0 && offset + count <= src.numel(), "download range");
    if (is_stored_lowp(src.type)) {  // weights kept as stored: widened
      eigen_cpu::widen_stored(src, offset, count, host);
      return;
    }
    const S* s = elems(src) + offset;
    for (int64_t i = 0; i < count; ++i) host[i] = H(s[i]);
  }
  void upload(Tensor& d, const float* h, int64_t o, int64_t c) override { up(d, h, o, c); }
  void download(const Tensor& s, float* h, int64_t o, int64_t c) override { down(s, h, o, c); }
  void upload(Tensor& d, const double* h, int64_t o, int64_t c) override { up(d, h, o, c); }
  void download(const Tensor& s, double* h, int64_t o, int64_t c) override { down(s, h, o, c); }
  void upload(Tensor& d, const int32_t* h) override { std::memcpy(d.ptr, h, size_t(d.numel()) * 4); }
  void download(const Tensor& s, int32_t* h) override { std::memcpy(h, s.ptr, size_t(s.numel()) * 4); }
  float* host_f32(Tensor& t) override { return sizeof(S) == 4 ? static_cast<float*>(t.ptr) : nullptr; }
  void do_fill(Tensor& t, float value) override { std::fill(elems(t), elems(t) + t.numel(), S(value)); }
  void do_copy(const Tensor& src, Tensor& dst) override {
    std::memcpy(dst.ptr, src.ptr, size_t(src.numel()) * (src.type == Elem::Int32 ? 4 : sizeof(S)));
  }

  // ---- forward ----
  void do_embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    const int64_t T = ids.numel(), H = table.cols();
    if (is_stored_lowp(table.type)) {
      if constexpr (sizeof(S) == 4) {
        eigen_cpu::embedding_stored(table, ids.i32(), T, elems(out));
        return;
      }
      fail(name(), "the gradient-check backend takes fp32/fp64 weights only");
    }
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(elems(out) + t * H, elems(table) + int64_t(ids.i32()[t]) * H, size_t(H) * sizeof(S));
  }

  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) override {
    adapt_cpu_threads();
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    MapM Y = mat(out, T, N);
    if (is_stored_lowp(w.type)) {
      linear_stored(elems(x), T, K, w, N, elems(out), accumulate);
      if (bias) Y.rowwise() += Eigen::Map<const RowVec>(elems(*bias), N);
      return;
    }
    std::vector<S> xb, wb;
    const S* X = operand(elems(x), T * K, xb);
    const S* W = operand(elems(w), N * K, wb);
    if (T == 1) {
      gemv(W, X, elems(out), N, K, accumulate);  // decode: a matrix-vector product
    } else if (accumulate) {
      Y.noalias() += CMapM(X, T, K) * CMapM(W, N, K).transpose();
    } else {
      Y.noalias() = CMapM(X, T, K) * CMapM(W, N, K).transpose();
    }
    if (bias) Y.rowwise() += Eigen::Map<const RowVec>(elems(*bias), N);
  }

  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t C = w.numel(), R = x.numel() / C;
    const S* wp = elems(w);
    for (int64_t r = 0; r < R; ++r) {
      const S* xr = elems(x) + r * C;
      S* yr = elems(out) + r * C;
      double ss = 0.0;
      for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * double(xr[c]);
      const S inv = S(1.0 / std::sqrt(ss / double(C) + double(eps)));
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv * wp[c];
    }
  }

  void do_clamp(Tensor& x, float lo, float hi) override {
    S* p = elems(x);
    for (int64_t i = 0, n = x.numel(); i < n; ++i) p[i] = std::min(S(hi), std::max(S(lo), p[i]));
  }

  // cos/sin of position p and frequency i, computed once per (D, RoPE) and extended as needed.
  struct RopeTable {
    int64_t D = 0, positions = 0;
    RopeSpec rope{0.0};
    std::vector<S> cos, sin;  // [positions, D/2]
  };
  RopeTable rope_;
  const RopeTable& rope_table(int64_t D, const RopeSpec& rope, int64_t positions) {
    if (rope_.D != D || !(rope_.rope == rope) || rope_.positions < positions) {
      const int64_t half = D / 2, n = std::max<int64_t>(positions, 256);
      rope_.D = D;
      rope_.rope = rope;
      rope_.positions = n;
      rope_.cos.resize(size_t(n * half));
      rope_.sin.resize(size_t(n * half));
      for (int64_t i = 0; i < half; ++i) {
        // the frequency and the angle in fp32, like the reference implementations
        const float inv_freq = rope_inv_freq(rope, i, D);
        for (int64_t p = 0; p < n; ++p) {
          const S ang = S(float(p) * inv_freq);
          rope_.cos[size_t(p * half + i)] = std::cos(ang);
          rope_.sin[size_t(p * half + i)] = std::sin(ang);
        }
      }
    }
    return rope_;
  }

  void do_rope(Tensor& x, int64_t n_heads, int64_t D, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
               bool inverse) override {
    const int64_t R = x.rows(), half = D / 2, stride = n_heads * D;
    const RopeTable& tab = rope_table(D, rope, pos0 + std::min(seq_len, R));
    const S sign = inverse ? S(-1) : S(1);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t pos = pos0 + r % seq_len;
      const S* cs = tab.cos.data() + pos * half;
      const S* sn = tab.sin.data() + pos * half;
      for (int64_t h = 0; h < n_heads; ++h) {
        S* v = elems(x) + r * stride + h * D;
        for (int64_t i = 0; i < half; ++i) {
          const S a = v[i], b = v[i + half], sgn = sign * sn[i];
          v[i] = a * cs[i] - b * sgn;
          v[i + half] = b * cs[i] + a * sgn;
        }
      }
    }
  }

  void do_copy_rows(const Tensor& src, Tensor& dst, int64_t row0) override {
    std::memcpy(elems(dst) + row0 * dst.cols(), elems(src), size_t(src.numel()) * sizeof(S));
  }

  // Scores of one (sequence, head), softmaxed with the causal mask: P [T,S].
  static Mat attention_probs(const CStrided& Q, const CStrided& K, int64_t past, S scale) {
    const int64_t T = Q.rows(), Sn = K.rows();
    Mat attn = (Q * K.transpose()) * scale;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t visible = past + t + 1;  // causal: keys 0..past+t
      S m = -std::numeric_limits<S>::infinity();
      for (int64_t s = 0; s < visible; ++s) m = std::max(m, attn(t, s));
      S sum = 0;
      for (int64_t s = 0; s < visible; ++s) sum += (attn(t, s) = std::exp(attn(t, s) - m));
      const S inv = S(1) / sum;
      for (int64_t s = 0; s < visible; ++s) attn(t, s) *= inv;
      for (int64_t s = visible; s < Sn; ++s) attn(t, s) = 0;
    }
    return attn;
  }

  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t past, int64_t NH,
                    int64_t NKV, int64_t D, Tensor& out) override {
    adapt_cpu_threads();
    const int64_t T = q.rows() / B, Skv = k.rows() / B, S_used = past + T, group = NH / NKV;
    const S scale = S(1) / std::sqrt(S(D));
#pragma omp parallel for collapse(2) schedule(static) if (B * T * S_used * NH > 32768)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t g = h / group;
        CStrided Q(elems(q) + b * T * NH * D + h * D, T, D, Eigen::OuterStride<>(NH * D));
        CStrided Kh(elems(k) + b * Skv * NKV * D + g * D, S_used, D, Eigen::OuterStride<>(NKV * D));
        CStrided Vh(elems(v) + b * Skv * NKV * D + g * D, S_used, D, Eigen::OuterStride<>(NKV * D));
        const Mat attn = attention_probs(Q, Kh, past, scale);
        Strided O(elems(out) + b * T * NH * D + h * D, T, D, Eigen::OuterStride<>(NH * D));
        O.noalias() = attn * Vh;
      }
  }

  // The router's steps are the CPU reference in router.cpp, run on this backend's rows.
  std::vector<float> host_bias(const RouterSpec& spec) {
    std::vector<float> b;
    if (!spec.selection_bias.empty()) {
      b.resize(size_t(spec.selection_bias.numel()));
      download(spec.selection_bias, b.data(), 0, -1);
    }
    return b;
  }

  void do_route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) override {
    const std::vector<float> bias = host_bias(spec);
    router_cpu::route(elems(logits), logits.rows(), logits.cols(), spec.top_k, spec.sigmoid, spec.renormalize,
                      bias.empty() ? nullptr : bias.data(), elems(probs), ids.i32(), elems(weights));
  }

  void do_limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids, Tensor& weights,
                         Tensor& dropped) override {
    const std::vector<float> bias = capacity > 0 ? host_bias(spec) : std::vector<float>();
    router_cpu::limit_capacity(elems(probs), probs.rows(), probs.cols(), spec.top_k,
                               bias.empty() ? nullptr : bias.data(), capacity, spec.capacity.reroute, spec.renormalize,
                               ids.i32(), elems(weights), elems(dropped));
  }

  void do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                      Tensor& out) override {
    run_experts(x, ids, weights, w, out, nullptr);
  }
  void do_moe_experts_keep(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                           Tensor& out, ExpertActivations& keep) override {
    run_experts(x, ids, weights, w, out, w.per_expert() ? nullptr : &keep);  // stored weights: inference only
  }
  // Tokens grouped by expert, one GEMM per expert group (eigen_backend_experts.cpp); with keep,
  // each slot's G, U and Y rows go there (training), else into scratch.
  void run_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w, Tensor& out,
                   ExpertActivations* keep) {
    adapt_cpu_threads();
    const int64_t T = x.rows(), H = x.cols(), K = ids.cols(), E = w.gate.shape[0], F = w.gate.shape[1];
    const Groups g = eigen_cpu::group_by_expert(ids.i32(), ids.numel(), E);
    const int64_t used = g.begin[size_t(E)];
    S* Y = nullptr;  // [used,H]
    if (keep) {
      keep->gate = allocate({used, F}, Elem::Real, false);
      keep->up = allocate({used, F}, Elem::Real, false);
      keep->out = allocate({used, H}, Elem::Real, false);
      Y = elems(keep->out);
    } else {
      slot_out_.resize(size_t(used * H));
      Y = slot_out_.data();
    }
    if (w.per_expert()) {
      if constexpr (sizeof(S) != 4)
        fail(name(), "the gradient-check backend takes fp32/fp64 weights only");
      else
        eigen_cpu::experts_stored(elems(x), H, g, K, w, F, bf16_, stored_scratch_, Y);
    } else {
      std::vector<S> gb, ub, db;
      const eigen_cpu::StackedExperts<S> W{operand(elems(w.gate), E * F * H, gb), operand(elems(w.up), E * F * H, ub),
                                           operand(elems(w.down), E * H * F, db), E, F};
      eigen_cpu::experts_forward(elems(x), H, g, K, W, bf16_, keep ? elems(keep->gate) : nullptr,
                                 keep ? elems(keep->up) : nullptr, Y);
    }
    eigen_cpu::combine_slots(g, T, K, H, elems(weights), Y, elems(out));  // out[t] += w[t,k] · y[slot]
  }

  void do_swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    swiglu_n(elems(gate), elems(up), elems(out), gate.numel());
  }
  void do_add(Tensor& y, const Tensor& x) override {
    for (int64_t i = 0, n = y.numel(); i < n; ++i) elems(y)[i] += elems(x)[i];
  }
  void do_row_norms(const Tensor& x, Tensor& out) override {
    const int64_t R = x.rows(), C = x.cols();
    for (int64_t r = 0; r < R; ++r) elems(out)[r] = CMapM(elems(x) + r * C, 1, C).norm();
  }
  void do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) override {
    const int64_t T = y.rows(), H = y.cols();
    for (int64_t t = 0; t < T; ++t) {
      const S s = sigmoid(elems(g)[t]);
      for (int64_t c = 0; c < H; ++c) elems(y)[t * H + c] += s * elems(x)[t * H + c];
    }
  }
  static S softplus(S x) { return x > S(20) ? x : std::log1p(std::exp(x)); }
  void do_noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) override {
    for (int64_t i = 0, n = clean.numel(); i < n; ++i)
      elems(out)[i] = elems(clean)[i] + elems(noise)[i] * softplus(elems(raw)[i]);
  }

  // ---- training ----
  double do_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) override {
    const int64_t N = logits.rows(), V = logits.cols();
    int64_t count = 0;
    for (int64_t t = 0; t < N; ++t) count += targets.i32()[t] >= 0;
    double loss = 0.0;
    const S inv = count ? S(scale) / S(count) : S(0);
    for (int64_t t = 0; t < N; ++t) {
      const S* l = elems(logits) + t * V;
      S* d = elems(dlogits) + t * V;
      const int32_t y = targets.i32()[t];
      if (y < 0) {
        std::fill(d, d + V, S(0));
        continue;
      }
      const S m = *std::max_element(l, l + V);
      S sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += (d[v] = std::exp(l[v] - m));
      loss += double(m) + std::log(double(sum)) - double(l[y]);
      const S k = inv / sum;
      for (int64_t v = 0; v < V; ++v) d[v] *= k;  // softmax · scale / count
      d[y] -= inv;
    }
    return count ? loss / double(count) : 0.0;
  }

  void do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool acc, Tensor& dw,
                          Tensor* db) override {
    adapt_cpu_threads();
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    std::vector<S> xb, wb, dyb;
    CMapM X(operand(elems(x), T * K, xb), T, K), W(operand(elems(w), N * K, wb), N, K),
        DY(operand(elems(dy), T * N, dyb), T, N);
    if (dx) {
      if (acc)
        mat(*dx, T, K).noalias() += DY * W;
      else
        mat(*dx, T, K).noalias() = DY * W;
    }
    mat(dw, N, K).noalias() += DY.transpose() * X;
    if (db) Eigen::Map<RowVec>(elems(*db), N) += cmat(dy, T, N).colwise().sum();  // a sum, not a product: fp32
  }

  void do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx, bool acc,
                           Tensor& dw) override {
    // y = x·r·w with r = (mean(x²)+eps)^-1/2:  dx = r·(dy⊙w) − x·r³·mean(dy⊙w⊙x),  dw += Σ dy⊙x·r.
    const int64_t C = w.numel(), R = x.numel() / C;
    for (int64_t r = 0; r < R; ++r) {
      const S* xr = elems(x) + r * C;
      const S* g = elems(dy) + r * C;
      S* d = elems(dx) + r * C;
      double ss = 0, dot = 0;
      for (int64_t c = 0; c < C; ++c) {
        ss += double(xr[c]) * double(xr[c]);
        dot += double(g[c]) * double(elems(w)[c]) * double(xr[c]);
      }
      const double rr = 1.0 / std::sqrt(ss / double(C) + double(eps));
      const double k = rr * rr * rr * dot / double(C);
      for (int64_t c = 0; c < C; ++c) {
        const S v = S(rr * double(g[c]) * double(elems(w)[c]) - double(xr[c]) * k);
        d[c] = acc ? d[c] + v : v;
        elems(dw)[c] += S(double(g[c]) * double(xr[c]) * rr);
      }
    }
  }

  void do_embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override {
    const int64_t T = ids.numel(), H = dtable.cols();
    for (int64_t t = 0; t < T; ++t) {
      S* row = elems(dtable) + int64_t(ids.i32()[t]) * H;
      const S* g = elems(dout) + t * H;
      for (int64_t c = 0; c < H; ++c) row[c] += g[c];
    }
  }

  void do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, int64_t B,
                             int64_t NH, int64_t NKV, int64_t D, Tensor& dq, Tensor& dk, Tensor& dv) override {
    adapt_cpu_threads();
    const int64_t T = q.rows() / B, group = NH / NKV;
    const S scale = S(1) / std::sqrt(S(D));
    fill(dk, 0.0f);
    fill(dv, 0.0f);
    // Parallel over (sequence, kv head): the heads of one group accumulate into the same dk, dv.
#pragma omp parallel for collapse(2) schedule(static) if (B * T * T * NH > 32768)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t g = 0; g < NKV; ++g) {
        CStrided Kh(elems(k) + b * T * NKV * D + g * D, T, D, Eigen::OuterStride<>(NKV * D));
        CStrided Vh(elems(v) + b * T * NKV * D + g * D, T, D, Eigen::OuterStride<>(NKV * D));
        Strided dK(elems(dk) + b * T * NKV * D + g * D, T, D, Eigen::OuterStride<>(NKV * D));
        Strided dV(elems(dv) + b * T * NKV * D + g * D, T, D, Eigen::OuterStride<>(NKV * D));
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          CStrided Q(elems(q) + b * T * NH * D + h * D, T, D, Eigen::OuterStride<>(NH * D));
          CStrided dO(elems(dout) + b * T * NH * D + h * D, T, D, Eigen::OuterStride<>(NH * D));
          Strided dQ(elems(dq) + b * T * NH * D + h * D, T, D, Eigen::OuterStride<>(NH * D));
          const Mat attn = attention_probs(Q, Kh, 0, scale);  // recomputed, [T,T]
          dV.noalias() += attn.transpose() * dO;
          Mat dP = dO * Vh.transpose();
          // softmax backward: dS = P ⊙ (dP − rowsum(dP ⊙ P))
          const Vec rowdot = (dP.array() * attn.array()).rowwise().sum();
          Mat dS = attn.array() * (dP.colwise() - rowdot).array();
          dQ.noalias() = dS * Kh * scale;
          dK.noalias() += dS.transpose() * Q * scale;
        }
      }
  }

  void do_swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                          Tensor& dup) override {
    swiglu_backward_n(elems(gate), elems(up), elems(dout), elems(dgate), elems(dup), gate.numel());
  }

  void do_route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                         Tensor& dlogits, bool acc) override {
    router_cpu::route_backward(elems(probs), ids.i32(), elems(dweights), probs.rows(), probs.cols(), ids.cols(),
                               spec.sigmoid, spec.renormalize, elems(dlogits), acc);
  }

  std::pair<double, double> do_router_losses(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                             Tensor& dlogits) override {
    return router_cpu::router_losses(elems(logits), ids.i32(), logits.rows(), logits.cols(), ids.cols(), aux_coef,
                                     z_coef, elems(dlogits));
  }

  void do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                               const Tensor& dout, Tensor& dx, Tensor& dweights, ExpertWeights& dw) override {
    run_experts_backward(x, ids, weights, w, dout, dx, dweights, dw, nullptr);
  }
  void do_moe_experts_backward_kept(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                                    const Tensor& dout, Tensor& dx, Tensor& dweights, ExpertWeights& dw,
                                    const ExpertActivations& kept) override {
    run_experts_backward(x, ids, weights, w, dout, dx, dweights, dw, &kept);
  }
  // kept: each slot's G, U and Y from the forward pass; null: recomputed.
  void run_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                            const Tensor& dout, Tensor& dx, Tensor& dweights, ExpertWeights& dw,
                            const ExpertActivations* kept) {
    adapt_cpu_threads();
    const int64_t T = x.rows(), H = x.cols(), K = ids.cols(), E = w.gate.shape[0], F = w.gate.shape[1];
    const Groups g = eigen_cpu::group_by_expert(ids.i32(), ids.numel(), E);
    const int64_t used = g.begin[size_t(E)];
    MOELAB_ASSERT(!kept || kept->gate.rows() == used, "moe_experts_backward: kept activations of another routing");
    slot_out_.assign(size_t(used * H), S(0));  // per-slot dx, combined below in a fixed order
    fill(dweights, 0.0f);
    std::vector<S> gb, ub, db;
    const eigen_cpu::StackedExperts<S> W{operand(elems(w.gate), E * F * H, gb), operand(elems(w.up), E * F * H, ub),
                                         operand(elems(w.down), E * H * F, db), E, F};
    eigen_cpu::experts_backward(elems(x), elems(dout), elems(weights), H, g, K, W, bf16_,
                                kept ? elems(kept->gate) : nullptr, kept ? elems(kept->up) : nullptr,
                                kept ? elems(kept->out) : nullptr, elems(dweights), elems(dw.gate), elems(dw.up),
                                elems(dw.down), slot_out_.data());
    const S* no_weights = nullptr;
    eigen_cpu::combine_slots(g, T, K, H, no_weights, slot_out_.data(), elems(dx));  // dx[t] += dx_slot
  }

  void do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg) override {
    const int64_t T = x.rows(), H = x.cols();
    for (int64_t t = 0; t < T; ++t) {
      const S s = sigmoid(elems(g)[t]);
      S dot = 0;
      for (int64_t c = 0; c < H; ++c) {
        elems(dx)[t * H + c] = s * elems(dy)[t * H + c];
        dot += elems(dy)[t * H + c] * elems(x)[t * H + c];
      }
      elems(dg)[t] = dot * s * (S(1) - s);
    }
  }

  void do_noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) override {
    for (int64_t i = 0, n = raw.numel(); i < n; ++i)  // softplus' = sigmoid
      elems(draw)[i] = elems(dout)[i] * elems(noise)[i] * sigmoid(elems(raw)[i]);
  }

  double do_sum_squares(const Tensor& x) override {
    adapt_cpu_threads();
    const int64_t n = x.numel();
    const S* p = elems(x);
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > 65536)
    for (int64_t c = 0; c < n; c += 4096) {  // fp32 partial sums of 4096, added in double
      S part = 0;
      const int64_t end = std::min(n, c + 4096);
#pragma omp simd reduction(+ : part)
      for (int64_t i = c; i < end; ++i) part += p[i] * p[i];
      total += double(part);
    }
    return total;
  }
  void do_scale(Tensor& x, float s) override {
    for (int64_t i = 0, n = x.numel(); i < n; ++i) elems(x)[i] *= S(s);
  }
  void do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, float wd,
                int64_t step) override {
    adapt_cpu_threads();
    // torch.optim.AdamW: p *= 1 − lr·wd, then p −= lr/c1 · m / (sqrt(v)/sqrt(c2) + eps).
    const double c1 = 1.0 - std::pow(double(b1), double(step)), c2 = 1.0 - std::pow(double(b2), double(step));
    const S B1 = S(b1), B2 = S(b2), step_size = S(double(lr) / c1), inv_sqrt_c2 = S(1.0 / std::sqrt(c2)),
            decay = S(1.0 - double(lr) * double(wd)), E = S(eps);
    S* pp = elems(p);
    const S* gp = elems(g);
    S* mp = elems(m);
    S* vp = elems(v);
    const int64_t n = p.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const S gi = gp[i];
      const S mi = B1 * mp[i] + (S(1) - B1) * gi;
      const S vi = B2 * vp[i] + (S(1) - B2) * gi * gi;
      mp[i] = mi;
      vp[i] = vi;
      pp[i] = pp[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_c2 + E);
    }
  }

 private:
  // A matrix product's operand: p itself, or in bf16 mode a copy rounded to bfloat16 in buf.
  const S* operand(const S* p, int64_t n, std::vector<S>& buf) const {
    if (!bf16_) return p;
    buf.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = bf16_round(p[i]);
    return buf.data();
  }
  std::vector<S> slot_out_;  // [used slots, H] per-slot expert outputs (or input gradients)
  eigen_cpu::StoredScratch stored_scratch_;  // the stored experts' decode buffers
  bool bf16_ = false;        // Precision::BF16 (float backend only)
};

// Keep freed buffers in the heap instead of returning them to the kernel: Eigen's temporaries in
// the expert GEMMs are the same sizes every step, and fresh pages cost a fault each.
void tune_malloc_once() {
  static const bool done = [] {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    return true;
  }();
  (void)done;
}

}  // namespace

std::shared_ptr<Backend> make_eigen_backend() {
  tune_malloc_once();
  return std::make_shared<EigenBackend<float>>();
}
std::shared_ptr<Backend> make_eigen_backend_f64() {
  tune_malloc_once();
  return std::make_shared<EigenBackend<double>>();
}

}  // namespace moelab
