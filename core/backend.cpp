// Backend's own functions: every op's shape checks (once, for every backend), the defaults
// every backend inherits, precision names, and slice().
#include "backend.hpp"

#include <cctype>

#include "error.hpp"
#include "router.hpp"

namespace moelab {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::TF32: return "tf32";
    case Precision::BF16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& text) {
  std::string t = text;
  for (char& c : t) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (Precision p : {Precision::FP32, Precision::TF32, Precision::BF16})
    if (t == precision_name(p)) return p;
  fail("precision", "unknown mode '" + text + "' (choose fp32, tf32 or bf16)");
}

// ---- the ops: shapes and element types checked here, once for every backend ----
// A failed check is a bug in the caller (the model, the trainer, a test), never bad user input:
// user input is validated before it reaches a Backend.

namespace {
bool real(const Tensor& t) { return t.type == Elem::Real; }
bool weight(const Tensor& t) { return t.type == Elem::Real || is_stored_lowp(t.type); }
bool i32(const Tensor& t) { return t.type == Elem::Int32; }
bool same(const Tensor& a, const Tensor& b) { return a.numel() == b.numel(); }
// An expert stack [E,F,H] [E,F,H] [E,H,F] of hidden size H.
bool experts_ok(const ExpertWeights& w, int64_t H) {
  const bool stacked = w.gate.shape.size() == 3 && w.up.shape == w.gate.shape && w.down.shape.size() == 3 &&
                       w.down.shape[0] == w.gate.shape[0] && w.down.shape[1] == H &&
                       w.down.shape[2] == w.gate.shape[1] && w.gate.shape[2] == H;
  if (!stacked) return false;
  if (!w.per_expert()) return real(w.gate) && real(w.up) && real(w.down);
  const int64_t E = w.gate.shape[0], F = w.gate.shape[1];
  if (int64_t(w.gate_e.size()) != E || int64_t(w.up_e.size()) != E || int64_t(w.down_e.size()) != E) return false;
  for (int64_t e = 0; e < E; ++e) {
    const Tensor &g = w.gate_e[size_t(e)], &u = w.up_e[size_t(e)], &d = w.down_e[size_t(e)];
    if (!is_stored_lowp(g.type) || u.type != g.type || d.type != g.type || g.ptr == nullptr || u.ptr == nullptr ||
        d.ptr == nullptr || g.numel() != F * H || u.numel() != F * H || d.numel() != H * F)
      return false;
  }
  return true;
}
// Routing of T tokens with K slots each: ids [T,K] (I32) and weights [T,K] (Real).
bool slots_ok(const Tensor& ids, const Tensor& weights, int64_t T) {
  return i32(ids) && real(weights) && ids.rows() == T && weights.numel() == ids.numel();
}
}  // namespace

void Backend::fill(Tensor& t, float value) {
  MOELAB_ASSERT(real(t), "fill: a Real tensor");
  do_fill(t, value);
}

void Backend::copy(const Tensor& src, Tensor& dst) {
  MOELAB_ASSERT(same(src, dst) && src.type == dst.type, "copy: same size and element type");
  do_copy(src, dst);
}

void Backend::embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  MOELAB_ASSERT(i32(ids) && weight(table) && out.rows() == ids.numel() && out.cols() == table.cols(),
                "embedding shapes: table [V,H], ids [T], out [T,H]");
  do_embedding(table, ids, out);
}

void Backend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out, bool accumulate) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  MOELAB_ASSERT(w.cols() == K && out.rows() == T && out.cols() == N && (!bias || bias->numel() == N) && real(x) &&
                    real(out) && weight(w) && (!bias || real(*bias)),
                "linear shapes: x [T,K], w [N,K], bias [N], out [T,N]");
  do_linear(x, w, bias, out, accumulate);
}

void Backend::rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  const int64_t C = w.numel();
  MOELAB_ASSERT(C > 0 && x.numel() % C == 0 && same(out, x), "rmsnorm shapes: x [R·C], w [C], out like x");
  do_rmsnorm(x, w, eps, out);
}

void Backend::clamp(Tensor& x, float lo, float hi) {
  MOELAB_ASSERT(real(x) && lo <= hi, "clamp: a Real tensor and lo <= hi");
  do_clamp(x, lo, hi);
}

void Backend::rope(Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, int64_t seq_len, const RopeSpec& rope,
                   bool inverse) {
  MOELAB_ASSERT(x.cols() == n_heads * head_dim && head_dim % 2 == 0 && seq_len > 0 && pos0 >= 0,
                "rope shapes: x [R, n·D], D even");
  do_rope(x, n_heads, head_dim, pos0, seq_len, rope, inverse);
}

