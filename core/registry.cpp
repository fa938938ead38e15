#include "registry.hpp"

#include "error.hpp"

namespace moelab {

const char* component_name(Component c) {
  switch (c) {
    case Component::Embeddings: return "embeddings";
    case Component::Attention: return "attention";
    case Component::Norms: return "norms";
    case Component::Router: return "router";
    case Component::RoutedExperts: return "routed_experts";
    case Component::SharedExperts: return "shared_experts";
    case Component::DenseFfn: return "dense_ffn";
    case Component::LmHead: return "lm_head";
    case Component::kCount: break;
  }
  return "?";
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n = checked_mul(n, d, name);
  return n;
}

namespace {

struct Builder {
  std::vector<TensorSpec>& out;
  int64_t layer;
  std::string prefix;
  void add(const std::string& suffix, std::vector<int64_t> shape, Role role, Component comp, int64_t expert = -1,
           int64_t fused = 0) {
    out.push_back(TensorSpec{prefix + suffix, std::move(shape), role, comp, layer, expert, fused});
  }
};

void add_standard_attention(Builder& b, const ModelConfig& c) {
  const int64_t H = c.hidden_size, D = c.head_dim, NH = c.num_heads, NKV = c.num_kv_heads;
  b.add("self_attn.q_proj.weight", {NH * D, H}, Role::Q, Component::Attention);
  if (c.qkv_bias) b.add("self_attn.q_proj.bias", {NH * D}, Role::QBias, Component::Attention);
  b.add("self_attn.k_proj.weight", {NKV * D, H}, Role::K, Component::Attention);
  if (c.qkv_bias) b.add("self_attn.k_proj.bias", {NKV * D}, Role::KBias, Component::Attention);
  b.add("self_attn.v_proj.weight", {NKV * D, H}, Role::V, Component::Attention);
  if (c.qkv_bias) b.add("self_attn.v_proj.bias", {NKV * D}, Role::VBias, Component::Attention);
  b.add("self_attn.o_proj.weight", {H, NH * D}, Role::O, Component::Attention);
  if (c.o_bias) b.add("self_attn.o_proj.bias", {H}, Role::OBias, Component::Attention);
  if (c.qk_norm == QkNorm::PerHead) {
    b.add("self_attn.q_norm.weight", {D}, Role::QNorm, Component::Norms);
    b.add("self_attn.k_norm.weight", {D}, Role::KNorm, Component::Norms);
  } else if (c.qk_norm == QkNorm::Whole) {
    b.add("self_attn.q_norm.weight", {NH * D}, Role::QNorm, Component::Norms);
    b.add("self_attn.k_norm.weight", {NKV * D}, Role::KNorm, Component::Norms);
  }
  if (c.attention_sinks) b.add("self_attn.sinks", {NH}, Role::Sinks, Component::Attention);
}

// DeepSeek-V3 multi-head latent attention: queries through a low-rank bottleneck (q_a, q_b),
// keys and values through a shared latent (kv_a) expanded per head (kv_b); RoPE on a slice.
void add_mla_attention(Builder& b, const ModelConfig& c) {
  const int64_t H = c.hidden_size, NH = c.num_heads;
  const int64_t qk_dim = c.qk_nope_head_dim + c.qk_rope_head_dim;
  if (c.q_lora_rank > 0) {
    b.add("self_attn.q_a_proj.weight", {c.q_lora_rank, H}, Role::MlaQA, Component::Attention);
    b.add("self_attn.q_a_layernorm.weight", {c.q_lora_rank}, Role::MlaQANorm, Component::Norms);
    b.add("self_attn.q_b_proj.weight", {NH * qk_dim, c.q_lora_rank}, Role::MlaQB, Component::Attention);
  } else {
    b.add("self_attn.q_proj.weight", {NH * qk_dim, H}, Role::Q, Component::Attention);
  }
  b.add("self_attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, H}, Role::MlaKvA,
        Component::Attention);
  b.add("self_attn.kv_a_layernorm.weight", {c.kv_lora_rank}, Role::MlaKvANorm, Component::Norms);
  b.add("self_attn.kv_b_proj.weight", {NH * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, Role::MlaKvB,
        Component::Attention);
  b.add("self_attn.o_proj.weight", {H, NH * c.v_head_dim}, Role::O, Component::Attention);
}

void add_swiglu(Builder& b, const std::string& p, int64_t H, int64_t F, Role g, Role u, Role d, Component comp,
                int64_t expert = -1) {
  b.add(p + "gate_proj.weight", {F, H}, g, comp, expert);
  b.add(p + "up_proj.weight", {F, H}, u, comp, expert);
  b.add(p + "down_proj.weight", {H, F}, d, comp, expert);
}

// Lab router extensions: the noise projection of noisy top-k gating, and the selection bias of
// the sigmoid router (DeepSeek-V3's name for it; a buffer updated by the bias rule, not by gradients).
void add_lab_router(Builder& b, const ModelConfig& c, const std::string& p) {
  const int64_t E = c.num_experts, H = c.hidden_size;
  if (c.router_noise) b.add(p + "gate_noise.weight", {E, H}, Role::RouterNoise, Component::Router);
  if (c.score_correction_bias) {
    b.add(p + "gate.e_score_correction_bias", {E}, Role::ScoreCorrectionBias, Component::Router);
    b.out.back().buffer = true;
  }
}

void add_ffn(Builder& b, const ModelConfig& c) {
  const int64_t H = c.hidden_size, E = c.num_experts, F = c.expert_ffn_size;
  if (!c.is_moe_layer(b.layer)) {
    add_swiglu(b, "mlp.", H, c.dense_ffn_size, Role::DenseGate, Role::DenseUp, Role::DenseDown, Component::DenseFfn);
    return;
  }
  switch (c.family) {
    case Family::Mixtral:
      b.add("block_sparse_moe.gate.weight", {E, H}, Role::Router, Component::Router);
      add_lab_router(b, c, "block_sparse_moe.");
      for (int64_t e = 0; e < E; ++e) {
        const std::string p = "block_sparse_moe.experts." + std::to_string(e) + ".";
        b.add(p + "w1.weight", {F, H}, Role::ExpertGate, Component::RoutedExperts, e);
        b.add(p + "w2.weight", {H, F}, Role::ExpertDown, Component::RoutedExperts, e);
        b.add(p + "w3.weight", {F, H}, Role::ExpertUp, Component::RoutedExperts, e);
      }
      break;
    case Family::GraniteMoe:
      b.add("block_sparse_moe.router.layer.weight", {E, H}, Role::Router, Component::Router);
      // GraniteMoeParallelExperts: input_linear's output is chunked in two, silu(first half) ⊙
      // second half, so rows [0, F) of each expert are its gate and rows [F, 2F) its up projection.
      b.add("block_sparse_moe.input_linear.weight", {E, 2 * F, H}, Role::ExpertsGateUpStacked,
            Component::RoutedExperts, -1, E);
      b.add("block_sparse_moe.output_linear.weight", {E, H, F}, Role::ExpertsDownStacked, Component::RoutedExperts, -1, E);
      break;
    case Family::GptOss:
      b.add("mlp.router.weight", {E, H}, Role::Router, Component::Router);
      b.add("mlp.router.bias", {E}, Role::RouterBias, Component::Router);
      b.add("mlp.experts.gate_up_proj", {E, H, 2 * F}, Role::ExpertsFused, Component::RoutedExperts, -1, E);
      b.add("mlp.experts.gate_up_proj_bias", {E, 2 * F}, Role::ExpertsFused, Component::RoutedExperts, -1, E);
      b.add("mlp.experts.down_proj", {E, F, H}, Role::ExpertsFused, Component::RoutedExperts, -1, E);
      b.add("mlp.experts.down_proj_bias", {E, H}, Role::ExpertsFused, Component::RoutedExperts, -1, E);
      break;
    default:  // Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3
      b.add("mlp.gate.weight", {E, H}, Role::Router, Component::Router);
      if (!c.mla) add_lab_router(b, c, "mlp.");
      if (c.score_correction_bias && c.mla) {
        // A persistent buffer in transformers: in the checkpoint, not in parameters().
        b.add("mlp.gate.e_score_correction_bias", {E}, Role::ScoreCorrectionBias, Component::Router);
        b.out.back().buffer = true;
      }
      for (int64_t e = 0; e < E; ++e)
        add_swiglu(b, "mlp.experts." + std::to_string(e) + ".", H, F, Role::ExpertGate, Role::ExpertUp,
                   Role::ExpertDown, Component::RoutedExperts, e);
      if (c.shared_ffn_size > 0) {
        const std::string p = c.mla ? "mlp.shared_experts." : "mlp.shared_expert.";
        add_swiglu(b, p, H, c.shared_ffn_size, Role::SharedGate, Role::SharedUp, Role::SharedDown,
                   Component::SharedExperts);
        if (c.shared_expert_gate)
          b.add("mlp.shared_expert_gate.weight", {1, H}, Role::SharedExpertGate, Component::SharedExperts);
      }
      break;
  }
}

}  // namespace

std::vector<TensorSpec> tensor_specs(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  Builder top{out, -1, ""};
  top.add("model.embed_tokens.weight", {V, H}, Role::Embed, Component::Embeddings);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Builder b{out, l, "model.layers." + std::to_string(l) + "."};
    b.add("input_layernorm.weight", {H}, Role::InputNorm, Component::Norms);
    if (c.mla)
      add_mla_attention(b, c);
    else
      add_standard_attention(b, c);
    b.add("post_attention_layernorm.weight", {H}, Role::PostAttnNorm, Component::Norms);
    add_ffn(b, c);
  }
  top.add("model.norm.weight", {H}, Role::FinalNorm, Component::Norms);
  if (!c.tie_word_embeddings) top.add("lm_head.weight", {V, H}, Role::LmHead, Component::LmHead);
  return out;
}

}  // namespace moelab
