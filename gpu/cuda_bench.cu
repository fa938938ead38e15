#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "cuda_bench.hpp"
#include "cuda_check.hpp"
#include "cuda_common.cuh"
#include "kernels.hpp"

namespace moelab {
namespace {

__global__ void empty_kernel() {}

// Values in [-1, 1) from a hash of the index: SGEMM is timed on non-trivial data (zeros can let
// the GPU run cooler and faster than on real operands).
__global__ void hash_fill_kernel(float* p, int64_t n, uint32_t seed) {
  MOELAB_GRID_STRIDE(i, n) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = float(h & 0xffffff) / float(1 << 23) - 1.0f;
  }
}

__global__ void copy_kernel(const float4* __restrict__ src, float4* __restrict__ dst, int64_t n) {
  MOELAB_GRID_STRIDE(i, n) dst[i] = src[i];
}

// Frees a device buffer, a stream or events when the measurement returns (also on a throw).
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { MOELAB_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() { (void)cudaFree(p); }
};
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { MOELAB_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() { (void)cudaStreamDestroy(s); }
};
struct Timer {
  cudaEvent_t a = nullptr, b = nullptr;
  Timer() {
    MOELAB_CUDA_CHECK(cudaEventCreate(&a));
    MOELAB_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
  }
  double ms() const {
    float t = 0;
    MOELAB_CUDA_CHECK(cudaEventSynchronize(b));
    MOELAB_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    return double(t);
  }
};

// Microseconds per replay of a graph of n empty kernels (best of 5 batches of replays).
double graph_replay_us(int n, cudaStream_t s) {
  cudaGraph_t graph = nullptr;
  MOELAB_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < n; ++i) empty_kernel<<<1, 1, 0, s>>>();
  MOELAB_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  MOELAB_CUDA_CHECK(err);
  std::unique_ptr<CUgraphExec_st, void (*)(cudaGraphExec_t)> guard(exec, [](cudaGraphExec_t e) {
    (void)cudaGraphExecDestroy(e);
  });
  const int reps = std::max(20, 20000 / n);
  Timer t;
  double best = 1e30;
  for (int batch = 0; batch < 6; ++batch) {
    MOELAB_CUDA_CHECK(cudaEventRecord(t.a, s));
    for (int r = 0; r < reps; ++r) MOELAB_CUDA_CHECK(cudaGraphLaunch(exec, s));
    MOELAB_CUDA_CHECK(cudaEventRecord(t.b, s));
    const double us = t.ms() * 1e3 / reps;
    if (batch > 0) best = std::min(best, us);  // the first batch warms up
  }
  return best;
}

}  // namespace

LaunchFloor cuda_measure_launch_floor(int device) {
  MOELAB_CUDA_CHECK(cudaSetDevice(device));
  Stream st;
  const std::vector<int> sizes = {1, 16, 64, 256, 1024};
  std::vector<double> us;
  for (int n : sizes) us.push_back(graph_replay_us(n, st.s));
  // Least squares of us = per_graph + per_node · n.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  const double m = double(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    sx += sizes[i];
    sy += us[i];
    sxx += double(sizes[i]) * sizes[i];
    sxy += sizes[i] * us[i];
  }
  LaunchFloor f;
  f.per_node_us = (m * sxy - sx * sy) / (m * sxx - sx * sx);
  f.per_graph_us = (sy - f.per_node_us * sx) / m;
  return f;
}

double cuda_measure_bandwidth(size_t bytes, int device) {
  MOELAB_CUDA_CHECK(cudaSetDevice(device));
  const int64_t n = int64_t(bytes / 2 / sizeof(float4));  // half read, half written
  DeviceBuffer a(size_t(n) * sizeof(float4)), b(size_t(n) * sizeof(float4));
  MOELAB_CUDA_CHECK(cudaMemset(a.p, 0, size_t(n) * sizeof(float4)));
  Stream st;
  Timer t;
  int sms = 0;
  MOELAB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const unsigned blocks = unsigned(sms * 8);
  double best = 0;
  for (int r = 0; r < 6; ++r) {
    MOELAB_CUDA_CHECK(cudaEventRecord(t.a, st.s));
    copy_kernel<<<blocks, 256, 0, st.s>>>(static_cast<const float4*>(a.p), static_cast<float4*>(b.p), n);
    MOELAB_CUDA_LAUNCHED("copy_kernel");
    MOELAB_CUDA_CHECK(cudaEventRecord(t.b, st.s));
    const double s = t.ms() * 1e-3;
    if (r > 0) best = std::max(best, 2.0 * double(n) * sizeof(float4) / s);
  }
  return best;
}

double cuda_measure_gemm(int n, Precision precision, int device) {
  MOELAB_CUDA_CHECK(cudaSetDevice(device));
  const size_t bytes = size_t(n) * size_t(n) * sizeof(float);
  DeviceBuffer a(bytes), b(bytes), c(bytes);
  Stream st;
  const int64_t count = int64_t(n) * n;
  hash_fill_kernel<<<cuda::blocks_for(count), cuda::kThreads, 0, st.s>>>(static_cast<float*>(a.p), count, 1u);
  hash_fill_kernel<<<cuda::blocks_for(count), cuda::kThreads, 0, st.s>>>(static_cast<float*>(b.p), count, 2u);
  MOELAB_CUDA_LAUNCHED("hash_fill_kernel");
  cublasHandle_t h = nullptr;
  MOELAB_CUBLAS_CHECK(cublasCreate(&h));
  std::unique_ptr<cublasContext, void (*)(cublasHandle_t)> guard(h, [](cublasHandle_t x) { (void)cublasDestroy(x); });
  MOELAB_CUBLAS_CHECK(cublasSetStream(h, st.s));
  const bool tf32 = precision == Precision::TF32, bf16 = precision == Precision::BF16;
  MOELAB_CUBLAS_CHECK(cublasSetMathMode(h, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  DeviceBuffer ab(bf16 ? bytes / 2 : 16), bb(bf16 ? bytes / 2 : 16);
  if (bf16) {
    cuda::to_bf16(static_cast<const float*>(a.p), count, static_cast<cuda::bf16*>(ab.p), st.s);
    cuda::to_bf16(static_cast<const float*>(b.p), count, static_cast<cuda::bf16*>(bb.p), st.s);
  }
  const float one = 1.0f, zero = 0.0f;
  Timer t;
  double best = 0;
  for (int r = 0; r < 6; ++r) {
    MOELAB_CUDA_CHECK(cudaEventRecord(t.a, st.s));
    if (bf16)
      MOELAB_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, ab.p, CUDA_R_16BF, n, bb.p,
                                       CUDA_R_16BF, n, &zero, c.p, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
    else
      MOELAB_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, static_cast<const float*>(a.p), n,
                                      static_cast<const float*>(b.p), n, &zero, static_cast<float*>(c.p), n));
    MOELAB_CUDA_CHECK(cudaEventRecord(t.b, st.s));
    const double s = t.ms() * 1e-3;
    if (r > 0) best = std::max(best, 2.0 * double(n) * n * n / s);
  }
  return best;
}

}  // namespace moelab
