// Parameter counts against exact published figures (tests/data/params/figures.json: each figure
// from a checkpoint's safetensors index or headers, or the hub's count; sources in SOURCES.md).
#include <fstream>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "config.hpp"
#include "params.hpp"

using namespace moelab;
using nlohmann::json;

static const std::string kDir = std::string(MOELAB_SOURCE_DIR) + "/tests/data/params/";

static json figures() {
  std::ifstream in(kDir + "figures.json");
  return json::parse(in);
}

TEST(every_published_total_matches_exactly) {
  int checked = 0;
  for (const json& f : figures()) {
    if (f["total"].is_null()) continue;
    const std::string name = f["name"];
    const ModelConfig c = load_config(kDir + name);
    const ParamCount p = count_params(c);
    if (p.total != f["total"].get<int64_t>())
      check::report(__FILE__, __LINE__, name + ": counted " + std::to_string(p.total) + ", published " +
                                            std::to_string(f["total"].get<int64_t>()));
    ++checked;
  }
  CHECK(checked >= 8);
}

TEST(mixtral_8x7b_headline_figures) {
  const ParamCount p = count_params(load_config(kDir + "mixtral-8x7b"));
  CHECK_EQ(p.total, int64_t(46702792704));
  CHECK_NEAR(double(p.active) / 1e9, 12.9, 0.05);  // Mistral: "12.9B active parameters"
  // Components add up, experts dominate.
  int64_t sum = 0;
  for (auto v : p.total_by) sum += v;
  CHECK_EQ(sum, p.total);
  CHECK(p.total_by[size_t(Component::RoutedExperts)] > p.total * 9 / 10);
}

// Rounded active figures from model cards: "A3B", "A22B", "37B activated", ...
TEST(active_parameters_match_model_card_headlines) {
  struct Case {
    const char* name;
    double active_billions, tol;
    bool without_embedding;
  } cases[] = {
      {"deepseek-v3", 37.0, 0.6, false},       // "37B activated for each token"
      {"qwen3-30b-a3b", 3.3, 0.06, false},     // "3.3B activated"
      {"qwen3-235b-a22b", 22.0, 0.3, false},   // "22B activated"
      {"olmoe-1b-7b-0924", 1.3, 0.06, false},  // "1.3B active"
      {"gpt-oss-120b", 5.13, 0.01, true},      // card: 5.13B active (input embedding excluded)
      {"mixtral-8x22b", 39.0, 0.2, false},     // "39B active"
  };
  for (const auto& k : cases) {
    const ParamCount p = count_params(load_config(kDir + k.name));
    double a = double(p.active);
    if (k.without_embedding) a -= double(p.active_by[size_t(Component::Embeddings)]);
    if (std::fabs(a / 1e9 - k.active_billions) > k.tol)
      check::report(__FILE__, __LINE__, std::string(k.name) + ": active " + std::to_string(a / 1e9) + "B vs card " +
                                            std::to_string(k.active_billions) + "B");
  }
}

TEST(tied_embeddings_are_counted_once) {
  ModelConfig c = load_config(kDir + "qwen3-30b-a3b");
  const ParamCount untied = count_params(c);
  c.tie_word_embeddings = true;
  const ParamCount tied = count_params(c);
  CHECK_EQ(untied.total - tied.total, c.vocab_size * c.hidden_size);
  CHECK_EQ(tied.total_by[size_t(Component::LmHead)], int64_t(0));
}

TEST(active_scales_with_top_k_not_with_experts) {
  ModelConfig c = load_config(kDir + "mixtral-8x7b");
  const ParamCount k2 = count_params(c);
  c.top_k = 1;
  const ParamCount k1 = count_params(c);
  const int64_t one_expert_all_layers = 3 * c.hidden_size * c.expert_ffn_size * c.num_layers;
  CHECK_EQ(k2.active - k1.active, one_expert_all_layers);
  CHECK_EQ(k2.total, k1.total);
}

CHECK_MAIN()
