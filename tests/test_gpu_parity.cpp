// The CUDA backend against the CPU (Eigen) backend, in fp32:
//   - every Backend op over one table of shapes, edges included (one token, one expert,
//     k = experts, sizes that are not multiples of the kernels' tiles);
//   - whole-model logits and expert choices for each family and router variant;
//   - every gradient of a training step (forward_backward) for each trainable variant;
//   - a 50-step training run's loss curve;
//   - KV-cached decode against the full forward, also replayed from a recorded CUDA graph;
//   - bf16 mode (Precision::BF16) against the CPU's bf16 emulation: logits, expert choices,
//     gradients, a 50-step run, recorded decode, and the bf16 weight copies following uploads;
//     TF32 against fp32 within TF32's rounding.
// Tensors are compared relative to their own scale: max |gpu − cpu| / max |cpu| <= 1e-4. Expert
// choices, dropped slots and ids must be identical. Without a usable GPU the test prints why in
// one line and exits 77, which CTest reports as skipped.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "check.hpp"
#include "corpus.hpp"
#include "cuda_backend.hpp"
#include "cuda_device.hpp"
#include "decoder.hpp"
#include "model.hpp"
#include "test_util.hpp"
#include "train_step.hpp"
#include "trainer.hpp"

using namespace moelab;

namespace {

constexpr double kTol = 1e-4;

std::shared_ptr<Backend> g_cpu, g_gpu;
std::shared_ptr<Backend> g_cpu16, g_gpu16;  // Precision::BF16

// ---- helpers: one tensor on both backends, compared after the op ----

struct Both {
  Tensor cpu, gpu;
};

Both both(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  Both t{g_cpu->alloc(shape), g_gpu->alloc(shape)};
  g_cpu->upload(t.cpu, values.data());
  g_gpu->upload(t.gpu, values.data());
  return t;
}
Both both_ids(const std::vector<int64_t>& shape, const std::vector<int32_t>& values) {
  Both t{g_cpu->alloc(shape, Elem::Int32), g_gpu->alloc(shape, Elem::Int32)};
  g_cpu->upload(t.cpu, values.data());
  g_gpu->upload(t.gpu, values.data());
  return t;
}

std::vector<float> randn(Rng& r, int64_t n, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(r.normal()) * scale;
  return v;
}
Both random_both(Rng& r, const std::vector<int64_t>& shape, float scale = 1.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return both(shape, randn(r, n, scale));
}

std::vector<float> host(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  b.download(t, v.data());
  return v;
}
std::vector<int32_t> host_ids(Backend& b, const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  b.download(t, v.data());
  return v;
}

// max |a − b| / max |b|; NaN or Inf anywhere gives +inf.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, d);
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff == 0 ? 0 : diff / std::max(scale, 1e-30);
}

void expect_close_vec(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                      double tol = kTol) {
  const double rel = rel_diff(gpu, cpu);
  if (!(rel <= tol)) check::report(__FILE__, __LINE__, what + ": relative difference " + std::to_string(rel));
}
void expect_close(const std::string& what, const Both& t, double tol = kTol) {
  expect_close_vec(what, host(*g_gpu, t.gpu), host(*g_cpu, t.cpu), tol);
}
// bf16 results: the two backends round the same operands, but sum them in different orders, so a
// value within fp32 noise of a bf16 rounding boundary can round apart (one bf16 step, ~4e-3 of that
// value, spreading downstream). Most elements must agree to `tight`, none may differ by more than
// `worst` (both relative to the largest |cpu|).
double share_within(const std::vector<float>& a, const std::vector<float>& b, double tight) {
  if (a.size() != b.size() || b.empty()) return 0;
  double scale = 0;
  for (float v : b) scale = std::max(scale, std::fabs(double(v)));
  size_t close = 0;
  for (size_t i = 0; i < a.size(); ++i) close += std::fabs(double(a[i]) - double(b[i])) <= tight * scale;
  return double(close) / double(a.size());
}
// A flip early in a sequence moves everything after it, so one comparison may have few elements
// within `tight`; the share is pooled over a test's comparisons (Tally) and checked at its end.
struct Tally {
  double close = 0, total = 0;
  double share() const { return total > 0 ? close / total : 0.0; }
};
void expect_bf16_close(Tally& tally, const std::string& what, const std::vector<float>& gpu,
                       const std::vector<float>& cpu, double tight = 1e-5, double worst = 3e-3) {
  const double rel = rel_diff(gpu, cpu), within = share_within(gpu, cpu, tight);
  tally.close += within * double(cpu.size());
  tally.total += double(cpu.size());
  if (!(rel <= worst))
    check::report(__FILE__, __LINE__, what + ": relative difference " + std::to_string(rel) + " (" +
                                          std::to_string(100 * within) + "% within " + std::to_string(tight) + ")");
}
void expect_share(const Tally& tally, const std::string& what, double least) {
  std::fprintf(stderr, "  %s: %.1f%% of the elements agree closely\n", what.c_str(), 100 * tally.share());
  if (!(tally.share() >= least))
    check::report(__FILE__, __LINE__, what + ": only " + std::to_string(100 * tally.share()) + "% agree closely");
}

void expect_same_ids(const std::string& what, const Both& t) {
  if (host_ids(*g_gpu, t.gpu) != host_ids(*g_cpu, t.cpu)) check::report(__FILE__, __LINE__, what + ": ids differ");
}
void expect_same_values(const std::string& what, const Both& t) {
  if (host(*g_gpu, t.gpu) != host(*g_cpu, t.cpu)) check::report(__FILE__, __LINE__, what + ": values differ");
}
void expect_near_scalar(const std::string& what, double gpu, double cpu, double tol = kTol) {
  if (!(std::fabs(gpu - cpu) <= tol * std::max(1e-12, std::fabs(cpu))))
    check::report(__FILE__, __LINE__, what + ": " + std::to_string(gpu) + " vs " + std::to_string(cpu));
}

// ---- the op table ----

struct OpShape {
  const char* name;
  int64_t T, H, E, K, F, NH, NKV, D, V, B, past;
};

// T tokens (attention: B sequences of T each), H hidden, E experts, K top-k, F expert hidden,
// NH/NKV heads, D head dim, V vocabulary, past positions already in the KV cache.
const OpShape kShapes[] = {
    {"one token", 1, 32, 4, 2, 16, 4, 2, 8, 40, 1, 5},
    {"one expert", 9, 24, 1, 1, 12, 2, 1, 12, 30, 1, 0},
    {"k = experts", 13, 32, 4, 4, 20, 4, 4, 8, 50, 1, 3},
    {"odd sizes", 37, 48, 8, 2, 40, 6, 2, 8, 97, 2, 0},
    {"past tile edges", 130, 96, 16, 4, 72, 8, 2, 12, 300, 2, 7},
    {"E=256 k=8 (DeepSeek-V3's router)", 33, 64, 256, 8, 24, 4, 1, 16, 50, 1, 0},
    {"E>1024 (grouping in global memory)", 40, 16, 1100, 8, 8, 2, 1, 8, 30, 1, 0},
};

