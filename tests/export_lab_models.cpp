// Writes models the lab creates (random weights, each family's features switched on, F32, BF16
// and sharded) with our logits and routing, for tests/reference/check_lab_models.py: an
// independent reader and model must load them and compute the same numbers.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "model.hpp"
#include "safetensors.hpp"
#include "test_util.hpp"

using namespace moelab;
using nlohmann::json;

static void export_one(const std::string& dir, const ModelConfig& c, DType dtype, int64_t shard_bytes) {
  Model m = Model::random(c, 99, make_eigen_backend(), 0.15f);
  m.save(dir, dtype, shard_bytes);
  Model saved = Model::load(dir, make_eigen_backend());  // rounded to the stored dtype
  const std::vector<int32_t> tokens = {1, 7, 3, 30, 12, 5, 9, 2, 17, 4};
  RoutingTrace trace;
  const std::vector<float> logits = saved.forward_full(tokens, &trace);
  json j = {{"tokens", tokens}, {"logits", json::array()}, {"routing", json::array()}};
  const int64_t V = c.vocab_size;
  for (size_t t = 0; t < tokens.size(); ++t)
    j["logits"].push_back(std::vector<float>(logits.begin() + int64_t(t) * V, logits.begin() + int64_t(t + 1) * V));
  for (const auto& L : trace.layers()) {
    json ex = json::array(), pr = json::array();
    for (int64_t t = 0; t < L.tokens(); ++t) {
      ex.push_back(std::vector<int32_t>(L.ids.begin() + t * L.top_k, L.ids.begin() + (t + 1) * L.top_k));
      pr.push_back(std::vector<float>(L.probs.begin() + t * L.experts, L.probs.begin() + (t + 1) * L.experts));
    }
    j["routing"].push_back({{"layer", L.layer}, {"experts", ex}, {"probs", pr}});
  }
  std::ofstream(dir + "/expected.json") << j.dump();
}

TEST(export_lab_models_of_every_family) {
  if (check::args().empty()) throw check::Skip{"no output folder given"};
  const std::string out = check::args()[0];
  std::filesystem::remove_all(out);
  ModelConfig mix = testutil::tiny_config(Family::Mixtral);
  export_one(out + "/mixtral", mix, DType::F32, 0);
  export_one(out + "/mixtral_bf16_sharded", mix, DType::BF16, 30000);
  ModelConfig scaled = mix;  // Llama-3.1 RoPE scaling, written to config.json's rope_scaling
  scaled.rope_theta = 1e6;
  scaled.rope_scaling = {RopeType::Llama3, 8.0, 1.0, 4.0, 16};
  export_one(out + "/mixtral_rope_llama3", scaled, DType::F32, 0);
  ModelConfig q2 = testutil::tiny_config(Family::Qwen2Moe);
  q2.num_layers = 3;
  q2.head_dim = q2.hidden_size / q2.num_heads;
  q2.qkv_bias = true;
  q2.shared_ffn_size = 20;
  q2.shared_expert_gate = true;
  q2.norm_topk_prob = false;
  q2.mlp_only_layers = {1};
  export_one(out + "/qwen2_moe", q2, DType::F32, 0);
  ModelConfig q3 = testutil::tiny_config(Family::Qwen3Moe);
  q3.qk_norm = QkNorm::PerHead;
  q3.head_dim = 12;
  q3.tie_word_embeddings = true;
  q3.norm_topk_prob = true;
  export_one(out + "/qwen3_moe", q3, DType::F16, 0);
  ModelConfig ol = testutil::tiny_config(Family::Olmoe);
  ol.qk_norm = QkNorm::Whole;
  ol.head_dim = ol.hidden_size / ol.num_heads;
  ol.clip_qkv = 0.3;
  ol.norm_topk_prob = false;
  export_one(out + "/olmoe", ol, DType::F32, 0);
  ModelConfig gr = testutil::tiny_config(Family::GraniteMoe);  // head_dim 8 = 32 / 4
  gr.norm_topk_prob = true;
  gr.tie_word_embeddings = true;
  gr.embedding_multiplier = 12.0;
  gr.attention_multiplier = 0.05;
  gr.residual_multiplier = 0.22;
  gr.logits_scaling = 6.0;
  export_one(out + "/granitemoe_bf16_sharded", gr, DType::BF16, 20000);
  CHECK(std::filesystem::exists(out + "/mixtral_bf16_sharded/model.safetensors.index.json"));
  CHECK(std::filesystem::exists(out + "/granitemoe_bf16_sharded/model.safetensors.index.json"));
}

CHECK_MAIN()
