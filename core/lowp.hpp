// Products with weights kept as stored: bf16 or f16 matrices (usually straight from a checkpoint's
// memory map) times fp32 activations, summed in fp32. Each weight is widened exactly (bf16 and
// f16 values are exact in fp32), so the result is the fp32 product of the widened weights up to
// the order of the sums. AVX-512 and AVX2/F16C paths chosen at run time, a portable fallback.
#pragma once

#include <cstdint>

namespace moelab {

enum class LowpType { BF16, F16 };

// dst[i] = float(src[i]) for n values.
void lowp_to_f32(const uint16_t* src, LowpType type, float* dst, int64_t n);

// Y[t, n] (+)= sum_k X[t, k] * W[n, k] for t < T, n < N: X fp32 [T, K] (row stride K), W [N, K]
// (row stride K), Y fp32 [T, N] (row stride ldy). Parallel over N with OpenMP when worthwhile.
void linear_lowp(const float* X, int64_t T, int64_t K, const uint16_t* W, LowpType type, int64_t N, float* Y,
                 int64_t ldy, bool accumulate);

// Rows [n0, n1) of the same product on the calling thread only (Y is the whole output, as above):
// for a caller that spreads several products' rows over its own threads in one parallel region.
void linear_lowp_rows(const float* X, int64_t T, int64_t K, const uint16_t* W, LowpType type, int64_t n0, int64_t n1,
                      float* Y, int64_t ldy, bool accumulate);

// Which path linear_lowp takes on this CPU: "avx512", "avx2" or "portable".
const char* lowp_path();

}  // namespace moelab