std::string tag(const OpShape& s, const char* op) { return std::string(s.name) + " / " + op; }

void check_dense_ops(const OpShape& s, Rng& r) {
  const int64_t T = s.T, H = s.H, F = s.F, V = s.V;
  // embedding (+ backward with repeated ids)
  std::vector<int32_t> tok(static_cast<size_t>(T));
  for (auto& t : tok) t = int32_t(r.next_u64() % uint64_t(std::min<int64_t>(V, 7)));
  Both ids = both_ids({T}, tok), table = random_both(r, {V, H}), emb = random_both(r, {T, H});
  g_cpu->embedding(table.cpu, ids.cpu, emb.cpu);
  g_gpu->embedding(table.gpu, ids.gpu, emb.gpu);
  expect_same_values(tag(s, "embedding"), emb);
  Both dtable = random_both(r, {V, H}), dout = random_both(r, {T, H});
  g_cpu->embedding_backward(ids.cpu, dout.cpu, dtable.cpu);
  g_gpu->embedding_backward(ids.gpu, dout.gpu, dtable.gpu);
  expect_close(tag(s, "embedding_backward"), dtable);

  // linear: overwrite with bias, then accumulate without
  Both x = random_both(r, {T, H}), w = random_both(r, {F, H}, 0.2f), bias = random_both(r, {F}),
       y = random_both(r, {T, F});
  g_cpu->linear(x.cpu, w.cpu, &bias.cpu, y.cpu, false);
  g_gpu->linear(x.gpu, w.gpu, &bias.gpu, y.gpu, false);
  expect_close(tag(s, "linear + bias"), y);
  g_cpu->linear(x.cpu, w.cpu, nullptr, y.cpu, true);
  g_gpu->linear(x.gpu, w.gpu, nullptr, y.gpu, true);
  expect_close(tag(s, "linear accumulate"), y);
  for (bool acc : {false, true}) {
    Both dy = random_both(r, {T, F}), dx = random_both(r, {T, H}), dw = random_both(r, {F, H}), db = random_both(r, {F});
    g_cpu->linear_backward(x.cpu, w.cpu, dy.cpu, &dx.cpu, acc, dw.cpu, &db.cpu);
    g_gpu->linear_backward(x.gpu, w.gpu, dy.gpu, &dx.gpu, acc, dw.gpu, &db.gpu);
    expect_close(tag(s, acc ? "linear_backward dx (+=)" : "linear_backward dx"), dx);
    expect_close(tag(s, "linear_backward dw"), dw);
    expect_close(tag(s, "linear_backward db"), db);
  }

  // rmsnorm over H, per head over D (in place), and its backward
  Both nw = random_both(r, {H}), hn = random_both(r, {T, H});
  g_cpu->rmsnorm(x.cpu, nw.cpu, 1e-5f, hn.cpu);
  g_gpu->rmsnorm(x.gpu, nw.gpu, 1e-5f, hn.gpu);
  expect_close(tag(s, "rmsnorm"), hn);
  Both qh = random_both(r, {T, s.NH * s.D}), dw_head = random_both(r, {s.D});
  g_cpu->rmsnorm(qh.cpu, dw_head.cpu, 1e-6f, qh.cpu);
  g_gpu->rmsnorm(qh.gpu, dw_head.gpu, 1e-6f, qh.gpu);
  expect_close(tag(s, "rmsnorm per head, in place"), qh);
  for (bool acc : {false, true}) {
    Both dy = random_both(r, {T, H}), dx = random_both(r, {T, H}), dnw = random_both(r, {H});
    g_cpu->rmsnorm_backward(x.cpu, nw.cpu, dy.cpu, 1e-5f, dx.cpu, acc, dnw.cpu);
    g_gpu->rmsnorm_backward(x.gpu, nw.gpu, dy.gpu, 1e-5f, dx.gpu, acc, dnw.gpu);
    expect_close(tag(s, "rmsnorm_backward dx"), dx);
    expect_close(tag(s, "rmsnorm_backward dw"), dnw);
  }

  // clamp, swiglu (+ in place, backward), add, row_norms
  Both c = random_both(r, {T, H});
  g_cpu->clamp(c.cpu, -0.5f, 0.7f);
  g_gpu->clamp(c.gpu, -0.5f, 0.7f);
  expect_same_values(tag(s, "clamp"), c);
  Both g = random_both(r, {T, F}, 2.0f), u = random_both(r, {T, F}), a = random_both(r, {T, F});
  g_cpu->swiglu(g.cpu, u.cpu, a.cpu);
  g_gpu->swiglu(g.gpu, u.gpu, a.gpu);
  expect_close(tag(s, "swiglu"), a);
  Both dg = random_both(r, {T, F}), du = random_both(r, {T, F});
  g_cpu->swiglu_backward(g.cpu, u.cpu, a.cpu, dg.cpu, du.cpu);
  g_gpu->swiglu_backward(g.gpu, u.gpu, a.gpu, dg.gpu, du.gpu);
  expect_close(tag(s, "swiglu_backward dgate"), dg);
  expect_close(tag(s, "swiglu_backward dup"), du);
  g_cpu->swiglu(g.cpu, u.cpu, g.cpu);
  g_gpu->swiglu(g.gpu, u.gpu, g.gpu);
  expect_close(tag(s, "swiglu in place"), g);
  g_cpu->add(c.cpu, x.cpu);
  g_gpu->add(c.gpu, x.gpu);
  expect_close(tag(s, "add"), c);
  Both norms = random_both(r, {T});
  g_cpu->row_norms(x.cpu, norms.cpu);
  g_gpu->row_norms(x.gpu, norms.gpu);
  expect_close(tag(s, "row_norms"), norms);

  // shared-expert gate and noisy logits (+ backward)
  Both gl = random_both(r, {T, 1}, 2.0f), acc_y = random_both(r, {T, H});
  g_cpu->add_sigmoid_gated(acc_y.cpu, x.cpu, gl.cpu);
  g_gpu->add_sigmoid_gated(acc_y.gpu, x.gpu, gl.gpu);
  expect_close(tag(s, "add_sigmoid_gated"), acc_y);
  Both dy = random_both(r, {T, H}), dxg = random_both(r, {T, H}), dgl = random_both(r, {T, 1});
  g_cpu->sigmoid_gated_backward(x.cpu, gl.cpu, dy.cpu, dxg.cpu, dgl.cpu);
  g_gpu->sigmoid_gated_backward(x.gpu, gl.gpu, dy.gpu, dxg.gpu, dgl.gpu);
  expect_close(tag(s, "sigmoid_gated_backward dx"), dxg);
  expect_close(tag(s, "sigmoid_gated_backward dg"), dgl);
  const int64_t E = s.E;
  Both clean = random_both(r, {T, E}), raw = random_both(r, {T, E}, 8.0f), noise = random_both(r, {T, E}),
       noisy = random_both(r, {T, E}), draw = random_both(r, {T, E});
  g_cpu->noisy_logits(clean.cpu, raw.cpu, noise.cpu, noisy.cpu);
  g_gpu->noisy_logits(clean.gpu, raw.gpu, noise.gpu, noisy.gpu);
  expect_close(tag(s, "noisy_logits"), noisy);
  g_cpu->noisy_logits_backward(raw.cpu, noise.cpu, clean.cpu, draw.cpu);
  g_gpu->noisy_logits_backward(raw.gpu, noise.gpu, clean.gpu, draw.gpu);
  expect_close(tag(s, "noisy_logits_backward"), draw);

  // cross-entropy with ignored targets
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (size_t i = 0; i < tg.size(); ++i) tg[i] = i % 5 == 3 ? -1 : int32_t(r.next_u64() % uint64_t(V));
  Both targets = both_ids({T}, tg), logits = random_both(r, {T, V}, 3.0f), dlogits = random_both(r, {T, V});
  const double lc = g_cpu->cross_entropy(logits.cpu, targets.cpu, dlogits.cpu, 0.5f);
  const double lg = g_gpu->cross_entropy(logits.gpu, targets.gpu, dlogits.gpu, 0.5f);
  expect_near_scalar(tag(s, "cross_entropy loss"), lg, lc, 1e-5);
  expect_close(tag(s, "cross_entropy dlogits"), dlogits);

  // optimizer pieces
  std::vector<float> second_moment = randn(r, F * H, 0.01f);
  for (float& e : second_moment) e = std::fabs(e);  // v >= 0
  Both p = random_both(r, {F, H}), gr = random_both(r, {F, H}), m = random_both(r, {F, H}, 0.1f),
       v = both({F, H}, second_moment);
  expect_near_scalar(tag(s, "sum_squares"), g_gpu->sum_squares(gr.gpu), g_cpu->sum_squares(gr.cpu));
  g_cpu->scale(gr.cpu, 0.37f);
  g_gpu->scale(gr.gpu, 0.37f);
  expect_same_values(tag(s, "scale"), gr);
  g_cpu->adamw(p.cpu, gr.cpu, m.cpu, v.cpu, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  g_gpu->adamw(p.gpu, gr.gpu, m.gpu, v.gpu, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  expect_close(tag(s, "adamw p"), p, 1e-6);
  expect_close(tag(s, "adamw m"), m, 1e-6);
  expect_close(tag(s, "adamw v"), v, 1e-6);
}

void check_attention_ops(const OpShape& s, Rng& r) {
  const int64_t B = s.B, T = s.T, NH = s.NH, NKV = s.NKV, D = s.D, past = s.past, S = past + T + 2;
  // RoPE at an offset, per sequence (row r is position pos0 + r % T), and back.
  Both q = random_both(r, {B * T, NH * D}), k = random_both(r, {B * S, NKV * D}), v = random_both(r, {B * S, NKV * D});
  g_cpu->rope(q.cpu, NH, D, past, T, 1e4);
  g_gpu->rope(q.gpu, NH, D, past, T, 1e4);
  expect_close(tag(s, "rope"), q);
  g_cpu->rope(k.cpu, NKV, D, 0, S, 1e6);
  g_gpu->rope(k.gpu, NKV, D, 0, S, 1e6);
  expect_close(tag(s, "rope (theta 1e6)"), k);
  g_cpu->rope(k.cpu, NKV, D, 0, S, 1e6, true);
  g_gpu->rope(k.gpu, NKV, D, 0, S, 1e6, true);
  expect_close(tag(s, "rope inverse"), k);
  // KV-cache append
  Both rows = random_both(r, {T, NKV * D});
  g_cpu->copy_rows(rows.cpu, k.cpu, past);
  g_gpu->copy_rows(rows.gpu, k.gpu, past);
  expect_close(tag(s, "copy_rows"), k);
  // forward with past positions, GQA, batch
  Both out = random_both(r, {B * T, NH * D});
  g_cpu->attention(q.cpu, k.cpu, v.cpu, B, past, NH, NKV, D, out.cpu);
  g_gpu->attention(q.gpu, k.gpu, v.gpu, B, past, NH, NKV, D, out.gpu);
  expect_close(tag(s, "attention"), out);
  // backward (past = 0, S = T)
  Both q2 = random_both(r, {B * T, NH * D}), k2 = random_both(r, {B * T, NKV * D}), v2 = random_both(r, {B * T, NKV * D}),
       dout = random_both(r, {B * T, NH * D}), dq = random_both(r, {B * T, NH * D}), dk = random_both(r, {B * T, NKV * D}),
       dv = random_both(r, {B * T, NKV * D});
  g_cpu->attention_backward(q2.cpu, k2.cpu, v2.cpu, dout.cpu, B, NH, NKV, D, dq.cpu, dk.cpu, dv.cpu);
  g_gpu->attention_backward(q2.gpu, k2.gpu, v2.gpu, dout.gpu, B, NH, NKV, D, dq.gpu, dk.gpu, dv.gpu);
  expect_close(tag(s, "attention_backward dq"), dq);
  expect_close(tag(s, "attention_backward dk"), dk);
  expect_close(tag(s, "attention_backward dv"), dv);
}

void check_router_ops(const OpShape& s, Rng& r) {
  const int64_t T = s.T, E = s.E, K = s.K, H = s.H, F = s.F;
  // Biases: small, plus a banned (-inf) and a forced (+inf) expert when there are enough experts.
  std::vector<float> bias_host = randn(r, E, 0.05f);
  if (E > 3) {
    bias_host[1] = -std::numeric_limits<float>::infinity();
    bias_host[2] = std::numeric_limits<float>::infinity();
  }
  Both bias = both({E}, bias_host);
  struct Variant {
    const char* name;
    bool sigmoid, renorm, use_bias;
  };
  for (const Variant& var : {Variant{"softmax renorm", false, true, false}, Variant{"softmax", false, false, false},
                             Variant{"sigmoid + bias", true, true, true}, Variant{"softmax + bias", false, false, true}}) {
    const std::string name = std::string(s.name) + " / " + var.name;
    RouterSpec sc, sg;
    sc.top_k = sg.top_k = K;
    sc.renormalize = sg.renormalize = var.renorm;
    sc.sigmoid = sg.sigmoid = var.sigmoid;
    if (var.use_bias) {
      sc.selection_bias = bias.cpu;
      sg.selection_bias = bias.gpu;
    }
    // Exact ties must break toward the lower expert index: token 0 has all logits equal, token 1
    // two equal best logits (first and last expert).
    std::vector<float> logit_host = randn(r, T * E, 2.0f);
    for (int64_t e = 0; e < E; ++e) logit_host[size_t(e)] = 0.5f;
    if (T > 1) logit_host[size_t(E)] = logit_host[size_t(2 * E - 1)] = 9.0f;
    Both logits = both({T, E}, logit_host), probs = random_both(r, {T, E}),
         ids = both_ids({T, K}, std::vector<int32_t>(size_t(T * K), 7)), weights = random_both(r, {T, K});
    g_cpu->route(logits.cpu, sc, probs.cpu, ids.cpu, weights.cpu);
    g_gpu->route(logits.gpu, sg, probs.gpu, ids.gpu, weights.gpu);
    expect_close(name + " / route probs", probs);
    expect_same_ids(name + " / route ids", ids);
    expect_close(name + " / route weights", weights);

    // route_backward from the CPU's routing, on both
    const std::vector<float> p_host = host(*g_cpu, probs.cpu);
    const std::vector<int32_t> id_host = host_ids(*g_cpu, ids.cpu);
    for (bool acc : {false, true}) {
      Both p = both({T, E}, p_host), id = both_ids({T, K}, id_host), dw = random_both(r, {T, K}),
           dl = random_both(r, {T, E});
      g_cpu->route_backward(p.cpu, id.cpu, dw.cpu, sc, dl.cpu, acc);
      g_gpu->route_backward(p.gpu, id.gpu, dw.gpu, sg, dl.gpu, acc);
      expect_close(name + (acc ? " / route_backward (+=)" : " / route_backward"), dl);
    }

    // capacity: drop and re-route, from the same routing on both
    for (bool reroute : {false, true}) {
      Both p = both({T, E}, p_host), id = both_ids({T, K}, id_host), w = random_both(r, {T, K}),
           dropped = random_both(r, {T, K});
      const int64_t cap = std::max<int64_t>(1, int64_t(std::ceil(0.6 * double(T * K) / double(E))));
      sc.capacity.reroute = sg.capacity.reroute = reroute;
      g_cpu->limit_capacity(p.cpu, sc, cap, id.cpu, w.cpu, dropped.cpu);
      g_gpu->limit_capacity(p.gpu, sg, cap, id.gpu, w.gpu, dropped.gpu);
      const std::string cn = name + (reroute ? " / capacity re-route" : " / capacity drop");
      expect_same_ids(cn + " ids", id);
      expect_same_values(cn + " dropped", dropped);
      expect_close(cn + " weights", w);

      // routed experts over the capacity-limited routing (dropped slots included)
      if (!reroute) continue;
      const std::vector<int32_t> cap_ids = host_ids(*g_cpu, id.cpu);
      const std::vector<float> cap_w = host(*g_cpu, w.cpu);
      Both ids2 = both_ids({T, K}, cap_ids), w2 = both({T, K}, cap_w), x = random_both(r, {T, H}),
           out = random_both(r, {T, H});
      Both eg = random_both(r, {E, F, H}, 0.2f), eu = random_both(r, {E, F, H}, 0.2f), ed = random_both(r, {E, H, F}, 0.2f);
      ExpertWeights wc{eg.cpu, eu.cpu, ed.cpu}, wg{eg.gpu, eu.gpu, ed.gpu};
      g_cpu->moe_experts(x.cpu, ids2.cpu, w2.cpu, wc, out.cpu);
      g_gpu->moe_experts(x.gpu, ids2.gpu, w2.gpu, wg, out.gpu);
      expect_close(name + " / moe_experts", out);
      Both dout = random_both(r, {T, H}), dx = random_both(r, {T, H}), dweights = random_both(r, {T, K});
      Both dgw = random_both(r, {E, F, H}), duw = random_both(r, {E, F, H}), ddw = random_both(r, {E, H, F});
      ExpertWeights dwc{dgw.cpu, duw.cpu, ddw.cpu}, dwg{dgw.gpu, duw.gpu, ddw.gpu};
      g_cpu->moe_experts_backward(x.cpu, ids2.cpu, w2.cpu, wc, dout.cpu, dx.cpu, dweights.cpu, dwc);
      g_gpu->moe_experts_backward(x.gpu, ids2.gpu, w2.gpu, wg, dout.gpu, dx.gpu, dweights.gpu, dwg);
      expect_close(name + " / moe_experts_backward dx", dx);
      expect_close(name + " / moe_experts_backward dweights", dweights);
      expect_close(name + " / moe_experts_backward dgate", dgw);
      expect_close(name + " / moe_experts_backward dup", duw);
      expect_close(name + " / moe_experts_backward ddown", ddw);

      // balancing losses on the capacity-limited ids
      Both dl = random_both(r, {T, E});
      const auto [ac, zc] = g_cpu->router_losses(logits.cpu, ids2.cpu, 0.3f, 0.05f, dl.cpu);
      const auto [ag, zg] = g_gpu->router_losses(logits.gpu, ids2.gpu, 0.3f, 0.05f, dl.gpu);
      expect_near_scalar(name + " / router_losses aux", ag, ac, 1e-5);
      expect_near_scalar(name + " / router_losses z", zg, zc, 1e-5);
      expect_close(name + " / router_losses dlogits", dl);
    }
  }
}

// ---- whole models ----

const std::vector<int32_t> kTokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4};

struct ModelVariant {
  const char* name;
  ModelConfig config;
  StepKnobs knobs;    // for the training-step parity
  bool trainable;     // forward_backward supports it (no q/k norms, no clipping)
};

std::vector<ModelVariant> model_variants() {
  std::vector<ModelVariant> v;
  StepKnobs k;
  k.aux_alpha = 0.3f;
  k.z_coef = 0.05f;
  ModelConfig mix = testutil::tiny_config(Family::Mixtral);
  v.push_back({"mixtral top-2", mix, k, true});
  ModelConfig sw = mix;
  sw.top_k = 1;
  sw.norm_topk_prob = false;
  v.push_back({"switch top-1", sw, {0.2f, 0.0f, 0.0, false, true}, true});
  ModelConfig one = mix;
  one.num_experts = 1;
  one.top_k = 1;
  v.push_back({"one expert", one, k, true});
  ModelConfig all = mix;
  all.top_k = all.num_experts;
  v.push_back({"k = experts", all, k, true});
  ModelConfig noisy = mix;
  noisy.router_noise = true;
  v.push_back({"noisy top-k", noisy, k, true});
  ModelConfig sig = mix;
  sig.scoring = RouterScoring::Sigmoid;
  sig.score_correction_bias = true;
  v.push_back({"sigmoid + selection bias", sig, {0.0f, 0.02f, 0.0, false, true}, true});
  ModelConfig qw = testutil::tiny_config(Family::Qwen2Moe);
  qw.num_layers = 3;
  qw.qkv_bias = true;
  qw.shared_ffn_size = 20;
  qw.shared_expert_gate = true;
  qw.norm_topk_prob = false;
  qw.mlp_only_layers = {1};
  v.push_back({"qwen2-moe shared expert + dense layer", qw, k, true});
  v.push_back({"capacity 0.6 dropped", mix, {0.1f, 0.0f, 0.6, false, true}, true});
  v.push_back({"capacity 0.6 re-routed", mix, {0.1f, 0.0f, 0.6, true, true}, true});
  ModelConfig q3 = testutil::tiny_config(Family::Qwen3Moe);
  q3.qk_norm = QkNorm::PerHead;
  v.push_back({"qwen3-moe q/k norm per head", q3, k, false});
  ModelConfig ol = testutil::tiny_config(Family::Olmoe);
  ol.qk_norm = QkNorm::Whole;
  ol.clip_qkv = 0.5;
  v.push_back({"olmoe q/k norm + clip", ol, k, false});
  return v;
}

// The tiny Mixtral on byte tokens of the built-in corpus, and 50 training steps of it.
ModelConfig byte_model() {
  ModelConfig c = testutil::tiny_config(Family::Mixtral);
  c.vocab_size = 256;
  c.tokenizer = "bytes";
  return c;
}
TrainConfig fifty_steps() {
  TrainConfig tc;
  tc.steps = 50;
  tc.batch = 4;
  tc.seq_len = 32;
  tc.lr = 3e-3f;
  tc.warmup = 5;
  tc.aux_alpha = 0.01f;
  tc.z_coef = 1e-3f;
  tc.eval_every = 0;
  tc.probe_every = 0;
  tc.seed = 3;
  return tc;
}

// The same random model on a backend (selection biases set non-zero so they matter).
Model model_on(const ModelConfig& c, std::shared_ptr<Backend> b, float init_std) {
  Model m = Model::random(c, 11, b, init_std);
  for (auto& L : m.params().layers)
    if (!L.selection_bias.empty()) {
      std::vector<float> bias(size_t(c.num_experts));
      for (size_t e = 0; e < bias.size(); ++e) bias[e] = 0.03f * float(int(e % 3) - 1);
      b->upload(L.selection_bias, bias.data());
    }
  return m;
}

}  // namespace

