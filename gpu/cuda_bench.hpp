// Measurements of the device's own limits for `moelab-cli bench --device cuda`, taken in the same
// run as the model figures so that every figure can be stated as a fraction of what this GPU
// does right now. No CUDA types in this header.
#pragma once

#include <cstddef>
#include <cstdint>

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

// fp32 GEMM rate of cuBLAS at n×n×n (TF32 off unless tf32), best of several. FLOP/s.
double cuda_measure_sgemm(int n, bool tf32, int device = 0);

}  // namespace moelab
