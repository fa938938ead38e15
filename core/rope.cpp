#include "rope.hpp"

#include <cmath>
#include <numbers>

namespace moelab {

float rope_inv_freq(const RopeSpec& rope, int64_t i, int64_t D) {
  const float f = 1.0f / float(std::pow(rope.theta, double(2 * i) / double(D)));
  const RopeScaling& s = rope.scaling;
  switch (s.type) {
    case RopeType::Default:
      return f;
    case RopeType::Linear:
      return float(double(f) / s.factor);
    case RopeType::Llama3: {
      // _compute_llama3_parameters: by wavelength against the pre-training context.
      const double wavelen = 2.0 * std::numbers::pi / double(f);
      const double old_ctx = double(s.original_max_positions);
      const double low_freq_wavelen = old_ctx / s.low_freq_factor, high_freq_wavelen = old_ctx / s.high_freq_factor;
      if (wavelen > low_freq_wavelen) return float(double(f) / s.factor);  // low frequencies: interpolated
      if (wavelen < high_freq_wavelen) return f;                            // high frequencies: kept
      const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      return float((1.0 - smooth) * double(f) / s.factor + smooth * double(f));
    }
  }
  return f;
}

const char* rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Llama3: return "llama3";
  }
  return "?";
}

}  // namespace moelab