TEST(every_op_matches_the_cpu_backend_over_the_shape_table) {
  Rng r(2024);
  for (const OpShape& s : kShapes) {
    check_dense_ops(s, r);
    check_attention_ops(s, r);
    check_router_ops(s, r);
  }
  // memory: fill, copy, double and int round trips, partial uploads
  Both t = both({5, 3}, std::vector<float>(15, 1.0f));
  g_gpu->fill(t.gpu, 2.5f);
  CHECK(host(*g_gpu, t.gpu) == std::vector<float>(15, 2.5f));
  Tensor t2 = g_gpu->alloc({15});
  CHECK(host(*g_gpu, t2) == std::vector<float>(15, 0.0f));  // alloc zero-fills
  g_gpu->copy(t.gpu, t2);
  CHECK(host(*g_gpu, t2) == std::vector<float>(15, 2.5f));
  const std::vector<double> d = {0.125, -3.5, 1e-3};
  g_gpu->upload(t2, d.data(), 4, 3);
  std::vector<double> back(3);
  g_gpu->download(t2, back.data(), 4, 3);
  CHECK_NEAR(back[1], -3.5, 0);
  CHECK_NEAR(back[2], 1e-3, 1e-10);
  const std::vector<int32_t> iv = {7, -1, 3};
  Tensor ti = g_gpu->alloc({3}, Elem::Int32);
  g_gpu->upload(ti, iv.data());
  CHECK(host_ids(*g_gpu, ti) == iv);
  CHECK(g_gpu->host_f32(t2) == nullptr);
  // The gradient norm over many tensors, with one wait.
  Both s1 = both({4, 3}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}), s2 = both({2}, {0.5f, -1.5f});
  const double want_sq = g_cpu->sum_squares_all({&s1.cpu, &s2.cpu});
  CHECK_NEAR(want_sq, 650.0 + 2.5, 1e-9);
  CHECK_NEAR(g_gpu->sum_squares_all({&s1.gpu, &s2.gpu}), want_sq, 1e-9);
  CHECK_NEAR(g_gpu->sum_squares_all({}), 0.0, 0);
  CHECK_EQ(g_gpu->name(), std::string("cuda"));
}

