// Model configuration: what a Hugging Face config.json says, normalised into one struct for the
// families the lab runs (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, GraniteMoE) and the ones it only
// counts (DeepSeek-V2/V3, gpt-oss). For the runnable families every field of the transformers
// configuration class is either implemented or refused with a one-line error naming it (see
// docs/config-fields.md). Dimension letters used across core/:
//   T tokens, H hidden, E experts, K top-k, F expert hidden, V vocab, L layers, NH heads,
//   NKV key/value heads, D head dim.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "rope.hpp"

namespace moelab {

enum class Family { Mixtral, Qwen2Moe, Qwen3Moe, Olmoe, DeepseekV2, DeepseekV3, GptOss, GraniteMoe };

enum class QkNorm {
  None,
  PerHead,  // Qwen3-MoE: RMSNorm over each head's D values, before RoPE
  Whole,    // OLMoE: RMSNorm over the whole q (NH*D) and k (NKV*D) projection
};

enum class RouterScoring { Softmax, Sigmoid };

struct ModelConfig {
  Family family = Family::Mixtral;
  std::string architecture = "MixtralForCausalLM";  // HF `architectures[0]`
  std::string model_type = "mixtral";              // HF `model_type`
  std::string dtype = "float32";                   // storage dtype named by the config

  int64_t vocab_size = 0;         // V
  int64_t hidden_size = 0;        // H
  int64_t num_layers = 0;         // L
  int64_t num_heads = 0;          // NH
  int64_t num_kv_heads = 0;       // NKV (grouped-query attention when < NH)
  int64_t head_dim = 0;           // D (defaults to H / NH)
  int64_t max_positions = 4096;   // max_position_embeddings
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // static RoPE scaling (linear, llama3); Default = none
  bool tie_word_embeddings = false;  // lm_head shares embed_tokens

  // Attention details
  bool qkv_bias = false;    // q/k/v projections have biases (Qwen2-MoE, gpt-oss)
  bool o_bias = false;      // output projection has a bias (gpt-oss)
  QkNorm qk_norm = QkNorm::None;
  double clip_qkv = 0.0;    // OLMoE: clamp q, k, v to [-clip, clip]; 0 = off
  bool attention_sinks = false;  // gpt-oss: one learned logit per head
  // Sliding-window attention (Mixtral `sliding_window`; Qwen with `use_sliding_window`), 0 = none.
  // The lab has no window mask: it runs contexts no longer than the window, where the window
  // changes nothing, and refuses longer ones (Model::new_cache).
  int64_t sliding_window = 0;
  double attention_dropout = 0.0;   // dropout on attention weights in training (the lab has none)
  double router_jitter_noise = 0.0;  // Mixtral: multiplicative router noise in training only

  // GraniteMoE's multipliers (the neutral values elsewhere)
  double embedding_multiplier = 1.0;  // x = embed(ids) · m
  double attention_multiplier = 0.0;  // softmax scale of q·k; 0 = 1/sqrt(D)
  double residual_multiplier = 1.0;   // x += m · attention(x), x += m · ffn(x)
  double logits_scaling = 1.0;        // logits = lm_head(h) / s

  // DeepSeek multi-head latent attention (count-only)
  bool mla = false;
  int64_t q_lora_rank = 0;  // 0 = plain q_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t v_head_dim = 0;

  // Feed-forward blocks
  int64_t dense_ffn_size = 0;   // intermediate size of dense (non-MoE) layers
  int64_t expert_ffn_size = 0;  // F: intermediate size of one routed expert
  int64_t num_experts = 0;      // E routed experts per MoE layer
  int64_t top_k = 0;            // K experts chosen per token
  bool norm_topk_prob = true;   // renormalise the K chosen weights to sum to 1
  RouterScoring scoring = RouterScoring::Softmax;
  int64_t shared_ffn_size = 0;  // intermediate size of the always-on shared expert(s), 0 = none
  bool shared_expert_gate = false;  // Qwen2-MoE: shared output scaled by sigmoid(w·x)
  int64_t decoder_sparse_step = 1;  // Qwen: layer l is MoE when (l+1) % step == 0
  std::vector<int64_t> mlp_only_layers;  // Qwen: these layers stay dense
  int64_t first_dense_layers = 0;        // DeepSeek: first_k_dense_replace
  bool router_bias = false;              // gpt-oss router has a bias
  bool expert_bias = false;              // gpt-oss experts have biases
  bool score_correction_bias = false;    // DeepSeek-V3 e_score_correction_bias
  int64_t n_group = 0, topk_group = 0;   // DeepSeek group-limited routing (counted only)

  // Lab extensions, saved under the "moelab" key of config.json (a model that uses the noisy or
  // sigmoid router is outside its Hugging Face family; the others stay loadable by transformers).
  std::string tokenizer;        // "bytes": the lab's byte-level tokenizer; "" = none known
  bool router_noise = false;    // noisy top-k gating (Shazeer et al. 2017): learned noise scale
  int64_t fine_grained = 1;     // m: experts split m ways (for display; E, F, K already scaled)
  std::string preset;           // the preset a lab model was made from, for display

  bool is_moe_layer(int64_t layer) const;
  int64_t num_moe_layers() const;
  // True for the families the model can run; the others are parameter-count only.
  bool runnable() const;
  // The rotary embedding: theta and its scaling.
  RopeSpec rope() const { return {rope_theta, rope_scaling}; }
  // Whether any of GraniteMoE's multipliers differs from its neutral value.
  bool has_multipliers() const;
};

const char* family_name(Family f);

// Parse a Hugging Face config.json object. `source` names the file in error messages.
ModelConfig parse_config(const nlohmann::json& j, const std::string& source);
// PATH is a config.json or a model directory holding one.
ModelConfig load_config(const std::string& path);
// Whether a JSON object is a Hugging Face config.json (it names "architectures" or "model_type"),
// whatever its file is called; a lab preset has a "model" object instead.
bool is_model_config_json(const nlohmann::json& j);
// The config.json a model the lab writes carries (both dtype and torch_dtype).
nlohmann::json config_to_json(const ModelConfig& c);
// The lab's router kinds: "softmax" (top-k of softmax), "noisy" (noisy top-k gating), "sigmoid"
// (sigmoid scores + selection-only bias).
void set_router_kind(ModelConfig& c, const std::string& kind, const std::string& source);
// Throws when the config is impossible (top-k > experts, heads not dividing, absurd sizes).
void validate_config(const ModelConfig& c, const std::string& source);

}  // namespace moelab
