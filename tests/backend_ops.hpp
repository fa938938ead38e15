// One table of shapes, and every Backend op run over it on two backends, compared (STYLE.md
// convention 4; after ggml's test-backend-ops). test_backend_ops runs the Eigen backend against the
// plain reference (tests/reference_backend.hpp) on every machine; test_gpu_parity runs the CUDA
// backend against the Eigen one where a GPU answers.
//
// Each op gets the same inputs on both backends (uploaded from the host), and its outputs are
// compared relative to their own scale: max |test − ref| / max |ref| <= tolerance. Expert ids and
// dropped flags must be identical, and so must the ops that move values without arithmetic
// (embedding, clamp, scale). An op whose inputs are another op's discrete result (capacity after
// routing, the experts after capacity) takes the reference's result on both, so one difference
// is reported once, where it arises.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "backend.hpp"
#include "check.hpp"
#include "random.hpp"
#include "router.hpp"

namespace backend_ops {

using moelab::Backend;
using moelab::Rng;
using moelab::Tensor;
using moelab::Elem;

// ---- the table ----

struct OpShape {
  const char* name;
  int64_t T, H, E, K, F, NH, NKV, D, V, B, past;
};

// T tokens (attention: B sequences of T each), H hidden, E experts, K top-k, F expert hidden,
// NH/NKV heads, D head dim, V vocabulary, past positions already in the KV cache. Expert groups
// are empty wherever T·K < E (E=256, E>1024) and after capacity drops.
inline constexpr OpShape kShapes[] = {
    {"one token", 1, 32, 4, 2, 16, 4, 2, 8, 40, 1, 5},
    {"one expert", 9, 24, 1, 1, 12, 2, 1, 12, 30, 1, 0},
    {"k = experts", 13, 32, 4, 4, 20, 4, 4, 8, 50, 1, 3},
    {"odd sizes", 37, 48, 8, 2, 40, 6, 2, 8, 97, 2, 0},
    {"past tile edges", 130, 96, 16, 4, 72, 8, 2, 12, 300, 2, 7},
    {"E=256 k=8 (DeepSeek-V3's router)", 33, 64, 256, 8, 24, 4, 1, 16, 50, 1, 0},
    {"E>1024 (grouping in global memory)", 40, 16, 1100, 8, 8, 2, 1, 8, 30, 1, 0},
};

// How close the test backend must come to the reference, each relative to the tensor's (or the
// number's) own scale.
struct Tolerances {
  double values = 1e-4;     // every op's tensors
  double losses = 1e-5;     // the numbers returned: cross-entropy, aux and z losses
  double optimizer = 1e-6;  // adamw's p, m, v
  // The routed experts' outputs and gradients. In bf16 mode their intermediates (A = silu(G)⊙U,
  // dY, dG, dU) are rounded after sums the two backends order differently, so a value within
  // rounding noise of a bf16 boundary lands one bf16 step (~4e-3 of it) apart: `experts` bounds
  // the worst element, and at least `experts_share` of all expert elements must be within
  // `values` (pooled over a run, see Tally).
  double experts = 1e-4;
  double experts_share = 1.0;
  // A tensor whose largest |ref| is below `zero` is compared to `zero` instead: an output that is
  // exactly 0 in one backend (w/Σw = 1 with one expert, so its gradient vanishes) may be 1e-8 in
  // another.
  double zero = 1e-3;
};

// ---- where a RouterSpec is built (one place) ----

inline moelab::RouterSpec router_spec(int64_t top_k, bool renormalize, bool sigmoid, const Tensor* selection_bias,
                                      bool reroute = false) {
  moelab::RouterSpec s;
  s.top_k = top_k;
  s.renormalize = renormalize;
  s.sigmoid = sigmoid;
  if (selection_bias) s.selection_bias = *selection_bias;
  s.capacity.reroute = reroute;  // the overflow policy limit_capacity follows
  return s;
}
inline moelab::RouterSpec with_reroute(moelab::RouterSpec s, bool reroute) {
  s.capacity.reroute = reroute;
  return s;
}

// ---- host helpers ----

inline std::vector<float> randn(Rng& r, int64_t n, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(r.normal()) * scale;
  return v;
}
// A tensor's values in double (exact for fp32 and fp64 backends) or in float.
inline std::vector<double> values(Backend& b, const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  b.download(t, v.data(), 0, -1);
  return v;
}
inline std::vector<float> values_f32(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  b.download(t, v.data(), 0, -1);
  return v;
}
inline std::vector<int32_t> ids_of(Backend& b, const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  b.download(t, v.data());
  return v;
}

// max |a − b| / max(max |b|, floor); NaN or Inf anywhere, or a size mismatch, gives +inf.
template <class A, class B>
double rel_diff(const std::vector<A>& a, const std::vector<B>& b, double floor = 1e-30) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, d);
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff == 0 ? 0 : diff / std::max(scale, floor);
}
// The share of elements within tight · max |b| of b.
template <class A, class B>
double share_within(const std::vector<A>& a, const std::vector<B>& b, double tight) {
  if (a.size() != b.size() || b.empty()) return 0;
  double scale = 0;
  for (const B& v : b) scale = std::max(scale, std::fabs(double(v)));
  size_t close = 0;
  for (size_t i = 0; i < a.size(); ++i) close += std::fabs(double(a[i]) - double(b[i])) <= tight * scale;
  return double(close) / double(a.size());
}
// A share pooled over many comparisons (one rounding flip moves everything downstream of it, so
// one comparison alone may have few close elements).
struct Tally {
  double close = 0, total = 0;
  double share() const { return total > 0 ? close / total : 0.0; }
};

