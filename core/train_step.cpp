#include "train_step.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "error.hpp"

namespace moelab {

void zero_params(Backend& b, const ModelConfig& c, ParamSet& p) {
  for (const ParamRef& r : trainable_params(c, p)) b.fill(*r.tensor, 0.0f);
}

namespace {

// Activations of one layer kept for the backward pass (N = B·T tokens).
struct LayerActs {
  Tensor x_in;         // [N,H] residual stream entering the layer
  Tensor attn_input;   // [N,H] rmsnorm(x_in)
  Tensor q, k, v;      // [N,NH·D] [N,NKV·D] [N,NKV·D] after rope
  Tensor att;          // [N,NH·D] attention output, before the o projection
  Tensor x_mid;        // [N,H] residual stream after attention
  Tensor ffn_input;    // [N,H] rmsnorm(x_mid), the router's and experts' input
  Routing routing;     // MoE layers: logits, probs, ids, weights, dropped, noise [N,E] / [N,K]
  ExpertActivations experts;  // MoE layers: each slot's expert gate, up [S,F] and output [S,H] (if kept)
  Tensor mlp_gate, mlp_up, mlp_act;  // [N,F] the dense MLP's or shared expert's gate, up, silu(gate)⊙up
  Tensor shared_out;   // [N,H] shared expert output
  Tensor shared_gate;  // [N,1] shared-expert gate logit (Qwen2-MoE)
};

}  // namespace

void check_trainable(const ModelConfig& c) {
  if (c.family == Family::GraniteMoe || c.has_multipliers())
    fail(c.architecture, "training GraniteMoE models is not implemented (its multipliers have no backward pass); "
                         "they run for inference only");
  if (c.qk_norm != QkNorm::None || c.clip_qkv > 0 || c.o_bias)
    fail(c.architecture, "training supports Mixtral- and Qwen2-MoE-family models (no q/k norms or clipping)");
  if (c.attention_dropout != 0.0)
    fail(c.architecture, "'attention_dropout' = " + nlohmann::json(c.attention_dropout).dump() +
                             ": the lab trains without dropout (set it to 0)");
  if (c.router_jitter_noise != 0.0)
    fail(c.architecture, "'router_jitter_noise' = " + nlohmann::json(c.router_jitter_noise).dump() +
                             ": the lab's trainer has no router jitter (set it to 0, or use the noisy router)");
}

StepResult forward_backward(Model& model, ParamSet& grads, const Batch& batch, const StepKnobs& knobs,
                            Rng& noise_rng, float scale, bool want_routing) {
  const ModelConfig& c = model.config();
  check_trainable(c);
  Backend& b = model.backend();
  ParamSet& w = model.params();
  const int64_t B = batch.B, T = batch.T, N = B * T, H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads,
                D = c.head_dim, V = c.vocab_size, E = c.num_experts, K = c.top_k;
  MOELAB_ASSERT(int64_t(batch.inputs.size()) == N && int64_t(batch.targets.size()) == N, "batch sizes");
  for (int32_t id : batch.inputs)
    if (id < 0 || id >= V) fail("batch", "token id " + std::to_string(id) + " is out of range");
  const float eps = float(c.rms_norm_eps);
  StepResult res;
  // Every tensor below but loss_sums is overwritten whole by the op that first writes it, so none
  // is zero-filled (on the CPU that was a pass over memory per tensor).

  Tensor ids = b.alloc_uninit({N}, Elem::Int32), targets = b.alloc_uninit({N}, Elem::Int32);
  b.upload(ids, batch.inputs.data());
  b.upload(targets, batch.targets.data());
  Tensor x = b.alloc_uninit({N, H});  // [N,H] residual stream
  b.embedding(w.embed, ids, x);

  std::vector<LayerActs> acts(size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    LayerActs& a = acts[size_t(l)];
    a.x_in = b.alloc_uninit({N, H});
    b.copy(x, a.x_in);
    a.attn_input = b.alloc_uninit({N, H});
    b.rmsnorm(x, L.input_norm, eps, a.attn_input);
    a.q = b.alloc_uninit({N, NH * D});
    a.k = b.alloc_uninit({N, NKV * D});
    a.v = b.alloc_uninit({N, NKV * D});
    b.linear(a.attn_input, L.q, L.q_bias.empty() ? nullptr : &L.q_bias, a.q);
    b.linear(a.attn_input, L.k, L.k_bias.empty() ? nullptr : &L.k_bias, a.k);
    b.linear(a.attn_input, L.v, L.v_bias.empty() ? nullptr : &L.v_bias, a.v);
    b.rope(a.q, NH, D, 0, T, c.rope());
    b.rope(a.k, NKV, D, 0, T, c.rope());
    a.att = b.alloc_uninit({N, NH * D});
    b.attention(a.q, a.k, a.v, B, 0, NH, NKV, D, a.att);
    b.linear(a.att, L.o, nullptr, x, true);
    a.x_mid = b.alloc_uninit({N, H});
    b.copy(x, a.x_mid);
    a.ffn_input = b.alloc_uninit({N, H});
    b.rmsnorm(x, L.post_attn_norm, eps, a.ffn_input);
    auto mlp = [&](const Tensor& gw, const Tensor& uw, const Tensor& dw, Tensor& out, bool acc) {
      const int64_t F = gw.rows();
      a.mlp_gate = b.alloc_uninit({N, F});
      a.mlp_up = b.alloc_uninit({N, F});
      a.mlp_act = b.alloc_uninit({N, F});
      b.linear(a.ffn_input, gw, nullptr, a.mlp_gate);
      b.linear(a.ffn_input, uw, nullptr, a.mlp_up);
      b.swiglu(a.mlp_gate, a.mlp_up, a.mlp_act);
      b.linear(a.mlp_act, dw, nullptr, out, acc);
    };
    if (!L.moe) {
      mlp(L.dense_gate, L.dense_up, L.dense_down, x, true);
      continue;
    }
    a.routing = route(b, a.ffn_input, L, router_spec(b, c, L, nullptr, &knobs), &noise_rng);  // capacity over the batch
    b.moe_experts(a.ffn_input, a.routing.ids, a.routing.weights, L.experts, x, &a.experts);
    if (!L.shared_gate.empty()) {
      a.shared_out = b.alloc_uninit({N, H});
      mlp(L.shared_gate, L.shared_up, L.shared_down, a.shared_out, false);
      if (!L.shared_expert_gate.empty()) {
        a.shared_gate = b.alloc_uninit({N, 1});
        b.linear(a.ffn_input, L.shared_expert_gate, nullptr, a.shared_gate);
        b.add_sigmoid_gated(x, a.shared_out, a.shared_gate);
      } else {
        b.add(x, a.shared_out);
      }
    }
    if (want_routing) {
      StepRouting r;
      r.layer = l;
      r.tokens = N;
      r.experts = E;
      r.top_k = K;
      res.routing.push_back(std::move(r));  // filled after the backward pass (below)
    }
  }
  Tensor x_final = b.alloc_uninit({N, H}), hf = b.alloc_uninit({N, H}), logits = b.alloc_uninit({N, V}),
         dlogits = b.alloc_uninit({N, V});
  b.copy(x, x_final);
  b.rmsnorm(x, w.final_norm, eps, hf);
  b.linear(hf, w.lm_head, nullptr, logits);
  res.lm_loss = b.cross_entropy(logits, targets, dlogits, scale);

  // ---- backward ----
  Tensor dhf = b.alloc_uninit({N, H}), dx = b.alloc_uninit({N, H});
  b.linear_backward(hf, w.lm_head, dlogits, &dhf, false, grads.lm_head, nullptr);
  b.rmsnorm_backward(x_final, w.final_norm, dhf, eps, dx, false, grads.final_norm);
  Tensor dh = b.alloc_uninit({N, H});
  Tensor loss_sums = b.alloc({2});  // Σ over MoE layers of {aux, z}, read back once below
  for (int64_t l = c.num_layers - 1; l >= 0; --l) {
    const LayerWeights& L = w.layers[size_t(l)];
    LayerWeights& G = grads.layers[size_t(l)];
    LayerActs& a = acts[size_t(l)];
    b.fill(dh, 0.0f);  // ∂L/∂h2
    auto mlp_backward = [&](const Tensor& gw, const Tensor& uw, const Tensor& dw, const Tensor& dy, Tensor& dgw,
                            Tensor& duw, Tensor& ddw) {
      const int64_t F = gw.rows();
      Tensor da = b.alloc_uninit({N, F}), dg = b.alloc_uninit({N, F}), du = b.alloc_uninit({N, F});
      b.linear_backward(a.mlp_act, dw, dy, &da, false, ddw, nullptr);
      b.swiglu_backward(a.mlp_gate, a.mlp_up, da, dg, du);
      b.linear_backward(a.ffn_input, gw, dg, &dh, true, dgw, nullptr);
      b.linear_backward(a.ffn_input, uw, du, &dh, true, duw, nullptr);
    };
    if (!L.moe) {
      mlp_backward(L.dense_gate, L.dense_up, L.dense_down, dx, G.dense_gate, G.dense_up, G.dense_down);
    } else {
      const RouterSpec spec = router_spec(b, c, L, nullptr, &knobs);
      const Routing& r = a.routing;
      if (!L.shared_gate.empty()) {
        Tensor ds = b.alloc_uninit({N, H});
        if (!L.shared_expert_gate.empty()) {
          Tensor dg = b.alloc_uninit({N, 1});
          b.sigmoid_gated_backward(a.shared_out, a.shared_gate, dx, ds, dg);
          b.linear_backward(a.ffn_input, L.shared_expert_gate, dg, &dh, true, G.shared_expert_gate, nullptr);
        } else {
          b.copy(dx, ds);
        }
        mlp_backward(L.shared_gate, L.shared_up, L.shared_down, ds, G.shared_gate, G.shared_up, G.shared_down);
      }
      Tensor dweights = b.alloc_uninit({N, K}), dlog = b.alloc_uninit({N, E});
      b.moe_experts_backward(a.ffn_input, r.ids, r.weights, L.experts, dx, dh, dweights, G.experts, &a.experts);
      a.experts = ExpertActivations();  // freed (back to the backend's pool) as soon as used
      b.route_backward(r.probs, r.ids, dweights, spec, dlog, false);
      b.router_losses_add(r.logits, r.ids, knobs.aux_alpha * scale, knobs.z_coef * scale, dlog, loss_sums);
      if (!r.raw.empty()) {
        Tensor draw = b.alloc_uninit({N, E});
        b.noisy_logits_backward(r.raw, r.noise, dlog, draw);
        b.linear_backward(a.ffn_input, L.router_noise, draw, &dh, true, G.router_noise, nullptr);
      }
      b.linear_backward(a.ffn_input, L.router, dlog, &dh, true, G.router, nullptr);
    }
    b.rmsnorm_backward(a.x_mid, L.post_attn_norm, dh, eps, dx, true, G.post_attn_norm);
    Tensor datt = b.alloc_uninit({N, NH * D}), dq = b.alloc_uninit({N, NH * D}), dk = b.alloc_uninit({N, NKV * D}),
           dv = b.alloc_uninit({N, NKV * D}), dh1 = b.alloc_uninit({N, H});
    b.linear_backward(a.att, L.o, dx, &datt, false, G.o, nullptr);
    b.attention_backward(a.q, a.k, a.v, datt, B, NH, NKV, D, dq, dk, dv);
    b.rope(dq, NH, D, 0, T, c.rope(), /*inverse=*/true);
    b.rope(dk, NKV, D, 0, T, c.rope(), /*inverse=*/true);
    b.linear_backward(a.attn_input, L.q, dq, &dh1, false, G.q, L.q_bias.empty() ? nullptr : &G.q_bias);
    b.linear_backward(a.attn_input, L.k, dk, &dh1, true, G.k, L.k_bias.empty() ? nullptr : &G.k_bias);
    b.linear_backward(a.attn_input, L.v, dv, &dh1, true, G.v, L.v_bias.empty() ? nullptr : &G.v_bias);
    b.rmsnorm_backward(a.x_in, L.input_norm, dh1, eps, dx, true, G.input_norm);
  }
  b.embedding_backward(ids, dx, grads.embed);
  double sums[2];
  b.download(loss_sums, sums);
  res.aux_loss = sums[0];
  res.z_loss = sums[1];
  // The routing is read back only now: a download waits for the device, and three waits per MoE
  // layer in the forward pass would keep a GPU from running ahead of the host through the step.
  for (StepRouting& r : res.routing) {
    const Routing& a = acts[size_t(r.layer)].routing;
    r.ids.resize(size_t(r.tokens * r.top_k));
    r.probs.resize(size_t(r.tokens * r.experts));
    r.dropped.assign(size_t(r.tokens * r.top_k), 0.0f);
    b.download(a.ids, r.ids.data());
    b.download(a.probs, r.probs.data(), 0, -1);
    if (!a.dropped.empty()) b.download(a.dropped, r.dropped.data(), 0, -1);
  }
  res.loss = res.lm_loss + double(knobs.aux_alpha) * res.aux_loss + double(knobs.z_coef) * res.z_loss;
  return res;
}

double evaluate_loss(Model& model, const Batch& batch) {
  const int64_t T = batch.T, V = model.config().vocab_size;
  double total = 0;
  int64_t count = 0;
  for (int64_t s = 0; s < batch.B; ++s) {
    const std::vector<int32_t> in(batch.inputs.begin() + s * T, batch.inputs.begin() + (s + 1) * T);
    const std::vector<float> logits = model.forward_full(in);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t y = batch.targets[size_t(s * T + t)];
      if (y < 0) continue;
      const float* l = logits.data() + t * V;
      double m = l[0], sum = 0;
      for (int64_t v = 1; v < V; ++v) m = std::max(m, double(l[v]));
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(l[v]) - m);
      total += m + std::log(sum) - double(l[y]);
      ++count;
    }
  }
  return count ? total / double(count) : 0.0;
}

}  // namespace moelab
