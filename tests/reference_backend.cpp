// The plain reference Backend (see reference_backend.hpp). Written for clarity only: each op is
// the formula of its comment in backend.hpp, as loops over the letters of config.hpp, in double.
// Shapes are checked before anything is read.
#include "reference_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "error.hpp"
#include "router.hpp"

namespace moelab {

double round_to_bf16(double x) {
  const float f = static_cast<float>(x);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // inf and NaN stay as they are
  // Keep the top 16 bits, rounding on the 16 dropped: add just under half of the last kept
  // bit's weight, plus one when the kept part is odd (ties to even).
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float r;
  std::memcpy(&r, &bits, 4);
  return r;
}

namespace {

const double kInf = std::numeric_limits<double>::infinity();

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double silu_grad(double x) { return sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))); }
double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

void require(bool ok, const char* what) {
  if (!ok) fail("reference backend", std::string("bad shapes: ") + what);
}

class ReferenceBackend final : public Backend {
 public:
  std::string name() const override { return bf16_ ? "reference-bf16" : "reference"; }
  int64_t real_bytes() const override { return 8; }
  Precision precision() const override { return bf16_ ? Precision::BF16 : Precision::FP32; }
  void set_precision(Precision p) override {
    if (p == Precision::TF32) fail(name(), "tf32 is a GPU tensor-core mode");
    bf16_ = p == Precision::BF16;
  }

  // ---- memory: calloc'd double or int32 arrays ----
  Tensor alloc(std::vector<int64_t> shape, Elem type) override {
    Tensor t;
    t.shape = std::move(shape);
    t.type = type;
    const size_t elem = type == Elem::Int32 ? 4 : 8;
    void* p = std::calloc(size_t(std::max<int64_t>(1, t.numel())), elem);
    if (!p) fail(name(), "out of memory");
    t.storage = std::shared_ptr<void>(p, std::free);
    t.ptr = p;
    return t;
  }
  void upload(Tensor& dst, const float* host, int64_t offset, int64_t count) override { up(dst, host, offset, count); }
  void upload(Tensor& dst, const double* host, int64_t offset, int64_t count) override { up(dst, host, offset, count); }
  void download(const Tensor& src, float* host, int64_t offset, int64_t count) override {
    down(src, host, offset, count);
  }
  void download(const Tensor& src, double* host, int64_t offset, int64_t count) override {
    down(src, host, offset, count);
  }
  void upload(Tensor& dst, const int32_t* host) override {
    require(dst.type == Elem::Int32, "upload of ids into a Real tensor");
    for (int64_t i = 0; i < dst.numel(); ++i) dst.i32()[i] = host[i];
  }
  void download(const Tensor& src, int32_t* host) override {
    require(src.type == Elem::Int32, "download of ids from a Real tensor");
    for (int64_t i = 0; i < src.numel(); ++i) host[i] = src.i32()[i];
  }
  float* host_f32(Tensor&) override { return nullptr; }  // the storage is double
  void do_fill(Tensor& t, float value) override {
    for (int64_t i = 0; i < t.numel(); ++i) D(t)[i] = value;
  }
  void do_copy(const Tensor& src, Tensor& dst) override {
    require(src.numel() == dst.numel() && src.type == dst.type, "copy");
    std::memcpy(dst.ptr, src.ptr, size_t(src.numel()) * (src.type == Elem::Int32 ? 4 : 8));
  }