TEST(model_logits_and_expert_choices_match_for_every_family) {
  for (const ModelVariant& v : model_variants()) {
    Model mc = model_on(v.config, g_cpu, 0.2f), mg = model_on(v.config, g_gpu, 0.2f);
    RoutingTrace tc, tg;
    const std::vector<float> lc = mc.forward_full(kTokens, &tc), lg = mg.forward_full(kTokens, &tg);
    expect_close_vec(std::string(v.name) + ": logits", lg, lc);
    CHECK_EQ(tc.layers().size(), tg.layers().size());
    for (size_t l = 0; l < std::min(tc.layers().size(), tg.layers().size()); ++l) {
      const auto& a = tc.layers()[l];
      const auto& b = tg.layers()[l];
      if (a.ids != b.ids) check::report(__FILE__, __LINE__, std::string(v.name) + ": expert choices differ");
      expect_close_vec(std::string(v.name) + ": router probs", b.probs, a.probs);
      expect_close_vec(std::string(v.name) + ": gate weights", b.weights, a.weights);
      expect_close_vec(std::string(v.name) + ": router input norms", b.input_norm, a.input_norm);
    }
  }
}

TEST(every_gradient_of_a_training_step_matches) {
  for (const ModelVariant& v : model_variants()) {
    if (!v.trainable) continue;
    Model mc = model_on(v.config, g_cpu, 0.3f), mg = model_on(v.config, g_gpu, 0.3f);
    Batch batch;
    batch.B = 2;
    batch.T = 10;
    Rng r(5);
    for (int64_t i = 0; i < batch.B * batch.T; ++i) {
      batch.inputs.push_back(int32_t(r.next_u64() % uint64_t(v.config.vocab_size)));
      batch.targets.push_back(i == 3 ? -1 : int32_t(r.next_u64() % uint64_t(v.config.vocab_size)));
    }
    ParamSet gc = mc.zeros_like(), gg = mg.zeros_like();
    Rng nc(77), ng(77);
    const StepResult rc = forward_backward(mc, gc, batch, v.knobs, nc, 0.5f);
    const StepResult rg = forward_backward(mg, gg, batch, v.knobs, ng, 0.5f);
    const std::string name = v.name;
    expect_near_scalar(name + ": loss", rg.loss, rc.loss);
    expect_near_scalar(name + ": lm loss", rg.lm_loss, rc.lm_loss);
    expect_near_scalar(name + ": aux loss", rg.aux_loss, rc.aux_loss);
    expect_near_scalar(name + ": z loss", rg.z_loss, rc.z_loss);
    CHECK_EQ(rc.routing.size(), rg.routing.size());
    for (size_t l = 0; l < std::min(rc.routing.size(), rg.routing.size()); ++l) {
      if (rc.routing[l].ids != rg.routing[l].ids) check::report(__FILE__, __LINE__, name + ": expert choices differ");
      if (rc.routing[l].dropped != rg.routing[l].dropped) check::report(__FILE__, __LINE__, name + ": dropped slots differ");
    }
    auto refs_c = trainable_params(v.config, gc), refs_g = trainable_params(v.config, gg);
    for (size_t i = 0; i < refs_c.size(); ++i)
      expect_close_vec(name + ": gradient of " + refs_c[i].name, host(*g_gpu, *refs_g[i].tensor),
                       host(*g_cpu, *refs_c[i].tensor));
  }
}

