// What the GPU tests (test_gpu_parity, test_gpu_stored) share: the four backends they compare,
// reading a tensor back, a decode's logits, and their main(), which skips when no GPU answers. Only these tests
// include it (they are built only with the CUDA backend).
#pragma once

#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "backend.hpp"
#include "backend_ops.hpp"
#include "check.hpp"
#include "cuda_backend.hpp"
#include "cuda_device.hpp"
#include "decoder.hpp"

namespace gpu_test {

// The comparisons both tests use (a test says `using namespace gpu_test;`).
using backend_ops::randn;
using backend_ops::rel_diff;
using backend_ops::share_within;
using backend_ops::Tally;

// The CPU (Eigen) and the CUDA backend, each in fp32 and in Precision::BF16; made by main()
// before the first case runs.
inline std::shared_ptr<moelab::Backend> g_cpu, g_gpu, g_cpu16, g_gpu16;

// A tensor's values as fp32 on the host (stored bf16/f16 weights widened).
inline std::vector<float> host(moelab::Backend& b, const moelab::Tensor& t) { return backend_ops::values_f32(b, t); }

// The logits of a KV-cached decode of `tokens` ([tokens, V], in order): the first token prefilled,
// then one step per token (recorded as a CUDA graph and replayed, on the GPU).
inline std::vector<float> decoded_logits(moelab::Decoder& dec, const std::vector<int32_t>& tokens) {
  std::vector<float> got = dec.prefill({tokens.front()});
  for (size_t t = 1; t < tokens.size(); ++t) {
    const std::vector<float> step = dec.step(tokens[t]);
    got.insert(got.end(), step.begin(), step.end());
  }
  return got;
}

// The main() of a GPU test: without a usable GPU it prints why in one line and returns 77 (CTest's
// SKIP_RETURN_CODE: skipped); a CUDA backend that does not start is a failure. Then the cases.
inline int run_on_gpu(const char* test, int argc, char** argv, int (*run_cases)(int, char**)) {
  std::string why;
  if (!moelab::cuda_device_available(&why)) {
    std::printf("%s: skipped: %s\n", test, why.c_str());
    return 77;
  }
  try {
    g_cpu = moelab::make_eigen_backend();
    g_gpu = moelab::make_cuda_backend();
    g_cpu16 = moelab::make_eigen_backend();
    g_cpu16->set_precision(moelab::Precision::BF16);
    g_gpu16 = moelab::make_cuda_backend();
    g_gpu16->set_precision(moelab::Precision::BF16);
  } catch (const std::exception& e) {
    std::printf("%s: the CUDA backend did not start: %s\n", test, e.what());
    return 1;
  }
  return run_cases(argc, argv);
}

}  // namespace gpu_test

// Defines main() for a GPU test named `test`: the harness's main (CHECK_MAIN, kept in a namespace
// of its own) runs once run_on_gpu has made the backends.
#define GPU_TEST_MAIN(test)                                                                    \
  namespace gpu_test_cases {                                                                   \
  CHECK_MAIN()                                                                                 \
  }                                                                                            \
  int main(int argc, char** argv) { return gpu_test::run_on_gpu(test, argc, argv, gpu_test_cases::main); }
