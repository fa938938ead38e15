#include "lowp.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <Eigen/Dense>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "safetensors.hpp"

namespace moelab {
namespace {

// From kTileMinTokens to kTileMaxTokens rows of activations, linear_lowp's AVX-512 path multiplies
// 4 × 4 tiles straight from the stored weights; below, it streams each weight row once per 4
// tokens; above, it widens blocks of weights to fp32 and runs Eigen's GEMM. Measured (2 threads,
// K = 2048, N = 1024, GFLOP/s, tiles vs the other path): T = 6: 151 vs 127, 8: 170 vs 136,
// 16: 170 vs 102, 32: 183 vs 159, 40: 171 vs 163, 48: 175 vs 179, 64: 171 vs 207; T = 4: 160 vs 172.
constexpr int64_t kTileMinTokens = 5, kTileMaxTokens = 40;

int cpu_level() {
  static const int level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return 1;
    return 0;
  }();
  return level;
}

inline float widen(uint16_t v, LowpType type) { return type == LowpType::BF16 ? bf16_to_float(v) : half_to_float(v); }

// ---- portable

void to_f32_portable(const uint16_t* s, LowpType type, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = widen(s[i], type);
}

void rows_portable(const float* X, int64_t T, int64_t K, const uint16_t* W, LowpType type, int64_t n0, int64_t n1,
                   float* Y, int64_t ldy, bool acc) {
  std::vector<float> w(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    to_f32_portable(W + n * K, type, w.data(), K);
    for (int64_t t = 0; t < T; ++t) {
      const float* x = X + t * K;
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += x[k] * w[size_t(k)];
      float& y = Y[t * ldy + n];
      y = acc ? y + s : s;
    }
  }
}

// ---- AVX2 + F16C + FMA

__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const uint16_t* p, LowpType type) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (type == LowpType::F16) return _mm256_cvtph_ps(v);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

__attribute__((target("avx2,fma,f16c"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma,f16c"))) void to_f32_avx2(const uint16_t* s, LowpType type, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, load8(s + i, type));
  for (; i < n; ++i) d[i] = widen(s[i], type);
}

__attribute__((target("avx2,fma,f16c"))) void rows_avx2(const float* X, int64_t T, int64_t K, const uint16_t* W,
                                                        LowpType type, int64_t n0, int64_t n1, float* Y, int64_t ldy,
                                                        bool acc) {
  const int64_t K8 = K & ~int64_t(7);
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
      const int64_t tn = std::min<int64_t>(4, T - t0);
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float *x0 = X + t0 * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
      for (int64_t k = 0; k < K8; k += 8) {
        const __m256 wv = load8(w + k, type);
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + k), a0);
        if (tn > 1) a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + k), a1);
        if (tn > 2) a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + k), a2);
        if (tn > 3) a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + k), a3);
      }
      float s[4] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)};
      for (int64_t k = K8; k < K; ++k) {
        const float wk = widen(w[k], type);
        for (int64_t j = 0; j < tn; ++j) s[j] += wk * X[(t0 + j) * K + k];
      }
      for (int64_t j = 0; j < tn; ++j) {
        float& y = Y[(t0 + j) * ldy + n];
        y = acc ? y + s[j] : s[j];
      }
    }
  }
}

// ---- AVX-512 (F + BW for the masked 16-bit loads)

__attribute__((target("avx512f,avx512bw"))) inline __m512 load16(const uint16_t* p, LowpType type, __mmask16 m) {
  const __m256i v = _mm256_maskz_loadu_epi16(m, p);
  if (type == LowpType::F16) return _mm512_cvtph_ps(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// A horizontal sum without _mm512_reduce_add_ps (whose GCC 12 expansion trips
// -Wmaybe-uninitialized).
__attribute__((target("avx512f,avx512bw"))) inline float hsum16(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
  s = _mm_add_ps(s, _mm_add_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1)));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx512f,avx512bw"))) void to_f32_avx512(const uint16_t* s, LowpType type, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, load16(s + i, type, 0xFFFF));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(d + i, m, load16(s + i, type, m));
  }
}