// ---- two backends, one op ----

// The backends under comparison, their tolerances, and the expert-output share of this run.
struct Pair {
  Backend& test;
  Backend& ref;
  Tolerances tol;
  Tally experts;
  std::string label() const { return test.name() + " vs " + ref.name(); }
};

// One tensor on both backends.
struct Both {
  Tensor test, ref;
};

inline Both both(Pair& p, const std::vector<int64_t>& shape, const std::vector<float>& v) {
  Both t{p.test.alloc(shape), p.ref.alloc(shape)};
  p.test.upload(t.test, v.data());
  p.ref.upload(t.ref, v.data());
  return t;
}
inline Both both_ids(Pair& p, const std::vector<int64_t>& shape, const std::vector<int32_t>& v) {
  Both t{p.test.alloc(shape, Elem::Int32), p.ref.alloc(shape, Elem::Int32)};
  p.test.upload(t.test, v.data());
  p.ref.upload(t.ref, v.data());
  return t;
}
inline Both random_both(Pair& p, Rng& r, const std::vector<int64_t>& shape, float scale = 1.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return both(p, shape, randn(r, n, scale));
}

inline void fail_at(const Pair& p, const std::string& what) {
  check::report(__FILE__, __LINE__, p.label() + ": " + what);
}
inline void expect_close(Pair& p, const std::string& what, const Both& t, double tol) {
  const double rel = rel_diff(values(p.test, t.test), values(p.ref, t.ref), p.tol.zero);
  if (!(rel <= tol)) fail_at(p, what + ": relative difference " + std::to_string(rel));
}
inline void expect_close(Pair& p, const std::string& what, const Both& t) { expect_close(p, what, t, p.tol.values); }
// The routed experts' tensors: bounded by tol.experts, and counted into the pooled share.
inline void expect_experts_close(Pair& p, const std::string& what, const Both& t) {
  const std::vector<double> a = values(p.test, t.test), b = values(p.ref, t.ref);
  const double rel = rel_diff(a, b, p.tol.zero);
  p.experts.close += share_within(a, b, p.tol.values) * double(b.size());
  p.experts.total += double(b.size());
  if (!(rel <= p.tol.experts)) fail_at(p, what + ": relative difference " + std::to_string(rel));
}
// Equal once both are rounded to fp32 (what an fp32 backend holds).
inline void expect_same_values(Pair& p, const std::string& what, const Both& t) {
  if (values_f32(p.test, t.test) != values_f32(p.ref, t.ref)) fail_at(p, what + ": values differ");
}
inline void expect_same_ids(Pair& p, const std::string& what, const Both& t) {
  if (ids_of(p.test, t.test) != ids_of(p.ref, t.ref)) fail_at(p, what + ": ids differ");
}
inline void expect_near_scalar(Pair& p, const std::string& what, double test, double ref, double tol) {
  if (!(std::fabs(test - ref) <= tol * std::max(1e-12, std::fabs(ref))))
    fail_at(p, what + ": " + std::to_string(test) + " vs " + std::to_string(ref));
}
// After a run over the table: enough of the experts' elements agreed closely.
inline void expect_experts_share(Pair& p) {
  if (p.experts.total == 0) return fail_at(p, "no routed experts' elements were compared");
  std::fprintf(stderr, "  %s: %.2f%% of the routed experts' elements within %.0e\n", p.label().c_str(),
               100 * p.experts.share(), p.tol.values);
  if (!(p.experts.share() >= p.tol.experts_share))
    fail_at(p, "only " + std::to_string(100 * p.experts.share()) + "% of the routed experts' elements agree closely");
}

