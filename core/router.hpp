// The router of an MoE layer, in one place. For each token (a row of h [T,H]) it
//   1. scores every expert:       logits = h · W_routerᵀ [T,E] (+ noise ε ⊙ softplus(h · W_noiseᵀ)
//                                 in training, noisy top-k), probs = softmax or sigmoid [T,E];
//   2. selects:                   probs + selection bias (DeepSeek-V3's balancing bias, or the
//                                 what-if ±inf that bans or forces an expert), for choosing only;
//   3. keeps the top-k:           ids [T,K], best first, ties to the lower index;
//   4. gates:                     weights [T,K] = the chosen (unbiased) probs, renormalised to
//                                 sum to 1 if the model does;
//   5. limits capacity:           each expert takes at most C of the batch's T·K slots, every
//                                 token's first choice before any second choice, then token order;
//                                 overflow is dropped (id -1) or re-routed to its next-best expert
//                                 with room (Switch Transformer / GShard);
// and in training
//   6. passes gradients back through the gate weights (selection itself has none),
//   7. adds the balancing losses (Switch auxiliary loss, ST-MoE z-loss),
//   8. nudges the selection bias towards even load after each step (DeepSeek-V3).
//
// Here: what the router is asked to do (RouterSpec, built by router_spec from the model's config,
// the GUI's what-if overrides and the trainer's knobs), the pipeline on a Backend (route), and
// the CPU reference of every step as plain functions on host rows (namespace router_cpu), which
// the Eigen backend runs and the CUDA kernels (gpu/kernels_router.cu) mirror.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "routing.hpp"

namespace moelab {

struct ModelConfig;
struct LayerWeights;
class Rng;

// Expert capacity (Switch Transformer, Fedus et al. 2021, eq. 3): each expert takes at most
// ceil(factor · tokens · K / E) of a batch's tokens·K slots; factor 0 = no limit. The trainer's
// knobs and the what-if overrides carry this one policy.
struct CapacityPolicy {
  double factor = 0;     // capacity factor; 0 = no limit
  bool reroute = false;  // overflow goes to the next-best expert with room (else it is dropped)
  bool limited() const { return factor > 0; }
};
// Slots per expert for a batch of `tokens` tokens: 0 when the factor is 0 (no limit).
int64_t expert_capacity(double capacity_factor, int64_t tokens, int64_t top_k, int64_t experts);

struct RouterSpec {
  int64_t top_k = 2;
  bool renormalize = true;  // divide the K chosen weights by their sum
  bool sigmoid = false;     // scores = sigmoid(logits) instead of softmax (DeepSeek-V3 style)
  // [E] added to the scores for choosing only; the weights stay the unbiased scores
  // (DeepSeek-V3's auxiliary-loss-free balancing; also bans/forces experts with -inf/+inf).
  // Empty: no bias.
  Tensor selection_bias;
  CapacityPolicy capacity;  // applied over the T tokens of one call (a batch)
  bool noisy = false;       // add noise to the logits (noisy top-k, training only)
  int64_t capacity_for(int64_t tokens, int64_t experts) const {
    return expert_capacity(capacity.factor, tokens, top_k, experts);
  }
};

// Inference-time exploration knobs (GUI "what if"): change K, ban or force experts, switch
// renormalisation, limit expert capacity. Defaults leave the model's own routing.
struct RoutingOverrides {
  int64_t top_k = 0;                  // 0 = the model's K
  std::optional<bool> renormalize;    // unset = the model's choice
  std::set<int64_t> banned;           // experts never chosen (selection bias -inf) in every layer
  std::optional<int64_t> forced;      // expert always chosen first (selection bias +inf)
  // Capacity over the T tokens of one forward call; in KV-cached decode T is 1, so a limit only
  // means something when the text runs as one batch (see needs_whole_text).
  CapacityPolicy capacity;