TEST(a_50_step_training_run_follows_the_cpu_loss_curve) {
  const ModelConfig c = byte_model();
  const TrainConfig tc = fifty_steps();
  const auto corpus = open_corpus("builtin:domains");
  Model mc = Model::random(c, 7, g_cpu), mg = Model::random(c, 7, g_gpu);
  Trainer cpu(mc, *corpus, tc), gpu(mg, *corpus, tc);
  double worst = 0;
  for (int64_t i = 0; i < tc.steps; ++i) {
    const double lc = cpu.step().loss, lg = gpu.step().loss;
    worst = std::max(worst, std::fabs(lc - lg));
    if (!(std::fabs(lc - lg) <= 1e-3))
      check::report(__FILE__, __LINE__, "step " + std::to_string(i + 1) + ": loss " + std::to_string(lg) + " on the GPU vs " +
                                            std::to_string(lc) + " on the CPU");
  }
  std::fprintf(stderr, "  50 steps: largest loss difference %.2e\n", worst);
}

TEST(kv_cached_decode_equals_the_full_forward) {
  for (const ModelVariant& v : model_variants()) {
    if (std::string(v.name) != "mixtral top-2" && std::string(v.name) != "qwen2-moe shared expert + dense layer" &&
        std::string(v.name) != "qwen3-moe q/k norm per head")
      continue;
    Model mg = model_on(v.config, g_gpu, 0.2f), mc = model_on(v.config, g_cpu, 0.2f);
    const int64_t Vn = v.config.vocab_size, T = int64_t(kTokens.size());
    const std::vector<float> full = mg.forward_full(kTokens), full_cpu = mc.forward_full(kTokens);
    KvCache cache = mg.new_cache(T);
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<float> step = mg.forward({kTokens[size_t(t)]}, cache);
      const std::vector<float> want(full.begin() + t * Vn, full.begin() + (t + 1) * Vn);
      const std::vector<float> want_cpu(full_cpu.begin() + t * Vn, full_cpu.begin() + (t + 1) * Vn);
      expect_close_vec(std::string(v.name) + ": decode step " + std::to_string(t) + " vs full forward", step, want);
      expect_close_vec(std::string(v.name) + ": decode step " + std::to_string(t) + " vs CPU", step, want_cpu);
    }
  }
}

