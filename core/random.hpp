// A small deterministic random generator (SplitMix64 + Box-Muller), identical on every platform
// and standard library, so a seed means the same weights and samples everywhere.
#pragma once

#include <cmath>
#include <cstdint>

namespace moelab {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next_u64() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }

 // The whole state, for checkpoints (a resumed run continues the same stream).
  struct State {
    uint64_t state;
    double spare;
    bool has_spare;
  };
  State save() const { return {state_, spare_, has_spare_}; }
  void restore(const State& s) {
    state_ = s.state;
    spare_ = s.spare;
    has_spare_ = s.has_spare;
  }

 private:
  uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace moelab