  // Whether anything differs from the model's own routing (a knob set to the model's own value
  // counts as moved): then tokens run through the plain forward (Model::forward), not a recorded
  // decode step.
  bool active() const;
  // A capacity limit is a property of a batch: the whole text must be recomputed as one call.
  bool needs_whole_text() const { return capacity.limited(); }
};

// What a training step adds to routing: balancing losses, capacity, router noise.
struct StepKnobs {
  float aux_alpha = 0.0f;   // Switch/GShard auxiliary load-balancing loss coefficient
  float z_coef = 0.0f;      // router z-loss coefficient
  CapacityPolicy capacity;  // over the whole batch
  bool noise = true;        // noisy top-k routers add noise (training only)
};

// The one builder of a layer's RouterSpec: the model's K, renormalisation, scoring and selection
// bias; then the what-if overrides (K clamped to E; banned/forced experts as a ±inf selection bias
// in a tensor of its own; with fewer allowed experts than K, K shrinks to them; banning every
// expert is an error) or the training knobs (capacity, noise when the layer has a noise router).
RouterSpec router_spec(Backend& b, const ModelConfig& c, const LayerWeights& L,
                       const RoutingOverrides* what_if = nullptr, const StepKnobs* training = nullptr);

// One MoE layer's routing of T tokens, on the backend.
struct Routing {
  Tensor logits;   // [T,E] router logits (with noise, when noisy)
  Tensor probs;    // [T,E] softmax or sigmoid scores
  Tensor ids;      // [T,K] Int32 experts that run each slot, best first (-1 = dropped)
  Tensor weights;  // [T,K] gate weights (0 where dropped)
  Tensor wanted;   // [T,K] Int32 the router's own top-k before capacity (empty without a limit)
  Tensor dropped;  // [T,K] 0 kept, 1 dropped, 2 re-routed (empty without a limit)
  Tensor raw, noise;  // [T,E] noisy top-k: h · W_noiseᵀ and ε, kept for the backward pass
};

// Steps 1-5 for the rows of h [T,H] with layer L's router. `noise_rng` draws ε when spec.noisy.
Routing route(Backend& b, const Tensor& h, const LayerWeights& L, const RouterSpec& spec, Rng* noise_rng = nullptr);

// The observer's copy of a routing (host vectors), for layer `layer` at positions pos0...
RoutingEvent routing_event(Backend& b, int64_t layer, int64_t pos0, const Tensor& h, const Routing& r);

// Step 8, DeepSeek-V3 auxiliary-loss-free balancing (Wang et al. 2024; DeepSeek-V3 report
// §2.1.2): after each step, b_i += γ · sign(mean load − load_i), load_i = the step's choices of
// expert i (ids < 0 skipped). Overloaded experts become less likely to be chosen, idle ones more.
void update_selection_bias(std::vector<float>& bias, const std::vector<const std::vector<int32_t>*>& step_ids,
                           float gamma);

// The CPU reference of steps 1-7, on host rows in the backend's scalar S (float or double). The
// Eigen backend's route / limit_capacity / route_backward / router_losses are these.
namespace router_cpu {

// Step 1. probs [E] = softmax or sigmoid of logits [E].
template <class S>
void scores(const S* logits, int64_t E, bool sigmoid, S* probs);

// Step 2. The E experts in selection order (probs + bias, highest first, ties to the lower
// index); only the first n are sorted. sel [E] receives probs + bias. bias may be null.
template <class S>
void selection_order(const S* probs, const float* bias, int64_t E, int64_t n, std::vector<int32_t>& order,
                     std::vector<S>& sel);

// Step 4. weights [K] of one token's slots ids [K]: the chosen probs, renormalised over the
// slots that remain (id >= 0) if asked; 0 for a dropped slot.
template <class S>
void gate_weights(const S* probs, const int32_t* ids, int64_t K, bool renormalize, S* weights);

// Steps 1-4 for T tokens: logits [T,E] → probs [T,E], ids [T,K], weights [T,K].
template <class S>
void route(const S* logits, int64_t T, int64_t E, int64_t K, bool sigmoid, bool renormalize, const float* bias,
           S* probs, int32_t* ids, S* weights);

// Step 5. At most `capacity` slots per expert (0 = no limit), choice rank first, then token
// order; overflow dropped or re-routed (never to a banned expert, bias -inf, nor to one the token
// already holds). ids [T,K] and weights [T,K] are rewritten; dropped [T,K] = 0/1/2.
template <class S>
void limit_capacity(const S* probs, int64_t T, int64_t E, int64_t K, const float* bias, int64_t capacity,
                    bool reroute, bool renormalize, int32_t* ids, S* weights, S* dropped);

// Step 6. dlogits [T,E] (+)= ∂L/∂logits given dweights [T,K], through the gate weights and the
// softmax or sigmoid; slots with id < 0 carry nothing.
template <class S>
void route_backward(const S* probs, const int32_t* ids, const S* dweights, int64_t T, int64_t E, int64_t K,
                    bool sigmoid, bool renormalize, S* dlogits, bool accumulate);

// Step 7. Balancing losses of one MoE layer from its logits [N,E] and choices ids [N,K]:
//   aux = E · Σ_i f_i · P_i  (Switch Transformer, Fedus et al. 2021, eq. 4; f_i = share of the N·K
//         choices that went to expert i, a constant; P_i = mean softmax probability of expert i),
//   z   = mean_t (logsumexp_e logits[t,e])²  (router z-loss, ST-MoE, Zoph et al. 2022, eq. 5).
// dlogits += aux_coef · ∂aux + z_coef · ∂z. Returns {aux, z}.
template <class S>
std::pair<double, double> router_losses(const S* logits, const int32_t* ids, int64_t N, int64_t E, int64_t K,
                                        float aux_coef, float z_coef, S* dlogits);

}  // namespace router_cpu
}  // namespace moelab