TEST(graph_recorded_decode_equals_the_full_forward) {
  for (const ModelVariant& v : model_variants()) {
    Model mg = model_on(v.config, g_gpu, 0.2f), mc = model_on(v.config, g_cpu, 0.2f);
    const int64_t Vn = v.config.vocab_size, T = int64_t(kTokens.size());
    RoutingTrace full_trace;
    const std::vector<float> full_cpu = mc.forward_full(kTokens, &full_trace);
    Decoder dec(mg, T);
    CHECK(dec.graphed());
    RoutingTrace trace;
    dec.prefill({kTokens.front()}, &trace);
    for (int64_t t = 1; t < T; ++t) {
      const std::vector<float> step = dec.step(kTokens[size_t(t)], &trace);
      const std::vector<float> want(full_cpu.begin() + t * Vn, full_cpu.begin() + (t + 1) * Vn);
      expect_close_vec(std::string(v.name) + ": recorded decode step " + std::to_string(t) + " vs CPU", step, want);
    }
    CHECK(dec.graph_nodes() > 0);
    CHECK_EQ(trace.layers().size(), full_trace.layers().size());
    for (size_t l = 0; l < std::min(trace.layers().size(), full_trace.layers().size()); ++l) {
      if (trace.layers()[l].ids != full_trace.layers()[l].ids)
        check::report(__FILE__, __LINE__, std::string(v.name) + ": recorded decode chose other experts");
      expect_close_vec(std::string(v.name) + ": recorded decode router probs", trace.layers()[l].probs,
                       full_trace.layers()[l].probs);
    }
    std::fprintf(stderr, "  %s: %lld graph nodes per token\n", v.name, (long long)dec.graph_nodes());
  }
}

// ---- precision modes ----

