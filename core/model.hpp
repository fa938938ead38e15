// The decoder-only MoE transformer: pre-norm RMSNorm, RoPE, grouped-query attention (dense),
// and a feed-forward block that is either a dense SwiGLU MLP or router + top-k SwiGLU experts
// (+ an optional shared expert). It computes what Hugging Face `transformers` computes for
// Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and GraniteMoE (with its embedding, attention and
// residual multipliers and logits scaling). All math goes through a Backend.
//
// One code path serves the full forward and token-by-token decode: forward() runs T new tokens
// after the `cache.length` tokens already in the KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "config.hpp"
#include "error.hpp"
#include "memory_plan.hpp"
#include "registry.hpp"
#include "router.hpp"
#include "routing.hpp"

namespace moelab {

enum class DType;  // safetensors.hpp: the element types of a checkpoint

struct LayerWeights {
  Tensor input_norm, post_attn_norm;                 // [H]
  Tensor q, k, v, o;                                 // [NH·D,H] [NKV·D,H] [NKV·D,H] [H,NH·D]
  Tensor q_bias, k_bias, v_bias, o_bias;             // optional
  Tensor q_norm, k_norm;                             // optional: [D] per head or [NH·D]/[NKV·D]
  bool moe = false;
  Tensor router;                                     // [E,H]
  Tensor router_noise;                               // [E,H] noisy top-k noise scale, optional
  Tensor selection_bias;                             // [E] sigmoid router's bias (a buffer), optional
  ExpertWeights experts;                             // [E,F,H] [E,F,H] [E,H,F]
  Tensor shared_gate, shared_up, shared_down;        // [Fs,H] [Fs,H] [H,Fs], optional
  Tensor shared_expert_gate;                         // [1,H], optional
  Tensor dense_gate, dense_up, dense_down;           // dense layers: [Fd,H] [Fd,H] [H,Fd]
};

// Every weight of a model — or, with the same shapes, its gradients or optimizer moments.
struct ParamSet {
  Tensor embed, final_norm, lm_head;  // lm_head shares embed when tied
  std::vector<LayerWeights> layers;
};

// One registry tensor's place in a ParamSet: the Tensor and the element offset inside it (routed
// experts are stacked [E, ...], so expert e starts at e · per-expert size). A checkpoint tensor
// split over two ParamSet tensors (GraniteMoE's input_linear) has no single slot: see pieces_for.
Tensor* slot_for(ParamSet& p, const TensorSpec& spec, int64_t* offset);

// Where a registry tensor's elements live in a ParamSet, as contiguous runs: elements
// [src_offset, src_offset + count) of the checkpoint tensor are elements [dst_offset, ...) of
// *dst. One piece for most tensors; 2E for GraniteMoE's input_linear [E,2F,H], whose gate and up
// halves go to the stacked experts.gate and experts.up [E,F,H].
struct TensorPiece {
  Tensor* dst;
  int64_t dst_offset, src_offset, count;
};
std::vector<TensorPiece> pieces_for(ParamSet& p, const TensorSpec& spec);

// A trainable tensor of a ParamSet (stacked experts once, tied lm_head not twice, buffers not).
struct ParamRef {
  std::string name;  // registry name of its first piece
  Tensor* tensor;
  bool decay;        // weight decay for matrices, not for norms and biases
  bool router;       // a router tensor (its learning rate can be scaled for the collapse lesson)
};
std::vector<ParamRef> trainable_params(const ModelConfig& c, ParamSet& p);

struct KvCache {
  std::vector<Tensor> k, v;  // per layer [S_max, NKV·D]
  int64_t length = 0;        // tokens already cached
  int64_t capacity = 0;
};

// Device buffers one token's routing is copied into by a forward run on the backend, for a caller
// that reads it back once per token (recorded decode, where nothing can be read mid-step):
// values [M, 1 + 2E + K] = per MoE layer in order: the router input's norm, logits [E], probs [E],
// gate weights [K]; ids [M, K].
struct DeviceTrace {
  Tensor values, ids;
  static int64_t row_width(int64_t E, int64_t K) { return 1 + 2 * E + K; }
};

// How far Model::load has come, for a progress bar: the stage, and the bytes of tensor data it has
// checked or converted out of all it will (0 of 0 while it reads the headers).
struct LoadProgress {
  std::string stage;
  int64_t done = 0, total = 0;
  double fraction() const { return total > 0 ? double(done) / double(total) : 0.0; }
};
// Called between tensors and every few MB inside the long scans; returning false cancels the load.
using LoadCallback = std::function<bool(const LoadProgress&)>;
// Model::load throws LoadCancelled (error.hpp) when the callback cancels it.

class Model {
 public:
  Model(const ModelConfig& config, std::shared_ptr<Backend> backend);

