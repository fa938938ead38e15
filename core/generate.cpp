#include "generate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "decoder.hpp"
#include "error.hpp"
#include "random.hpp"

namespace moelab {

int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& opt, Rng& rng) {
  if (opt.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<double> p(static_cast<size_t>(V));
  const float m = *std::max_element(logits, logits + V);
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) sum += (p[size_t(i)] = std::exp(double(logits[i] - m) / opt.temperature));
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&p](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
  // Nucleus: the most probable tokens until their mass reaches top_p (at least one).
  double kept = 0.0;
  size_t n = 0;
  while (n < order.size() && (n == 0 || kept < opt.top_p * sum)) kept += p[size_t(order[n++])];
  double r = rng.uniform() * kept;
  for (size_t i = 0; i < n; ++i) {
    r -= p[size_t(order[i])];
    if (r <= 0.0) return order[i];
  }
  return order[n - 1];
}

std::vector<int32_t> generate(Model& model, const std::vector<int32_t>& prompt, int64_t max_new,
                              const SamplingOptions& opt, RoutingObserver* observer,
                              const std::function<void(int32_t)>& on_token, int32_t stop_token) {
  if (prompt.empty()) fail("generate", "the prompt has no tokens");
  if (max_new < 0) fail("generate", "the number of tokens to generate must not be negative");
  const int64_t V = model.config().vocab_size;
  const int64_t capacity = std::min<int64_t>(model.config().max_positions, int64_t(prompt.size()) + max_new);
  if (int64_t(prompt.size()) > capacity)
    fail("generate", "the prompt is longer than the model's context of " + std::to_string(capacity));
  Decoder decoder(model, std::max<int64_t>(1, capacity));
  Rng rng(opt.seed);
  std::vector<float> logits = decoder.prefill(prompt, observer);
  std::vector<int32_t> out;
  for (int64_t i = 0; i < max_new && decoder.length() < decoder.capacity(); ++i) {
    const float* last = logits.data() + (int64_t(logits.size()) / V - 1) * V;
    const int32_t next = sample_token(last, V, opt, rng);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == stop_token) break;
    logits = decoder.step(next, observer);
  }
  return out;
}

}  // namespace moelab
