#include "routing.hpp"

namespace moelab {

void RoutingTrace::on_routing(const RoutingEvent& e) {
  Layer* L = nullptr;
  for (auto& l : layers_)
    if (l.layer == e.layer) L = &l;
  if (!L) {
    layers_.push_back(Layer{e.layer, e.experts, e.top_k, {}, {}, {}, {}, {}, {}, {}});
    L = &layers_.back();
  }
  L->input_norm.insert(L->input_norm.end(), e.input_norm.begin(), e.input_norm.end());
  L->logits.insert(L->logits.end(), e.logits.begin(), e.logits.end());
  L->probs.insert(L->probs.end(), e.probs.begin(), e.probs.end());
  L->ids.insert(L->ids.end(), e.ids.begin(), e.ids.end());
  L->weights.insert(L->weights.end(), e.weights.begin(), e.weights.end());
  L->wanted.insert(L->wanted.end(), e.wanted.begin(), e.wanted.end());
  L->dropped.insert(L->dropped.end(), e.dropped.begin(), e.dropped.end());
}

}  // namespace moelab
