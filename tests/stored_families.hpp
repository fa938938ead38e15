// The model variants the stored-weight tests save as bf16/f16 checkpoints and load again: one per
// runnable family (and its options that change which tensors exist), each round-tripping through
// config.json. test_stored_device checks that every one loads and computes on the CPU stand-in for
// a device; test_gpu_stored runs them on the GPU (the variants themselves: test_util.hpp).
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
  moelab::ModelConfig qw = qwen2_moe_shared_expert_and_dense_layer();
  qw.tie_word_embeddings = false;
  v.push_back({"qwen2-moe shared expert + dense layer", qw});
  v.push_back({"qwen3-moe q/k norm per head", qwen3_moe_qk_norm_per_head()});
  v.push_back({"olmoe q/k norm + clip", olmoe_qk_norm_and_clip()});
  v.push_back({"granitemoe multipliers", granitemoe_multipliers()});
  moelab::ModelConfig sig = tiny_config(moelab::Family::Mixtral);
  sig.scoring = moelab::RouterScoring::Sigmoid;
  sig.score_correction_bias = true;
  v.push_back({"sigmoid router", sig});
  return v;
}

}  // namespace testutil
