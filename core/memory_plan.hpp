// How much memory a model needs, in one place: `moelab-cli info` prints it, and Model::load and
// Model::new_cache refuse with the same figures before allocating what would not fit.
//
// What is counted (CPU backend; shapes with the letters of config.hpp, S context, T tokens of one
// forward, r = the backend's bytes per real, 4 for fp32):
//   mapped       weights read in place from the checkpoint's memory map, as stored (bf16/f16):
//                the matrices (attention, experts, shared and dense MLPs, embedding, LM head)
//   owned        weights held as fp32 copies: norms, biases, routers and fp32 tensors
//   (on a GPU backend that keeps stored weights, "mapped" are its bf16/f16 copies in device memory)
//   kv_cache     2 · L · S · NKV · D · r (keys and values of every layer)
//   activations  at most what one forward of T tokens holds at once (see memory_plan.cpp)
// and, for comparison, every weight widened to fp32 (what `load(widen = true)` and training hold).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config.hpp"
#include "registry.hpp"

namespace moelab {

enum class DType;
struct TensorView;

struct MemoryPlan {
  int64_t context = 0;   // S: tokens the KV cache holds
  int64_t tokens = 0;    // T: tokens of the forward the activations are counted for
  int64_t mapped = 0;    // weights read from the memory map as stored
  std::map<std::string, int64_t> mapped_by_dtype;  // "bf16" -> bytes of `mapped`
  int64_t owned = 0;     // weights held as fp32 copies
  int64_t kv_cache = 0;
  int64_t activations = 0;
  int64_t fp32_weights = 0;  // every weight as fp32
  int64_t weights() const { return mapped + owned; }
  int64_t total() const { return mapped + owned + kv_cache + activations; }
  int64_t widened_total() const { return fp32_weights + kv_cache + activations; }
};

// The forward the plan counts activations for when none is named: the prompt, up to this many
// tokens (decode then runs one token at a time).
constexpr int64_t kPlanPromptTokens = 512;
int64_t default_plan_tokens(int64_t context);

// Whether a tensor of this role and dtype stays as stored on a backend that maps stored weights.
bool kept_as_stored(Role role, DType dtype);

// Which checkpoint tensors stay as stored (views[i] is specs[i]'s tensor) and the bytes of each kind.
// A layer's routed experts are kept together or not at all (the backend reads them as one stack).
struct StoredWeights {
  std::vector<bool> keep;
  int64_t mapped = 0, owned = 0;
  std::map<std::string, int64_t> mapped_by_dtype;
};
StoredWeights plan_stored_weights(const ModelConfig& c, const std::vector<TensorSpec>& specs,
                                  const std::vector<const TensorView*>& views, bool map_stored, int64_t real_bytes,
                                  const std::string& where);

// The plan for a checkpoint whose tensors are all `stored` (config.json's torch_dtype) ...
MemoryPlan memory_plan(const ModelConfig& c, DType stored, int64_t context, int64_t tokens, bool map_stored = true,
                       int64_t real_bytes = 4);
// ... or with the weights' bytes already known (a checkpoint's headers, a loaded model).
MemoryPlan memory_plan(const ModelConfig& c, const StoredWeights& weights, int64_t context, int64_t tokens,
                       int64_t real_bytes = 4);

// The memory this process may use: the smallest of physical memory, its cgroup's limit, and
// MOELAB_MEMORY_LIMIT (bytes, or with a K/M/G suffix: "16G" — for tests, and to ask what a
// smaller machine would say). The lab plans to use all of it but a reserve for the system and
// the rest of the program: 10%, at most 1 GiB (the mapped weights are file pages the kernel
// may evict and read again, so this is a plan, not a hard wall).
struct MemoryBudget {
  int64_t total = 0;
  int64_t usable = 0;
  std::string source;  // "physical memory", "cgroup limit", "MOELAB_MEMORY_LIMIT"
};
MemoryBudget memory_budget();

// Throws, naming `where`, when the plan does not fit the budget: "<what> needs 14.2 GiB (...),
// more than the 13.9 GiB this machine can give it (15.5 GiB of physical memory less a reserve)".
// With device_bytes > 0 (a GPU backend's memory) the budget is that memory, less the same reserve.
void check_memory_plan(const MemoryPlan& plan, const std::string& where, const std::string& what,
                       int64_t device_bytes = 0);

// Bytes needed to hold the weights as fp32, and the memory this process may use (memory_budget().total).
int64_t weight_bytes_fp32(const ModelConfig& c);
int64_t physical_memory_bytes();

}  // namespace moelab
