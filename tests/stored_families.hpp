// The model variants the stored-weight tests save as bf16/f16 checkpoints and load again: one per
// runnable family (and its options that change which tensors exist), each round-tripping through
// config.json. test_stored_device checks that every one loads and computes on the CPU stand-in for
// a device; test_gpu_stored runs them on the GPU.
#pragma once

#include <vector>

#include "test_util.hpp"

namespace testutil {

struct FamilyCase {
  const char* name;
  moelab::ModelConfig config;
};
inline std::vector<FamilyCase> stored_families() {
  std::vector<FamilyCase> v;
  v.push_back({"mixtral top-2", tiny_config(moelab::Family::Mixtral)});
  moelab::ModelConfig qw = tiny_config(moelab::Family::Qwen2Moe);
  qw.num_layers = 3;
  qw.qkv_bias = true;
  qw.shared_ffn_size = 20;
  qw.shared_expert_gate = true;
  qw.norm_topk_prob = false;
  qw.mlp_only_layers = {1};
  qw.tie_word_embeddings = false;
  v.push_back({"qwen2-moe shared expert + dense layer", qw});
  moelab::ModelConfig q3 = tiny_config(moelab::Family::Qwen3Moe);
  q3.qk_norm = moelab::QkNorm::PerHead;
  v.push_back({"qwen3-moe q/k norm per head", q3});
  moelab::ModelConfig ol = tiny_config(moelab::Family::Olmoe);
  ol.qk_norm = moelab::QkNorm::Whole;
  ol.clip_qkv = 0.5;
  v.push_back({"olmoe q/k norm + clip", ol});
  moelab::ModelConfig gr = tiny_config(moelab::Family::GraniteMoe);
  gr.norm_topk_prob = true;
  gr.embedding_multiplier = 12.0;
  gr.attention_multiplier = 0.05;
  gr.residual_multiplier = 0.22;
  gr.logits_scaling = 6.0;
  v.push_back({"granitemoe multipliers", gr});
  moelab::ModelConfig sig = tiny_config(moelab::Family::Mixtral);
  sig.scoring = moelab::RouterScoring::Sigmoid;
  sig.score_correction_bias = true;
  v.push_back({"sigmoid router", sig});
  return v;
}

}  // namespace testutil