TEST(bf16_logits_and_expert_choices_match_the_cpu_emulation) {
  Tally tally;
  for (const ModelVariant& v : model_variants()) {
    Model mc = model_on(v.config, g_cpu16, 0.2f), mg = model_on(v.config, g_gpu16, 0.2f);
    Model m32 = model_on(v.config, g_gpu, 0.2f);
    RoutingTrace tc, tg;
    const std::vector<float> lc = mc.forward_full(kTokens, &tc), lg = mg.forward_full(kTokens, &tg);
    const std::vector<float> l32 = m32.forward_full(kTokens);
    expect_bf16_close(tally, std::string(v.name) + ": bf16 logits", lg, lc);
    // The mode is on: fp32 logits are not within the bf16 agreement of the bf16 ones.
    if (!(share_within(l32, lc, 1e-5) < 0.2))
      check::report(__FILE__, __LINE__, std::string(v.name) + ": fp32 logits as close to bf16 as the bf16 run");
    CHECK_EQ(tc.layers().size(), tg.layers().size());
    for (size_t l = 0; l < std::min(tc.layers().size(), tg.layers().size()); ++l)
      if (tc.layers()[l].ids != tg.layers()[l].ids)
        check::report(__FILE__, __LINE__, std::string(v.name) + ": bf16 expert choices differ");
  }
  expect_share(tally, "bf16 logits within 1e-5", 0.85);
}

TEST(bf16_weight_copies_follow_uploads_and_frees) {
  ModelConfig c = testutil::tiny_config(Family::Mixtral);
  Model mc = model_on(c, g_cpu16, 0.2f), mg = model_on(c, g_gpu16, 0.2f);
  Tally tally;
  const std::vector<float> before = mg.forward_full(kTokens);
  // New values into every weight: the bf16 copies made by the first forward must not be reused.
  Rng r(99);
  auto refs_c = trainable_params(c, mc.params()), refs_g = trainable_params(c, mg.params());
  for (size_t i = 0; i < refs_c.size(); ++i) {
    const std::vector<float> vals = randn(r, refs_c[i].tensor->numel(), 0.2f);
    g_cpu16->upload(*refs_c[i].tensor, vals.data());
    g_gpu16->upload(*refs_g[i].tensor, vals.data());
  }
  const std::vector<float> lc = mc.forward_full(kTokens), lg = mg.forward_full(kTokens);
  expect_bf16_close(tally, "bf16 logits after new weights were uploaded", lg, lc);
  CHECK(rel_diff(lg, before) > 1e-2);
  // A model freed and another made in its place (the pool hands out the same addresses).
  std::vector<void*> earlier;
  bool reused = false;
  for (int round = 0; round < 3; ++round) {
    Model a = model_on(c, g_gpu16, 0.1f + 0.1f * float(round)), b = model_on(c, g_cpu16, 0.1f + 0.1f * float(round));
    for (const ParamRef& r : trainable_params(c, a.params())) {
      reused = reused || std::find(earlier.begin(), earlier.end(), r.tensor->ptr) != earlier.end();
      earlier.push_back(r.tensor->ptr);
    }
    expect_bf16_close(tally, "bf16 logits of a model made after another was freed, round " + std::to_string(round),
                      a.forward_full(kTokens), b.forward_full(kTokens));
  }
  CHECK(reused);  // the pool did hand a freed weight's address to a new one
  expect_share(tally, "bf16 logits after uploads and frees within 1e-5", 0.85);
}

// Exact, on the GPU alone: after AdamW steps the bf16 copies it rewrote must equal copies made
// afresh from the fp32 weights (download and upload every weight: each copy is remade).
TEST(bf16_copies_after_adamw_equal_fresh_copies) {
  const ModelConfig c = byte_model();
  TrainConfig tc;
  tc.steps = 5;
  tc.batch = 2;
  tc.seq_len = 16;
  tc.lr = 1e-2f;
  tc.warmup = 0;
  tc.eval_every = 0;
  tc.probe_every = 0;
  const auto corpus = open_corpus("builtin:domains");
  Model mg = Model::random(c, 7, g_gpu16);
  Trainer trainer(mg, *corpus, tc);
  const std::vector<float> start = mg.forward_full(kTokens);
  for (int i = 0; i < 5; ++i) trainer.step();
  const std::vector<float> trained = mg.forward_full(kTokens);
  for (const ParamRef& r : trainable_params(c, mg.params())) {
    const std::vector<float> w = host(*g_gpu16, *r.tensor);
    g_gpu16->upload(*r.tensor, w.data());
  }
  const std::vector<float> fresh = mg.forward_full(kTokens);
  CHECK(rel_diff(trained, start) > 1e-3);  // the steps moved the model
  if (trained != fresh)
    check::report(__FILE__, __LINE__, "logits with AdamW's bf16 copies differ from fresh copies by " +
                                          std::to_string(rel_diff(trained, fresh)));
}

// A recorded decode step reads bf16 copies; weights uploaded after the recording must reach the
// next replay (the graph refreshes stale copies before it launches).
TEST(bf16_recorded_decode_sees_weights_written_after_recording) {
  ModelConfig c = testutil::tiny_config(Family::Mixtral);
  Model mg = model_on(c, g_gpu16, 0.2f), mc = model_on(c, g_cpu16, 0.2f), stale = model_on(c, g_cpu16, 0.2f);
  const int64_t T = int64_t(kTokens.size()), half = T / 2;
  Decoder dec(mg, T);
  KvCache cc = mc.new_cache(T), cs = stale.new_cache(T);
  std::vector<float> got = dec.prefill({kTokens.front()}), want = mc.forward({kTokens.front()}, cc),
                     old = stale.forward({kTokens.front()}, cs);
  Rng r(123);
  Tally tally;
  for (int64_t t = 1; t < T; ++t) {
    if (t == half) {  // new weights everywhere, after the step was recorded and replayed
      auto refs_g = trainable_params(c, mg.params()), refs_c = trainable_params(c, mc.params());
      for (size_t i = 0; i < refs_g.size(); ++i) {
        const std::vector<float> vals = randn(r, refs_g[i].tensor->numel(), 0.2f);
        g_gpu16->upload(*refs_g[i].tensor, vals.data());
        g_cpu16->upload(*refs_c[i].tensor, vals.data());
      }
    }
    const std::vector<float> step = dec.step(kTokens[size_t(t)]), w = mc.forward({kTokens[size_t(t)]}, cc),
                             o = stale.forward({kTokens[size_t(t)]}, cs);
    got.insert(got.end(), step.begin(), step.end());
    want.insert(want.end(), w.begin(), w.end());
    old.insert(old.end(), o.begin(), o.end());
  }
  CHECK(dec.graphed());
  expect_bf16_close(tally, "recorded bf16 decode across a weight upload", got, want);
  CHECK(rel_diff(got, old) > 1e-2);  // it did not keep decoding with the old weights
}

