#include "params.hpp"

#include "error.hpp"

namespace moelab {

ParamCount count_params(const ModelConfig& c) {
  ParamCount p;
  for (const TensorSpec& s : tensor_specs(c)) {
    if (s.buffer) continue;
    const int64_t n = s.numel();
    const auto k = static_cast<size_t>(s.component);
    p.total_by[k] = checked_add(p.total_by[k], n, s.name);
    int64_t active = n;
    if (s.component == Component::RoutedExperts) {
      // A token uses K of the E (equally sized) experts: count experts 0..K-1 of per-expert
      // tensors, and K/E of a fused tensor that holds all E experts.
      active = s.experts_in_tensor > 0 ? n / s.experts_in_tensor * c.top_k : (s.expert < c.top_k ? n : 0);
    }
    p.active_by[k] = checked_add(p.active_by[k], active, s.name);
  }
  for (int i = 0; i < kNumComponents; ++i) {
    p.total = checked_add(p.total, p.total_by[i], "total");
    p.active = checked_add(p.active, p.active_by[i], "active");
  }
  const auto emb = static_cast<size_t>(Component::Embeddings), head = static_cast<size_t>(Component::LmHead);
  p.total_non_embedding = p.total - p.total_by[emb] - p.total_by[head];
  p.active_non_embedding = p.active - p.active_by[emb] - p.active_by[head];
  return p;
}

double forward_flops_per_token(const ModelConfig& c, int64_t context) {
  const ParamCount p = count_params(c);
  // Every active weight except the embedding lookup is one multiply-add per token.
  double flops = 2.0 * double(p.active - p.active_by[static_cast<size_t>(Component::Embeddings)]);
  if (c.tie_word_embeddings) flops += 2.0 * double(c.vocab_size) * double(c.hidden_size);
  // Attention scores and weighted values: 2 * NH * D * context each.
  const double d_qk = c.mla ? double(c.qk_nope_head_dim + c.qk_rope_head_dim) : double(c.head_dim);
  const double d_v = c.mla ? double(c.v_head_dim) : double(c.head_dim);
  flops += double(c.num_layers) * 2.0 * double(c.num_heads) * (d_qk + d_v) * double(context);
  return flops;
}

}  // namespace moelab