  // ---- forward ----
  void do_embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    const int64_t T = ids.numel(), H = table.cols();
    require(out.numel() == T * H, "embedding");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < H; ++c) D(out)[t * H + c] = D(table)[ids.i32()[t] * H + c];
  }

  // out[t,n] = Σ_k x[t,k] · w[n,k] (+ bias[n]), added to out when accumulating.
  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) override {
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    require(w.cols() == K && out.rows() == T && out.cols() == N && (!bias || bias->numel() == N), "linear");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) {
        double sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += bf16(D(x)[t * K + k]) * bf16(D(w)[n * K + k]);
        if (bias) sum += D(*bias)[n];
        D(out)[t * N + n] = (accumulate ? D(out)[t * N + n] : 0.0) + sum;
      }
  }

  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t C = w.numel(), R = x.numel() / C;
    require(x.numel() == R * C && out.numel() == x.numel(), "rmsnorm");
    for (int64_t r = 0; r < R; ++r) {
      const double inv = 1.0 / std::sqrt(mean_square(D(x) + r * C, C) + eps);
      for (int64_t c = 0; c < C; ++c) D(out)[r * C + c] = D(x)[r * C + c] * inv * D(w)[c];
    }
  }

  void do_clamp(Tensor& x, float lo, float hi) override {
    for (int64_t i = 0; i < x.numel(); ++i) D(x)[i] = std::min(double(hi), std::max(double(lo), D(x)[i]));
  }

  // Rotate-half RoPE. The frequencies and angles are fp32, as in transformers' rotary embedding
  // (inv_freq and position_ids are float32 tensors); cos and sin are taken in double.
  void do_rope(Tensor& x, int64_t n_heads, int64_t Dh, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
               bool inverse) override {
    const int64_t R = x.rows(), half = Dh / 2;
    require(x.cols() == n_heads * Dh && Dh % 2 == 0 && seq_len > 0, "rope");
    for (int64_t r = 0; r < R; ++r) {
      const int64_t pos = pos0 + r % seq_len;
      for (int64_t h = 0; h < n_heads; ++h) {
        double* v = D(x) + r * n_heads * Dh + h * Dh;
        for (int64_t i = 0; i < half; ++i) {
          const float inv_freq = rope_inv_freq(rope, i, Dh);
          const double angle = double(float(pos) * inv_freq) * (inverse ? -1.0 : 1.0);
          const double a = v[i], b = v[i + half];
          v[i] = a * std::cos(angle) - b * std::sin(angle);
          v[i + half] = b * std::cos(angle) + a * std::sin(angle);
        }
      }
    }
  }

  void do_copy_rows(const Tensor& src, Tensor& dst, int64_t row0) override {
    require(src.cols() == dst.cols() && row0 >= 0 && row0 + src.rows() <= dst.rows(), "copy_rows");
    for (int64_t i = 0; i < src.numel(); ++i) D(dst)[row0 * dst.cols() + i] = D(src)[i];
  }

  // For each sequence b, head h and query t: softmax over the visible keys s <= past + t of
  // q·k / sqrt(D), then the weighted sum of the values. Head h reads kv head h / (NH / NKV).
  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t B, int64_t past, int64_t NH, int64_t NKV,
                    int64_t Dh, Tensor& out) override {
    const int64_t T = q.rows() / B, S = k.rows() / B;
    require(q.rows() == B * T && q.cols() == NH * Dh && k.cols() == NKV * Dh && v.numel() == k.numel() &&
                NH % NKV == 0 && past + T <= S && out.numel() == q.numel(),
            "attention");
    std::vector<double> p(static_cast<size_t>(S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const double* qv = D(q) + (b * T + t) * NH * Dh + h * Dh;
          attention_probs(qv, k, b * S, h / (NH / NKV), NKV, Dh, past + t + 1, p);
          for (int64_t d = 0; d < Dh; ++d) {
            double sum = 0;
            for (int64_t s = 0; s <= past + t; ++s) sum += p[size_t(s)] * kv(v, b * S + s, h / (NH / NKV), NKV, Dh)[d];
            D(out)[(b * T + t) * NH * Dh + h * Dh + d] = sum;
          }
        }
  }

  // probs[t] = softmax or sigmoid of logits[t]; ids[t] = the K experts of highest score + bias
  // (ties to the lower index); weights[t] = their scores, renormalised to sum 1 if asked.
  void do_route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) override {
    const Router r = router(spec);
    const int64_t T = logits.rows(), E = logits.cols(), K = r.K;
    require(K >= 1 && K <= E && probs.numel() == T * E && ids.numel() == T * K && weights.numel() == T * K &&
                (r.bias.empty() || int64_t(r.bias.size()) == E),
            "route");
    for (int64_t t = 0; t < T; ++t) {
      const double* z = D(logits) + t * E;
      double* p = D(probs) + t * E;
      if (r.sigmoid) {
        for (int64_t e = 0; e < E; ++e) p[e] = sigmoid(z[e]);
      } else {
        double m = -kInf, sum = 0;
        for (int64_t e = 0; e < E; ++e) m = std::max(m, z[e]);
        for (int64_t e = 0; e < E; ++e) sum += std::exp(z[e] - m);
        for (int64_t e = 0; e < E; ++e) p[e] = std::exp(z[e] - m) / sum;
      }
      const std::vector<int32_t> order = selection_order(r, p, E);
      for (int64_t k = 0; k < K; ++k) ids.i32()[t * K + k] = order[size_t(k)];
      gate_weights(r, p, ids.i32() + t * K, K, D(weights) + t * K);
    }
  }

  // Capacity, the literal rule: slots are served in order of choice rank, then token (every
  // token's first choice before any second choice); a slot whose expert already holds
  // `capacity` slots is dropped (id -1, dropped 1) or, when re-routing, given to the token's
  // best expert by score + bias that it does not hold (nor just lost), that has room and is not
  // banned (bias −inf), dropped 2. The weights are then recomputed over the slots that remain.
  void do_limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids, Tensor& weights,
                         Tensor& dropped) override {
    const Router r = router(spec);
    const int64_t T = probs.rows(), E = probs.cols(), K = r.K;
    require(ids.numel() == T * K && weights.numel() == T * K && dropped.numel() == T * K, "limit_capacity");
    fill(dropped, 0.0f);
    if (capacity <= 0) return;  // no limit: the routing stands
    std::vector<int64_t> load(size_t(E), 0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t t = 0; t < T; ++t) {
        int32_t* id = ids.i32() + t * K;
        if (id[k] < 0) continue;
        if (load[size_t(id[k])] < capacity) {
          ++load[size_t(id[k])];
          continue;
        }
        D(dropped)[t * K + k] = 1;
        const int32_t wanted = id[k];
        id[k] = -1;
        if (!spec.capacity.reroute) continue;
        for (int32_t cand : selection_order(r, D(probs) + t * E, E)) {
          bool held = cand == wanted;
          for (int64_t j = 0; j < K; ++j) held = held || id[j] == cand;
          const bool banned = !r.bias.empty() && r.bias[size_t(cand)] == -kInf;
          if (!held && !banned && load[size_t(cand)] < capacity) {
            id[k] = cand;
            ++load[size_t(cand)];
            D(dropped)[t * K + k] = 2;
            break;
          }
        }
      }
    for (int64_t t = 0; t < T; ++t) gate_weights(r, D(probs) + t * E, ids.i32() + t * K, K, D(weights) + t * K);
  }

  // out[t] += Σ_k weights[t,k] · down_e(silu(gate_e x[t]) ⊙ up_e x[t]), e = ids[t,k] >= 0: one
  // slot at a time.
  void do_moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                      Tensor& out) override {
    const Dims d = expert_dims(x, ids, weights, w);
    require(out.numel() == d.T * d.H, "moe_experts out");
    std::vector<double> G, U, A, Y;
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t k = 0; k < d.K; ++k) {
        const int32_t e = ids.i32()[t * d.K + k];
        if (e < 0) continue;  // dropped: nothing
        expert_forward(d, D(x) + t * d.H, w, e, G, U, A, Y);
        for (int64_t c = 0; c < d.H; ++c) D(out)[t * d.H + c] += D(weights)[t * d.K + k] * Y[size_t(c)];
      }
  }

  void do_swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    require(gate.numel() == up.numel() && out.numel() == gate.numel(), "swiglu");
    for (int64_t i = 0; i < gate.numel(); ++i) D(out)[i] = silu(D(gate)[i]) * D(up)[i];
  }
  void do_add(Tensor& y, const Tensor& x) override {
    require(y.numel() == x.numel(), "add");
    for (int64_t i = 0; i < y.numel(); ++i) D(y)[i] += D(x)[i];
  }
  void do_row_norms(const Tensor& x, Tensor& out) override {
    const int64_t R = x.rows(), C = x.cols();
    require(out.numel() == R, "row_norms");
    for (int64_t r = 0; r < R; ++r) D(out)[r] = std::sqrt(mean_square(D(x) + r * C, C) * double(C));
  }
  void do_add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) override {
    const int64_t T = y.rows(), H = y.cols();
    require(x.numel() == T * H && g.numel() == T, "add_sigmoid_gated");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < H; ++c) D(y)[t * H + c] += sigmoid(D(g)[t]) * D(x)[t * H + c];
  }
  void do_noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) override {
    require(raw.numel() == clean.numel() && noise.numel() == clean.numel() && out.numel() == clean.numel(),
            "noisy_logits");
    for (int64_t i = 0; i < clean.numel(); ++i) D(out)[i] = D(clean)[i] + D(noise)[i] * softplus(D(raw)[i]);
  }

  // ---- training ----
  // loss = mean over rows with a target of logsumexp(logits) − logits[target];
  // dlogits = (softmax − onehot) · scale / count, 0 on ignored rows.
  double do_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) override {
    const int64_t N = logits.rows(), V = logits.cols();
    require(targets.numel() == N && dlogits.numel() == N * V, "cross_entropy");
    int64_t count = 0;
    for (int64_t t = 0; t < N; ++t) count += targets.i32()[t] >= 0;
    double loss = 0;
    for (int64_t t = 0; t < N; ++t) {
      const double* z = D(logits) + t * V;
      double* d = D(dlogits) + t * V;
      const int32_t y = targets.i32()[t];
      for (int64_t v = 0; v < V; ++v) d[v] = 0;
      if (y < 0) continue;
      const double lse = logsumexp(z, V);
      loss += lse - z[y];
      for (int64_t v = 0; v < V; ++v) d[v] = (std::exp(z[v] - lse) - (v == y ? 1.0 : 0.0)) * scale / double(count);
    }
    return count ? loss / double(count) : 0.0;
  }

  void do_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool accumulate_dx, Tensor& dw,
                          Tensor* db) override {
    const int64_t T = x.rows(), K = x.cols(), N = w.rows();
    require(w.cols() == K && dy.numel() == T * N && dw.numel() == N * K && (!dx || dx->numel() == T * K) &&
                (!db || db->numel() == N),
            "linear_backward");
    if (dx)  // dx[t,k] (+)= Σ_n dy[t,n] · w[n,k]
      for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < K; ++k) {
          double sum = 0;
          for (int64_t n = 0; n < N; ++n) sum += bf16(D(dy)[t * N + n]) * bf16(D(w)[n * K + k]);
          D(*dx)[t * K + k] = (accumulate_dx ? D(*dx)[t * K + k] : 0.0) + sum;
        }
    for (int64_t n = 0; n < N; ++n)  // dw[n,k] += Σ_t dy[t,n] · x[t,k]
      for (int64_t k = 0; k < K; ++k) {
        double sum = 0;
        for (int64_t t = 0; t < T; ++t) sum += bf16(D(dy)[t * N + n]) * bf16(D(x)[t * K + k]);
        D(dw)[n * K + k] += sum;
      }
    if (db)  // db[n] += Σ_t dy[t,n]: a sum, not a product, never rounded
      for (int64_t n = 0; n < N; ++n)
        for (int64_t t = 0; t < T; ++t) D(*db)[n] += D(dy)[t * N + n];
  }

  // y = x·r·w with r = (mean(x²) + eps)^(-1/2):
  //   dx = r·(dy ⊙ w) − x·r³·mean(dy ⊙ w ⊙ x),  dw += Σ_rows dy ⊙ x·r.
  void do_rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx, bool accumulate_dx,
                           Tensor& dw) override {
    const int64_t C = w.numel(), R = x.numel() / C;
    require(x.numel() == R * C && dy.numel() == x.numel() && dx.numel() == x.numel() && dw.numel() == C,
            "rmsnorm_backward");
    for (int64_t row = 0; row < R; ++row) {
      const double* xr = D(x) + row * C;
      const double* g = D(dy) + row * C;
      const double r = 1.0 / std::sqrt(mean_square(xr, C) + eps);
      double dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += g[c] * D(w)[c] * xr[c];
      for (int64_t c = 0; c < C; ++c) {
        const double v = r * g[c] * D(w)[c] - xr[c] * r * r * r * dot / double(C);
        D(dx)[row * C + c] = (accumulate_dx ? D(dx)[row * C + c] : 0.0) + v;
        D(dw)[c] += g[c] * xr[c] * r;
      }
    }
  }

  void do_embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override {
    const int64_t T = ids.numel(), H = dtable.cols();
    require(dout.numel() == T * H, "embedding_backward");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < H; ++c) D(dtable)[ids.i32()[t] * H + c] += D(dout)[t * H + c];
  }

  // With P the attention probabilities of (b, h, t) and dP[s] = dout[t]·v[s]:
  //   dS[s] = P[s]·(dP[s] − Σ_s' P[s']·dP[s']),  dq[t] = Σ_s dS[s]·k[s] / sqrt(D),
  //   dk[s] += dS[s]·q[t] / sqrt(D),  dv[s] += P[s]·dout[t].
  void do_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, int64_t B, int64_t NH,
                             int64_t NKV, int64_t Dh, Tensor& dq, Tensor& dk, Tensor& dv) override {
    const int64_t T = q.rows() / B;
    require(q.rows() == B * T && q.cols() == NH * Dh && k.rows() == B * T && k.cols() == NKV * Dh &&
                v.numel() == k.numel() && dout.numel() == q.numel() && dq.numel() == q.numel() &&
                dk.numel() == k.numel() && dv.numel() == v.numel() && NH % NKV == 0,
            "attention_backward");
    const double scale = 1.0 / std::sqrt(double(Dh));
    fill(dk, 0.0f);
    fill(dv, 0.0f);
    std::vector<double> p(static_cast<size_t>(T)), dp(static_cast<size_t>(T));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t g = h / (NH / NKV), row = (b * T + t) * NH * Dh + h * Dh;
          const double* qv = D(q) + row;
          const double* go = D(dout) + row;
          attention_probs(qv, k, b * T, g, NKV, Dh, t + 1, p);
          double pdp = 0;
          for (int64_t s = 0; s <= t; ++s) {
            dp[size_t(s)] = 0;
            for (int64_t d = 0; d < Dh; ++d) dp[size_t(s)] += go[d] * kv(v, b * T + s, g, NKV, Dh)[d];
            pdp += p[size_t(s)] * dp[size_t(s)];
          }
          for (int64_t d = 0; d < Dh; ++d) D(dq)[row + d] = 0;
          for (int64_t s = 0; s <= t; ++s) {
            const double ds = p[size_t(s)] * (dp[size_t(s)] - pdp);
            for (int64_t d = 0; d < Dh; ++d) {
              D(dq)[row + d] += ds * kv(k, b * T + s, g, NKV, Dh)[d] * scale;
              kv(dk, b * T + s, g, NKV, Dh)[d] += ds * qv[d] * scale;
              kv(dv, b * T + s, g, NKV, Dh)[d] += p[size_t(s)] * go[d];
            }
          }
        }
  }

  // silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
  void do_swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) override {
    require(up.numel() == gate.numel() && dout.numel() == gate.numel() && dgate.numel() == gate.numel() &&
                dup.numel() == gate.numel(),
            "swiglu_backward");
    for (int64_t i = 0; i < gate.numel(); ++i) {
      const double g = D(gate)[i], u = D(up)[i], d = D(dout)[i];
      D(dup)[i] = d * silu(g);
      D(dgate)[i] = d * u * silu_grad(g);
    }
  }

  // The chain rule through w_k = p[i_k] / Σ_j p[i_j] (or w_k = p[i_k]), then through the
  // scores: softmax ∂p_j/∂z_e = p_j·(δ_je − p_e), sigmoid ∂p_e/∂z_e = p_e·(1 − p_e).
  void do_route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                         Tensor& dlogits, bool accumulate) override {
    const Router r = router(spec);
    const int64_t T = probs.rows(), E = probs.cols(), K = ids.cols();
    require(ids.rows() == T && dweights.numel() == T * K && dlogits.numel() == T * E, "route_backward");
    std::vector<double> dp(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      const double* p = D(probs) + t * E;
      const int32_t* id = ids.i32() + t * K;
      const double* dw = D(dweights) + t * K;
      double sum = 0;  // Σ_j p[i_j] over the kept slots
      for (int64_t j = 0; j < K; ++j)
        if (id[j] >= 0) sum += p[id[j]];
      std::fill(dp.begin(), dp.end(), 0.0);
      for (int64_t k = 0; k < K; ++k) {  // ∂L/∂p[i_j] = Σ_k dw_k · ∂w_k/∂p[i_j]
        if (id[k] < 0) continue;
        for (int64_t j = 0; j < K; ++j) {
          if (id[j] < 0) continue;
          const double dwk_dpj = r.renormalize ? ((j == k ? 1.0 : 0.0) - p[id[k]] / sum) / sum : (j == k ? 1.0 : 0.0);
          dp[size_t(id[j])] += dw[k] * dwk_dpj;
        }
      }
      double p_dot_dp = 0;
      for (int64_t e = 0; e < E; ++e) p_dot_dp += p[e] * dp[size_t(e)];
      for (int64_t e = 0; e < E; ++e) {
        const double dz = r.sigmoid ? dp[size_t(e)] * p[e] * (1.0 - p[e]) : p[e] * (dp[size_t(e)] - p_dot_dp);
        D(dlogits)[t * E + e] = (accumulate ? D(dlogits)[t * E + e] : 0.0) + dz;
      }
    }
  }

  // Switch Transformer's auxiliary loss (Fedus et al. 2021, eq. 4) and ST-MoE's router z-loss
  // (Zoph et al. 2022, eq. 5), from the logits' softmax p [N,E] and the N·K choices:
  //   f_i = #choices of i / (N·K) (a constant), P_i = mean_t p[t,i], aux = E·Σ_i f_i·P_i;
  //   z = mean_t lse_t², lse_t = logsumexp_e logits[t,e].
  //   ∂aux/∂logits[t,e] = (E/N)·Σ_i f_i·p[t,i]·(δ_ie − p[t,e]) = (E/N)·p[t,e]·(f_e − Σ_i f_i·p[t,i]),
  //   ∂z/∂logits[t,e] = 2·lse_t·p[t,e] / N.
  std::pair<double, double> do_router_losses(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                             Tensor& dlogits) override {
    const int64_t N = logits.rows(), E = logits.cols(), K = ids.cols();
    require(ids.rows() == N && dlogits.numel() == N * E, "router_losses");
    std::vector<double> f(static_cast<size_t>(E), 0.0), P(static_cast<size_t>(E), 0.0), p(static_cast<size_t>(E));
    for (int64_t s = 0; s < N * K; ++s)
      if (ids.i32()[s] >= 0) f[size_t(ids.i32()[s])] += 1.0 / double(N * K);
    double z = 0;
    for (int64_t t = 0; t < N; ++t) {
      const double* l = D(logits) + t * E;
      const double lse = logsumexp(l, E);
      z += lse * lse / double(N);
      for (int64_t e = 0; e < E; ++e) {
        p[size_t(e)] = std::exp(l[e] - lse);
        P[size_t(e)] += p[size_t(e)] / double(N);
      }
      double fp = 0;  // Σ_i f_i·p[t,i]
      for (int64_t i = 0; i < E; ++i) fp += f[size_t(i)] * p[size_t(i)];
      for (int64_t e = 0; e < E; ++e) {
        const double daux = double(E) / double(N) * (f[size_t(e)] * p[size_t(e)] - fp * p[size_t(e)]);
        const double dz = 2.0 * lse * p[size_t(e)] / double(N);
        D(dlogits)[t * E + e] += double(aux_coef) * daux + double(z_coef) * dz;
      }
    }
    double aux = 0;
    for (int64_t i = 0; i < E; ++i) aux += double(E) * f[size_t(i)] * P[size_t(i)];
    return {aux, z};
  }
  void do_router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef, Tensor& dlogits,
                            Tensor& sums) override {
    require(sums.numel() == 2, "router_losses_add sums");
    const auto [aux, z] = router_losses(logits, ids, aux_coef, z_coef, dlogits);
    D(sums)[0] += aux;
    D(sums)[1] += z;
  }

  // The backward of each slot's y = w·down(silu(G) ⊙ U), G = gate·x, U = up·x, A = silu(G) ⊙ U:
  //   dweights = dout·down(A);  dY = w·dout;  dA = downᵀ·dY;  dU = dA ⊙ silu(G);
  //   dG = dA ⊙ U ⊙ silu'(G);  ddown += dY ⊗ A;  dgate += dG ⊗ x;  dup += dU ⊗ x;
  //   dx += gateᵀ·dG + upᵀ·dU.
  void do_moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                               const Tensor& dout, Tensor& dx, Tensor& dweights, ExpertWeights& dw) override {
    const Dims d = expert_dims(x, ids, weights, w);
    require(dout.numel() == d.T * d.H && dx.numel() == d.T * d.H && dweights.numel() == d.T * d.K &&
                dw.gate.numel() == w.gate.numel() && dw.up.numel() == w.up.numel() && dw.down.numel() == w.down.numel(),
            "moe_experts_backward");
    const int64_t H = d.H, F = d.F;
    const size_t Hs = static_cast<size_t>(H), Fs = static_cast<size_t>(F);
    std::vector<double> G, U, A, Y, dY(Hs), dA(Fs), dG(Fs), dU(Fs);
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t k = 0; k < d.K; ++k) {
        const int64_t slot = t * d.K + k;
        const int32_t e = ids.i32()[slot];
        D(dweights)[slot] = 0;
        if (e < 0) continue;  // dropped: no gradient
        const double* xt = D(x) + t * H;
        const double* go = D(dout) + t * H;
        expert_forward(d, xt, w, e, G, U, A, Y);
        for (int64_t c = 0; c < H; ++c) D(dweights)[slot] += go[c] * Y[size_t(c)];
        for (int64_t c = 0; c < H; ++c) dY[size_t(c)] = bf16(D(weights)[slot] * go[c]);
        const double* Wg = D(w.gate) + e * F * H;
        const double* Wu = D(w.up) + e * F * H;
        const double* Wd = D(w.down) + e * H * F;
        for (int64_t f = 0; f < F; ++f) {
          dA[size_t(f)] = 0;
          for (int64_t c = 0; c < H; ++c) dA[size_t(f)] += bf16(Wd[c * F + f]) * dY[size_t(c)];
          dU[size_t(f)] = bf16(dA[size_t(f)] * silu(G[size_t(f)]));
          dG[size_t(f)] = bf16(dA[size_t(f)] * U[size_t(f)] * silu_grad(G[size_t(f)]));
        }
        for (int64_t c = 0; c < H; ++c)
          for (int64_t f = 0; f < F; ++f) D(dw.down)[e * H * F + c * F + f] += dY[size_t(c)] * A[size_t(f)];
        for (int64_t f = 0; f < F; ++f)
          for (int64_t c = 0; c < H; ++c) {
            D(dw.gate)[e * F * H + f * H + c] += dG[size_t(f)] * bf16(xt[c]);
            D(dw.up)[e * F * H + f * H + c] += dU[size_t(f)] * bf16(xt[c]);
            D(dx)[t * H + c] += bf16(Wg[f * H + c]) * dG[size_t(f)] + bf16(Wu[f * H + c]) * dU[size_t(f)];
          }
      }
  }

  void do_sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg) override {
    const int64_t T = x.rows(), H = x.cols();
    require(g.numel() == T && dy.numel() == T * H && dx.numel() == T * H && dg.numel() == T, "sigmoid_gated_backward");
    for (int64_t t = 0; t < T; ++t) {
      const double s = sigmoid(D(g)[t]);
      D(dg)[t] = 0;
      for (int64_t c = 0; c < H; ++c) {
        D(dx)[t * H + c] = s * D(dy)[t * H + c];
        D(dg)[t] += D(dy)[t * H + c] * D(x)[t * H + c] * s * (1.0 - s);
      }
    }
  }

  // softplus'(raw) = sigmoid(raw).
  void do_noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) override {
    require(noise.numel() == raw.numel() && dout.numel() == raw.numel() && draw.numel() == raw.numel(),
            "noisy_logits_backward");
    for (int64_t i = 0; i < raw.numel(); ++i) D(draw)[i] = D(dout)[i] * D(noise)[i] * sigmoid(D(raw)[i]);
  }

  double do_sum_squares(const Tensor& x) override {
    double sum = 0;
    for (int64_t i = 0; i < x.numel(); ++i) sum += D(x)[i] * D(x)[i];
    return sum;
  }
  double do_sum_squares_all(const std::vector<const Tensor*>& xs) override {
    double sum = 0;
    for (const Tensor* x : xs) sum += sum_squares(*x);
    return sum;
  }
  void do_scale(Tensor& x, float s) override {
    for (int64_t i = 0; i < x.numel(); ++i) D(x)[i] *= s;
  }

  // torch.optim.AdamW (single-tensor form): p *= 1 − lr·wd; m = b1·m + (1 − b1)·g;
  // v = b2·v + (1 − b2)·g²; p −= lr / (1 − b1^step) · m / (sqrt(v) / sqrt(1 − b2^step) + eps).
  void do_adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, float wd,
                int64_t step) override {
    require(g.numel() == p.numel() && m.numel() == p.numel() && v.numel() == p.numel() && step >= 1, "adamw");
    const double c1 = 1.0 - std::pow(double(b1), double(step)), c2 = 1.0 - std::pow(double(b2), double(step));
    for (int64_t i = 0; i < p.numel(); ++i) {
      D(p)[i] *= 1.0 - double(lr) * double(wd);
      D(m)[i] = b1 * D(m)[i] + (1.0 - b1) * D(g)[i];
      D(v)[i] = b2 * D(v)[i] + (1.0 - b2) * D(g)[i] * D(g)[i];
      D(p)[i] -= double(lr) / c1 * D(m)[i] / (std::sqrt(D(v)[i]) / std::sqrt(c2) + double(eps));
    }
  }

 private:
  static double* D(const Tensor& t) { return static_cast<double*>(t.ptr); }

  template <class H>
  void up(Tensor& dst, const H* host, int64_t offset, int64_t count) {
    if (count < 0) count = dst.numel() - offset;
    require(dst.type == Elem::Real && offset >= 0 && count >= 0 && offset + count <= dst.numel(), "upload range");
    for (int64_t i = 0; i < count; ++i) D(dst)[offset + i] = double(host[i]);
  }
  template <class H>
  void down(const Tensor& src, H* host, int64_t offset, int64_t count) {
    if (count < 0) count = src.numel() - offset;
    require(src.type == Elem::Real && offset >= 0 && count >= 0 && offset + count <= src.numel(), "download range");
    for (int64_t i = 0; i < count; ++i) host[i] = H(D(src)[offset + i]);
  }

  // A matrix product's operand as the bf16 mode sees it. Rounded, exactly as the fast backends:
  //   linear:               x, w (not the bias);
  //   linear_backward:      x, w, dy (not the bias gradient's sum);
  //   moe_experts:          x, gate, up, down and A = silu(G) ⊙ U (not G, U or the output);
  //   moe_experts_backward: those, plus dY = w·dout, dG and dU (not dA, nor dout in dweights).
  double bf16(double v) const { return bf16_ ? round_to_bf16(v) : v; }

  static double mean_square(const double* x, int64_t n) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
    return sum / double(n);
  }
  static double logsumexp(const double* z, int64_t n) {
    double m = -kInf, sum = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, z[i]);
    for (int64_t i = 0; i < n; ++i) sum += std::exp(z[i] - m);
    return m + std::log(sum);
  }

  // Row `row`, kv head g of a [rows, NKV·D] key or value tensor.
  static double* kv(const Tensor& t, int64_t row, int64_t g, int64_t NKV, int64_t Dh) {
    return D(t) + row * NKV * Dh + g * Dh;
  }
  // p[s] for s < visible: the causal softmax of q·k[row0 + s] / sqrt(D).
  static void attention_probs(const double* q, const Tensor& k, int64_t row0, int64_t g, int64_t NKV, int64_t Dh,
                              int64_t visible, std::vector<double>& p) {
    double m = -kInf, sum = 0;
    for (int64_t s = 0; s < visible; ++s) {
      double dot = 0;
      for (int64_t d = 0; d < Dh; ++d) dot += q[d] * kv(k, row0 + s, g, NKV, Dh)[d];
      p[size_t(s)] = dot / std::sqrt(double(Dh));
      m = std::max(m, p[size_t(s)]);
    }
    for (int64_t s = 0; s < visible; ++s) sum += (p[size_t(s)] = std::exp(p[size_t(s)] - m));
    for (int64_t s = 0; s < visible; ++s) p[size_t(s)] /= sum;
  }

  // Everything the reference reads from a RouterSpec, in one place.
  struct Router {
    int64_t K;
    bool renormalize, sigmoid;
    std::vector<double> bias;  // [E] selection bias, or empty
  };
  Router router(const RouterSpec& spec) {
    Router r{spec.top_k, spec.renormalize, spec.sigmoid, {}};
    if (!spec.selection_bias.empty()) {
      r.bias.resize(size_t(spec.selection_bias.numel()));
      download(spec.selection_bias, r.bias.data(), 0, -1);
    }
    return r;
  }
  // A token's experts in selection order: score + bias, highest first, ties to the lower index.
  static std::vector<int32_t> selection_order(const Router& r, const double* p, int64_t E) {
    std::vector<int32_t> order(static_cast<size_t>(E));
    for (int32_t e = 0; e < int32_t(E); ++e) order[size_t(e)] = e;
    auto sel = [&](int32_t e) { return p[e] + (r.bias.empty() ? 0.0 : r.bias[size_t(e)]); };
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return sel(a) > sel(b); });
    return order;
  }
  // Gate weights of a token's slots: the chosen (unbiased) scores, divided by their sum if
  // renormalising; 0 for a dropped slot.
  static void gate_weights(const Router& r, const double* p, const int32_t* ids, int64_t K, double* w) {
    double sum = 0;
    for (int64_t k = 0; k < K; ++k)
      if (ids[k] >= 0) sum += p[ids[k]];
    for (int64_t k = 0; k < K; ++k) w[k] = ids[k] < 0 ? 0.0 : r.renormalize ? p[ids[k]] / sum : p[ids[k]];
  }

  struct Dims {
    int64_t T, H, K, E, F;
  };
  static Dims expert_dims(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w) {
    const Dims d{x.rows(), x.cols(), ids.cols(), w.gate.shape.at(0), w.gate.shape.at(1)};
    require(ids.rows() == d.T && weights.numel() == d.T * d.K && w.gate.numel() == d.E * d.F * d.H &&
                w.up.numel() == d.E * d.F * d.H && w.down.numel() == d.E * d.H * d.F,
            "routed experts");
    for (int64_t s = 0; s < d.T * d.K; ++s) require(ids.i32()[s] < d.E, "expert id out of range");
    return d;
  }
  // One expert on one token: G = gate_e·x, U = up_e·x [F], A = silu(G) ⊙ U [F], Y = down_e·A [H].
  void expert_forward(const Dims& d, const double* x, const ExpertWeights& w, int64_t e, std::vector<double>& G,
                      std::vector<double>& U, std::vector<double>& A, std::vector<double>& Y) const {
    const int64_t H = d.H, F = d.F;
    G.assign(size_t(F), 0.0);
    U.assign(size_t(F), 0.0);
    A.assign(size_t(F), 0.0);
    Y.assign(size_t(H), 0.0);
    for (int64_t f = 0; f < F; ++f) {
      for (int64_t c = 0; c < H; ++c) {
        G[size_t(f)] += bf16(D(w.gate)[e * F * H + f * H + c]) * bf16(x[c]);
        U[size_t(f)] += bf16(D(w.up)[e * F * H + f * H + c]) * bf16(x[c]);
      }
      A[size_t(f)] = bf16(silu(G[size_t(f)]) * U[size_t(f)]);
    }
    for (int64_t c = 0; c < H; ++c)
      for (int64_t f = 0; f < F; ++f) Y[size_t(c)] += bf16(D(w.down)[e * H * F + c * F + f]) * A[size_t(f)];
  }

  bool bf16_ = false;
};

}  // namespace

std::shared_ptr<Backend> make_reference_backend() { return std::make_shared<ReferenceBackend>(); }

}  // namespace moelab
