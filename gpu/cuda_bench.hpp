// Measurements of the device's own limits for `moelab-cli bench --device cuda`, taken in the same
// run as the model figures so that every figure can be stated as a fraction of what this GPU
// does right now. No CUDA types in this header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend.hpp"

namespace moelab {

// The launch floor: CUDA graphs of N empty kernels (N = 1 .. 1024), replayed many times; the
// least-squares slope of time against N is the cost of one graph node, the intercept the cost
// of a graph launch. Microseconds.
struct LaunchFloor {
  double per_node_us = 0, per_graph_us = 0;
};
LaunchFloor cuda_measure_launch_floor(int device = 0);

// Sustained device-memory bandwidth: a read-and-write copy kernel over `bytes` (best of several),
// counting both the bytes read and the bytes written. Bytes/s.
double cuda_measure_bandwidth(size_t bytes, int device = 0);

// cuBLAS GEMM rate at n×n×n in the products' precision, best of several. FLOP/s.
//   FP32: cublasSgemm, TF32 off; TF32: cublasSgemm on TF32 tensor cores; BF16: cublasGemmEx with
//   bf16 operands, fp32 output and fp32 sums (what the backend's bf16 mode runs).
double cuda_measure_gemm(int n, Precision precision, int device = 0);

}  // namespace moelab
