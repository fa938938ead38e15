// Lab presets: a named model (the knobs a class turns) plus training settings, stored as JSON in
// resources/presets/. The model spec becomes a Hugging Face config of the nearest family:
// Mixtral for plain MoE models, Qwen2-MoE when there are shared experts or dense layers (both
// stay loadable by transformers); the noisy and sigmoid routers are lab extensions.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config.hpp"
#include "trainer.hpp"

namespace moelab {

struct Preset {
  std::string name;         // file stem, e.g. "lesson-collapse"
  std::string title;        // "Collapse: top-1, no balancing"
  std::string description;  // what a student should see
  std::string corpus = "builtin:domains";
  ModelConfig model;
  TrainConfig train;
};

// Model spec keys: layers, hidden, heads, kv_heads, experts, top_k, expert_hidden,
// fine_grained (m: m·E experts of F/m, top-k·m), shared_experts, dense_layers, dense_hidden
// (experts 0 = a dense model), router (softmax | noisy | sigmoid), renormalize, vocab,
// max_positions, rope_theta.
ModelConfig lab_model_from_json(const nlohmann::json& spec, const std::string& source);

// NAME (a preset in the resources folder) or a path to a preset JSON file.
Preset load_preset(const std::string& name_or_path);
std::vector<std::string> list_presets();
std::string resources_dir();

}  // namespace moelab
