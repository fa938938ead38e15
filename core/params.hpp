// Parameter counting from the tensor registry: total, active per token, by component.
// Active = every tensor a token passes through: all of attention, norms, router, shared experts,
// dense FFNs, the embedding matrix and the LM head, plus K of the E routed experts in each MoE
// layer. "Non-embedding" leaves out the embedding matrix and the (untied) LM head, the way
// scaling-law papers count. Mixtral 8x7B: 46,702,792,704 total, about 12.9B active.
#pragma once

#include <array>
#include <cstdint>

#include "config.hpp"
#include "registry.hpp"

namespace moelab {

struct ParamCount {
  int64_t total = 0;
  int64_t active = 0;
  int64_t total_non_embedding = 0;
  int64_t active_non_embedding = 0;
  std::array<int64_t, kNumComponents> total_by{};   // indexed by Component
  std::array<int64_t, kNumComponents> active_by{};
};

ParamCount count_params(const ModelConfig& c);

// FLOPs per token of a forward pass (2 per multiply-add, matrices only, attention over `context`
// previous tokens) — for "compute scales with active parameters".
double forward_flops_per_token(const ModelConfig& c, int64_t context);

}  // namespace moelab
