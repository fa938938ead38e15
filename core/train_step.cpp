#include "train_step.hpp"

#include <cmath>

#include "error.hpp"

namespace moelab {

void zero_params(Backend& b, const ModelConfig& c, ParamSet& p) {
  for (const ParamRef& r : trainable_params(c, p)) b.fill(*r.tensor, 0.0f);
}

namespace {

// Activations of one layer kept for the backward pass.
struct LayerActs {
  Tensor x_in, h1, q, k, v, att, x_mid, h2;
  // MoE
  Tensor clean, raw, noise, logits, probs, ids, weights, dropped;
  // shared expert or dense MLP
  Tensor mg, mu, ma, s_out, gate_logit;
};

void check_trainable(const ModelConfig& c) {
  if (c.qk_norm != QkNorm::None || c.clip_qkv > 0 || c.o_bias)
    fail(c.architecture, "training supports Mixtral- and Qwen2-MoE-family models (no q/k norms or clipping)");
}

RouterSpec router_spec(const ModelConfig& c, const LayerWeights& L) {
  RouterSpec s;
  s.top_k = c.top_k;
  s.renormalize = c.norm_topk_prob;
  s.sigmoid = c.scoring == RouterScoring::Sigmoid;
  if (!L.selection_bias.empty()) s.selection_bias = &L.selection_bias;
  return s;
}

}  // namespace

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

  Tensor ids = b.alloc({N}, TType::I32), targets = b.alloc({N}, TType::I32);
  b.upload(ids, batch.inputs.data());
  b.upload(targets, batch.targets.data());
  Tensor x = b.alloc({N, H});  // [N,H] residual stream
  b.embedding(w.embed, ids, x);