void Backend::copy_rows(const Tensor& src, Tensor& dst, int64_t row0) {
  // (While recording, the row comes from the device at replay; the one given is checked as well.)
  MOELAB_ASSERT(src.cols() == dst.cols() && src.type == dst.type && row0 >= 0 && row0 + src.rows() <= dst.rows(),
                "copy_rows shapes: src [R,C] into rows row0.. of dst [S,C]");
  do_copy_rows(src, dst, row0);
}

void Backend::attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t batch, int64_t past,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& out) {
  MOELAB_ASSERT(batch > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && q.rows() % batch == 0 &&
                    k.rows() % batch == 0,
                "attention: heads a multiple of kv heads, rows a multiple of the batch");
  const int64_t T = q.rows() / batch, S = k.rows() / batch;
  MOELAB_ASSERT(q.cols() == n_heads * head_dim && k.cols() == n_kv_heads * head_dim && same(v, k) && same(out, q) &&
                    past >= 0 && past + T <= S,
                "attention shapes: q [B·T, NH·D], k and v [B·S, NKV·D] holding past + T positions, out like q");
  do_attention(q, k, v, batch, past, n_heads, n_kv_heads, head_dim, out);
}

void Backend::route(const Tensor& logits, const RouterSpec& spec, Tensor& probs, Tensor& ids, Tensor& weights) {
  const int64_t T = logits.rows(), E = logits.cols(), K = spec.top_k;
  MOELAB_ASSERT(K >= 1 && K <= E && same(probs, logits) && slots_ok(ids, weights, T) && ids.numel() == T * K &&
                    (spec.selection_bias.empty() || spec.selection_bias.numel() == E),
                "route shapes: logits and probs [T,E], ids and weights [T,K], K <= E, bias [E]");
  do_route(logits, spec, probs, ids, weights);
}

void Backend::limit_capacity(const Tensor& probs, const RouterSpec& spec, int64_t capacity, Tensor& ids,
                             Tensor& weights, Tensor& dropped) {
  const int64_t T = probs.rows(), E = probs.cols(), K = spec.top_k;
  MOELAB_ASSERT(capacity >= 0 && slots_ok(ids, weights, T) && ids.numel() == T * K && same(dropped, ids) &&
                    real(dropped) && (spec.selection_bias.empty() || spec.selection_bias.numel() == E),
                "limit_capacity shapes: probs [T,E], ids, weights and dropped [T,K], bias [E]");
  do_limit_capacity(probs, spec, capacity, ids, weights, dropped);
}

void Backend::moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const ExpertWeights& w,
                          Tensor& out, ExpertActivations* keep) {
  MOELAB_ASSERT(experts_ok(w, x.cols()) && slots_ok(ids, weights, x.rows()) && same(out, x),
                "moe_experts shapes: x and out [T,H], ids and weights [T,K], experts [E,F,H] [E,F,H] [E,H,F]");
  if (keep) {
    *keep = ExpertActivations();
    do_moe_experts_keep(x, ids, weights, w, out, *keep);
  } else {
    do_moe_experts(x, ids, weights, w, out);
  }
}

void Backend::swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  MOELAB_ASSERT(same(up, gate) && same(out, gate), "swiglu shapes: gate, up and out alike");
  do_swiglu(gate, up, out);
}

void Backend::add(Tensor& y, const Tensor& x) {
  MOELAB_ASSERT(same(y, x) && real(x) && real(y), "add shapes: y and x alike");
  do_add(y, x);
}

void Backend::row_norms(const Tensor& x, Tensor& out) {
  MOELAB_ASSERT(out.numel() == x.rows(), "row_norms shapes: x [R,C], out [R]");
  do_row_norms(x, out);
}

void Backend::add_sigmoid_gated(Tensor& y, const Tensor& x, const Tensor& g) {
  MOELAB_ASSERT(same(y, x) && g.numel() == y.rows(), "add_sigmoid_gated shapes: y and x [T,H], g [T,1]");
  do_add_sigmoid_gated(y, x, g);
}

void Backend::noisy_logits(const Tensor& clean, const Tensor& raw, const Tensor& noise, Tensor& out) {
  MOELAB_ASSERT(same(raw, clean) && same(noise, clean) && same(out, clean), "noisy_logits shapes: all [T,E]");
  do_noisy_logits(clean, raw, noise, out);
}

