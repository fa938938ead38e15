// Rotary position embeddings: the frequencies of each pair of a head's dimensions. The plain RoPE
// (Su et al. 2021) rotates pair i of position p by p · theta^(-2i/D); the static scalings of
// transformers' modeling_rope_utils.py change those frequencies only:
//   linear  every frequency divided by `factor` (positions interpolated, kaiokendev 2023);
//   llama3  Llama 3.1's rule: wavelengths 2π/f above original_max_positions / low_freq_factor are
//           divided by `factor`, those below original_max_positions / high_freq_factor are kept,
//           and the ones between are interpolated smoothly.
// Both backends compute their cos/sin tables from rope_inv_freq, so model code passes a RopeSpec.
#pragma once

#include <cstdint>

namespace moelab {

enum class RopeType { Default, Linear, Llama3 };

struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;                 // linear, llama3
  double low_freq_factor = 1.0;        // llama3
  double high_freq_factor = 4.0;       // llama3
  int64_t original_max_positions = 0;  // llama3: the context the model was pre-trained on
  // (written out: gpu/ compiles this header with nvcc in C++17 mode, without defaulted ==)
  bool operator==(const RopeScaling& o) const {
    return type == o.type && factor == o.factor && low_freq_factor == o.low_freq_factor &&
           high_freq_factor == o.high_freq_factor && original_max_positions == o.original_max_positions;
  }
};

struct RopeSpec {
  double theta = 10000.0;
  RopeScaling scaling;
  RopeSpec() = default;
  // A plain theta is the unscaled RoPE.
  RopeSpec(double base, RopeScaling s = {}) : theta(base), scaling(s) {}  // NOLINT(google-explicit-constructor)
  bool operator==(const RopeSpec& o) const { return theta == o.theta && scaling == o.scaling; }
};

// The fp32 inverse frequency of pair i of a head of D dimensions (i < D/2), as transformers
// computes it: theta^(-2i/D) rounded to fp32, then the scaling.
float rope_inv_freq(const RopeSpec& rope, int64_t i, int64_t D);

const char* rope_type_name(RopeType t);  // "default", "linear", "llama3"

}  // namespace moelab
