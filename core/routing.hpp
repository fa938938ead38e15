// Named intermediates of the router, reported per MoE layer to an observer: the routing trace
// the visualiser draws comes from here, never from inside the math. (The router itself:
// router.hpp.)
#pragma once

#include <cstdint>
#include <vector>

namespace moelab {

// One MoE layer's routing for T tokens starting at position pos0.
struct RoutingEvent {
  int64_t layer = 0;
  int64_t pos0 = 0;
  int64_t tokens = 0;       // T
  int64_t experts = 0;      // E
  int64_t top_k = 0;        // K
  std::vector<float> input_norm;  // [T] L2 norm of the router's input (the RMS-normed hidden state)
  std::vector<float> logits;   // [T,E] router logits
  std::vector<float> probs;    // [T,E] softmax (or sigmoid) scores over all experts
  std::vector<int32_t> ids;    // [T,K] experts that ran each slot, best first (-1 = dropped by capacity)
  std::vector<float> weights;  // [T,K] final gate weights (renormalised when the model does; 0 where dropped)
  std::vector<int32_t> wanted;   // [T,K] the router's own top-k before capacity (equals ids where kept)
  std::vector<uint8_t> dropped;  // [T,K] 0 kept, 1 dropped, 2 re-routed (zeros when there is no capacity)
};

class RoutingObserver {
 public:
  virtual ~RoutingObserver() = default;
  virtual void on_routing(const RoutingEvent& e) = 0;
};

// Collects every event: the routing trace of a prompt and its generated tokens.
class RoutingTrace : public RoutingObserver {
 public:
  struct Layer {
    int64_t layer = 0, experts = 0, top_k = 0;
    std::vector<float> input_norm, logits, probs, weights;  // rows appended per token
    std::vector<int32_t> ids, wanted;
    std::vector<uint8_t> dropped;
    int64_t tokens() const { return top_k ? int64_t(ids.size()) / top_k : 0; }
  };
  void on_routing(const RoutingEvent& e) override;
  const std::vector<Layer>& layers() const { return layers_; }
  void clear() { layers_.clear(); }

 private:
  std::vector<Layer> layers_;  // MoE layers in layer order
};

}  // namespace moelab
