// Token-by-token decode of one sequence with a KV cache. On a backend that records op graphs
// (the CUDA backend: CUDA graphs), the first decode step is recorded once, with the position read
// from a device scalar, and every later token replays it: one graph launch per token instead of
// one launch per op, which is what makes small models fast on a GPU. Elsewhere each token runs
// Model::forward. Both paths give the same logits and the same routing events.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model.hpp"

namespace moelab {

class Decoder {
 public:
  // `capacity` positions of cache (at most the model's context). use_graphs = false always runs
  // the ops directly (for comparisons and benchmarks).
  Decoder(Model& model, int64_t capacity, bool use_graphs = true);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Tokens through the ordinary forward (a prompt); returns logits [T,V]. Overrides apply here.
  std::vector<float> prefill(const std::vector<int32_t>& tokens, RoutingObserver* observer = nullptr,
                             const RoutingOverrides* overrides = nullptr);
  // One token at the next position; returns its logits [V]. Routing goes to `observer`, read back
  // from the device once per token on the recorded path. Active overrides (RoutingOverrides::
  // active) run the plain forward instead: a recorded step holds the model's own routing. (A
  // capacity limit applies over the tokens of one call, here one token: to limit a whole text,
  // prefill it in a fresh Decoder; see RoutingOverrides::needs_whole_text.)
  std::vector<float> step(int32_t token, RoutingObserver* observer = nullptr,
                          const RoutingOverrides* overrides = nullptr);

  int64_t length() const { return cache_.length; }
  int64_t capacity() const { return cache_.capacity; }
  KvCache& cache() { return cache_; }
  // Whether steps replay a recorded graph, and its size (0 when not recorded yet or not graphed).
  bool graphed() const;
  int64_t graph_nodes() const;
  // Why recording failed, when it did (the steps then run the ops directly); "" otherwise.
  const std::string& graph_problem() const { return graph_problem_; }

 private:
  struct Recorded;
  Recorded& recorded(bool with_trace);
  void emit_trace(RoutingObserver& observer, int64_t pos);

  Model& model_;
  KvCache cache_;
  bool use_graphs_;
  Tensor token_, position_;  // I32 [1] inputs of the recorded step
  DeviceTrace trace_;
  std::unique_ptr<Recorded> plain_, traced_;  // recorded without and with the routing trace
  std::string graph_problem_;
};

}  // namespace moelab