  // Load config.json + safetensors from a model directory. Checks memory before allocating,
  // shapes against the config, and values for NaN/Inf; errors name the file and tensor.
  // On a backend that takes them, bf16/f16 matrices stay as stored: on the CPU read in place from
  // the memory-mapped checkpoint (no fp32 copy), on a GPU copied once into device memory in their
  // dtype (Backend::keeps_stored_weights); `widen` converts everything to fp32 instead (training
  // needs fp32 weights). The memory check counts what is really needed, in the backend's memory
  // (memory_plan.hpp: the weights as they will be held, with a one-token context and forward).
  // `progress` reports the stages and may cancel (LoadCancelled).
  static Model load(const std::string& dir, std::shared_ptr<Backend> backend, bool widen = false,
                    const LoadCallback& progress = {});
  // A freshly initialised model (normal(0, init_std) weights, unit norms), deterministic in seed.
  static Model random(const ModelConfig& config, uint64_t seed, std::shared_ptr<Backend> backend,
                      float init_std = 0.02f);
  // Write config.json + model.safetensors (or shards) in the Hugging Face layout, as fp32 or in
  // `dtype` (F32, F16, BF16), in shards of at most max_shard_bytes (0 = one file).
  void save(const std::string& dir) const;
  void save(const std::string& dir, DType dtype, int64_t max_shard_bytes = 0) const;

  const ModelConfig& config() const { return config_; }
  // Bytes of weights kept as stored (bf16/f16 in the checkpoint's memory map, or their copies in
  // a device's memory); 0 for fp32 models.
  int64_t stored_weight_bytes() const { return stored_bytes_; }
  // Bytes of weights held as fp32 copies (all of them for a random or widened model).
  int64_t owned_weight_bytes() const { return owned_bytes_; }
  // What this model needs for a context of `context` tokens and a forward of `tokens`
  // (default_plan_tokens(context) when 0): the figures new_cache checks.
  MemoryPlan memory_plan(int64_t context, int64_t tokens = 0) const;
  Backend& backend() const { return *backend_; }
  std::shared_ptr<Backend> backend_ptr() const { return backend_; }
  ParamSet& params() { return w_; }
  // Zero tensors shaped like every weight (gradients, Adam moments).
  ParamSet zeros_like() const;

  // A KV cache for `capacity` tokens; refused, before allocating, when memory_plan(capacity,
  // forward_tokens) does not fit in memory.
  KvCache new_cache(int64_t capacity, int64_t forward_tokens = 0) const;
  // Run tokens at positions cache.length.., append them to the cache, return logits [T,V] (host).
  // Routing of every MoE layer goes to `observer` when given; `overrides` changes routing (an
  // expert capacity applies over these T tokens only).
  std::vector<float> forward(const std::vector<int32_t>& tokens, KvCache& cache, RoutingObserver* observer = nullptr,
                             const RoutingOverrides* overrides = nullptr);
  // Token ids in [0, V) and room in the cache for T more, else an Error naming the model.
  void check_input(const int32_t* tokens, int64_t T, const KvCache& cache) const;
  // The same on the backend, with no host round trip: ids [T] (I32) at positions pos0.. (which
  // must be cache.length; cache.length is not advanced), returns logits [T,V] on the backend.
  // `trace` (T = 1, no overrides) receives each MoE layer's routing on the device.
  Tensor forward_tensors(const Tensor& ids, int64_t pos0, KvCache& cache, RoutingObserver* observer,
                         const RoutingOverrides* overrides, DeviceTrace* trace);
  // Convenience: a fresh cache, the whole sequence at once (so an expert capacity in `overrides`
  // applies over the whole sequence as one batch).
  std::vector<float> forward_full(const std::vector<int32_t>& tokens, RoutingObserver* observer = nullptr,
                                  const RoutingOverrides* overrides = nullptr);

  // Host copies of every weight by registry name (for saving and tests).
  std::vector<std::pair<std::string, std::vector<float>>> export_weights() const;

 private:
  struct NoAlloc {};
  Model(const ModelConfig& config, std::shared_ptr<Backend> backend, NoAlloc);  // weights filled by load()
  // The feed-forward block of layer `layer`: x [T,H] += mlp(h) for a dense layer, else
  // norm'd h → route → experts (grouped by expert inside the backend) → weighted sum → shared expert.
  void run_ffn(int64_t layer, const Tensor& h, Tensor& x, int64_t pos0, RoutingObserver* observer,
               const RoutingOverrides* overrides, DeviceTrace* trace, int64_t moe_index);

  ModelConfig config_;
  std::shared_ptr<Backend> backend_;
  ParamSet w_;
  int64_t stored_bytes_ = 0;
  std::map<std::string, int64_t> stored_by_dtype_;
  int64_t owned_bytes_ = 0;
};

}  // namespace moelab
