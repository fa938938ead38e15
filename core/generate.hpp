// Token-by-token generation with a KV cache: greedy, or sampled with temperature and top-p
// (nucleus) from a seeded generator, reporting the routing of every token to an observer.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model.hpp"
#include "routing.hpp"

namespace moelab {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;
};

// Pick the next token from one row of logits [V].
int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& opt, class Rng& rng);

// Run the prompt, then generate up to max_new tokens (stopping at stop_token if >= 0). Calls
// on_token(id) after each generated token; returns the generated ids.
std::vector<int32_t> generate(Model& model, const std::vector<int32_t>& prompt, int64_t max_new,
                              const SamplingOptions& opt, RoutingObserver* observer = nullptr,
                              const std::function<void(int32_t)>& on_token = {}, int32_t stop_token = -1);

}  // namespace moelab