inline std::string tag(const OpShape& s, const char* op) { return std::string(s.name) + " / " + op; }

// ---- the checks ----

// Memory on the test backend alone, against literal values: zero-filled alloc, fill, copy,
// partial double uploads, int round trips, a slice, and sum_squares_all.
inline void check_memory_ops(Pair& p) {
  Backend& b = p.test;
  Tensor t = b.alloc({5, 3});
  CHECK(values(b, t) == std::vector<double>(15, 0.0));  // alloc zero-fills
  b.fill(t, 2.5f);
  CHECK(values(b, t) == std::vector<double>(15, 2.5));
  Tensor t2 = b.alloc({15});
  b.copy(t, t2);
  CHECK(values(b, t2) == std::vector<double>(15, 2.5));
  const std::vector<double> d = {0.125, -3.5, 1e-3};
  b.upload(t2, d.data(), 4, 3);
  std::vector<double> back(3);
  b.download(t2, back.data(), 4, 3);
  CHECK_NEAR(back[0], 0.125, 0);
  CHECK_NEAR(back[1], -3.5, 0);
  CHECK_NEAR(back[2], 1e-3, 1e-10);
  CHECK_NEAR(values(b, t2)[3], 2.5, 0);  // untouched around the range
  CHECK_NEAR(values(b, t2)[7], 2.5, 0);
  const std::vector<float> f = {1.5f, -2.0f};
  b.upload(t2, f.data(), 13, 2);
  CHECK_NEAR(values(b, t2)[14], -2.0, 0);
  const std::vector<int32_t> iv = {7, -1, 3};
  Tensor ti = b.alloc({3}, Elem::Int32);
  CHECK(ids_of(b, ti) == std::vector<int32_t>(3, 0));
  b.upload(ti, iv.data());
  CHECK(ids_of(b, ti) == iv);
  Tensor view = moelab::slice(b, t2, 6, {2, 2});  // elements 6..9 of t2
  b.fill(view, -1.0f);
  const std::vector<double> after = values(b, t2);
  CHECK(after[5] == -3.5 && after[6] == -1.0 && after[9] == -1.0 && after[10] == 2.5 && after[13] == 1.5);
  Tensor u = b.alloc_uninit({4, 2});
  CHECK(u.numel() == 8 && u.rows() == 4 && u.cols() == 2 && !u.empty());
  // The gradient norm over many tensors, with one wait.
  Both s1 = both(p, {4, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}), s2 = both(p, {2}, {0.5f, -1.5f});
  const double want_sq = p.ref.sum_squares_all({&s1.ref, &s2.ref});
  CHECK_NEAR(want_sq, 650.0 + 2.5, 1e-9);
  CHECK_NEAR(p.test.sum_squares_all({&s1.test, &s2.test}), want_sq, 1e-9);
  CHECK_NEAR(p.test.sum_squares_all({}), 0.0, 0);
}