__attribute__((target("avx512f,avx512bw"))) void rows_avx512(const float* X, int64_t T, int64_t K, const uint16_t* W,
                                                             LowpType type, int64_t n0, int64_t n1, float* Y,
                                                             int64_t ldy, bool acc) {
  const int64_t K16 = K & ~int64_t(15);
  const __mmask16 tail = __mmask16((1u << (K - K16)) - 1);
  if (T == 1) {  // decode: one row at a time, four independent sums to hide the FMA latency
    for (int64_t n = n0; n < n1; ++n) {
      const uint16_t* w = W + n * K;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      int64_t k = 0;
      for (; k + 64 <= K16; k += 64) {
        a0 = _mm512_fmadd_ps(load16(w + k, type, 0xFFFF), _mm512_loadu_ps(X + k), a0);
        a1 = _mm512_fmadd_ps(load16(w + k + 16, type, 0xFFFF), _mm512_loadu_ps(X + k + 16), a1);
        a2 = _mm512_fmadd_ps(load16(w + k + 32, type, 0xFFFF), _mm512_loadu_ps(X + k + 32), a2);
        a3 = _mm512_fmadd_ps(load16(w + k + 48, type, 0xFFFF), _mm512_loadu_ps(X + k + 48), a3);
      }
      for (; k < K16; k += 16) a0 = _mm512_fmadd_ps(load16(w + k, type, 0xFFFF), _mm512_loadu_ps(X + k), a0);
      if (tail) a1 = _mm512_fmadd_ps(load16(w + K16, type, tail), _mm512_maskz_loadu_ps(tail, X + K16), a1);
      const float s = hsum16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
      Y[n] = acc ? Y[n] + s : s;
    }
    return;
  }
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    for (int64_t t0 = 0; t0 < T; t0 += 4) {
      const int64_t tn = std::min<int64_t>(4, T - t0);
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float *x0 = X + t0 * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
      for (int64_t k = 0; k < K16; k += 16) {
        const __m512 wv = load16(w + k, type, 0xFFFF);
        a0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x0 + k), a0);
        if (tn > 1) a1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x1 + k), a1);
        if (tn > 2) a2 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x2 + k), a2);
        if (tn > 3) a3 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x3 + k), a3);
      }
      if (tail) {
        const __m512 wv = load16(w + K16, type, tail);
        a0 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x0 + K16), a0);
        if (tn > 1) a1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x1 + K16), a1);
        if (tn > 2) a2 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x2 + K16), a2);
        if (tn > 3) a3 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, x3 + K16), a3);
      }
      const float s[4] = {hsum16(a0), hsum16(a1), hsum16(a2), hsum16(a3)};
      for (int64_t j = 0; j < tn; ++j) {
        float& y = Y[(t0 + j) * ldy + n];
        y = acc ? y + s[j] : s[j];
      }
    }
  }
}

// A few tokens against many weight rows (an expert's share of a prompt): tiles of 4 weight rows
// × 4 tokens, 16 sums in registers; each 16-element piece of a weight row is widened once per 4
// tokens and each piece of a token once per 4 rows. No fp32 copy of the weights (which the
// GEMM path below makes, and Eigen then packs again), so it wins while the tokens are few.
template <LowpType type>
__attribute__((target("avx512f,avx512bw"))) void tiles_avx512(const float* X, int64_t T, int64_t K, const uint16_t* W,
                                                              int64_t n0, int64_t n1, float* Y, int64_t ldy, bool acc) {
  const int64_t K16 = K & ~int64_t(15);
  const __mmask16 tail = __mmask16((1u << (K - K16)) - 1);
  const int64_t n4 = n0 + ((n1 - n0) & ~int64_t(3)), T4 = T & ~int64_t(3);
  for (int64_t n = n0; n < n4; n += 4) {
    const uint16_t* w0 = W + n * K;
    const uint16_t *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    for (int64_t t = 0; t < T4; t += 4) {
      const float* x0 = X + t * K;
      const float *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
      __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
             a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
      const auto step = [&](int64_t k, __mmask16 m) __attribute__((always_inline)) {
        const __m512 v0 = load16(w0 + k, type, m), v1 = load16(w1 + k, type, m), v2 = load16(w2 + k, type, m),
                     v3 = load16(w3 + k, type, m);
        __m512 x = _mm512_maskz_loadu_ps(m, x0 + k);
        a00 = _mm512_fmadd_ps(v0, x, a00), a10 = _mm512_fmadd_ps(v1, x, a10);
        a20 = _mm512_fmadd_ps(v2, x, a20), a30 = _mm512_fmadd_ps(v3, x, a30);
        x = _mm512_maskz_loadu_ps(m, x1 + k);
        a01 = _mm512_fmadd_ps(v0, x, a01), a11 = _mm512_fmadd_ps(v1, x, a11);
        a21 = _mm512_fmadd_ps(v2, x, a21), a31 = _mm512_fmadd_ps(v3, x, a31);
        x = _mm512_maskz_loadu_ps(m, x2 + k);
        a02 = _mm512_fmadd_ps(v0, x, a02), a12 = _mm512_fmadd_ps(v1, x, a12);
        a22 = _mm512_fmadd_ps(v2, x, a22), a32 = _mm512_fmadd_ps(v3, x, a32);
        x = _mm512_maskz_loadu_ps(m, x3 + k);
        a03 = _mm512_fmadd_ps(v0, x, a03), a13 = _mm512_fmadd_ps(v1, x, a13);
        a23 = _mm512_fmadd_ps(v2, x, a23), a33 = _mm512_fmadd_ps(v3, x, a33);
      };
      for (int64_t k = 0; k < K16; k += 16) step(k, 0xFFFF);
      if (tail) step(K16, tail);
      const __m512 sums[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
      for (int r = 0; r < 4; ++r)
        for (int j = 0; j < 4; ++j) {
          const float s = hsum16(sums[r][j]);
          float& y = Y[(t + j) * ldy + n + r];
          y = acc ? y + s : s;
        }
    }
    if (T4 < T) rows_avx512(X + T4 * K, T - T4, K, W, type, n, n + 4, Y + T4 * ldy, ldy, acc);
  }
  if (n4 < n1) rows_avx512(X, T, K, W, type, n4, n1, Y, ldy, acc);
}

void rows(const float* X, int64_t T, int64_t K, const uint16_t* W, LowpType type, int64_t n0, int64_t n1, float* Y,
          int64_t ldy, bool acc) {
  switch (cpu_level()) {
    case 2: return rows_avx512(X, T, K, W, type, n0, n1, Y, ldy, acc);
    case 1: return rows_avx2(X, T, K, W, type, n0, n1, Y, ldy, acc);
    default: return rows_portable(X, T, K, W, type, n0, n1, Y, ldy, acc);
  }
}

}  // namespace