TEST(bf16_gradients_match_the_cpu_emulation) {
  Tally tally;
  for (const ModelVariant& v : model_variants()) {
    if (!v.trainable) continue;
    Model mc = model_on(v.config, g_cpu16, 0.3f), mg = model_on(v.config, g_gpu16, 0.3f);
    Batch batch;
    batch.B = 2;
    batch.T = 10;
    Rng r(5);
    for (int64_t i = 0; i < batch.B * batch.T; ++i) {
      batch.inputs.push_back(int32_t(r.next_u64() % uint64_t(v.config.vocab_size)));
      batch.targets.push_back(i == 3 ? -1 : int32_t(r.next_u64() % uint64_t(v.config.vocab_size)));
    }
    ParamSet gc = mc.zeros_like(), gg = mg.zeros_like();
    Rng nc(77), ng(77);
    const StepResult rc = forward_backward(mc, gc, batch, v.knobs, nc, 0.5f);
    const StepResult rg = forward_backward(mg, gg, batch, v.knobs, ng, 0.5f);
    const std::string name = std::string(v.name) + " (bf16)";
    expect_near_scalar(name + ": loss", rg.loss, rc.loss, 3e-3);
    for (size_t l = 0; l < std::min(rc.routing.size(), rg.routing.size()); ++l)
      if (rc.routing[l].ids != rg.routing[l].ids) check::report(__FILE__, __LINE__, name + ": expert choices differ");
    auto refs_c = trainable_params(v.config, gc), refs_g = trainable_params(v.config, gg);
    for (size_t i = 0; i < refs_c.size(); ++i)
      expect_bf16_close(tally, name + ": gradient of " + refs_c[i].name, host(*g_gpu16, *refs_g[i].tensor),
                        host(*g_cpu16, *refs_c[i].tensor), 1e-4, 2e-2);
  }
  // The CPU against an independent PyTorch reference in bf16 reaches ~85% at 1e-4 (test_train_reference).
  expect_share(tally, "bf16 gradients within 1e-4", 0.7);
}

TEST(a_50_step_bf16_run_follows_the_cpu_emulation) {
  const ModelConfig c = byte_model();
  const TrainConfig tc = fifty_steps();
  const auto corpus = open_corpus("builtin:domains");
  Model mc = Model::random(c, 7, g_cpu16), mg = Model::random(c, 7, g_gpu16);
  Trainer cpu(mc, *corpus, tc), gpu(mg, *corpus, tc);
  double worst = 0;
  for (int64_t i = 0; i < tc.steps; ++i) {
    const double lc = cpu.step().loss, lg = gpu.step().loss;
    worst = std::max(worst, std::fabs(lc - lg));
  }
  // AdamW rewrites the bf16 copies in the same pass; a stale copy would leave the GPU on step 1's
  // weights and its loss far from the CPU's within a few steps.
  std::fprintf(stderr, "  50 bf16 steps: largest loss difference %.2e\n", worst);
  CHECK(worst <= 1e-2);
}

TEST(bf16_recorded_decode_matches_the_cpu_emulation) {
  Tally tally;
  for (const ModelVariant& v : model_variants()) {
    if (std::string(v.name) != "mixtral top-2" && std::string(v.name) != "qwen2-moe shared expert + dense layer")
      continue;
    Model mg = model_on(v.config, g_gpu16, 0.2f), mc = model_on(v.config, g_cpu16, 0.2f);
    const int64_t T = int64_t(kTokens.size());
    const std::vector<float> full_cpu = mc.forward_full(kTokens);
    Decoder dec(mg, T);
    std::vector<float> got = dec.prefill({kTokens.front()});
    for (int64_t t = 1; t < T; ++t) {
      const std::vector<float> step = dec.step(kTokens[size_t(t)]);
      got.insert(got.end(), step.begin(), step.end());
    }
    CHECK(dec.graphed());
    expect_bf16_close(tally, std::string(v.name) + ": bf16 recorded decode vs the CPU's bf16 full forward", got,
                      full_cpu);
  }
  expect_share(tally, "bf16 recorded decode within 1e-5", 0.85);
}

TEST(tf32_stays_within_tf32_rounding_of_fp32) {
  auto tf32 = make_cuda_backend();
  tf32->set_precision(Precision::TF32);
  CHECK(tf32->precision() == Precision::TF32);
  // TF32 is on: a product over 512 terms differs from strict fp32 by TF32's rounding (~1e-3),
  // not by fp32's (~1e-6).
  {
    Rng r(8);
    const std::vector<float> xv = randn(r, 256 * 512), wv = randn(r, 384 * 512);
    Tensor x32 = g_gpu->alloc({256, 512}), w32 = g_gpu->alloc({384, 512}), o32 = g_gpu->alloc({256, 384});
    Tensor xt = tf32->alloc({256, 512}), wt = tf32->alloc({384, 512}), ot = tf32->alloc({256, 384});
    g_gpu->upload(x32, xv.data());
    g_gpu->upload(w32, wv.data());
    tf32->upload(xt, xv.data());
    tf32->upload(wt, wv.data());
    g_gpu->linear(x32, w32, nullptr, o32);
    tf32->linear(xt, wt, nullptr, ot);
    const double d = rel_diff(host(*tf32, ot), host(*g_gpu, o32));
    std::fprintf(stderr, "  tf32 vs fp32 linear [256x512]·[512x384]: relative difference %.2e\n", d);
    CHECK(d > 1e-5 && d < 1e-2);
  }
  for (const ModelVariant& v : model_variants()) {
    Model mt = model_on(v.config, tf32, 0.2f), mc = model_on(v.config, g_cpu, 0.2f);
    expect_close_vec(std::string(v.name) + ": tf32 logits vs fp32", mt.forward_full(kTokens), mc.forward_full(kTokens),
                     1e-2);
  }
}

// The harness's main, renamed: the real main() first asks whether a GPU answers.
#define main run_parity_cases
CHECK_MAIN()
#undef main

int main(int argc, char** argv) {
  std::string why;
  if (!cuda_device_available(&why)) {
    std::printf("test_gpu_parity: skipped: %s\n", why.c_str());
    return 77;
  }
  try {
    g_cpu = make_eigen_backend();
    g_gpu = make_cuda_backend();
    g_cpu16 = make_eigen_backend();
    g_cpu16->set_precision(Precision::BF16);
    g_gpu16 = make_cuda_backend();
    g_gpu16->set_precision(Precision::BF16);
  } catch (const std::exception& e) {
    std::printf("test_gpu_parity: the CUDA backend did not start: %s\n", e.what());
    return 1;
  }
  return run_parity_cases(argc, argv);
}