double Backend::cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& dlogits, float scale) {
  MOELAB_ASSERT(i32(targets) && targets.numel() == logits.rows() && same(dlogits, logits),
                "cross_entropy shapes: logits and dlogits [N,V], targets [N]");
  return do_cross_entropy(logits, targets, dlogits, scale);
}

void Backend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool accumulate_dx,
                              Tensor& dw, Tensor* db) {
  const int64_t T = x.rows(), K = x.cols(), N = w.rows();
  MOELAB_ASSERT(w.cols() == K && dy.rows() == T && dy.cols() == N && same(dw, w) && (!dx || same(*dx, x)) &&
                    (!db || db->numel() == N) && real(w),
                "linear_backward shapes: x [T,K], w and dw [N,K], dy [T,N], dx like x, db [N]");
  do_linear_backward(x, w, dy, dx, accumulate_dx, dw, db);
}

void Backend::rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, Tensor& dx,
                               bool accumulate_dx, Tensor& dw) {
  const int64_t C = w.numel();
  MOELAB_ASSERT(C > 0 && x.numel() % C == 0 && same(dy, x) && same(dx, x) && same(dw, w),
                "rmsnorm_backward shapes: x, dy and dx [R·C], w and dw [C]");
  do_rmsnorm_backward(x, w, dy, eps, dx, accumulate_dx, dw);
}

void Backend::embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  MOELAB_ASSERT(i32(ids) && dout.rows() == ids.numel() && dout.cols() == dtable.cols(),
                "embedding_backward shapes: ids [T], dout [T,H], dtable [V,H]");
  do_embedding_backward(ids, dout, dtable);
}

void Backend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                                 int64_t batch, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, Tensor& dq,
                                 Tensor& dk, Tensor& dv) {
  MOELAB_ASSERT(batch > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && q.rows() % batch == 0 &&
                    k.rows() == q.rows() && q.cols() == n_heads * head_dim && k.cols() == n_kv_heads * head_dim &&
                    same(v, k) && same(dout, q) && same(dq, q) && same(dk, k) && same(dv, v),
                "attention_backward shapes: q, dout and dq [B·T, NH·D], k, v, dk and dv [B·T, NKV·D]");
  do_attention_backward(q, k, v, dout, batch, n_heads, n_kv_heads, head_dim, dq, dk, dv);
}

void Backend::swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) {
  MOELAB_ASSERT(same(up, gate) && same(dout, gate) && same(dgate, gate) && same(dup, gate),
                "swiglu_backward shapes: all alike");
  do_swiglu_backward(gate, up, dout, dgate, dup);
}

void Backend::route_backward(const Tensor& probs, const Tensor& ids, const Tensor& dweights, const RouterSpec& spec,
                             Tensor& dlogits, bool accumulate) {
  MOELAB_ASSERT(slots_ok(ids, dweights, probs.rows()) && same(dlogits, probs),
                "route_backward shapes: probs and dlogits [T,E], ids and dweights [T,K]");
  do_route_backward(probs, ids, dweights, spec, dlogits, accumulate);
}

std::pair<double, double> Backend::router_losses(const Tensor& logits, const Tensor& ids, float aux_coef,
                                                 float z_coef, Tensor& dlogits) {
  MOELAB_ASSERT(i32(ids) && ids.rows() == logits.rows() && same(dlogits, logits),
                "router_losses shapes: logits and dlogits [N,E], ids [N,K]");
  return do_router_losses(logits, ids, aux_coef, z_coef, dlogits);
}

void Backend::router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                Tensor& dlogits, Tensor& sums) {
  MOELAB_ASSERT(i32(ids) && ids.rows() == logits.rows() && same(dlogits, logits) && real(sums) && sums.numel() == 2,
                "router_losses_add shapes: logits and dlogits [N,E], ids [N,K], sums [2]");
  do_router_losses_add(logits, ids, aux_coef, z_coef, dlogits, sums);
}