  std::vector<LayerActs> acts(size_t(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    LayerActs& a = acts[size_t(l)];
    a.x_in = b.alloc({N, H});
    b.copy(x, a.x_in);
    a.h1 = b.alloc({N, H});
    b.rmsnorm(x, L.input_norm, eps, a.h1);
    a.q = b.alloc({N, NH * D});
    a.k = b.alloc({N, NKV * D});
    a.v = b.alloc({N, NKV * D});
    b.linear(a.h1, L.q, L.q_bias.empty() ? nullptr : &L.q_bias, a.q);
    b.linear(a.h1, L.k, L.k_bias.empty() ? nullptr : &L.k_bias, a.k);
    b.linear(a.h1, L.v, L.v_bias.empty() ? nullptr : &L.v_bias, a.v);
    b.rope(a.q, NH, D, 0, T, c.rope_theta);
    b.rope(a.k, NKV, D, 0, T, c.rope_theta);
    a.att = b.alloc({N, NH * D});
    b.attention(a.q, a.k, a.v, B, 0, NH, NKV, D, a.att);
    b.linear(a.att, L.o, nullptr, x, true);
    a.x_mid = b.alloc({N, H});
    b.copy(x, a.x_mid);
    a.h2 = b.alloc({N, H});
    b.rmsnorm(x, L.post_attn_norm, eps, a.h2);
    auto mlp = [&](const Tensor& gw, const Tensor& uw, const Tensor& dw, Tensor& out, bool acc) {
      const int64_t F = gw.rows();
      a.mg = b.alloc({N, F});
      a.mu = b.alloc({N, F});
      a.ma = b.alloc({N, F});
      b.linear(a.h2, gw, nullptr, a.mg);
      b.linear(a.h2, uw, nullptr, a.mu);
      b.swiglu(a.mg, a.mu, a.ma);
      b.linear(a.ma, dw, nullptr, out, acc);
    };
    if (!L.moe) {
      mlp(L.dense_gate, L.dense_up, L.dense_down, x, true);
      continue;
    }
    const RouterSpec spec = router_spec(c, L);
    a.logits = b.alloc({N, E});
    if (!L.router_noise.empty() && knobs.noise) {
      // Noisy top-k: logits = x·W_g + ε ⊙ softplus(x·W_noise), ε ~ N(0, 1).
      a.clean = b.alloc({N, E});
      a.raw = b.alloc({N, E});
      a.noise = b.alloc({N, E});
      b.linear(a.h2, L.router, nullptr, a.clean);
      b.linear(a.h2, L.router_noise, nullptr, a.raw);
      std::vector<float> eps_host(size_t(N * E));
      for (float& e : eps_host) e = float(noise_rng.normal());
      b.upload(a.noise, eps_host.data());
      b.noisy_logits(a.clean, a.raw, a.noise, a.logits);
    } else {
      b.linear(a.h2, L.router, nullptr, a.logits);
    }
    a.probs = b.alloc({N, E});
    a.ids = b.alloc({N, K}, TType::I32);
    a.weights = b.alloc({N, K});
    a.dropped = b.alloc({N, K});
    b.route(a.logits, spec, a.probs, a.ids, a.weights);
    CapacitySpec cap;
    cap.capacity = expert_capacity(knobs.capacity_factor, N, K, E);  // over the whole batch
    cap.reroute = knobs.reroute;
    b.limit_capacity(a.probs, spec, cap, a.ids, a.weights, a.dropped);
    b.moe_experts(a.h2, a.ids, a.weights, L.experts, x);
    if (!L.shared_gate.empty()) {
      a.s_out = b.alloc({N, H});
      mlp(L.shared_gate, L.shared_up, L.shared_down, a.s_out, false);
      if (!L.shared_expert_gate.empty()) {
        a.gate_logit = b.alloc({N, 1});
        b.linear(a.h2, L.shared_expert_gate, nullptr, a.gate_logit);
        b.add_sigmoid_gated(x, a.s_out, a.gate_logit);
      } else {
        b.add(x, a.s_out);
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
  Tensor x_final = b.alloc({N, H}), hf = b.alloc({N, H}), logits = b.alloc({N, V}), dlogits = b.alloc({N, V});
  b.copy(x, x_final);
  b.rmsnorm(x, w.final_norm, eps, hf);
  b.linear(hf, w.lm_head, nullptr, logits);
  res.lm_loss = b.cross_entropy(logits, targets, dlogits, scale);

  // ---- backward ----
  Tensor dhf = b.alloc({N, H}), dx = b.alloc({N, H});
  b.linear_backward(hf, w.lm_head, dlogits, &dhf, false, grads.lm_head, nullptr);
  b.rmsnorm_backward(x_final, w.final_norm, dhf, eps, dx, false, grads.final_norm);
  Tensor dh = b.alloc({N, H});
  Tensor loss_sums = b.alloc({2});  // Σ over MoE layers of {aux, z}, read back once below
  for (int64_t l = c.num_layers - 1; l >= 0; --l) {
    const LayerWeights& L = w.layers[size_t(l)];
    LayerWeights& G = grads.layers[size_t(l)];
    LayerActs& a = acts[size_t(l)];
    b.fill(dh, 0.0f);  // ∂L/∂h2
    auto mlp_backward = [&](const Tensor& gw, const Tensor& uw, const Tensor& dw, const Tensor& dy, Tensor& dgw,
                            Tensor& duw, Tensor& ddw) {
      const int64_t F = gw.rows();
      Tensor da = b.alloc({N, F}), dg = b.alloc({N, F}), du = b.alloc({N, F});
      b.linear_backward(a.ma, dw, dy, &da, false, ddw, nullptr);
      b.swiglu_backward(a.mg, a.mu, da, dg, du);
      b.linear_backward(a.h2, gw, dg, &dh, true, dgw, nullptr);
      b.linear_backward(a.h2, uw, du, &dh, true, duw, nullptr);
    };
    if (!L.moe) {
      mlp_backward(L.dense_gate, L.dense_up, L.dense_down, dx, G.dense_gate, G.dense_up, G.dense_down);
    } else {
      const RouterSpec spec = router_spec(c, L);
      if (!L.shared_gate.empty()) {
        Tensor ds = b.alloc({N, H});
        if (!L.shared_expert_gate.empty()) {
          Tensor dg = b.alloc({N, 1});
          b.sigmoid_gated_backward(a.s_out, a.gate_logit, dx, ds, dg);
          b.linear_backward(a.h2, L.shared_expert_gate, dg, &dh, true, G.shared_expert_gate, nullptr);
        } else {
          b.copy(dx, ds);
        }
        mlp_backward(L.shared_gate, L.shared_up, L.shared_down, ds, G.shared_gate, G.shared_up, G.shared_down);
      }
      Tensor dweights = b.alloc({N, K}), dlog = b.alloc({N, E});
      b.moe_experts_backward(a.h2, a.ids, a.weights, L.experts, dx, dh, dweights, G.experts);
      b.route_backward(a.logits, a.probs, a.ids, dweights, spec, dlog, false);
      b.router_losses_add(a.logits, a.ids, knobs.aux_alpha * scale, knobs.z_coef * scale, dlog, loss_sums);
      if (!a.raw.empty()) {
        Tensor draw = b.alloc({N, E});
        b.noisy_logits_backward(a.raw, a.noise, dlog, draw);
        b.linear_backward(a.h2, L.router_noise, draw, &dh, true, G.router_noise, nullptr);
      }
      b.linear_backward(a.h2, L.router, dlog, &dh, true, G.router, nullptr);
    }
    b.rmsnorm_backward(a.x_mid, L.post_attn_norm, dh, eps, dx, true, G.post_attn_norm);
    Tensor datt = b.alloc({N, NH * D}), dq = b.alloc({N, NH * D}), dk = b.alloc({N, NKV * D}),
           dv = b.alloc({N, NKV * D}), dh1 = b.alloc({N, H});
    b.linear_backward(a.att, L.o, dx, &datt, false, G.o, nullptr);
    b.attention_backward(a.q, a.k, a.v, datt, B, NH, NKV, D, dq, dk, dv);
    b.rope(dq, NH, D, 0, T, c.rope_theta, /*inverse=*/true);
    b.rope(dk, NKV, D, 0, T, c.rope_theta, /*inverse=*/true);
    b.linear_backward(a.h1, L.q, dq, &dh1, false, G.q, L.q_bias.empty() ? nullptr : &G.q_bias);
    b.linear_backward(a.h1, L.k, dk, &dh1, true, G.k, L.k_bias.empty() ? nullptr : &G.k_bias);
    b.linear_backward(a.h1, L.v, dv, &dh1, true, G.v, L.v_bias.empty() ? nullptr : &G.v_bias);
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
    const LayerActs& a = acts[size_t(r.layer)];
    r.ids.resize(size_t(r.tokens * r.top_k));
    r.probs.resize(size_t(r.tokens * r.experts));
    r.dropped.resize(size_t(r.tokens * r.top_k));
    b.download(a.ids, r.ids.data());
    b.download(a.probs, r.probs.data(), 0, -1);
    b.download(a.dropped, r.dropped.data(), 0, -1);
  }
  res.loss = res.lm_loss + double(knobs.aux_alpha) * res.aux_loss + double(knobs.z_coef) * res.z_loss;
  return res;
}

double evaluate_loss(Model& model, const Batch& batch) {
  Backend& b = model.backend();
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
  (void)b;
  return count ? total / double(count) : 0.0;
}

}  // namespace moelab
