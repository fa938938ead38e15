// One tensor registry: every weight a model of a given config has, with its Hugging Face name,
// shape, role, layer and expert. It drives loading, saving, initialisation, parameter counting
// and the GUI's breakdown, so "every tensor handled" is one loop over this table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"

namespace moelab {

enum class Component { Embeddings, Attention, Norms, Router, RoutedExperts, SharedExperts, DenseFfn, LmHead, kCount };
constexpr int kNumComponents = int(Component::kCount);  // counted by the enum, not by hand
const char* component_name(Component c);  // "embeddings", "attention", ... (snake_case, JSON keys)

enum class Role {
  Embed, LmHead, FinalNorm,
  InputNorm, PostAttnNorm,
  Q, K, V, O, QBias, KBias, VBias, OBias, QNorm, KNorm, Sinks,
  MlaQA, MlaQANorm, MlaQB, MlaKvA, MlaKvANorm, MlaKvB,  // DeepSeek latent attention
  Router, RouterBias, ScoreCorrectionBias, RouterNoise,
  ExpertGate, ExpertUp, ExpertDown,       // one tensor per expert: [F,H], [F,H], [H,F]
  ExpertsFused,                           // all experts in one tensor (gpt-oss; count only)
  ExpertsGateUpStacked,                   // GraniteMoE input_linear [E,2F,H]: expert e's gate rows, then its up rows
  ExpertsDownStacked,                     // GraniteMoE output_linear [E,H,F]
  SharedGate, SharedUp, SharedDown, SharedExpertGate,
  DenseGate, DenseUp, DenseDown,
};

struct TensorSpec {
  std::string name;            // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
  std::vector<int64_t> shape;  // row-major, [out, in] for linear weights
  Role role;
  Component component;
  int64_t layer = -1;   // -1 for embeddings, final norm, lm_head
  int64_t expert = -1;  // routed expert index, -1 otherwise
  int64_t experts_in_tensor = 0;  // >0 when one tensor holds all experts (fused layouts)
  bool buffer = false;  // stored in checkpoints but not a trained parameter (not counted)
  int64_t numel() const;
};

// Every parameter tensor the Hugging Face model of this config has, in a stable order.
std::vector<TensorSpec> tensor_specs(const ModelConfig& c);

}  // namespace moelab
