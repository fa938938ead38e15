// What CUDA device this process can use, and its datasheet limits as the driver reports them.
// No CUDA types leak into this header: the command line includes it without the toolkit.
#pragma once

#include <string>

namespace moelab {

struct CudaDeviceInfo {
  bool available = false;
  std::string name;     // "NVIDIA H100 80GB HBM3"
  std::string reason;   // why not available: "no usable CUDA driver (...)", "no CUDA device", ...
  double memory_gib = 0.0;
  int compute_major = 0, compute_minor = 0;
  int sm_count = 0;
  double sm_clock_ghz = 0.0;      // peak SM clock
  double memory_clock_ghz = 0.0;  // peak memory clock
  int bus_width_bits = 0;
  // Datasheet-style peaks from the above: DRAM bytes/s (double data rate) and fp32 FLOP/s
  // (FP32 lanes per SM for this compute capability × 2 for FMA × SMs × clock).
  double peak_bandwidth = 0.0;
  double peak_fp32_flops = 0.0;
};

// Asks the driver; never throws. `reason` is one line for the user when unavailable.
CudaDeviceInfo query_cuda_device(int device = 0);

}  // namespace moelab
