// One training step's math: the forward pass over a batch with every activation kept, the
// loss (next-token cross-entropy + the balancing losses), and the backward pass into gradient
// tensors shaped like the weights. Everything goes through the Backend.
#pragma once

#include <cstdint>
#include <vector>

#include "corpus.hpp"
#include "model.hpp"
#include "random.hpp"

namespace moelab {

// StepKnobs (balancing losses, capacity, router noise) live with the router: router.hpp.

// One MoE layer's routing in a step, on the host, for metrics.
struct StepRouting {
  int64_t layer = 0, tokens = 0, experts = 0, top_k = 0;
  std::vector<int32_t> ids;      // [N,K] after capacity (-1 = dropped)
  std::vector<float> probs;      // [N,E] router scores
  std::vector<float> dropped;    // [N,K] 1 dropped, 2 re-routed, 0 kept
};

struct StepResult {
  double loss = 0, lm_loss = 0, aux_loss = 0, z_loss = 0;  // aux and z: sums over MoE layers
  std::vector<StepRouting> routing;                          // when asked
};

// Forward + backward: gradients are ADDED to `grads` (so micro-batches accumulate), scaled by
// `scale` (1/accumulation steps). `noise_rng` draws the noisy-router noise.
StepResult forward_backward(Model& model, ParamSet& grads, const Batch& batch, const StepKnobs& knobs,
                            Rng& noise_rng, float scale = 1.0f, bool want_routing = true);

// Mean next-token loss of a batch without gradients (validation): no noise, no capacity.
double evaluate_loss(Model& model, const Batch& batch);

// Zero every tensor of a ParamSet.
void zero_params(Backend& b, const ModelConfig& c, ParamSet& p);
// Throws, in one line naming the family or the field, when the training step cannot train this
// model: q/k norms, clipping, GraniteMoE's multipliers, attention dropout, router jitter.
void check_trainable(const ModelConfig& c);

}  // namespace moelab
