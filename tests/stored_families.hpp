// The model variants the stored-weight tests save as bf16/f16 checkpoints and load again: one per
// runnable family (and its options that change which tensors exist), each round-tripping through
// config.json. test_stored_device checks that every one loads and computes on the CPU stand-in for
// a device; test_gpu_stored runs them on the GPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "model.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"

namespace testutil {

// A random model of c (seed 11, init 0.2: the same weights in both tests) saved to dir in dtype.
inline void save_stored_fixture(const moelab::ModelConfig& c, const std::string& dir, moelab::DType dtype) {
  moelab::Model::random(c, 11, moelab::make_eigen_backend(), 0.2f).save(dir, dtype);
}

// The prompt both tests run through these models.
inline const std::vector<int32_t> kStoredTokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4};

// The gap between the k-th and the (k+1)-th of one token's E router scores (infinite when K = E):
// a backend whose scores differ by less than it chooses the same experts.
inline double topk_margin(const float* probs, int64_t E, int64_t K) {
  if (K >= E) return INFINITY;
  std::vector<float> p(probs, probs + E);
  std::sort(p.begin(), p.end(), std::greater<float>());
  return double(p[size_t(K - 1)]) - double(p[size_t(K)]);
}

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