void Backend::moe_experts_backward(const Tensor& x, const Tensor& ids, const Tensor& weights,
                                   const ExpertWeights& w, const Tensor& dout, Tensor& dx, Tensor& dweights,
                                   ExpertWeights& dw, const ExpertActivations* kept) {
  MOELAB_ASSERT(experts_ok(w, x.cols()) && !w.per_expert() && slots_ok(ids, weights, x.rows()) && same(dout, x) &&
                    same(dx, x) && same(dweights, weights) && dw.gate.shape == w.gate.shape &&
                    dw.up.shape == w.up.shape && dw.down.shape == w.down.shape,
                "moe_experts_backward shapes: x, dout and dx [T,H], ids, weights and dweights [T,K], "
                "expert gradients like the experts");
  if (kept && !kept->empty()) {
    const int64_t S = kept->gate.rows(), F = w.gate.shape[1], H = x.cols();
    MOELAB_ASSERT(S <= ids.numel() && kept->gate.shape == std::vector<int64_t>({S, F}) &&
                      kept->up.shape == kept->gate.shape && kept->out.shape == std::vector<int64_t>({S, H}),
                  "moe_experts_backward kept activations: gate, up [S,F] and out [S,H], S <= T·K");
    do_moe_experts_backward_kept(x, ids, weights, w, dout, dx, dweights, dw, *kept);
  } else {
    do_moe_experts_backward(x, ids, weights, w, dout, dx, dweights, dw);
  }
}

void Backend::sigmoid_gated_backward(const Tensor& x, const Tensor& g, const Tensor& dy, Tensor& dx, Tensor& dg) {
  MOELAB_ASSERT(same(dy, x) && same(dx, x) && g.numel() == x.rows() && same(dg, g),
                "sigmoid_gated_backward shapes: x, dy and dx [T,H], g and dg [T,1]");
  do_sigmoid_gated_backward(x, g, dy, dx, dg);
}

void Backend::noisy_logits_backward(const Tensor& raw, const Tensor& noise, const Tensor& dout, Tensor& draw) {
  MOELAB_ASSERT(same(noise, raw) && same(dout, raw) && same(draw, raw), "noisy_logits_backward shapes: all [T,E]");
  do_noisy_logits_backward(raw, noise, dout, draw);
}

double Backend::sum_squares(const Tensor& x) {
  MOELAB_ASSERT(real(x), "sum_squares: a Real tensor");
  return do_sum_squares(x);
}

double Backend::sum_squares_all(const std::vector<const Tensor*>& xs) {
  for (const Tensor* x : xs) MOELAB_ASSERT(x && real(*x), "sum_squares_all: Real tensors");
  return do_sum_squares_all(xs);
}

void Backend::scale(Tensor& x, float s) {
  MOELAB_ASSERT(real(x), "scale: a Real tensor");
  do_scale(x, s);
}

void Backend::adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps,
                    float wd, int64_t step) {
  MOELAB_ASSERT(step >= 1 && same(g, p) && same(m, p) && same(v, p), "adamw: p, g, m and v alike, step >= 1");
  do_adamw(p, g, m, v, lr, b1, b2, eps, wd, step);
}

void Backend::do_router_losses_add(const Tensor& logits, const Tensor& ids, float aux_coef, float z_coef,
                                   Tensor& dlogits, Tensor& sums) {
  const auto [aux, z] = router_losses(logits, ids, aux_coef, z_coef, dlogits);
  double h[2];
  download(sums, h);
  h[0] += aux;
  h[1] += z;
  upload(sums, h);
}

void Backend::set_precision(Precision p) {
  if (p != Precision::FP32) fail(name(), std::string("no ") + precision_name(p) + " mode on this backend (fp32 only)");
}

void Backend::begin_recording(const Tensor&, int64_t) {
  fail(name(), "this backend cannot record operations (no graphs); run them directly");
}
Tensor Backend::alloc_stored(std::vector<int64_t>, Elem) {
  fail(name(), "this backend keeps no bf16/f16 weights of its own (it takes fp32 weights)");
}
void Backend::upload_stored(Tensor&, const void*, int64_t, int64_t) {
  fail(name(), "this backend keeps no bf16/f16 weights of its own (it takes fp32 weights)");
}
std::unique_ptr<OpGraph> Backend::end_recording() { fail(name(), "end_recording without a recording"); }

Tensor slice(const Backend& b, const Tensor& t, int64_t offset, std::vector<int64_t> shape) {
  Tensor v;
  v.shape = std::move(shape);
  v.type = t.type;
  const int64_t elem = t.type == Elem::Int32 ? 4 : is_stored_lowp(t.type) ? 2 : b.real_bytes();
  MOELAB_ASSERT(offset >= 0 && offset + v.numel() <= t.numel(), "slice out of range");
  v.storage = t.storage;
  v.ptr = static_cast<char*>(t.ptr) + offset * elem;
  return v;
}


}  // namespace moelab