void lowp_to_f32(const uint16_t* src, LowpType type, float* dst, int64_t n) {
  switch (cpu_level()) {
    case 2: return to_f32_avx512(src, type, dst, n);
    case 1: return to_f32_avx2(src, type, dst, n);
    default: return to_f32_portable(src, type, dst, n);
  }
}

void linear_lowp_rows(const float* X, int64_t T, int64_t K, const uint16_t* W, LowpType type, int64_t n0, int64_t n1,
                      float* Y, int64_t ldy, bool accumulate) {
  if (T > 0 && n1 > n0) rows(X, T, K, W, type, n0, n1, Y, ldy, accumulate);
}

const char* lowp_path() {
  switch (cpu_level()) {
    case 2: return "avx512";
    case 1: return "avx2";
    default: return "portable";
  }
}

void linear_lowp(const float* X, int64_t T, int64_t K, const uint16_t* W, LowpType type, int64_t N, float* Y,
                 int64_t ldy, bool accumulate) {
  if (T <= 0 || N <= 0) return;
  if (T >= kTileMinTokens && T <= kTileMaxTokens && cpu_level() == 2) {
    // A few dozen rows (an expert's tokens in a prompt, a short prompt): 4 × 4 tiles.
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (T * N * K >= (1 << 18) && blocks > 1)
    for (int64_t b = 0; b < blocks; ++b) {
      if (type == LowpType::BF16)
        tiles_avx512<LowpType::BF16>(X, T, K, W, b * kBlock, std::min(N, (b + 1) * kBlock), Y, ldy, accumulate);
      else
        tiles_avx512<LowpType::F16>(X, T, K, W, b * kBlock, std::min(N, (b + 1) * kBlock), Y, ldy, accumulate);
    }
    return;
  }
  if (T <= 8) {
    // Few rows of activations (decode, a handful of tokens per expert): stream each weight row
    // once through the vector units; the weights' bytes are the cost.
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * K >= (1 << 16) && blocks > 1)
    for (int64_t b = 0; b < blocks; ++b)
      rows(X, T, K, W, type, b * kBlock, std::min(N, (b + 1) * kBlock), Y, ldy, accumulate);
    return;
  }
  // Many rows (prefill): widen a block of weight rows to fp32, then a GEMM on it.
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat>;
  using Strided = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;
  const int64_t nb = std::max<int64_t>(16, std::min<int64_t>(256, (int64_t(1) << 18) / std::max<int64_t>(K, 1)));
  const int64_t blocks = (N + nb - 1) / nb;
  const CMap Xm(X, T, K);
#pragma omp parallel for schedule(dynamic) if (blocks > 1 && T * N * K >= (1 << 18))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * nb, n = std::min(N, n0 + nb) - n0;
    thread_local std::vector<float> wbuf;
    wbuf.resize(size_t(n * K));
    lowp_to_f32(W + n0 * K, type, wbuf.data(), n * K);
    Strided Yb(Y + n0, T, n, Eigen::OuterStride<>(ldy));
    if (accumulate) Yb.noalias() += Xm * CMap(wbuf.data(), n, K).transpose();
    else Yb.noalias() = Xm * CMap(wbuf.data(), n, K).transpose();
  }
}

}  // namespace moelab