inline void check_dense_ops(Pair& p, const OpShape& s, Rng& r) {
  const int64_t T = s.T, H = s.H, F = s.F, V = s.V;
  Backend &A = p.test, &R = p.ref;
  // embedding (+ backward with repeated ids)
  std::vector<int32_t> tok(static_cast<size_t>(T));
  for (auto& t : tok) t = int32_t(r.next_u64() % uint64_t(std::min<int64_t>(V, 7)));
  Both ids = both_ids(p, {T}, tok), table = random_both(p, r, {V, H}), emb = random_both(p, r, {T, H});
  R.embedding(table.ref, ids.ref, emb.ref);
  A.embedding(table.test, ids.test, emb.test);
  expect_same_values(p, tag(s, "embedding"), emb);
  Both dtable = random_both(p, r, {V, H}), dout = random_both(p, r, {T, H});
  R.embedding_backward(ids.ref, dout.ref, dtable.ref);
  A.embedding_backward(ids.test, dout.test, dtable.test);
  expect_close(p, tag(s, "embedding_backward"), dtable);

  // linear: with and without a bias, overwriting and accumulating
  Both x = random_both(p, r, {T, H}), w = random_both(p, r, {F, H}, 0.2f), bias = random_both(p, r, {F}),
       y = random_both(p, r, {T, F});
  struct LinearCase {
    const char* name;
    bool bias, accumulate;
  };
  for (const LinearCase& c : {LinearCase{"linear + bias", true, false}, LinearCase{"linear accumulate", false, true},
                              LinearCase{"linear + bias accumulate", true, true}, LinearCase{"linear", false, false}}) {
    R.linear(x.ref, w.ref, c.bias ? &bias.ref : nullptr, y.ref, c.accumulate);
    A.linear(x.test, w.test, c.bias ? &bias.test : nullptr, y.test, c.accumulate);
    expect_close(p, tag(s, c.name), y);
  }
  for (bool acc : {false, true}) {
    Both dy = random_both(p, r, {T, F}), dx = random_both(p, r, {T, H}), dw = random_both(p, r, {F, H}),
         db = random_both(p, r, {F});
    R.linear_backward(x.ref, w.ref, dy.ref, &dx.ref, acc, dw.ref, &db.ref);
    A.linear_backward(x.test, w.test, dy.test, &dx.test, acc, dw.test, &db.test);
    expect_close(p, tag(s, acc ? "linear_backward dx (+=)" : "linear_backward dx"), dx);
    expect_close(p, tag(s, "linear_backward dw"), dw);
    expect_close(p, tag(s, "linear_backward db"), db);
  }
  {  // without dx and db (the first layer's weights)
    Both dy = random_both(p, r, {T, F}), dw = random_both(p, r, {F, H});
    R.linear_backward(x.ref, w.ref, dy.ref, nullptr, false, dw.ref, nullptr);
    A.linear_backward(x.test, w.test, dy.test, nullptr, false, dw.test, nullptr);
    expect_close(p, tag(s, "linear_backward dw only"), dw);
  }

  // rmsnorm over H, per head over D (in place), and their backward
  Both nw = random_both(p, r, {H}), hn = random_both(p, r, {T, H});
  R.rmsnorm(x.ref, nw.ref, 1e-5f, hn.ref);
  A.rmsnorm(x.test, nw.test, 1e-5f, hn.test);
  expect_close(p, tag(s, "rmsnorm"), hn);
  Both qh = random_both(p, r, {T, s.NH * s.D}), dw_head = random_both(p, r, {s.D});
  R.rmsnorm(qh.ref, dw_head.ref, 1e-6f, qh.ref);
  A.rmsnorm(qh.test, dw_head.test, 1e-6f, qh.test);
  expect_close(p, tag(s, "rmsnorm per head, in place"), qh);
  for (bool acc : {false, true}) {
    Both dy = random_both(p, r, {T, H}), dx = random_both(p, r, {T, H}), dnw = random_both(p, r, {H});
    R.rmsnorm_backward(x.ref, nw.ref, dy.ref, 1e-5f, dx.ref, acc, dnw.ref);
    A.rmsnorm_backward(x.test, nw.test, dy.test, 1e-5f, dx.test, acc, dnw.test);
    expect_close(p, tag(s, "rmsnorm_backward dx"), dx);
    expect_close(p, tag(s, "rmsnorm_backward dw"), dnw);
  }
  {
    Both dy = random_both(p, r, {T, s.NH * s.D}), dx = random_both(p, r, {T, s.NH * s.D}),
         dhw = random_both(p, r, {s.D});
    R.rmsnorm_backward(qh.ref, dw_head.ref, dy.ref, 1e-6f, dx.ref, true, dhw.ref);
    A.rmsnorm_backward(qh.test, dw_head.test, dy.test, 1e-6f, dx.test, true, dhw.test);
    expect_close(p, tag(s, "rmsnorm_backward per head dx"), dx);
    expect_close(p, tag(s, "rmsnorm_backward per head dw"), dhw);
  }

  // clamp, swiglu (+ in place, backward), add, row_norms
  Both c = random_both(p, r, {T, H});
  R.clamp(c.ref, -0.5f, 0.7f);
  A.clamp(c.test, -0.5f, 0.7f);
  expect_same_values(p, tag(s, "clamp"), c);
  Both g = random_both(p, r, {T, F}, 2.0f), u = random_both(p, r, {T, F}), a = random_both(p, r, {T, F});
  R.swiglu(g.ref, u.ref, a.ref);
  A.swiglu(g.test, u.test, a.test);
  expect_close(p, tag(s, "swiglu"), a);
  Both dg = random_both(p, r, {T, F}), du = random_both(p, r, {T, F});
  R.swiglu_backward(g.ref, u.ref, a.ref, dg.ref, du.ref);
  A.swiglu_backward(g.test, u.test, a.test, dg.test, du.test);
  expect_close(p, tag(s, "swiglu_backward dgate"), dg);
  expect_close(p, tag(s, "swiglu_backward dup"), du);
  R.swiglu(g.ref, u.ref, g.ref);
  A.swiglu(g.test, u.test, g.test);
  expect_close(p, tag(s, "swiglu in place"), g);
  R.add(c.ref, x.ref);
  A.add(c.test, x.test);
  expect_close(p, tag(s, "add"), c);
  Both norms = random_both(p, r, {T});
  R.row_norms(x.ref, norms.ref);
  A.row_norms(x.test, norms.test);
  expect_close(p, tag(s, "row_norms"), norms);

  // shared-expert gate and noisy logits (+ backward)
  Both gl = random_both(p, r, {T, 1}, 2.0f), acc_y = random_both(p, r, {T, H});
  R.add_sigmoid_gated(acc_y.ref, x.ref, gl.ref);
  A.add_sigmoid_gated(acc_y.test, x.test, gl.test);
  expect_close(p, tag(s, "add_sigmoid_gated"), acc_y);
  Both dy = random_both(p, r, {T, H}), dxg = random_both(p, r, {T, H}), dgl = random_both(p, r, {T, 1});
  R.sigmoid_gated_backward(x.ref, gl.ref, dy.ref, dxg.ref, dgl.ref);
  A.sigmoid_gated_backward(x.test, gl.test, dy.test, dxg.test, dgl.test);
  expect_close(p, tag(s, "sigmoid_gated_backward dx"), dxg);
  expect_close(p, tag(s, "sigmoid_gated_backward dg"), dgl);
  const int64_t E = s.E;
  Both clean = random_both(p, r, {T, E}), raw = random_both(p, r, {T, E}, 8.0f), noise = random_both(p, r, {T, E}),
       noisy = random_both(p, r, {T, E}), draw = random_both(p, r, {T, E});
  R.noisy_logits(clean.ref, raw.ref, noise.ref, noisy.ref);
  A.noisy_logits(clean.test, raw.test, noise.test, noisy.test);
  expect_close(p, tag(s, "noisy_logits"), noisy);
  R.noisy_logits_backward(raw.ref, noise.ref, clean.ref, draw.ref);
  A.noisy_logits_backward(raw.test, noise.test, clean.test, draw.test);
  expect_close(p, tag(s, "noisy_logits_backward"), draw);

  // cross-entropy with ignored targets
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (size_t i = 0; i < tg.size(); ++i) tg[i] = i % 5 == 3 ? -1 : int32_t(r.next_u64() % uint64_t(V));
  Both targets = both_ids(p, {T}, tg), logits = random_both(p, r, {T, V}, 3.0f), dlogits = random_both(p, r, {T, V});
  const double lr = R.cross_entropy(logits.ref, targets.ref, dlogits.ref, 0.5f);
  const double lt = A.cross_entropy(logits.test, targets.test, dlogits.test, 0.5f);
  expect_near_scalar(p, tag(s, "cross_entropy loss"), lt, lr, p.tol.losses);
  expect_close(p, tag(s, "cross_entropy dlogits"), dlogits);

  // optimizer pieces
  std::vector<float> second_moment = randn(r, F * H, 0.01f);
  for (float& e : second_moment) e = std::fabs(e);  // v >= 0
  Both pw = random_both(p, r, {F, H}), gr = random_both(p, r, {F, H}), m = random_both(p, r, {F, H}, 0.1f),
       v = both(p, {F, H}, second_moment);
  expect_near_scalar(p, tag(s, "sum_squares"), A.sum_squares(gr.test), R.sum_squares(gr.ref), p.tol.values);
  R.scale(gr.ref, 0.37f);
  A.scale(gr.test, 0.37f);
  expect_same_values(p, tag(s, "scale"), gr);
  R.adamw(pw.ref, gr.ref, m.ref, v.ref, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  A.adamw(pw.test, gr.test, m.test, v.test, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  expect_close(p, tag(s, "adamw p"), pw, p.tol.optimizer);
  expect_close(p, tag(s, "adamw m"), m, p.tol.optimizer);
  expect_close(p, tag(s, "adamw v"), v, p.tol.optimizer);
}

inline void check_attention_ops(Pair& p, const OpShape& s, Rng& r) {
  const int64_t B = s.B, T = s.T, NH = s.NH, NKV = s.NKV, D = s.D, past = s.past, S = past + T + 2;
  Backend &A = p.test, &R = p.ref;
  // RoPE at an offset, per sequence (row r is position pos0 + r % T), and back.
  Both q = random_both(p, r, {B * T, NH * D}), k = random_both(p, r, {B * S, NKV * D}),
       v = random_both(p, r, {B * S, NKV * D});
  R.rope(q.ref, NH, D, past, T, 1e4);
  A.rope(q.test, NH, D, past, T, 1e4);
  expect_close(p, tag(s, "rope"), q);
  R.rope(k.ref, NKV, D, 0, S, 1e6);
  A.rope(k.test, NKV, D, 0, S, 1e6);
  expect_close(p, tag(s, "rope (theta 1e6)"), k);
  R.rope(k.ref, NKV, D, 0, S, 1e6, true);
  A.rope(k.test, NKV, D, 0, S, 1e6, true);
  expect_close(p, tag(s, "rope inverse"), k);
  // Llama-3.1 scaling (every branch when D >= 8 at theta 1e6 and an original context of 64)
  const moelab::RopeSpec llama3(1e6, {moelab::RopeType::Llama3, 8.0, 1.0, 4.0, 64});
  R.rope(q.ref, NH, D, past, T, llama3);
  A.rope(q.test, NH, D, past, T, llama3);
  expect_close(p, tag(s, "rope (llama3 scaling)"), q);
  // KV-cache append
  Both rows = random_both(p, r, {T, NKV * D});
  R.copy_rows(rows.ref, k.ref, past);
  A.copy_rows(rows.test, k.test, past);
  expect_close(p, tag(s, "copy_rows"), k);
  // forward with past positions, GQA, batch
  Both out = random_both(p, r, {B * T, NH * D});
  R.attention(q.ref, k.ref, v.ref, B, past, NH, NKV, D, out.ref);
  A.attention(q.test, k.test, v.test, B, past, NH, NKV, D, out.test);
  expect_close(p, tag(s, "attention"), out);
  // backward (past = 0, S = T)
  Both q2 = random_both(p, r, {B * T, NH * D}), k2 = random_both(p, r, {B * T, NKV * D}),
       v2 = random_both(p, r, {B * T, NKV * D}), dout = random_both(p, r, {B * T, NH * D}),
       dq = random_both(p, r, {B * T, NH * D}), dk = random_both(p, r, {B * T, NKV * D}),
       dv = random_both(p, r, {B * T, NKV * D});
  R.attention_backward(q2.ref, k2.ref, v2.ref, dout.ref, B, NH, NKV, D, dq.ref, dk.ref, dv.ref);
  A.attention_backward(q2.test, k2.test, v2.test, dout.test, B, NH, NKV, D, dq.test, dk.test, dv.test);
  expect_close(p, tag(s, "attention_backward dq"), dq);
  expect_close(p, tag(s, "attention_backward dk"), dk);
  expect_close(p, tag(s, "attention_backward dv"), dv);
}

// Routed-expert weights [E,F,H], [E,F,H], [E,H,F] on both backends.
struct BothExperts {
  Both gate, up, down;
  moelab::ExpertWeights test() const { return {gate.test, up.test, down.test, {}, {}, {}}; }
  moelab::ExpertWeights ref() const { return {gate.ref, up.ref, down.ref, {}, {}, {}}; }
};

// The routed experts and their backward over a routing (ids may hold dropped slots, -1). The
// weight gradients start at a constant, so that accumulating (+=) is checked, and stay small
// beside the gradients they receive.
inline void check_expert_ops(Pair& p, const std::string& name, const OpShape& s, Rng& r, const BothExperts& ew,
                             const std::vector<int32_t>& id_host, const std::vector<float>& w_host) {
  const int64_t T = s.T, E = s.E, K = s.K, H = s.H, F = s.F;
  Backend &A = p.test, &R = p.ref;
  Both ids = both_ids(p, {T, K}, id_host), w = both(p, {T, K}, w_host), x = random_both(p, r, {T, H}),
       out = random_both(p, r, {T, H});
  const moelab::ExpertWeights wr = ew.ref(), wt = ew.test();
  R.moe_experts(x.ref, ids.ref, w.ref, wr, out.ref);
  A.moe_experts(x.test, ids.test, w.test, wt, out.test);
  expect_experts_close(p, name + " / moe_experts", out);
  const std::vector<float> start(size_t(E * F * H), 0.01f);
  Both dout = random_both(p, r, {T, H}), dx = random_both(p, r, {T, H}), dweights = random_both(p, r, {T, K});
  BothExperts dw{both(p, {E, F, H}, start), both(p, {E, F, H}, start), both(p, {E, H, F}, start)};
  moelab::ExpertWeights dwr = dw.ref(), dwt = dw.test();
  R.moe_experts_backward(x.ref, ids.ref, w.ref, wr, dout.ref, dx.ref, dweights.ref, dwr);
  A.moe_experts_backward(x.test, ids.test, w.test, wt, dout.test, dx.test, dweights.test, dwt);
  expect_experts_close(p, name + " / moe_experts_backward dx", dx);
  expect_experts_close(p, name + " / moe_experts_backward dweights", dweights);
  expect_experts_close(p, name + " / moe_experts_backward dgate", dw.gate);
  expect_experts_close(p, name + " / moe_experts_backward dup", dw.up);
  expect_experts_close(p, name + " / moe_experts_backward ddown", dw.down);
  // The same backward from the activations the forward pass kept (training's path on the CPU):
  // each tested backend against the reference's recomputing backward above.
  moelab::ExpertActivations kept;
  Both out2 = random_both(p, r, {T, H});
  A.moe_experts(x.test, ids.test, w.test, wt, out2.test, &kept);
  R.moe_experts(x.ref, ids.ref, w.ref, wr, out2.ref);
  expect_experts_close(p, name + " / moe_experts keeping activations", out2);
  Both dx2 = random_both(p, r, {T, H});
  BothExperts dw2{both(p, {E, F, H}, start), both(p, {E, F, H}, start), both(p, {E, H, F}, start)};
  moelab::ExpertWeights dwr2 = dw2.ref(), dwt2 = dw2.test();
  R.moe_experts_backward(x.ref, ids.ref, w.ref, wr, dout.ref, dx2.ref, dweights.ref, dwr2);
  A.moe_experts_backward(x.test, ids.test, w.test, wt, dout.test, dx2.test, dweights.test, dwt2, &kept);
  expect_experts_close(p, name + " / moe_experts_backward kept dx", dx2);
  expect_experts_close(p, name + " / moe_experts_backward kept dweights", dweights);
  expect_experts_close(p, name + " / moe_experts_backward kept dgate", dw2.gate);
  expect_experts_close(p, name + " / moe_experts_backward kept dup", dw2.up);
  expect_experts_close(p, name + " / moe_experts_backward kept ddown", dw2.down);
}

inline void check_router_ops(Pair& p, const OpShape& s, Rng& r) {
  const int64_t T = s.T, E = s.E, K = s.K;
  Backend &A = p.test, &R = p.ref;
  // Biases: small, plus a banned (-inf) and a forced (+inf) expert when there are enough experts.
  std::vector<float> bias_host = randn(r, E, 0.05f);
  if (E > 3) {
    bias_host[1] = -std::numeric_limits<float>::infinity();
    bias_host[2] = std::numeric_limits<float>::infinity();
  }
  Both bias = both(p, {E}, bias_host);
  const BothExperts experts{random_both(p, r, {E, s.F, s.H}, 0.2f), random_both(p, r, {E, s.F, s.H}, 0.2f),
                            random_both(p, r, {E, s.H, s.F}, 0.2f)};
  struct Variant {
    const char* name;
    bool sigmoid, renorm, use_bias;
  };
  for (const Variant& var : {Variant{"softmax renorm", false, true, false}, Variant{"softmax", false, false, false},
                             Variant{"sigmoid + bias", true, true, true}, Variant{"softmax + bias", false, false, true}}) {
    const std::string name = std::string(s.name) + " / " + var.name;
    const moelab::RouterSpec sr = router_spec(K, var.renorm, var.sigmoid, var.use_bias ? &bias.ref : nullptr);
    const moelab::RouterSpec st = router_spec(K, var.renorm, var.sigmoid, var.use_bias ? &bias.test : nullptr);
    // Exact ties must break toward the lower expert index: token 0 has all logits equal, token 1
    // two equal best logits (first and last expert).
    std::vector<float> logit_host = randn(r, T * E, 2.0f);
    for (int64_t e = 0; e < E; ++e) logit_host[size_t(e)] = 0.5f;
    if (T > 1) logit_host[size_t(E)] = logit_host[size_t(2 * E - 1)] = 9.0f;
    Both logits = both(p, {T, E}, logit_host), probs = random_both(p, r, {T, E}),
         ids = both_ids(p, {T, K}, std::vector<int32_t>(size_t(T * K), 7)), weights = random_both(p, r, {T, K});
    R.route(logits.ref, sr, probs.ref, ids.ref, weights.ref);
    A.route(logits.test, st, probs.test, ids.test, weights.test);
    expect_close(p, name + " / route probs", probs);
    expect_same_ids(p, name + " / route ids", ids);
    expect_close(p, name + " / route weights", weights);

    // route_backward from the reference's routing, on both
    const std::vector<float> p_host = values_f32(R, probs.ref);
    const std::vector<int32_t> id_host = ids_of(R, ids.ref);
    for (bool acc : {false, true}) {
      Both pr = both(p, {T, E}, p_host), id = both_ids(p, {T, K}, id_host), dw = random_both(p, r, {T, K}),
           dl = random_both(p, r, {T, E});
      R.route_backward(pr.ref, id.ref, dw.ref, sr, dl.ref, acc);
      A.route_backward(pr.test, id.test, dw.test, st, dl.test, acc);
      expect_close(p, name + (acc ? " / route_backward (+=)" : " / route_backward"), dl);
    }

    // capacity: drop and re-route, from the same routing on both
    for (bool reroute : {false, true}) {
      Both pr = both(p, {T, E}, p_host), id = both_ids(p, {T, K}, id_host), w = random_both(p, r, {T, K}),
           dropped = random_both(p, r, {T, K});
      const int64_t cap = std::max<int64_t>(1, int64_t(std::ceil(0.6 * double(T * K) / double(E))));
      R.limit_capacity(pr.ref, with_reroute(sr, reroute), cap, id.ref, w.ref, dropped.ref);
      A.limit_capacity(pr.test, with_reroute(st, reroute), cap, id.test, w.test, dropped.test);
      const std::string cn = name + (reroute ? " / capacity re-route" : " / capacity drop");
      expect_same_ids(p, cn + " ids", id);
      expect_same_values(p, cn + " dropped", dropped);
      expect_close(p, cn + " weights", w);

      // the experts and the router's backward over the capacity-limited routing (dropped slots
      // included), from the reference's result
      const std::vector<int32_t> cap_ids = ids_of(R, id.ref);
      const std::vector<float> cap_w = values_f32(R, w.ref);
      check_expert_ops(p, cn, s, r, experts, cap_ids, cap_w);
      Both pr2 = both(p, {T, E}, p_host), id2 = both_ids(p, {T, K}, cap_ids), dw = random_both(p, r, {T, K}),
           dl = random_both(p, r, {T, E});
      R.route_backward(pr2.ref, id2.ref, dw.ref, sr, dl.ref, true);
      A.route_backward(pr2.test, id2.test, dw.test, st, dl.test, true);
      expect_close(p, cn + " / route_backward", dl);

      // balancing losses on the capacity-limited ids, returned and summed on the device
      Both dl2 = random_both(p, r, {T, E});
      const auto [ar, zr] = R.router_losses(logits.ref, id2.ref, 0.3f, 0.05f, dl2.ref);
      const auto [at, zt] = A.router_losses(logits.test, id2.test, 0.3f, 0.05f, dl2.test);
      expect_near_scalar(p, cn + " / router_losses aux", at, ar, p.tol.losses);
      expect_near_scalar(p, cn + " / router_losses z", zt, zr, p.tol.losses);
      expect_close(p, cn + " / router_losses dlogits", dl2);
      Both sums = both(p, {2}, {0.25f, -1.0f});
      R.router_losses_add(logits.ref, id2.ref, 0.3f, 0.05f, dl2.ref, sums.ref);
      A.router_losses_add(logits.test, id2.test, 0.3f, 0.05f, dl2.test, sums.test);
      expect_close(p, cn + " / router_losses_add sums", sums, p.tol.losses);
      expect_close(p, cn + " / router_losses_add dlogits", dl2);
    }
  }
}

// Every op over the whole table, then memory.
inline void check_every_op(Pair& p, uint64_t seed = 2024) {
  Rng r(seed);
  for (const OpShape& s : kShapes) {
    const auto t0 = std::chrono::steady_clock::now();
    check_dense_ops(p, s, r);
    const auto t1 = std::chrono::steady_clock::now();
    check_attention_ops(p, s, r);
    const auto t2 = std::chrono::steady_clock::now();
    check_router_ops(p, s, r);
    const auto t3 = std::chrono::steady_clock::now();
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    std::fprintf(stderr, "  %s / %s: dense %.0f ms, attention %.0f ms, router %.0f ms\n", p.label().c_str(), s.name,
                 ms(t0, t1), ms(t1, t2), ms(t2, t3));
  }
  check_memory_ops(p);
  expect_experts_share(p);
}

}  // namespace backend_ops
