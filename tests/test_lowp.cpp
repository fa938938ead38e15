// linear_lowp, the product every bf16/f16 checkpoint runs through, against a double-precision sum
// of the same widened weights, on every path this CPU takes: rows streamed once per 4 tokens
// (decode, T < 5), 4 × 4 tiles (5..40 tokens on AVX-512), widened blocks and a GEMM (more), with
// row counts and widths that leave remainders everywhere (N % 4, T % 4, K % 16, K % 8).
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "check.hpp"
#include "lowp.hpp"
#include "safetensors.hpp"

using namespace moelab;

namespace {

struct Case {
  int64_t T, N, K;
};

// max |got - want| / max(sum_k |x·w|) over the outputs: the error of a float sum relative to
// the size of what it sums.
double product_error(LowpType type, const Case& c, bool accumulate, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> W(size_t(c.N * c.K));
  std::vector<float> Wf(W.size()), X(size_t(c.T * c.K));
  for (size_t i = 0; i < W.size(); ++i) {
    W[i] = type == LowpType::BF16 ? float_to_bf16(u(rng)) : float_to_half(u(rng));
    Wf[i] = type == LowpType::BF16 ? bf16_to_float(W[i]) : half_to_float(W[i]);
  }
  for (float& x : X) x = u(rng);
  const int64_t ldy = c.N + 3;  // a row stride wider than N: only Y's first N columns are written
  std::vector<float> Y(size_t(c.T * ldy), 0.5f);
  linear_lowp(X.data(), c.T, c.K, W.data(), type, c.N, Y.data(), ldy, accumulate);
  double err = 0, scale = 1e-30;
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t n = 0; n < c.N; ++n) {
      double want = accumulate ? 0.5 : 0.0, size = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double p = double(X[size_t(t * c.K + k)]) * double(Wf[size_t(n * c.K + k)]);
        want += p;
        size += std::fabs(p);
      }
      err = std::max(err, std::fabs(double(Y[size_t(t * ldy + n)]) - want));
      scale = std::max(scale, size);
    }
    for (int64_t n = c.N; n < ldy; ++n)
      if (Y[size_t(t * ldy + n)] != 0.5f) return 1.0;  // wrote past its N columns
  }
  return err / scale;
}

}  // namespace

TEST(stored_products_equal_the_widened_sums_on_every_path) {
  const std::vector<Case> cases = {
      {1, 1, 1},     {1, 65, 2048}, {1, 7, 17},    {2, 33, 100},  {3, 5, 31},    {4, 130, 64},
      {5, 9, 100},   {6, 67, 2048}, {7, 4, 16},    {8, 131, 255}, {9, 3, 48},    {16, 64, 1024},
      {17, 66, 33},  {33, 70, 513}, {40, 129, 96}, {41, 65, 200}, {64, 130, 96}, {130, 67, 40},
  };
  for (LowpType type : {LowpType::BF16, LowpType::F16})
    for (const Case& c : cases)
      for (bool accumulate : {false, true}) {
        const double e = product_error(type, c, accumulate, uint32_t(c.T * 1000 + c.N + c.K));
        if (!(e < 2e-6))
          check::report(__FILE__, __LINE__,
                        "T=" + std::to_string(c.T) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
                            (type == LowpType::BF16 ? " bf16" : " f16") + (accumulate ? " accumulate" : "") +
                            ": error " + std::to_string(e) + " (path " + lowp_path() + ")");
      }
}

CHECK_MAIN()
