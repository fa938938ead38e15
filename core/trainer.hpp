// Training a lab model: AdamW with warmup + cosine schedule, gradient clipping and accumulation,
// the balancing methods (auxiliary loss, z-loss, DeepSeek-V3's bias update), capacity, and
// checkpoints that resume exactly. One step() = one optimizer update; it returns everything the
// run log and the GUI plot.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "corpus.hpp"
#include "metrics.hpp"
#include "model.hpp"
#include "step_record.hpp"
#include "train_step.hpp"

namespace moelab {

struct TrainConfig {
  int64_t steps = 300;           // optimizer steps
  int64_t batch = 16;            // sequences per micro-batch
  int64_t seq_len = 64;          // tokens per sequence
  int64_t grad_accum = 1;        // micro-batches per step
  float lr = 3e-3f;              // peak learning rate
  float min_lr_ratio = 0.1f;     // cosine decays to lr · min_lr_ratio
  int64_t warmup = 20;           // linear warmup steps
  float weight_decay = 0.1f;     // AdamW, matrices only
  float beta1 = 0.9f, beta2 = 0.95f, adam_eps = 1e-8f;
  float clip = 1.0f;             // global gradient-norm clip, 0 = off
  float router_lr_scale = 1.0f;  // router learning rate multiplier (collapse lesson: 10)
  // Balancing, each combinable
  float aux_alpha = 0.0f;        // Switch/GShard auxiliary loss coefficient
  float z_coef = 0.0f;           // router z-loss coefficient
  float bias_gamma = 0.0f;       // DeepSeek-V3 bias update speed (sigmoid router)
  CapacityPolicy capacity;       // factor 0 = no limit; reroute: overflow to the next-best expert (JSON: capacity_factor, reroute)
  uint64_t seed = 0;
  // The seed of a new run's initial weights: one rule, so a run made by the command line, the
  // GUI or a test starts from the same model.
  uint64_t weights_seed() const { return seed + 1000; }
  // Recording
  int64_t eval_every = 50;       // validation loss every N steps (0 = never)
  int64_t eval_batches = 2;
  int64_t probe_every = 25;      // probe batch routing and drop-by-position every N steps
  int64_t checkpoint_every = 0;  // 0 = only at the end
};

nlohmann::json train_config_to_json(const TrainConfig& c);
// Fields missing from j keep their values in `base`; errors name `source`.
TrainConfig train_config_from_json(const nlohmann::json& j, TrainConfig base, const std::string& source);

// Host bytes a training run needs, roughly: weights with gradients and Adam moments, one
// micro-batch's activations kept for the backward pass, the attention scratch of `threads`
// concurrent heads ([T,T] probabilities and their gradients, recomputed per head) and the
// held-out sample. The Trainer refuses a run whose estimate is over 80% of physical memory.
double training_memory_bytes(const ModelConfig& c, const TrainConfig& t, int threads);

class Trainer {
 public:
  Trainer(Model& model, const Corpus& corpus, const TrainConfig& config);

  StepRecord step();
  int64_t steps_done() const { return step_; }
  const TrainConfig& config() const { return cfg_; }
  // Balancing can change mid-run (the GUI's live switch); takes effect at the next step.
  void set_config(const TrainConfig& c) { cfg_ = c; }
  double learning_rate(int64_t step) const;  // schedule for the 1-based step

  // Checkpoint: the model (Hugging Face layout), optimizer moments and trainer state.
  void save_checkpoint(const std::string& dir) const;
  // Restore a checkpoint written by save_checkpoint into this trainer and its model.
  void load_checkpoint(const std::string& dir);

 private:
  void optimizer_step(int64_t step, float lr);
  void update_bias(const std::vector<StepRouting>& routing);

  Model& model_;
  const Corpus& corpus_;
  TrainConfig cfg_;
  ParamSet grads_, m_, v_;
  Rng data_rng_, noise_rng_;
  int64_t step_ = 0;
  double elapsed_ = 0;
  Batch probe_;
};

// One AdamW update of every trainable tensor (with optional clipping); returns the gradient
// norm before clipping. Exposed for the PyTorch comparison test.
double adamw_update(Model& model, ParamSet& grads, ParamSet& m, ParamSet& v, int64_t step, float lr,
                    const TrainConfig& cfg);

}  // namespace moelab
